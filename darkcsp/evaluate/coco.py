"""COCO metrics (AP@[.5:.95], AP50, AP75, APs/m/l) through pycocotools' ``COCOeval``.

Why pycocotools itself rather than a re-implementation: COCO numbers are only comparable when
they come from the reference evaluator, so darkcsp builds the ground-truth and result objects in
memory from the same per-image arrays :mod:`darkcsp.evaluate.darknet_map` takes, and lets
``COCOeval`` do the rest.

Boxes are in any of :data:`~darkcsp.evaluate.darknet_map.BOX_FORMATS`. The small/medium/large
split is defined in pixels, so pass ``image_sizes`` (width, height per image) when the boxes are
relative (0..1, Darknet's layout) and they are scaled to pixels; without it the boxes are taken to
be in pixels already.

Difficult boxes (``ImageTruth.difficult_*``) become ``iscrowd=1`` annotations, which COCOeval
ignores: detections on them count neither as TP nor as FP.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from darkcsp.evaluate.darknet_map import (DetectionsLike, TruthLike, as_detections, as_truth,
                                          to_cxcywh)

# Darknet's class index -> COCO category id (``coco_ids`` in detector.c), for results files
# submitted to the COCO server or evaluated against instances_val2017.json.
DARKNET_COCO_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)

STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _ltwh(boxes: np.ndarray, box_format: str, size: tuple[float, float] | None,
          clip: bool) -> np.ndarray:
    """(N, 4) float64 COCO boxes (left, top, w, h), in pixels when ``size`` is given."""
    c = to_cxcywh(boxes, box_format).astype(np.float64)
    x1, y1 = c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2
    x2, y2 = c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2
    if size is not None:
        w, h = float(size[0]), float(size[1])
        x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        if clip:  # Darknet's print_cocos clips to the image before writing
            x1, y1 = np.maximum(x1, 0), np.maximum(y1, 0)
            x2, y2 = np.minimum(x2, w), np.minimum(y2, h)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def _ids(values: Sequence[int] | None, count: int, start: int) -> list[int]:
    if values is None:
        return list(range(start, start + count))
    if len(values) != count:
        raise ValueError(f"expected {count} ids, got {len(values)}")
    return [int(v) for v in values]


def coco_ground_truth(truths: Sequence[TruthLike], num_classes: int, *,
                      box_format: str = "xyxy",
                      image_sizes: Sequence[tuple[float, float]] | None = None,
                      image_ids: Sequence[int] | None = None,
                      category_ids: Sequence[int] | None = None,
                      file_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A COCO ``instances`` dict (images, annotations, categories) for ``truths``."""
    img_ids = _ids(image_ids, len(truths), 1)
    cat_ids = _ids(category_ids, num_classes, 0)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, value in enumerate(truths):
        gt = as_truth(value)
        size = image_sizes[i] if image_sizes is not None else None
        image: dict[str, Any] = {"id": img_ids[i]}
        if size is not None:
            image["width"], image["height"] = int(size[0]), int(size[1])
        if file_names is not None:
            image["file_name"] = str(file_names[i])
        images.append(image)
        for boxes, labels, crowd in ((gt.boxes, gt.labels, 0),
                                     (gt.difficult_boxes, gt.difficult_labels, 1)):
            for box, label in zip(_ltwh(boxes, box_format, size, clip=False), labels):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": img_ids[i],
                    "category_id": cat_ids[int(label)], "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]), "iscrowd": crowd})
    categories = [{"id": c, "name": str(c)} for c in cat_ids]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(detections: Sequence[DetectionsLike], num_classes: int, *,
                    box_format: str = "xyxy",
                    image_sizes: Sequence[tuple[float, float]] | None = None,
                    image_ids: Sequence[int] | None = None,
                    category_ids: Sequence[int] | None = None,
                    clip: bool = True) -> list[dict[str, Any]]:
    """COCO results records ``{image_id, category_id, bbox, score}``, one per candidate with
    score > 0 (Darknet's ``detector valid`` writes ``prob > 0``). With ``image_sizes``, boxes are
    scaled to pixels and, when ``clip``, clipped to the image as Darknet's ``print_cocos`` does."""
    img_ids = _ids(image_ids, len(detections), 1)
    cat_ids = _ids(category_ids, num_classes, 0)
    records: list[dict[str, Any]] = []
    for i, value in enumerate(detections):
        dets = as_detections(value)
        size = image_sizes[i] if image_sizes is not None else None
        boxes = _ltwh(dets.boxes, box_format, size, clip)
        for box, score, label in zip(boxes, dets.scores, dets.labels):
            if score > 0:
                records.append({"image_id": img_ids[i], "category_id": cat_ids[int(label)],
                                "bbox": [float(v) for v in box], "score": float(score)})
    return records


def write_coco_json(records: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write results records as a COCO results JSON file (a list), numbers rounded to six
    decimals as Darknet's ``%f`` writes them."""
    rounded = [{**r, "bbox": [round(v, 6) for v in r["bbox"]], "score": round(r["score"], 6)}
               for r in records]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rounded, f)


def coco_eval(ground_truth: dict[str, Any], records: list[dict[str, Any]],
              verbose: bool = False) -> dict[str, float]:
    """Run ``COCOeval`` (bbox) on an in-memory ground-truth dict and results records.

    Returns the 12 summary numbers by name (:data:`STAT_NAMES`); pycocotools' ``-1`` (no ground
    truth in that area range) is kept as ``-1``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink: contextlib.AbstractContextManager[Any] = (
        contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()))
    with sink:
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        if records:
            dt = gt.loadRes(records)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": list(ground_truth["images"]), "annotations": [],
                          "categories": list(ground_truth["categories"])}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}


def coco_metrics(detections: Sequence[DetectionsLike], truths: Sequence[TruthLike],
                 num_classes: int, *, box_format: str = "xyxy",
                 image_sizes: Sequence[tuple[float, float]] | None = None,
                 image_ids: Sequence[int] | None = None,
                 category_ids: Sequence[int] | None = None,
                 json_path: str | os.PathLike | None = None, clip: bool = True,
                 verbose: bool = False) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl (and the AR numbers) for per-image arrays.

    ``json_path``, when given, receives the detections as a COCO results file.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists but {len(truths)} truth lists")
    ground_truth = coco_ground_truth(truths, num_classes, box_format=box_format,
                                     image_sizes=image_sizes, image_ids=image_ids,
                                     category_ids=category_ids)
    records = coco_detections(detections, num_classes, box_format=box_format,
                              image_sizes=image_sizes, image_ids=image_ids,
                              category_ids=category_ids, clip=clip)
    if json_path is not None:
        write_coco_json(records, json_path)
    return coco_eval(ground_truth, records, verbose=verbose)
