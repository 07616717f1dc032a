"""Benchmark ``darkcsp train``: mAP within a time budget, or training speed against Darknet.

**mAP mode** (the default): ``darkcsp train CFG`` on the embedded synthetic dataset for at most N
minutes; reports mAP@0.5 on the held-out synthetic split and the training throughput (images/s).

    python tools/bench_train.py [CFG] [--minutes 15] [--threads 2] [-- TRAIN ARGS]

The default cfg is cfg/csppeleenet-efm.cfg. The run is the user's command, ``darkcsp train CFG``
with no --data, so it gets the quick synthetic-run defaults (128 px, batch 8, Adam, no mosaic or
multi-scale, anchors from the labels; see darkcsp/train/run.py). Only the length changes:
max_batches is fitted to the time budget, so that the schedule (burn-in, the steps at 80 % and
90 % of max_batches) runs to its end. To fit it, a probe trains 14 iterations on 16 cached
images and takes the mean iteration time (plus 15 %); the budget then pays for generating the
synthetic images once, the mAP passes (every quarter of the run) and the iterations.
``--time-limit`` stays on as a safety net. Anything after ``--`` goes to ``darkcsp train``
unchanged (e.g. ``-- --lr 0.001`` or ``-- --set net.adam=0``).

Measured on a 2-core VM (2026-11-28): max_batches 2996, all run in 13.5 minutes, 30.7
training images/s, held-out mAP@0.5 0.419 / 0.808 / 0.959 / 0.989 at each quarter;
``darkcsp map`` on the same images (``darkcsp synthetic DIR``) gives 0.988757 and COCO AP 0.669.

**Darknet mode** (``--darknet PATH``): training speed of darkcsp against a Darknet executable
the user built, on the same cfg and the same data. Nothing is downloaded.

    python tools/bench_train.py --darknet ./darknet [CFG] [--size 416] [--batch 8]
        [--iterations 25] [--warmup 5] [--threads 2] [--precisions fp32,auto] [--rounds 1]

1. the synthetic set is written once (darkcsp's own generator, ``--images`` training images)
   with a Darknet .data (train list and names, no valid: neither tool computes mAP);
2. one training cfg serves both tools: CFG (default cfg/yolov4-tiny.cfg) lowered to plain
   Darknet, width=height=--size, batch=--batch, subdivisions=1, the heads' classes and their
   convolutions' filters set to the synthetic class count, mosaic=0 and random=0 (Darknet's
   OPENCV=0 build has no mosaic; multi-scale would change the work per iteration), every
   other augmentation (jitter, hue, saturation, exposure, flip...) as the cfg says,
   max_batches = warmup + iterations and the whole run inside the burn-in (the cfg's
   burn_in, at least max_batches: from random weights a full learning rate can make the
   loss NaN, which is no speed test);
3. the runs alternate (darknet, darkcsp for each precision; ``--rounds`` times) so that they
   see similar machine load: ``DARKNET detector train DATA CFG -dont_show`` (no initial
   weights, OMP_NUM_THREADS=--threads), and ``python -m darkcsp train CFG --data DATA
   --threads N --precision P`` (fresh weights, --classes cfg --anchors cfg);
4. the speed of each is taken over the iterations after the warm-up, by wall clock: for
   Darknet the time between its per-iteration lines (`` N: loss, avg avg loss, rate rate,
   S seconds, I images, ...``, printed and flushed after each iteration; its own "Loaded"
   plus "seconds" per iteration are reported too), for darkcsp the per-iteration times of the
   run's history (its ``last.pt``, read as plain data), which cover the whole iteration
   including the wait for data. The whole-run rate (process start to end, start-up included)
   is reported beside it.

The table (markdown) gives tool, precision, s/iteration, images/s and the ratio to Darknet's
images/s (and, with several rounds, each round's ratios); compare.json in the output folder
keeps every run. A shared machine makes the figures noisy: the short darkcsp runs (half a
minute) suffer more from another process's burst than Darknet's (two minutes), so compare the
ratios of the same round, and repeat with ``--rounds``.

Measured on a 2-core VM with native bf16 (2026-12-03; Darknet AlexeyAB, built with
``make GPU=0 CUDNN=0 OPENCV=0 AVX=1 OPENMP=1``), yolov4-tiny at 416, batch 8, 2 threads,
25 iterations after 5, 2 rounds, the machine quiet: Darknet 4.03 s/iteration (1.99 images/s),
darkcsp fp32 0.76 s (10.5 images/s, 5.3x), darkcsp auto (bf16 autocast) 0.41 s
(19.7 images/s, 9.9x; rounds 11.2x and 8.8x). Under load from other jobs darkcsp's ratios
fell to 1.5x - 3x while Darknet's rate barely moved.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darkcsp.cli import train as train_cli  # noqa: E402
from darkcsp.data.synthetic import make_image  # noqa: E402
from darkcsp.files import FileRefused, new_run_dir, output_dir  # noqa: E402
from darkcsp.train.runstate import read_train_checkpoint  # noqa: E402
from darkcsp.train.trainer import Trainer  # noqa: E402

PROBE_ITERATIONS = 14
MARGIN = 1.15  # the long run's iterations vary more (truth matching, saves): keep its end

BUILD_DARKNET = """\
Darknet comparison: build Darknet for the CPU yourself (the bench downloads nothing), e.g.
    git clone https://github.com/AlexeyAB/darknet && cd darknet
    make GPU=0 CUDNN=0 OPENCV=0 AVX=1 OPENMP=1     # drop AVX=1 if your compiler refuses it
