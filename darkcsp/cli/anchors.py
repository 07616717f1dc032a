"""``darkcsp anchors DATA --num N --width W --height H``: anchors by k-means on the training labels.

Darknet's ``detector calc_anchors`` (its spellings ``-num_of_clusters``, ``-width``, ``-height``
are accepted too): every box of the ``train=`` list, scaled to the network size, clustered with
the ``1 - IoU`` distance; the anchors come out sorted by area with the mean best IoU, ready to
paste into a ``[yolo]`` section. Darknet seeds its initial centres from the clock; ``--seed``
makes the run repeatable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from darkcsp.evaluate.anchors import calc_anchors
from darkcsp.data.darknet import (DatasetError, label_path, read_data_cfg, read_lines,
                                   read_labels, resolve)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Darknet .data file (train=, classes=)")
    parser.add_argument("--num", "-num_of_clusters", dest="num", type=int, default=9,
                        help="number of anchors (default 9)")
    parser.add_argument("--width", "-width", dest="width", type=int, required=True,
                        help="network input width")
    parser.add_argument("--height", "-height", dest="height", type=int, required=True,
                        help="network input height")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial centres")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="also write the anchors line to FILE (Darknet writes anchors.txt)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_boxes(data_file: str, quiet: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Relative (w, h) of every label in the ``train=`` list, their class ids, and the number
    of "wrong" labels (a coordinate outside (0, 1], which Darknet reports but still uses)."""
    from tqdm import tqdm

    data = read_data_cfg(data_file)
    paths = read_lines(resolve(data.get("train", "data/train.list"), data_file))
    sizes: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    wrong = 0
    for path in tqdm(paths, desc="labels", unit="img", disable=quiet, file=sys.stderr):
        labels = read_labels(resolve(label_path(path), data_file))
        b = labels.boxes
        wrong += int(((b > 1) | (b <= 0)).any(axis=1).sum())
        sizes.append(b[:, 2:4])
        classes.append(labels.classes)
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2), np.float32)
    ids = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    return wh, ids, wrong


def run(args: argparse.Namespace) -> int:
    if args.width <= 0 or args.height <= 0:
        raise DatasetError("set --width and --height to the network input size")
    wh, ids, wrong = load_boxes(args.data, args.quiet)
    if len(wh) < args.num:
        raise DatasetError(f"{len(wh)} boxes in the train list: too few for {args.num} anchors")
    if wrong:
        print(f"warning: {wrong} labels have a coordinate outside (0, 1]", file=sys.stderr)
    data = read_data_cfg(args.data)
    classes = max(int(data.get("classes", "1")), int(ids.max()) + 1 if len(ids) else 0)
    counts = np.bincount(ids[ids >= 0], minlength=classes)
    result = calc_anchors(wh, args.num, args.width, args.height, seed=args.seed)
    print(f" num_of_clusters = {args.num}, width = {args.width}, height = {args.height}")
    print(f" {len(wh)} boxes, {result.iterations} iterations")
    print("counters_per_class = " + ", ".join(str(int(c)) for c in counts))
    print(f" avg IoU = {result.avg_iou * 100:.2f} %")
    line = result.format(args.width)
    print(f"anchors = {line}")
    if args.out is not None:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
