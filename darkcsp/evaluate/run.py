"""Darknet's ``detector map`` on a model: the library behind ``darkcsp map`` and training's mAP.

One code path: every image goes through :meth:`MapEvaluation.add` (Darknet's pre-processing,
one forward, :func:`map_candidates` = ``get_network_boxes`` + NMS + Darknet's candidate order,
then :class:`~darkcsp.evaluate.darknet_map.DarknetMap`). :func:`evaluate` feeds it the images of
a ``.data`` file's ``valid=`` list (what ``darkcsp map`` prints), :func:`evaluate_source` the
images of a training :class:`~darkcsp.data.datasets.DetectionSource` (the periodic mAP of
``darkcsp train``).

Two sets of detections come from one forward pass per image:

* Darknet's numbers (mAP, per-class AP, TP/FP/FN, precision, recall, F1, average IoU) use the
  detections ``darknet detector map`` makes: threshold 0.005, NMS 0.45 with the last detection
  layer's ``nms_kind``/``beta_nms``, letterbox only when ``[net] letter_box=1``;
* COCO's numbers (AP@[.5:.95], AP50, AP75, APs/m/l through pycocotools) use those of
  ``darknet detector valid``: threshold 0.001, NMS 0.6 with the same ``nms_kind``, boxes in
  pixels clipped to the image.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.checkpoint import load_model
from darkcsp.data.darknet import (DataReport, DatasetError, image_id, label_path,
                                  read_data_cfg, read_labels, read_list, read_names, resolve)
from darkcsp.errors import DarkcspError
from darkcsp.evaluate.darknet_map import (DARKNET_MAP_NMS, DARKNET_MAP_THRESH, DarknetMap,
                                          DarknetMapResult, ImageDetections, ImageTruth,
                                          nms_sort_order)
from darkcsp.infer.backends import Backend, ModuleBackend, make_backend
from darkcsp.infer.decode import detection_heads, get_network_boxes
from darkcsp.infer.detector import rgb_to_network_image
from darkcsp.infer.nms import nms_settings, nms_sort
from darkcsp.infer.precision import check_precision
from darkcsp.infer.preprocess import ImageLike, ImageMeta, prepare

VALID_THRESH = 0.001  # detector valid (COCO/VOC result files)
VALID_NMS = 0.6


@dataclass(frozen=True)
class DetectionPass:
    """How one set of detections is made from the network output."""

    thresh: float
    nms: float


MAP_PASS = DetectionPass(DARKNET_MAP_THRESH, DARKNET_MAP_NMS)  # detector map
COCO_PASS = DetectionPass(VALID_THRESH, VALID_NMS)  # detector valid


def map_candidates(model: Any, outputs: Sequence[Any], meta: ImageMeta,
                   settings: DetectionPass = MAP_PASS,
                   nms_kind: tuple[str, float] | None = None,
                   classes: int | None = None) -> ImageDetections:
    """One image's candidates (relative centre boxes) from its head outputs: Darknet's
    ``get_network_boxes`` at ``settings.thresh``, then :func:`nms_candidates` (NMS at
    ``settings.nms`` with ``nms_kind`` ((kind, beta); default the model's last head's), in the
    order Darknet's loop meets them); only the first ``classes`` classes when given (default:
    all of the model's)."""
    kind, beta = nms_kind if nms_kind is not None else nms_settings(model)
    rows = get_network_boxes(model, outputs, meta.orig_w, meta.orig_h, settings.thresh,
                             meta.letterbox)
    return nms_candidates(rows, settings.nms, kind, beta, classes)


def nms_candidates(rows: np.ndarray, nms: float, kind: str = "default", beta: float = 0.6,
                   classes: int | None = None) -> ImageDetections:
    """Candidates from one image's ``get_network_boxes`` rows ``[x, y, w, h, obj, probs..]``
    as ``validate_detector_map`` walks them.

    NMS zeroes suppressed class probabilities, and it also reorders Darknet's array in place
    (:func:`~darkcsp.evaluate.darknet_map.nms_sort_order`: by the last class's pre-suppression
    probability, ties by the class before it, ... then by decode order); Darknet then walks
    box by box, class by class, every probability > 0. The order only decides the TP/FP count
    at ``--thresh``, never the mAP. Without NMS (``nms <= 0``) the decode order stays."""
    rows = np.asarray(rows, dtype=np.float32)
    if nms > 0:
        order = nms_sort_order(rows[:, 4], rows[:, 5:])
        rows = nms_sort(rows, nms, kind, beta)[order]
    probs = rows[:, 5:] if classes is None else rows[:, 5:5 + classes]
    return ImageDetections.from_probs(rows[:, :4], probs)


Forward = Callable[[Any], Sequence[Any]]


class MapEvaluation:
    """Darknet's ``detector map`` of ``model``, one image at a time (:meth:`add`).

    ``forward`` runs the network on a (1, C, H, W) batch (default: the module as it is,
    :class:`~darkcsp.infer.backends.ModuleBackend`); ``letterbox=None`` follows ``[net]
    letter_box``; ``coco_pass`` also keeps that pass's detections for COCO metrics;
    ``classes``: the mean is over the first ``classes`` classes (default, as Darknet: all of
    the last detection layer's).
    """

    def __init__(self, model: Any, forward: Forward | None = None, *,
                 letterbox: bool | None = None, iou_thresh: float = 0.5, thresh: float = 0.25,
                 map_pass: DetectionPass = MAP_PASS, coco_pass: DetectionPass | None = None,
                 classes: int | None = None) -> None:
        self.model = model
        self.forward = forward if forward is not None else ModuleBackend(model).forward
        self.classes = detection_heads(model)[-1][1].classes if classes is None else classes
        self.letterbox = bool(model.net.letter_box) if letterbox is None else bool(letterbox)
        self.nms_kind = nms_settings(model)
        self.map_pass, self.coco_pass = map_pass, coco_pass
        self.accumulator = DarknetMap(self.classes, iou_thresh=iou_thresh, thresh=thresh,
                                      box_format="cxcywh")
        self.coco_detections: list[ImageDetections] = []
        self.coco_truths: list[ImageTruth] = []
        self.sizes: list[tuple[int, int]] = []

    def add(self, image: ImageLike, truth: ImageTruth) -> ImageDetections:
        """Detect on ``image`` (a path read like Darknet, or an RGB array with the network's
        channels, uint8 or float 0..1) and score it against ``truth`` (relative centre
        boxes); returns the mAP pass's candidates."""
        net = self.model.net
        x, meta = prepare(image, int(net.width), int(net.height), self.letterbox,
                          int(net.channels))
        outputs = self.forward(x[None])
        found = map_candidates(self.model, outputs, meta, self.map_pass, self.nms_kind,
                               self.classes)
        self.accumulator.add(found, truth)
        if self.coco_pass is not None:
            self.coco_detections.append(found if self.coco_pass == self.map_pass else
                                        map_candidates(self.model, outputs, meta,
                                                       self.coco_pass, self.nms_kind,
                                                       self.classes))
            self.coco_truths.append(truth)
            self.sizes.append((meta.orig_w, meta.orig_h))
        return found

    def result(self, points: int = 0) -> DarknetMapResult:
        return self.accumulator.result(points)


def evaluate_source(model: Any, source: Any, *, classes: int | None = None,
                    limit: int | None = None, iou_thresh: float = 0.5, points: int = 0
                    ) -> DarknetMapResult:
    """Darknet's mAP of ``model`` (used as it is: device, mode, BN) on the images of a
    :class:`~darkcsp.data.datasets.DetectionSource` (uint8 RGB images, label rows ``class, x,
    y, w, h``), first ``limit`` images; images that cannot be decoded are skipped. The same
    numbers as :func:`evaluate` on those images and labels written to disk (``classes``: see
    :class:`MapEvaluation`)."""
    channels = int(model.net.channels)
    evaluation = MapEvaluation(model, iou_thresh=iou_thresh, classes=classes)
    count = len(source) if limit is None else min(limit, len(source))
    for i in range(count):
        image = source.image(i)
        if image is None:
            continue
        labels = np.asarray(source.labels(i), dtype=np.float64).reshape(-1, 5)
        evaluation.add(rgb_to_network_image(image, channels),
                       ImageTruth(labels[:, 1:5], labels[:, 0].astype(np.int64)))
    return evaluation.result(points)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` (``darkcsp map``) computed."""

    result: DarknetMapResult  # Darknet's numbers (detector map)
    names: list[str]
    metrics: dict[str, Any]  # the --metrics-json document (fractions 0..1)
    coco: dict[str, float] | None  # pycocotools' AP, AP50, ... (None without coco=True)
    images: int
    missing_labels: int = 0  # images without a label file (no objects, as Darknet counts)
    coco_pass: DetectionPass = COCO_PASS
    image_ids_from_names: bool = True  # COCO image ids are the file names' numbers
    data_report: DataReport | None = None  # label rows skipped (the same rows training skips)

    @property
    def map(self) -> float:
        """Darknet's mAP (the mean over all classes)."""
        return self.result.map


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


def _image_ids(paths: Sequence[str]) -> tuple[list[int], bool]:
    """Darknet's COCO ids (``atoi`` of the file name) when they are unique, else 1..N."""
    ids = [image_id(p) for p in paths]
    if len(set(ids)) == len(ids):
        return ids, True
    return list(range(1, len(paths) + 1)), False


def _forward(backend: str, model: Any, cfg: str | os.PathLike, weights: str | os.PathLike,
             device: Any, precision: str = "fp32",
             calibration: Sequence[str | os.PathLike] | None = None,
             letterbox: bool | None = None) -> Forward:
    """``torch`` in fp32: the loaded module itself (on ``device``); else :func:`make_backend`'s
    (bf16: the torch backend; int8: the onnx backend's quantized, cached model)."""
    if precision == "int8":
        return make_backend(backend, model, cfg, weights, device, precision=precision,
                            calibration=calibration, letterbox=letterbox).forward
    if precision != "fp32":
        return make_backend(backend, model, cfg, weights, device, precision=precision).forward
    if backend == "torch":
        if device is not None:
            model.to(device)
        return ModuleBackend(model).forward
    runner: Backend = make_backend(backend, model, cfg, weights, device)
    return runner.forward


def evaluate(data: str | os.PathLike, cfg: str | os.PathLike, weights: str | os.PathLike, *,
             thresh: float = 0.25, iou_thresh: float = 0.5, points: int = 0,
             det_thresh: float | None = None, nms: float | None = None,
             letterbox: bool | None = None, limit: int | None = None, backend: str = "torch",
             device: Any = None, coco: bool = False, coco_json: str | os.PathLike | None = None,
             progress: bool = True, max_memory: MaxMemory = AUTO, precision: str = "fp32",
             calibration: Sequence[str | os.PathLike] | None = None) -> EvaluationResult:
    """Darknet's ``detector map DATA CFG WEIGHTS`` (and, with ``coco``, COCO metrics): the
    numbers ``darkcsp map`` prints, from the ``valid=`` list of the ``.data`` file.

    ``weights``: ``.weights`` or ``.pt``. ``thresh``: Darknet's ``-thresh``, the confidence
    for TP/FP/FN, precision, recall, F1 and average IoU. ``iou_thresh``: a match needs IoU
    strictly above it. ``points``: 0 (area under the curve), 11 or 101. ``det_thresh``/``nms``
    replace both passes' detection threshold/NMS (default 0.005/0.45 for mAP, 0.001/0.6 for
    COCO, as Darknet). ``letterbox=None`` follows ``[net] letter_box`` (all Darknet's map
    reads). ``limit``: the first N images. ``backend``: ``"torch"`` (the module as loaded, BN
    folded), ``"opencv"`` or ``"onnx"`` (:func:`darkcsp.infer.backends.make_backend`).
    ``precision``: ``"fp32"``, ``"bf16"`` (torch backend, CPUs with native bf16) or ``"int8"``
    (onnx backend, calibrated on ``calibration`` image paths or the synthetic default set).
    ``coco_json``: also write the COCO-pass detections as a COCO results file (implies
    ``coco``)."""
    from tqdm import tqdm

    check_precision(precision, backend)  # before any work
    data = os.fspath(data)
    spec = read_data_cfg(data)
    names = read_names(resolve(spec.get("names", "data/names.list"), data))
    valid_list = resolve(spec.get("valid", "data/train.txt"), data)
    paths = read_list(valid_list, data)
    difficult: list[str] | None = None
    if "difficult" in spec:
        difficult = read_list(resolve(spec["difficult"], data), data)
        if len(difficult) < len(paths):
            raise DatasetError(f"{spec['difficult']}: {len(difficult)} lines, but the valid "
                               f"list has {len(paths)} images")
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise DatasetError(f"{valid_list}: no images listed")

    model = load_model(cfg, weights, max_memory=max_memory)
    classes = detection_heads(model)[-1][1].classes
    if classes != len(names):
        raise DarkcspError(f"{spec.get('names')} has {len(names)} names but the last detection "
                           f"layer of {os.fspath(cfg)} has classes={classes}")
    if letterbox is not None and bool(letterbox) != bool(model.net.letter_box):
        warnings.warn(f"letterbox={bool(letterbox)}: Darknet's detector map would "
                      f"{'not ' if letterbox else ''}letterbox this cfg (it reads only [net] "
                      "letter_box)", stacklevel=2)
    map_pass = DetectionPass(MAP_PASS.thresh if det_thresh is None else det_thresh,
                             MAP_PASS.nms if nms is None else nms)
    coco_pass = DetectionPass(COCO_PASS.thresh if det_thresh is None else det_thresh,
                              COCO_PASS.nms if nms is None else nms)
    do_coco = coco or coco_json is not None
    evaluation = MapEvaluation(model, _forward(backend, model, cfg, weights, device, precision,
                                                calibration, letterbox),
                               letterbox=letterbox, iou_thresh=iou_thresh, thresh=thresh,
                               map_pass=map_pass, coco_pass=coco_pass if do_coco else None)
    report = DataReport()  # label rows read and checked as training reads them
    missing = 0
    for index, path in enumerate(tqdm(paths, desc="map", unit="img", disable=not progress,
                                      file=sys.stderr)):
        labels = read_labels(label_path(path), classes, report)
        missing += labels.missing
        dif_boxes = dif_classes = None
        if difficult is not None:
            dif = read_labels(label_path(difficult[index]), classes, report)
            dif_boxes, dif_classes = dif.boxes, dif.classes
        evaluation.add(path,
                       ImageTruth(labels.boxes, labels.classes, dif_boxes, dif_classes))
    result = evaluation.result(points)

    coco_metrics_: dict[str, float] | None = None
    darknet_ids = True
    if do_coco:
        from darkcsp.evaluate.coco import DARKNET_COCO_IDS, coco_metrics
        ids, darknet_ids = _image_ids(paths)
        category_ids = (list(DARKNET_COCO_IDS) if spec.get("eval") == "coco" and classes == 80
                        else list(range(classes)))
        coco_metrics_ = coco_metrics(
            evaluation.coco_detections, evaluation.coco_truths, classes, box_format="cxcywh",
            image_sizes=evaluation.sizes, image_ids=ids, category_ids=category_ids,
            json_path=None if coco_json is None else os.fspath(coco_json), clip=True)
    return EvaluationResult(result, list(names),
                            metrics_dict(result, names, coco_metrics_, len(paths)),
                            coco_metrics_, len(paths), missing, coco_pass, darknet_ids, report)


__all__ = ["DetectionPass", "MAP_PASS", "COCO_PASS", "VALID_THRESH", "VALID_NMS",
           "map_candidates", "nms_candidates", "MapEvaluation", "evaluate_source",
           "EvaluationResult", "metrics_dict", "evaluate"]