then pass the executable:
    python tools/bench_train.py --darknet ./darknet/darknet [CFG]"""


# -- mAP mode ---------------------------------------------------------------------------------

def train_args(cfg: Path, out: Path, extra: list[str], threads: int, train_images: int,
               valid_images: int) -> list[str]:
    return [str(cfg), "--out", str(out), "--exist-ok", "--workers", "0", "--threads",
            str(threads), "--no-progress", "--synthetic-train", str(train_images),
            "--synthetic-valid", str(valid_images), *extra]


def probe(cfg: Path, out: Path, extra: list[str], threads: int) -> tuple[float, int]:
    """(mean seconds per iteration, batch) of the run's settings, on a warm image cache."""
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(train_args(cfg, out / "probe", extra, threads, 16, 1) +
                             ["--max-batches", str(PROBE_ITERATIONS), "--anchors", "cfg",
                              "--map-every", str(10 ** 9), "--save-every", str(10 ** 9)])
    trainer = Trainer(train_cli.config_from_args(args))
    trainer.run()
    seconds = trainer.history["seconds"][2:]  # the first two fill the image cache
    return sum(seconds) / len(seconds), trainer.batch


def seconds_per_image() -> float:
    """Time to generate one 256 px synthetic image (each is made once, then cached)."""
    start = time.perf_counter()
    for index in range(8):
        make_image(0, 2, index)
    return (time.perf_counter() - start) / 8


