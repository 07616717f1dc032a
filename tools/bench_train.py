"""Benchmark ``darkcsp train`` on the embedded synthetic dataset for at most N minutes.

Reports mAP@0.5 on the held-out synthetic split and the training throughput (images/s).

    .venv/bin/python tools/bench_train.py [CFG] [--minutes 15] [--size 128] [--batch 8]
        [--lr 0.01] [--mosaic 0] [--anchors auto] [--workers 0] [--threads 2]

The default cfg is cfg/csppeleenet-efm.cfg when it exists, else cfg/yolov4-tiny.cfg. The cfg's
layers are kept; only training settings change: [net] width/height/batch (also passed to
``darkcsp train`` as --size/--batch, which otherwise applies its quick 224 px default),
learning_rate (the cfg's 0.00261 is meant for a 500k-iteration run; 0.03 diverges here),
mosaic (off: at 128 px a 4-image mosaic halves already small objects) and the anchors
(``--anchors auto``: calc_anchors k-means on the synthetic labels at the input size). The
schedule is fitted to the time budget: a short probe measures the speed, then max_batches is set
to what fits, burn_in to at most a tenth of it and (policy=steps) the steps to 80 % and 90 % of
it. The fitted cfg is written to OUT/bench.cfg and trained with ``darkcsp train`` (with
--time-limit as a safety net). On 2 cores, loader workers only compete with torch's 2 threads
(128 px: 4.9 images/s with 2 workers, 12.9 with 0).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from darkcsp.config.reader import read_cfg  # noqa: E402
from darkcsp.config.writer import format_cfg  # noqa: E402
from darkcsp.net import parse_net  # noqa: E402
from darkcsp.train.cli import main as train_main  # noqa: E402
from darkcsp.train.synthetic import SyntheticSpec  # noqa: E402
from darkcsp.train.trainer import TrainConfig, Trainer  # noqa: E402


def default_cfg() -> Path:
    target = REPO / "cfg" / "csppeleenet-efm.cfg"
    return target if target.is_file() else REPO / "cfg" / "yolov4-tiny.cfg"


def fitted_cfg(cfg: Path, out: Path, size: int, batch: int, iterations: int,
               lr: float | None = None, mosaic: int | None = None) -> Path:
    """``cfg`` with [net] set for a run of ``iterations`` at ``size`` and ``batch`` (and, when
    given, ``learning_rate`` and ``mosaic``); the layers are left as they are."""
    sections = read_cfg(cfg)
    net = sections[0]
    if lr is not None:
        net.set("learning_rate", lr)
    if mosaic is not None:
        net.set("mosaic", mosaic)
    net.set("width", size)
    net.set("height", size)
    net.set("batch", batch)
    net.set("subdivisions", 1)
    net.set("max_batches", iterations)
    values = parse_net(net)
    net.set("burn_in", min(values.burn_in, max(1, iterations // 10)))
    if values.policy == "steps":
        net.set("steps", [max(2, int(iterations * 0.8)), max(3, int(iterations * 0.9))])
        net.set("scales", [0.1, 0.1])
    path = out / "bench.cfg"
    path.write_text(format_cfg(sections, header=f"fitted from {cfg} by tools/bench_train.py"))
    return path


def probe_speed(cfg: Path, out: Path, size: int, batch: int, workers: int,
                spec: SyntheticSpec, mosaic: int | None = None) -> float:
    """Training images/s over a few iterations (the first, warm-up one left out)."""
    probe = fitted_cfg(cfg, out, size, batch, 1000, mosaic=mosaic)
    trainer = Trainer(TrainConfig(cfg=str(probe), out=str(out / "probe"), max_batches=4,
                                  workers=workers, progress=False, synthetic=spec,
                                  map_every=10 ** 9))
    trainer.run()
    seconds = trainer.history["seconds"][1:]
    return batch * len(seconds) / max(sum(seconds), 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfg", nargs="?", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0,
                        help="loader processes (0: on 2 cores they only steal torch's threads)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=0.01,
                        help="learning_rate for the short run (the cfg's is for 500k iterations)")
    parser.add_argument("--mosaic", type=int, default=0,
                        help="[net] mosaic (at small input sizes mosaic shrinks objects 2x)")
    parser.add_argument("--anchors", default="auto",
                        help="'auto' (calc_anchors on the synthetic labels), 'cfg', or w,h,...")
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--valid-images", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_train")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    cfg = args.cfg or default_cfg()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(train=args.train_images, valid=args.valid_images, size=256, classes=3)

    start = time.time()
    ips = probe_speed(cfg, args.out, args.size, args.batch, args.workers, spec, args.mosaic)
    left = args.minutes * 60 - (time.time() - start)
    eval_reserve = 0.12 * left  # a few mAP passes on the held-out split
    iterations = max(10, int((left - eval_reserve) * ips / args.batch))
    bench = fitted_cfg(cfg, args.out, args.size, args.batch, iterations, args.lr, args.mosaic)
    print(f"bench: {cfg.name} at {args.size}x{args.size}, batch {args.batch}: probe "
          f"{ips:.1f} images/s -> max_batches {iterations} in {left / 60:.1f} min", flush=True)
    t0 = time.time()
    code = train_main([str(bench), "--out", str(args.out / "run"), "--max-batches",
                       str(iterations), "--burn-in", str(min(iterations // 10, 1000)),
                       "--workers", str(args.workers), "--map-every", str(max(1, iterations // 4)),
                       "--time-limit", str(max(0.5, left / 60 - 0.5)), "--no-progress",
                       "--threads", str(args.threads), "--size", str(args.size),
                       "--batch", str(args.batch), "--subdivisions", "1",
                       *(["--anchors", args.anchors] if args.anchors != "cfg" else []),
                       "--synthetic-train", str(args.train_images), "--synthetic-valid",
                       str(args.valid_images)])
    minutes = (time.time() - t0) / 60
    import torch
    ckpt = torch.load(args.out / "run" / "last.pt", map_location="cpu", weights_only=False)
    maps = ckpt["history"]["map"]
    seen = ckpt["seen"]
    train_seconds = sum(ckpt["history"]["seconds"])
    summary = {"cfg": str(cfg), "size": args.size, "batch": args.batch, "lr": args.lr,
               "mosaic": args.mosaic, "anchors": args.anchors, "workers": args.workers,
               "iterations": ckpt["iteration"], "seen": seen, "minutes": round(minutes, 2),
               "train_images_per_second": round(seen / max(train_seconds, 1e-9), 2),
               "overall_images_per_second": round(seen / max(minutes * 60, 1e-9), 2),
               "probe_images_per_second": round(ips, 2),
               "map50": maps[-1][1] if maps else None,
               "best_map50": ckpt["best_map"] if maps else None,
               "valid_images": args.valid_images, "exit_code": code}
    (args.out / "bench.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
