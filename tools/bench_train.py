"""Benchmark ``darkcsp train CFG`` on the embedded synthetic dataset for at most N minutes.

Reports mAP@0.5 on the held-out synthetic split and the training throughput (images/s).

    .venv/bin/python tools/bench_train.py [CFG] [--minutes 15] [--threads 2] [-- TRAIN ARGS]

The default cfg is cfg/csppeleenet-efm.cfg. The run is the user's command, ``darkcsp train CFG``
with no --data, so it gets the quick synthetic-run defaults (128 px, batch 8, Adam at 0.001, no
mosaic or multi-scale, anchors from the labels; see darkcsp/train/cli.py). Only the length
changes: max_batches is fitted to the time budget, so that the schedule (burn-in, the steps at
80 % and 90 % of max_batches) runs to its end. To fit it, a probe trains 14 iterations on 16
cached images and takes the mean iteration time (plus 15 %); the budget then pays for generating
the synthetic images once, the mAP passes (every quarter of the run) and the iterations.
``--time-limit`` stays on as a safety net. Anything after ``--`` goes to ``darkcsp train``
unchanged (e.g. ``-- --lr 0.001`` or ``-- --set net.adam=0``).

Measured on a 2-core VM (2026-11-28): max_batches 2996, all run in 13.5 minutes, 30.7
training images/s, held-out mAP@0.5 0.419 / 0.808 / 0.959 / 0.989 at each quarter;
``darkcsp map`` on the same images (``darkcsp synthetic DIR``) gives 0.988757 and COCO AP 0.669.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darkcsp.cli import train as train_cli  # noqa: E402
from darkcsp.data.synthetic import make_image  # noqa: E402
from darkcsp.train.trainer import Trainer  # noqa: E402

PROBE_ITERATIONS = 14
MARGIN = 1.15  # the long run's iterations vary more (truth matching, saves): keep its end


def train_args(cfg: Path, out: Path, extra: list[str], threads: int, train_images: int,
               valid_images: int) -> list[str]:
    return [str(cfg), "--out", str(out), "--workers", "0", "--threads", str(threads),
            "--no-progress", "--synthetic-train", str(train_images), "--synthetic-valid",
            str(valid_images), *extra]


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfg", nargs="?", type=Path, default=REPO / "cfg" / "csppeleenet-efm.cfg")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--valid-images", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_train")
    args = parser.parse_args(own)
    import torch
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.time()
    step, batch = probe(args.cfg, args.out, extra, args.threads)
    per_image = seconds_per_image()
    left = args.minutes * 60 - (time.time() - start) - 20  # start-up, k-means, final saves
    generate = (args.train_images + args.valid_images) * per_image
    evaluate = 5 * args.valid_images * step / batch  # five passes, forward only: generous
    iterations = max(10, int((left - generate - evaluate) / (step * MARGIN)))
    print(f"bench: {args.cfg.name}: {step * 1000:.0f} ms per iteration of {batch} images -> "
          f"max_batches {iterations} in {left / 60:.1f} min", flush=True)

    run_dir = args.out / "run"
    t0 = time.time()
    code = train_cli.main(train_args(args.cfg, run_dir, extra, args.threads, args.train_images,
                                     args.valid_images) +
                          ["--max-batches", str(iterations), "--map-every",
                           str(max(1, iterations // 4)),
                           "--time-limit", str(max(0.5, (args.minutes * 60 -
                                                          (t0 - start)) / 60 - 0.3))])
    minutes = (time.time() - t0) / 60
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    maps = ckpt["history"]["map"]
    seen = ckpt["seen"]
    train_seconds = sum(ckpt["history"]["seconds"])
    summary = {"cfg": str(args.cfg), "train_args": extra, "iterations": ckpt["iteration"],
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


if __name__ == "__main__":
    sys.exit(main())