def map_bench(args: argparse.Namespace, extra: list[str]) -> int:
    import torch
    torch.set_num_threads(args.threads)
    cfg = args.cfg or REPO / "cfg" / "csppeleenet-efm.cfg"
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.time()
    step, batch = probe(cfg, args.out, extra, args.threads)
    per_image = seconds_per_image()
    left = args.minutes * 60 - (time.time() - start) - 20  # start-up, k-means, final saves
    generate = (args.train_images + args.valid_images) * per_image
    evaluate = 5 * args.valid_images * step / batch  # five passes, forward only: generous
    iterations = max(10, int((left - generate - evaluate) / (step * MARGIN)))
    print(f"bench: {cfg.name}: {step * 1000:.0f} ms per iteration of {batch} images -> "
          f"max_batches {iterations} in {left / 60:.1f} min", flush=True)

    run_dir = args.out / "run"
    t0 = time.time()
    code = train_cli.main(train_args(cfg, run_dir, extra, args.threads, args.train_images,
                                     args.valid_images) +
                          ["--max-batches", str(iterations), "--map-every",
                           str(max(1, iterations // 4)),
                           "--time-limit", str(max(0.5, (args.minutes * 60 -
                                                          (t0 - start)) / 60 - 0.3))])
    minutes = (time.time() - t0) / 60
    if code != 0 or not (run_dir / "last.pt").is_file():
        print(f"bench: darkcsp train failed (exit code {code})", file=sys.stderr)
        return code or 1
    ckpt = read_train_checkpoint(run_dir / "last.pt")  # weights_only: plain data and tensors
    maps = ckpt["history"]["map"]
    seen = ckpt["seen"]
    train_seconds = sum(ckpt["history"]["seconds"])
    summary = {"cfg": str(cfg), "train_args": extra, "iterations": ckpt["iteration"],
               "max_batches": iterations, "seen": seen,
               "train_minutes": round(minutes, 2),
               "total_minutes": round((time.time() - start) / 60, 2),
               "train_images_per_second": round(seen / max(train_seconds, 1e-9), 2),
               "overall_images_per_second": round(seen / max(minutes * 60, 1e-9), 2),
               "probe_images_per_second": round(batch / step, 2),
               "map50_by_iteration": [[i, round(m, 4)] for i, m in maps],
               "map50": maps[-1][1] if maps else None,
               "best_map50": ckpt["best_map"] if maps else None,
               "valid_images": args.valid_images, "exit_code": code}
    (args.out / "bench.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return code


# -- Darknet mode -----------------------------------------------------------------------------

# printf("\n %d: %f, %f avg loss, %f rate, %lf seconds, %d images, %f hours left\n") in
# train_detector (src/detector.c), fflush(stdout) after it; "Loaded: %lf seconds" before it
DARKNET_ITERATION = re.compile(r"^\s*(\d+):\s*([^,\s]+),\s*([^,\s]+) avg loss,\s*([^,\s]+) rate,"
                               r"\s*([^,\s]+) seconds,\s*(\d+) images")
DARKNET_LOADED = re.compile(r"^\s*Loaded:\s*([0-9.eE+-]+) seconds")
DARKCSP_SUMMARY = re.compile(r"([0-9.]+) images/s \(wall clock, (\d+)% waiting for data\)")
HEADS = ("yolo", "Gaussian_yolo", "region")


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, int]:
    """(the .data, the training cfg both tools read, the class count)."""
    from darkcsp.config.writer import format_cfg
    from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
    from darkcsp.export.darknet import lowered_cfg_text
    from darkcsp.train.settings import cfg_sections, set_classes

    spec = SyntheticSpec(train=args.images, valid=0, classes=args.classes, size=256, seed=0)
    data_dir = work / "data"
    stamp = data_dir / "spec.json"
    wanted = json.dumps({"train": spec.train, "classes": spec.classes, "size": spec.size,
                         "seed": spec.seed})
    if not stamp.is_file() or stamp.read_text() != wanted:
        print(f"bench: writing {spec.train} synthetic images ({spec.classes} classes) to "
              f"{data_dir}", flush=True)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        SyntheticShapes(spec).write(data_dir)
        stamp.write_text(wanted)
    classes = args.classes
    (work / "backup").mkdir(exist_ok=True)
    data = work / "bench.data"  # no valid=: neither tool computes mAP
    data.write_text(f"classes = {classes}\ntrain = {(data_dir / 'train.txt').resolve()}\n"
                    f"names = {(data_dir / 'obj.names').resolve()}\n"
                    f"backup = {(work / 'backup').resolve()}\n", encoding="utf-8")

    total = args.warmup + args.iterations
    sections = cfg_sections(str(args.cfg), args.set, batch=args.batch, subdivisions=1,
                            width=args.size, height=args.size, max_batches=total)
    net = sections[0]
    try:
        burn_in = int(float(net.get("burn_in") or 0))
    except ValueError:
        burn_in = 0
    # the whole run inside the burn-in (the cfg's, or at least the run's length): the rate
    # stays tiny, so neither tool diverges from random weights (with burn_in = 30 Darknet's
    # loss went NaN at iteration 18), and the work per iteration is the same
    net.set("burn_in", max(burn_in, total))
    net.set("mosaic", 0)
    if str(net.get("policy") or "steps").strip() == "steps":
        net.set("steps", f"{max(1, int(total * 0.8))},{max(2, int(total * 0.9))}")
        net.set("scales", ".1,.1")
    for section in sections[1:]:
        if section.type in HEADS:
            section.set("random", 0)
    set_classes(sections, classes)
    dialect = work / f"{args.cfg.stem}-source.cfg"
    dialect.write_text(format_cfg(sections), encoding="utf-8")
    cfg = work / f"{args.cfg.stem}.cfg"
    cfg.write_text(lowered_cfg_text(dialect), encoding="utf-8")
    return data, cfg, classes


def steady(times: list[float], warmup: int) -> tuple[int, float]:
    """(iterations, seconds) after the warm-up, from per-iteration seconds."""
    rest = times[warmup:]
    return len(rest), float(sum(rest))


def run_darknet(args: argparse.Namespace, data: Path, cfg: Path, work: Path, tag: str) -> dict:
    folder = work / f"darknet_{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    command = [str(args.darknet), "detector", "train", str(data.resolve()), str(cfg.resolve()),
               "-dont_show"]
    print(f"bench: [{tag}] darknet: OMP_NUM_THREADS={args.threads} {' '.join(command)}",
          flush=True)
    stamps: list[tuple[int, float, float, float, float]] = []  # it, t, loaded, seconds, loss
    loaded = 0.0
    log = folder / "darknet.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as copy:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace",
                                   bufsize=1)
        assert process.stdout is not None
        try:
            for line in process.stdout:
                now = time.perf_counter()
                copy.write(line)
                match = DARKNET_LOADED.match(line)
                if match:
                    loaded = float(match.group(1))
                    continue
                match = DARKNET_ITERATION.match(line)
                if match:
                    stamps.append((int(match.group(1)), now - start, loaded,
                                   float(match.group(5)), _number(match.group(2))))
                    loaded = 0.0
            code = process.wait(timeout=60)
        except BaseException:
            process.kill()
            process.wait()
            raise
    total = time.perf_counter() - start
    if code != 0 or len(stamps) <= args.warmup:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"bench: darknet exited with {code} after {len(stamps)} iterations; "
                         f"the end of {log}:\n" + "\n".join(tail))
    base = stamps[args.warmup - 1][1] if args.warmup else 0.0
    count = len(stamps) - args.warmup
    own = sum(s[2] + s[3] for s in stamps[args.warmup:])
    return {"tool": "Darknet", "precision": "fp32", "round": tag, "iterations": len(stamps),
            "steady_iterations": count, "steady_seconds": stamps[-1][1] - base,
            "own_seconds": own,  # Darknet's "Loaded" + "seconds" over the same iterations
            "process_seconds": total, "batch": args.batch,
            "last_loss": stamps[-1][4], "log": str(log)}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")  # Darknet prints -nan


