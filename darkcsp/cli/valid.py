"""``darkcsp valid DATA CFG WEIGHTS``: top-1 / top-k accuracy of a classifier, as Darknet's
``classifier valid`` (``validate_classifier_single``) measures it.

From the ``.data`` file: ``valid=`` (image list), ``labels=`` (class names), ``classes=``
(default 2) and ``top=`` (k, default 1, at most ``classes``). An image's class is the first label
that occurs as a substring of its path (none: the image counts as wrong). Each image is resized
so that its shorter side equals the network width (integer arithmetic, Darknet's bilinear
``resize_image``), centre-cropped to the network size (edge pixels repeat where the crop leaves
the image), and the first ``classes`` outputs are ranked (ties keep the lower index).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from darkcsp.checkpoint import load_model
from darkcsp.cli import arguments
from darkcsp.data.darknet import (DataError, data_classes, data_int, read_data_cfg,
                                  read_lines, read_names, resolve)
from darkcsp.evaluate.classifier import (class_of, crop_image, resize_min, top_k,
                                         trunc_div)
from darkcsp.files import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Darknet .data file (valid=, labels=, classes=, top=)")
    parser.add_argument("cfg", help="Darknet classifier .cfg file")
    parser.add_argument("weights", help=".weights or darkcsp .pt file")
    parser.add_argument("--top", type=arguments.positive_int, default=None, help="k of top-k (default: top= of "
                                                              "the .data file, else 1)")
    parser.add_argument("--limit", type=arguments.positive_int, default=None, metavar="N",
                        help="evaluate only the first N images")
    parser.add_argument("--metrics-json", metavar="OUT", default=None,
                        help="write {top1, topk, k, images} (fractions) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    arguments.add_max_memory(parser)
    arguments.add_exist_ok(parser, "--metrics-json")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from darkcsp.infer.preprocess import load_image

    if args.metrics_json is not None:  # before the work, never onto an input
        output_file(args.metrics_json, [args.data, args.cfg, args.weights], "--metrics-json",
                    exist_ok=args.exist_ok)
    data = read_data_cfg(args.data)
    labels = read_names(resolve(data.get("labels", "data/labels.list"), args.data))
    valid_list = resolve(data.get("valid", "data/train.list"), args.data)
    paths = read_lines(valid_list)  # as listed: a class is found in the path as written
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        raise DataError("the valid list is empty")
    classes = data_classes(data, args.data, 2)
    k = min(args.top if args.top is not None else data_int(data, "top", args.data, 1), classes)
    model = load_model(args.cfg, args.weights, max_memory=args.max_memory)
    net = model.net
    hits1 = hitsk = 0
    for path in tqdm(paths, desc="valid", unit="img", disable=args.quiet, file=sys.stderr):
        truth = class_of(path, labels)
        img = resize_min(load_image(resolve(path, args.data, valid_list.parent), 3), net.width)
        crop = crop_image(img, trunc_div(img.shape[1] - net.width, 2),
                          trunc_div(img.shape[0] - net.height, 2), net.width, net.height)
        # Darknet hands the 3-plane image to the net, which reads its first `channels` planes
        x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)[: net.channels]))
        with torch.no_grad():
            pred = model(x[None])[-1].reshape(-1).numpy()
        best = top_k(pred[:classes], k)
        hits1 += int(best[0] == truth)
        hitsk += int(truth in best.tolist())
    top1, topk = hits1 / len(paths), hitsk / len(paths)
    print(f"{len(paths)} images: top 1: {top1:f}, top {k}: {topk:f}")
    if args.metrics_json is not None:
        Path(args.metrics_json).write_text(json.dumps(
            {"top1": top1, "topk": topk, "k": k, "images": len(paths)}, indent=2) + "\n",
            encoding="utf-8")
        print(f"wrote {args.metrics_json}")
    return 0
