"""``darkcsp map DATA CFG WEIGHTS``: mAP with Darknet's ``detector map`` rules, plus COCO metrics.

Two sets of detections come from one forward pass per image:

* Darknet's numbers (mAP, per-class AP, TP/FP/FN, precision, recall, F1, average IoU) use the
  detections ``darknet detector map`` makes: threshold 0.005, NMS 0.45 with the last detection
  layer's ``nms_kind``/``beta_nms``, letterbox only when ``[net] letter_box=1``;
* COCO's numbers (AP@[.5:.95], AP50, AP75, APs/m/l through pycocotools) use those of
  ``darknet detector valid``: threshold 0.001, NMS 0.6 with the same ``nms_kind``, boxes in
  pixels clipped to the image.

``--det-thresh`` and ``--nms`` replace both passes' values. ``--thresh`` is Darknet's
``-thresh``: the confidence at which TP/FP/FN, precision, recall, F1 and average IoU are counted.
Ground truth is read the Darknet way: ``valid=`` list, ``labels/`` beside ``images/`` (or
``JPEGImages``), ``difficult=`` list when given. ``detector map DATA CFG WEIGHTS`` is accepted as an
alias. The numbers are :func:`darkcsp.evaluate`'s (``darkcsp/evaluate/run.py``); this command
only parses, prints and writes them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from darkcsp.cli import arguments
from darkcsp.evaluate.darknet_map import DarknetMapResult
from darkcsp.evaluate.run import evaluate
from darkcsp.files import check_outputs_distinct, output_dir, output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Darknet .data file (valid=, names=, optional difficult=)")
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help=".weights or darkcsp .pt file")
    parser.add_argument("--points", type=int, default=0, choices=(0, 11, 101),
                        help="AP: 0 = area under the curve (VOC2010+, default), 11 = VOC2007, "
                             "101 = COCO-style recall points (Darknet's -points)")
    parser.add_argument("--iou-thresh", type=arguments.probability, default=0.5,
                        help="IoU a detection needs (strictly above) to match a truth "
                             "(default 0.5)")
    parser.add_argument("--thresh", type=arguments.probability, default=0.25,
                        help="confidence for TP/FP/FN, precision, recall, F1, avg IoU "
                             "(Darknet's -thresh, default 0.25)")
    parser.add_argument("--det-thresh", type=arguments.probability, default=None,
                        help="detection threshold for both passes (default: 0.005 for mAP, "
                             "0.001 for COCO, as Darknet)")
    parser.add_argument("--nms", type=arguments.probability, default=None, metavar="N",
                        help="NMS threshold for both passes (default: 0.45 for mAP, 0.6 for "
                             "COCO, as Darknet; 0 turns NMS off)")
    parser.add_argument("--letterbox", action="store_true",
                        help="letterbox the images even when the cfg has no letter_box=1 "
                             "(Darknet's detector map ignores -letter_box)")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="write the COCO-pass detections as a COCO results JSON")
    parser.add_argument("--metrics-json", metavar="OUT", default=None,
                        help="write the metrics (fractions 0..1) as JSON")
    parser.add_argument("--plots", metavar="DIR", default=None,
                        help="write precision-recall curves (PNG) to DIR")
    parser.add_argument("--no-coco", action="store_true",
                        help="skip the COCO pass and metrics")
    parser.add_argument("--limit", type=arguments.positive_int, default=None, metavar="N",
                        help="evaluate only the first N images of the list")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    arguments.add_precision(parser)
    arguments.add_max_memory(parser)
    arguments.add_exist_ok(parser, "--json, --metrics-json and --plots")


def class_table(result: DarknetMapResult, names: Sequence[str]) -> str:
    """Per-class table: truths, ranked detections, AP, TP/FP at ``--thresh``."""
    width = max([len("name")] + [len(n) for n in names])
    lines = [f"{'id':>4}  {'name':<{width}}  {'truths':>7}  {'dets':>8}  {'AP %':>7}  "
             f"{'TP':>6}  {'FP':>6}"]
    for k, name in enumerate(names):
        lines.append(f"{k:>4}  {name:<{width}}  {int(result.truth_count[k]):>7}  "
                     f"{int(result.detection_count[k]):>8}  {result.ap[k] * 100:>7.2f}  "
                     f"{int(result.tp_per_class[k]):>6}  {int(result.fp_per_class[k]):>6}")
    return "\n".join(lines)


def _check_outputs(args: argparse.Namespace) -> None:
    """--json, --metrics-json (files, no input, not the same file) and --plots (a new or empty
    folder unless --exist-ok), all checked before the evaluation runs."""
    inputs = [args.data, args.cfg, args.weights]
    files = [output_file(path, inputs, flag, exist_ok=args.exist_ok) for flag, path in
             (("--json", args.json), ("--metrics-json", args.metrics_json)) if path]
    check_outputs_distinct(files)
    if args.plots:
        output_dir(args.plots, inputs, exist_ok=args.exist_ok, what="--plots")


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    found = evaluate(args.data, args.cfg, args.weights, max_memory=args.max_memory,
                     thresh=args.thresh,
                     iou_thresh=args.iou_thresh, points=args.points,
                     det_thresh=args.det_thresh, nms=args.nms,
                     letterbox=True if args.letterbox else None, limit=args.limit,
                     coco=not args.no_coco, coco_json=args.json, progress=not args.quiet,
                     backend=arguments.backend_for(args), precision=args.precision,
                     calibration=args.calib)
    result, names, coco = found.result, found.names, found.coco
    if found.missing_labels:
        print(f"warning: {found.missing_labels} of {found.images} images have no label file "
              "(counted as images without objects, as Darknet does)", file=sys.stderr)
    if found.data_report is not None and found.data_report.bad_labels:
        print(f"data problems (skipped): {found.data_report.summary()}", file=sys.stderr)
    print(class_table(result, names))
    print(result.summary(names, per_class=False))
    print(f" mAP over the {int((result.truth_count > 0).sum())} classes with ground truth = "
          f"{result.map_present:.6f}")
    if coco is not None:
        if not found.image_ids_from_names and args.json is not None:
            print("warning: image file names are not unique numbers; the JSON uses image ids "
                  "1..N in list order", file=sys.stderr)
        print(f"\n COCO (thresh {found.coco_pass.thresh:g}, NMS {found.coco_pass.nms:g}): "
              f"AP = {coco['AP']:.4f}, AP50 = {coco['AP50']:.4f}, AP75 = {coco['AP75']:.4f}, "
              f"APs = {coco['APs']:.4f}, APm = {coco['APm']:.4f}, APl = {coco['APl']:.4f}")
        if args.json is not None:
            print(f"wrote {args.json}")
    if args.metrics_json is not None:
        Path(args.metrics_json).write_text(json.dumps(found.metrics, indent=2) + "\n",
                                           encoding="utf-8")
        print(f"wrote {args.metrics_json}")
    if args.plots is not None:
        from darkcsp.evaluate.plots import plot_pr_curves
        written = plot_pr_curves(result, names, args.plots)
        print(f"wrote {len(written)} plots to {args.plots}")
    return 0