def run_darkcsp(args: argparse.Namespace, data: Path, cfg: Path, work: Path, precision: str,
                tag: str, extra: list[str]) -> dict:
    out = work / f"darkcsp_{precision}_{tag}"
    command = [sys.executable, "-m", "darkcsp", "train", str(cfg), "--data", str(data),
               "--out", str(out), "--exist-ok", "--threads", str(args.threads), "--precision",
               precision, "--no-progress", "--save-every", str(10 ** 6), "--classes", "cfg",
               "--anchors", "cfg", *(["--workers", str(args.workers)]
                                     if args.workers is not None else []), *extra]
    print(f"bench: [{tag}] darkcsp: {' '.join(command[1:])}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]]
                                                       if env.get("PYTHONPATH") else []))
    log = work / f"darkcsp_{precision}_{tag}.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                               cwd=work)
    total = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if code != 0 or not (out / "last.pt").is_file():
        raise SystemExit(f"bench: darkcsp train exited with {code}; the end of {log}:\n" +
                         "\n".join(text.splitlines()[-15:]))
    ckpt = read_train_checkpoint(out / "last.pt")  # weights_only: plain data and tensors
    seconds = [float(v) for v in ckpt["history"]["seconds"]]
    count, spent = steady(seconds, args.warmup)
    summary = DARKCSP_SUMMARY.search(text)
    resolved = re.search(r"on cpu, (fp32|bf16 autocast|fp16 AMP)", text)
    return {"tool": "darkcsp", "precision": precision,
            "arithmetic": resolved.group(1) if resolved else None, "round": tag,
            "iterations": len(seconds), "steady_iterations": count, "steady_seconds": spent,
            "process_seconds": total, "batch": int(ckpt["settings"]["batch"]),
            "loop_images_per_second": float(summary.group(1)) if summary else None,
            "data_wait": int(summary.group(2)) / 100 if summary else None,
            "last_loss": float(ckpt["history"]["loss"][-1]), "log": str(log)}


