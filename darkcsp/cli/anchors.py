"""``darkcsp anchors DATA --num N --width W --height H``: anchors by k-means on the training labels.

Darknet's ``detector calc_anchors`` (its spellings ``-num_of_clusters``, ``-width``, ``-height``
are accepted too): every box of the ``train=`` list that training uses (the label rows are read
and checked by :func:`darkcsp.data.datasets.load_boxes`, so a row training skips is skipped and
reported here too), scaled to the network size, clustered with
the ``1 - IoU`` distance; the anchors come out sorted by area with the mean best IoU, ready to
paste into a ``[yolo]`` section. Darknet seeds its initial centres from the clock; ``--seed``
makes the run repeatable.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from darkcsp.cli import arguments
from darkcsp.data.darknet import DataError
from darkcsp.data.datasets import load_boxes
from darkcsp.evaluate.anchors import calc_anchors
from darkcsp.files import atomic_write, output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Darknet .data file (train=, classes=)")
    parser.add_argument("--num", "-num_of_clusters", dest="num", type=arguments.anchor_count, default=9,
                        help="number of anchors (default 9)")
    parser.add_argument("--width", "-width", dest="width", type=arguments.positive_int, required=True,
                        help="network input width")
    parser.add_argument("--height", "-height", dest="height", type=arguments.positive_int, required=True,
                        help="network input height")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed of the initial centres")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="also write the anchors line to FILE (Darknet writes anchors.txt)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    arguments.add_exist_ok(parser, "--out")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:  # checked before any work: never the .data file itself
        output_file(args.out, [args.data], "--out", exist_ok=args.exist_ok)
    wh, ids, classes, report = load_boxes(args.data, args.quiet)
    if report.counts:
        print(f"data problems (skipped): {report.summary()}", file=sys.stderr)
    if len(wh) < args.num:
        raise DataError(f"{len(wh)} boxes in the train list: too few for {args.num} anchors")
    counts = np.bincount(ids, minlength=classes)
    result = calc_anchors(wh, args.num, args.width, args.height, seed=args.seed)
    print(f" num_of_clusters = {args.num}, width = {args.width}, height = {args.height}")
    print(f" {len(wh)} boxes, {result.iterations} iterations")
    print("counters_per_class = " + ", ".join(str(int(c)) for c in counts))
    print(f" avg IoU = {result.avg_iou * 100:.2f} %")
    line = result.format(args.width)
    print(f"anchors = {line}")
    if args.out is not None:
        atomic_write(args.out, (line + "\n").encode("utf-8"))
        print(f"wrote {args.out}")
    return 0
