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
alias.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from darkcsp.checkpoint import load_model
from darkcsp.errors import DarkcspError
from darkcsp.evaluate.darknet_map import (DARKNET_MAP_NMS, DARKNET_MAP_THRESH, DarknetMap,
                                          DarknetMapResult, ImageDetections, ImageTruth)
from darkcsp.data.darknet import (DatasetError, image_id, label_path, read_data_cfg,
                                   read_labels, read_lines, read_names, resolve)

VALID_THRESH = 0.001  # detector valid (COCO/VOC result files)
VALID_NMS = 0.6


@dataclass
class DetectionPass:
    """How one set of detections is made from the network output."""

    thresh: float
    nms: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Darknet .data file (valid=, names=, optional difficult=)")
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help=".weights or darkcsp .pt file")
    parser.add_argument("--points", type=int, default=0, choices=(0, 11, 101),
                        help="AP: 0 = area under the curve (VOC2010+, default), 11 = VOC2007, "
                             "101 = COCO-style recall points (Darknet's -points)")
    parser.add_argument("--iou-thresh", type=float, default=0.5,
                        help="IoU a detection needs (strictly above) to match a truth "
                             "(default 0.5)")
    parser.add_argument("--thresh", type=float, default=0.25,
                        help="confidence for TP/FP/FN, precision, recall, F1, avg IoU "
                             "(Darknet's -thresh, default 0.25)")
    parser.add_argument("--det-thresh", type=float, default=None,
                        help="detection threshold for both passes (default: 0.005 for mAP, "
                             "0.001 for COCO, as Darknet)")
    parser.add_argument("--nms", type=float, default=None, metavar="N",
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
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="evaluate only the first N images of the list")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _ordered_candidates(rows: np.ndarray, pre_nms_last: np.ndarray) -> ImageDetections:
    """Candidates in the order Darknet's loop meets them: after ``do_nms_sort`` its detection
    array is sorted by the LAST class's (pre-suppression) probability, descending (its qsort
    leaves ties unordered; here they keep the decode order). For a one-class model this is
    exactly Darknet's order; it only affects the TP/FP count at ``--thresh``."""
    order = np.argsort(-pre_nms_last, kind="stable")
    rows = rows[order]
    return ImageDetections.from_probs(rows[:, :4], rows[:, 5:])


def _detections(model: Any, outputs: Sequence[Any], width: int, height: int, letterbox: bool,
                settings: DetectionPass, kind: str, beta: float) -> ImageDetections:
    """One image's candidates (relative centre boxes) for one pass."""
    from darkcsp.infer.decode import get_network_boxes
    from darkcsp.infer.nms import nms_sort

    rows = get_network_boxes(model, outputs, width, height, settings.thresh, letterbox)
    last = rows[:, -1].copy()
    rows = nms_sort(rows, settings.nms, kind, beta)
    return _ordered_candidates(rows, last)


def _fraction(value: float) -> float | None:
    """A metric for JSON: pycocotools' -1 (undefined) and nan become null."""
    return None if value < 0 or math.isnan(value) else float(value)