def darknet_bench(args: argparse.Namespace, extra: list[str]) -> int:
    darknet = Path(args.darknet)
    if not (darknet.is_file() and os.access(darknet, os.X_OK)):
        print(f"bench: --darknet {args.darknet}: not an executable file\n\n{BUILD_DARKNET}",
              file=sys.stderr)
        return 2
    args.darknet = darknet.resolve()
    args.cfg = args.cfg or REPO / "cfg" / "yolov4-tiny.cfg"
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "auto", "bf16")]
    if bad or not precisions:
        print(f"bench: --precisions {args.precisions!r}: a list of fp32, auto, bf16",
              file=sys.stderr)
        return 2
    work = args.out / "darknet_compare"
    work.mkdir(parents=True, exist_ok=True)
    data, cfg, classes = prepare(args, work)
    print(f"bench: {args.cfg.name} -> {cfg} ({args.size} x {args.size}, batch {args.batch}, "
          f"{classes} classes, {args.warmup} + {args.iterations} iterations, "
          f"{args.threads} threads)", flush=True)

    runs: list[dict] = []
    for number in range(1, args.rounds + 1):
        tag = f"r{number}"
        runs.append(run_darknet(args, data, cfg, work, tag))
        _report_run(runs[-1])
        for precision in precisions:
            runs.append(run_darkcsp(args, data, cfg, work, precision, tag, extra))
            _report_run(runs[-1])

    rows = []
    for tool, precision in [("Darknet", "fp32")] + [("darkcsp", p) for p in precisions]:
        chosen = [r for r in runs if r["tool"] == tool and r["precision"] == precision]
        iterations = sum(r["steady_iterations"] for r in chosen)
        seconds = sum(r["steady_seconds"] for r in chosen)
        process = sum(r["process_seconds"] for r in chosen)
        rows.append({"tool": tool, "precision": precision,
                     "arithmetic": _arithmetic(precision, chosen[0].get("arithmetic")),
                     "s_per_iteration": seconds / iterations,
                     "images_per_second": iterations * args.batch / seconds,
                     "whole_run_images_per_second":
                         sum(r["iterations"] for r in chosen) * args.batch / process})
    reference = rows[0]["images_per_second"]
    lines = [f"{args.cfg.stem} @ {args.size}, batch {args.batch}, {args.threads} threads, "
             f"{args.iterations} iterations after {args.warmup} warm-up x {args.rounds} "
             f"round(s), {args.images} synthetic images, {classes} classes", "",
             "| tool | precision | s/iteration | images/s | ratio vs Darknet | "
             "images/s, whole run |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['tool']} | {row['arithmetic']} | {row['s_per_iteration']:.3f} | "
                     f"{row['images_per_second']:.2f} | "
                     f"{row['images_per_second'] / reference:.2f}x | "
                     f"{row['whole_run_images_per_second']:.2f} |")
    if args.rounds > 1:  # each round's ratios, against the Darknet run just before them
        lines.append("")
        for number in range(1, args.rounds + 1):
            mine = [r for r in runs if r["round"] == f"r{number}"]
            base = mine[0]["steady_iterations"] / mine[0]["steady_seconds"]
            lines.append(f"round {number}: " + ", ".join(
                f"{_arithmetic(r['precision'], r.get('arithmetic'))} "
                f"{r['steady_iterations'] / r['steady_seconds'] / base:.2f}x"
                for r in mine[1:]))
    table = "\n".join(lines)
    print("\n" + table + "\n\nimages/s: over the iterations after the warm-up, by wall clock; "
          "whole run: all iterations over the process's wall time (start-up included).")
    (work / "compare.json").write_text(json.dumps(
        {"cfg": str(args.cfg), "train_cfg": str(cfg), "data": str(data),
         "darknet": str(args.darknet), "threads": args.threads, "size": args.size,
         "batch": args.batch, "warmup": args.warmup, "iterations": args.iterations,
         "rounds": args.rounds, "rows": rows, "runs": runs, "table": table}, indent=2))
    print(f"bench: details in {work / 'compare.json'}")
    return 0


