"""Train a cfg with its own [net] schedule and [yolo] losses, as ``darknet detector train``.

Without --data it trains on the embedded synthetic shapes dataset, and unless given explicitly
a quick CPU run replaces the cfg's COCO schedule (500k iterations of SGD): 800 iterations of
batch 8 at 128 x 128, Adam at learning_rate 0.002, burn_in <= max_batches/10, steps at 80 % and
90 % of max_batches (as Darknet advises for custom training), no mosaic (it halves objects that
are already small at 128), no multi-scale, and the heads' classes and anchors fitted to the
synthetic labels (the classes only without --weights). Measured on a 2-core CPU with
csppeleenet-efm, 800 iterations (about 4 minutes): mAP@0.5 0.87 on the held-out split; with the
cfg's 80-class heads kept, 0.69 with Adam at 0.002, 0.53 at 0.001 and 0.19 with SGD at 0.01
(the cfg's optimizer). Launch with torchrun for multi-process (DDP) training.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from darkcsp.cli import arguments
from darkcsp.errors import DarkcspError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet (or darkcsp dialect) .cfg file")
    parser.add_argument("--data", help=".data (Darknet), .json (COCO) or .yaml (YOLO) file; "
                        "default: the embedded synthetic dataset")
    parser.add_argument("--valid", help="validation set for mAP (list .txt, .data, .json, "
                        ".yaml), overriding the one in --data")
    parser.add_argument("--weights", help="initial .weights (its header's seen resumes the "
                        "schedule unless --clear)")
    parser.add_argument("--cutoff", type=arguments.positive_int, help="load only the first N layers of --weights")
    parser.add_argument("--clear", action="store_true", help="start the schedule at 0 "
                        "whatever --weights says")
    parser.add_argument("--max-batches", type=arguments.positive_int, help="override [net] max_batches")
    parser.add_argument("--batch", type=arguments.positive_int, help="override [net] batch")
    parser.add_argument("--subdivisions", type=arguments.positive_int, help="override [net] subdivisions")
    parser.add_argument("--size", type=arguments.positive_int, help="override [net] width and height")
    parser.add_argument("--burn-in", type=arguments.non_negative_int, help="override [net] burn_in")
    parser.add_argument("--learning-rate", "--lr", type=arguments.positive_float, dest="learning_rate",
                        help="override [net] learning_rate")
    parser.add_argument("--anchors", help="override every [yolo] anchors: 'auto' (k-means "
                        "on the training labels, as calc_anchors, at the network size), "
                        "w,h, w,h, ... in input pixels, or 'cfg' (keep the cfg's; the quick "
                        "synthetic run's default is auto)")
    parser.add_argument("--classes", help="train every [yolo] for this many classes "
                        "(and the filters of the [convolutional] before it, as Darknet's "
                        "recipe): N, 'auto' (the data's class count; the quick synthetic "
                        "run's default) or 'cfg'")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        dest="settings", help="set a cfg option in every [SECTION] (net: "
                        "the [net] section), e.g. --set net.adam=1 --set yolo.random=0; "
                        "repeatable")
    parser.add_argument("--threads", type=arguments.thread_count, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", type=arguments.device, help="cpu, cuda, cuda:N or N (default: cuda if available)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                        help="continue the run of CKPT (default: OUT/last.pt, or the newest "
                        "runs/train/<cfg name>*/last.pt) exactly where it stopped, with its "
                        "own data and settings (only --max-batches, --device, --workers, "
                        "--threads, --time-limit, --precision and progress/AMP flags may change; a resumed "
                        "run keeps its --precision unless given)")
    parser.add_argument("--out", help="output folder (default: a new runs/train/<cfg name>, "
                        "<cfg name>2, ...); it must not hold files unless --exist-ok")
    parser.add_argument("--exist-ok", action="store_true", help="allow an --out folder that "
                        "already holds files (a previous run's files there are replaced; the "
                        "run's inputs never are)")
    parser.add_argument("--workers", type=arguments.worker_count, help="data loader processes (0: load in "
                        "the main process; default: up to 4 on CUDA, the cores beyond two on "
                        "a CPU run)")
    parser.add_argument("--seed", type=arguments.seed, default=0)
    parser.add_argument("--map-every", type=arguments.positive_int, help="mAP@0.5 every N iterations (default: "
                        "every 4 epochs, at least 100, as Darknet's -map)")
    parser.add_argument("--map-images", type=arguments.positive_int, help="evaluate on at most N validation "
                        "images")
    parser.add_argument("--save-every", type=arguments.positive_int, default=100,
                        help="write last.pt and <name>_last.weights every N iterations")
    parser.add_argument("--time-limit", type=arguments.positive_float, metavar="MIN",
                        help="stop (and save) after MIN minutes")
    parser.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP "
                        "(CUDA)")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="training arithmetic: bf16 autocast with fp32 weights and loss "
                        "(the .weights stay fp32), or fp32; auto (default): bf16 on a CPU with "
                        "native bf16 (AVX512-BF16 or AMX), fp32 on other CPUs, AMP on CUDA "
                        "(unless --no-amp); the CPU run uses channels_last either way")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--synthetic-train", type=arguments.image_count, default=1024,
                        help="synthetic training images")
    parser.add_argument("--synthetic-valid", type=arguments.image_count, default=128,
                        help="synthetic held-out images")
    parser.add_argument("--synthetic-classes", type=arguments.shape_classes, default=3, help="1..5 shape classes")
    parser.add_argument("--synthetic-size", type=arguments.synthetic_size, default=256, help="synthetic image size")
    arguments.add_max_memory(parser)


def config_from_args(args: argparse.Namespace):
    """A :class:`TrainConfig` from parsed arguments: :func:`darkcsp.train.run.train_config`
    (quick defaults for synthetic data), the flags passed by their names."""
    from darkcsp.train.run import train_config

    return train_config(
        args.cfg, args.data, valid=args.valid, weights=args.weights, cutoff=args.cutoff,
        clear=args.clear, max_batches=args.max_batches, batch=args.batch,
        subdivisions=args.subdivisions, size=args.size, burn_in=args.burn_in,
        learning_rate=args.learning_rate, anchors=args.anchors, classes=args.classes,
        settings=args.settings, device=args.device, resume=args.resume, out=args.out,
        exist_ok=bool(getattr(args, "exist_ok", False)), workers=args.workers, seed=args.seed,
        map_every=args.map_every, map_images=args.map_images, save_every=args.save_every,
        time_limit=args.time_limit, sync_bn=args.sync_bn,
        amp=False if args.no_amp else None, precision=args.precision, progress=not args.no_progress,
        synthetic_train=args.synthetic_train, synthetic_valid=args.synthetic_valid,
        synthetic_classes=args.synthetic_classes, synthetic_size=args.synthetic_size,
        max_memory=args.max_memory)


def run(args: argparse.Namespace) -> int:
    from darkcsp.train.trainer import Trainer

    logger = logging.getLogger("darkcsp.train")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    trainer = Trainer(config_from_args(args))
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        print("darkcsp train: interrupted; last.pt and the _last.weights were saved",
              file=sys.stderr)
        return 130
    if trainer.is_main:
        best = f"{result.best_map:.4f}" if result.best_map >= 0 else "n/a"
        print(f"iterations {result.iteration}, seen {result.seen}, avg loss "
              f"{result.avg_loss:.4f}, {trainer.metric} {result.last_map:.4f} (best {best}), "
              f"{result.images_per_second:.1f} images/s (wall clock, "
              f"{result.data_wait_fraction:.0%} waiting for data), {result.stopped}")
        weights = sorted((result.out / "backup").glob(f"{trainer.name}_*.weights"))
        print(f"run folder: {result.out}")
        if (result.out / "chart.png").is_file():
            print(f"  chart:   {result.out / 'chart.png'}")
        for path in weights:
            print(f"  weights: {path}")
        print(f"  cfg:     {result.out / (trainer.name + '.cfg')}  (as trained; loads the weights)")
        if trainer.config.data is None and trainer.detector:  # how to look at the result
            s, name = trainer.synthetic, trainer.name
            print(f"evaluate: darkcsp synthetic DIR --train {s.train} --valid {s.valid} "
                  f"--classes {s.classes} --size {s.size} --seed {s.seed} && darkcsp map "
                  f"DIR/obj.data {result.out / (name + '.cfg')} "
                  f"{result.out / 'backup' / (name + '_final.weights')}")
        if result.report.counts:
            print(f"data problems (skipped): {result.report.summary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m darkcsp.cli.train`` (also what torchrun -m runs)."""
    parser = argparse.ArgumentParser(prog="darkcsp train", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DarkcspError as exc:
        print(f"darkcsp train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