def metrics_dict(result: DarknetMapResult, names: Sequence[str],
                 coco: dict[str, float] | None, images: int) -> dict[str, Any]:
    """The ``--metrics-json`` document (fractions 0..1)."""
    per_class: dict[str, float] = {}
    for k, name in enumerate(names):
        key = name if name not in per_class else f"{name}#{k}"
        per_class[key] = float(result.ap[k])
    out: dict[str, Any] = {
        "mAP": result.map, "mAP_present": result.map_present, "per_class": per_class,
        "precision": result.precision, "recall": result.recall, "f1": result.f1,
        "avg_iou": result.avg_iou, "tp": result.tp, "fp": result.fp, "fn": result.fn,
        "points": result.points, "iou_thresh": result.iou_thresh, "thresh": result.thresh,
        "images": images,
    }
    if coco is not None:
        out["coco"] = {k: _fraction(coco[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    return out


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


def _image_ids(paths: Sequence[str]) -> tuple[list[int], bool]:
    """Darknet's COCO ids (``atoi`` of the file name) when they are unique, else 1..N."""
    ids = [image_id(p) for p in paths]
    if len(set(ids)) == len(ids):
        return ids, True
    return list(range(1, len(paths) + 1)), False


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from darkcsp.infer.decode import detection_heads
    from darkcsp.infer.nms import nms_settings
    from darkcsp.infer.preprocess import prepare

    data = read_data_cfg(args.data)
    names = read_names(resolve(data.get("names", "data/names.list"), args.data))
    valid_list = resolve(data.get("valid", "data/train.txt"), args.data)
    paths = read_lines(valid_list)
    difficult_paths: list[str] | None = None
    if "difficult" in data:
        difficult_paths = read_lines(resolve(data["difficult"], args.data))
        if len(difficult_paths) < len(paths):
            raise DatasetError(f"{data['difficult']}: {len(difficult_paths)} lines, but the "
                               f"valid list has {len(paths)} images")
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        raise DatasetError(f"{valid_list}: no images listed")

    model = load_model(args.cfg, args.weights)
    heads = detection_heads(model)
    classes = heads[-1][1].classes
    if classes != len(names):
        raise DarkcspError(f"{data.get('names')} has {len(names)} names but the last detection "
                           f"layer of {args.cfg} has classes={classes}")
    net = model.net
    letterbox = bool(args.letterbox or net.letter_box)
    if args.letterbox and not net.letter_box:
        warnings.warn("--letterbox: Darknet's detector map would not letterbox this cfg "
                      "(it reads only [net] letter_box)", stacklevel=1)
    kind, beta = nms_settings(model)
    map_pass = DetectionPass(DARKNET_MAP_THRESH if args.det_thresh is None else args.det_thresh,
                             DARKNET_MAP_NMS if args.nms is None else args.nms)
    coco_pass = DetectionPass(VALID_THRESH if args.det_thresh is None else args.det_thresh,
                              VALID_NMS if args.nms is None else args.nms)
    do_coco = not args.no_coco or args.json is not None

    acc = DarknetMap(classes, iou_thresh=args.iou_thresh, thresh=args.thresh,
                     box_format="cxcywh")
    coco_dets: list[ImageDetections] = []
    coco_truths: list[ImageTruth] = []
    sizes: list[tuple[int, int]] = []
    missing = 0
    for index, path in enumerate(tqdm(paths, desc="map", unit="img", disable=args.quiet,
                                      file=sys.stderr)):
        image = resolve(path, args.data)
        x, meta = prepare(str(image), net.width, net.height, letterbox, net.channels)
        with torch.no_grad():
            outputs = model(x[None])
        labels = read_labels(resolve(label_path(path), args.data))
        missing += labels.missing
        if len(labels.classes) and not 0 <= labels.classes.min() <= labels.classes.max() < classes:
            raise DatasetError(f"{label_path(path)}: class ids must be 0..{classes - 1}, found "
                               f"{sorted(set(labels.classes.tolist()))}")
        dif_boxes = dif_classes = None
        if difficult_paths is not None:
            dif = read_labels(resolve(label_path(difficult_paths[index]), args.data))
            dif_boxes, dif_classes = dif.boxes, dif.classes
        truth = ImageTruth(labels.boxes, labels.classes, dif_boxes, dif_classes)
        dets = _detections(model, outputs, meta.orig_w, meta.orig_h, letterbox, map_pass,
                           kind, beta)
        acc.add(dets, truth)
        if do_coco:
            coco_dets.append(dets if coco_pass == map_pass else _detections(
                model, outputs, meta.orig_w, meta.orig_h, letterbox, coco_pass, kind, beta))
            coco_truths.append(truth)
            sizes.append((meta.orig_w, meta.orig_h))
    if missing:
        print(f"warning: {missing} of {len(paths)} images have no label file (counted as "
              "images without objects, as Darknet does)", file=sys.stderr)

    result = acc.result(args.points)
    print(class_table(result, names))
    print(result.summary(names, per_class=False))
    print(f" mAP over the {int((result.truth_count > 0).sum())} classes with ground truth = "
          f"{result.map_present:.6f}")

    coco: dict[str, float] | None = None
    if do_coco:
        from darkcsp.evaluate.coco import DARKNET_COCO_IDS, coco_metrics
        ids, darknet_ids = _image_ids(paths)
        if not darknet_ids and args.json is not None:
            print("warning: image file names are not unique numbers; the JSON uses image ids "
                  "1..N in list order", file=sys.stderr)
        category_ids = (list(DARKNET_COCO_IDS) if data.get("eval") == "coco" and classes == 80
                        else list(range(classes)))
        coco = coco_metrics(coco_dets, coco_truths, classes, box_format="cxcywh",
                            image_sizes=sizes, image_ids=ids, category_ids=category_ids,
                            json_path=args.json, clip=True)
        print(f"\n COCO (thresh {coco_pass.thresh:g}, NMS {coco_pass.nms:g}): "
              f"AP = {coco['AP']:.4f}, AP50 = {coco['AP50']:.4f}, AP75 = {coco['AP75']:.4f}, "
              f"APs = {coco['APs']:.4f}, APm = {coco['APm']:.4f}, APl = {coco['APl']:.4f}")
        if args.json is not None:
            print(f"wrote {args.json}")
    if args.metrics_json is not None:
        Path(args.metrics_json).write_text(
            json.dumps(metrics_dict(result, names, coco, len(paths)), indent=2) + "\n",
            encoding="utf-8")
        print(f"wrote {args.metrics_json}")
    if args.plots is not None:
        from darkcsp.evaluate.plots import plot_pr_curves
        written = plot_pr_curves(result, names, args.plots)
        print(f"wrote {len(written)} plots to {args.plots}")
    return 0