def _arithmetic(precision: str, resolved: str | None) -> str:
    """``auto (bf16 autocast)``: the --precision and what the run used, as darkcsp logs it."""
    if not resolved or resolved == precision:
        return precision
    return f"{precision} ({resolved})"


def _report_run(run: dict) -> None:
    per = run["steady_seconds"] / max(run["steady_iterations"], 1)
    extra = ""
    if run["tool"] == "Darknet":
        extra = (f"; its own Loaded+seconds: "
                 f"{run['own_seconds'] / max(run['steady_iterations'], 1):.3f} s/iteration")
    elif run.get("data_wait") is not None:
        extra = (f"; whole loop {run['loop_images_per_second']:.1f} images/s, "
                 f"{run['data_wait']:.0%} waiting for data")
    loss = run["last_loss"]
    print(f"bench: [{run['round']}] {run['tool']} "
          f"{_arithmetic(run['precision'], run.get('arithmetic'))}: "
          f"{per:.3f} s/iteration, {run['batch'] / per:.2f} images/s over "
          f"{run['steady_iterations']} iterations{extra}; process {run['process_seconds']:.0f} s"
          f"; last loss {loss:.3g}{'' if math.isfinite(loss) else ' (not finite!)'}",
          flush=True)


# -- command line -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, epilog=BUILD_DARKNET,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfg", nargs="?", type=Path, help="default: cfg/csppeleenet-efm.cfg "
                        "(mAP mode), cfg/yolov4-tiny.cfg (--darknet)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (and "
                        "Darknet's OMP_NUM_THREADS)")
    parser.add_argument("--out", type=Path, default=None, help="a new or empty folder "
                        "(default: a new runs/bench_train, bench_train2, ...)")
    parser.add_argument("--exist-ok", action="store_true", help="let --out be a folder "
                        "that already holds files (an earlier bench's are replaced)")
    group = parser.add_argument_group("mAP mode")
    group.add_argument("--minutes", type=float, default=15.0)
    group.add_argument("--train-images", type=int, default=1024)
    group.add_argument("--valid-images", type=int, default=128)
    group = parser.add_argument_group("Darknet mode")
    group.add_argument("--darknet", metavar="PATH", help="a darknet executable you built (see "
                       "below): compare training speed on the same cfg and data")
    group.add_argument("--compare", action="store_true", help="the Darknet comparison (needs "
                       "--darknet; without it, print how to build Darknet)")
    group.add_argument("--size", type=int, default=416, help="network width and height")
    group.add_argument("--batch", type=int, default=8, help="batch (subdivisions=1)")
    group.add_argument("--iterations", type=int, default=25, help="timed iterations per run")
    group.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    group.add_argument("--rounds", type=int, default=1, help="repeat the alternating "
                       "darknet / darkcsp runs")
    group.add_argument("--precisions", default="fp32,auto", help="darkcsp --precision "
                       "values to run, comma-separated")
    group.add_argument("--images", type=int, default=256, help="synthetic training images")
    group.add_argument("--classes", type=int, default=3, help="synthetic shape classes (1..5)")
    group.add_argument("--workers", type=int, help="darkcsp --workers (default: its own)")
    group.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="change the shared training cfg (both tools), e.g. "
                       "--set net.flip=0; repeatable")
    args = parser.parse_args(own)
    try:
        if args.out is None:
            args.out = new_run_dir(REPO / "runs", "bench_train")
        else:
            output_dir(args.out, [args.cfg] if args.cfg else [], exist_ok=args.exist_ok,
                       what="--out")
    except FileRefused as exc:
        parser.error(str(exc))
    if args.darknet is None and args.compare:
        print(BUILD_DARKNET)
        return 2
    if args.darknet is not None:
        for name in ("size", "batch", "iterations", "rounds", "images", "threads"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be >= 1")
        if args.warmup < 1:
            parser.error("--warmup must be >= 1 (the first iteration sets up both tools)")
        return darknet_bench(args, extra)
    return map_bench(args, extra)


if __name__ == "__main__":
    sys.exit(main())
