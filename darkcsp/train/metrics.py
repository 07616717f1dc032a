"""mAP@0.5 on the validation split during training, by Darknet's ``detector map`` rules.

Why a helper here: training needs a cheap, dependency-free number to pick ``best`` weights and
to draw the chart, while ``darkcsp.evaluate`` (the full ``detector map`` report) is developed
separately. The evaluator is pluggable: :class:`~darkcsp.train.trainer.Trainer` takes any
``callable(model, device) -> float``; :func:`darknet_evaluator` adapts ``darkcsp.evaluate``.

Rules kept from Darknet (reference §8.4): input resized with align-corners bilinear (or
letterboxed when ``[net] letter_box=1``), detection threshold 0.005, per-class NMS 0.45 with the
last ``[yolo]``'s ``nms_kind``/``beta_nms``, each candidate matched to the same-class truth of
highest IoU (> 0.5, strict), one global ranking by probability, a claimed truth makes later
candidates false positives, AP as the area under the monotone precision envelope
(``-points 0``), the mean over *all* classes (a class without truth counts as 0).
Not covered: "difficult" boxes, ``-points 11/101``, the F1/IoU report.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from darkcsp.layers.heads import YoloHead
from darkcsp.train.augment import eval_tensor, letterbox_size
from darkcsp.train.loss import box_iou

Evaluator = Callable[[torch.nn.Module, torch.device], float]


def np_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x, y, w, h boxes (Darknet's box_iou, float32)."""
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return box_iou(ta[:, None, :], tb[None, :, :]).numpy()


def _diou_penalty(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """(d^2 / c^2) ** beta of ``box_diou``; an untrained net's huge boxes may overflow."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _diou_penalty_raw(a, b, beta)


def _diou_penalty_raw(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    cw = np.maximum(a[:, None, 0] + a[:, None, 2] / 2, b[None, :, 0] + b[None, :, 2] / 2) - \
        np.minimum(a[:, None, 0] - a[:, None, 2] / 2, b[None, :, 0] - b[None, :, 2] / 2)
    ch = np.maximum(a[:, None, 1] + a[:, None, 3] / 2, b[None, :, 1] + b[None, :, 3] / 2) - \
        np.minimum(a[:, None, 1] - a[:, None, 3] / 2, b[None, :, 1] - b[None, :, 3] / 2)
    c = cw * cw + ch * ch
    d = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c == 0, 0.0, (d / np.where(c == 0, 1, c)) ** beta)


def nms_sort(boxes: np.ndarray, probs: np.ndarray, thresh: float, kind: str = "default",
             beta: float = 0.6) -> np.ndarray:
    """Darknet's ``do_nms_sort``/``diounms_sort`` on (n, 4) boxes and (n, C) probabilities;
    returns the probabilities with suppressed entries zeroed."""
    probs = probs.copy()
    rows = np.flatnonzero((probs > 0).any(axis=1))
    if len(rows) < 2:
        return probs
    suppress = np_box_iou(boxes[rows], boxes[rows])  # once per image, shared by the classes
    if kind in ("greedynms", "diounms"):
        suppress = suppress - _diou_penalty(boxes[rows], boxes[rows],
                                            0.6 if kind == "greedynms" else beta)
    suppress = suppress > thresh
    for k in range(probs.shape[1]):
        local = np.flatnonzero(probs[rows, k] > 0)
        if len(local) < 2:
            continue
        local = local[np.argsort(-probs[rows[local], k], kind="stable")]
        sub = suppress[np.ix_(local, local)]
        alive = np.ones(len(local), dtype=bool)
        for i in range(len(local)):
            if alive[i]:
                alive[i + 1:] &= ~sub[i, i + 1:]
        probs[rows[local[~alive]], k] = 0
    return probs


def decode_yolo(model, outputs: Sequence[torch.Tensor], net_w: int, net_h: int,
                thresh: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: boxes (n, 4) x, y, w, h relative to the network input and probabilities
    (n, C) = obj * class prob (0 unless > thresh); only rows with obj > thresh."""
    heads = [(i, model.layers[i]) for i in model.output_indices
             if isinstance(model.layers[i], YoloHead)]
    per_image: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for (index, head), out in zip(heads, outputs):
        out = out.detach().float().cpu()
        b, _, h, w = out.shape
        a = len(head.anchors)
        y = out.reshape(b, a, head.entries, h, w).permute(0, 1, 3, 4, 2).numpy()
        anchors = np.asarray(head.anchors, dtype=np.float32)
        col = np.arange(w, dtype=np.float32)[None, None, :]
        row = np.arange(h, dtype=np.float32)[None, :, None]
        for n in range(b):
            yi = y[n]
            obj = yi[..., 4]
            keep = obj > thresh
            x = (col + yi[..., 0]) / w
            yy = (row + yi[..., 1]) / h
            with np.errstate(over="ignore", invalid="ignore"):
                bw, bh = _sizes(yi, anchors, head.new_coords, net_w, net_h)
            finite = np.isfinite(bw) & np.isfinite(bh)
            keep &= finite  # an exp overflow is no box (Darknet would keep an inf box)
            boxes = np.stack([x, yy, bw, bh], axis=-1)[keep]
            probs = obj[keep][:, None] * yi[..., 5:][keep]
            probs = np.where(probs > thresh, probs, 0.0)
            if len(per_image) <= n:
                per_image.append([])
            per_image[n].append((boxes, probs))
    return [(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            for parts in per_image]


def _sizes(yi: np.ndarray, anchors: np.ndarray, new_coords: bool, net_w: int,
           net_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Box w, h relative to the network input (``get_yolo_box``)."""
    if new_coords:
        return (yi[..., 2] ** 2 * 4 * anchors[:, 0, None, None] / net_w,
                yi[..., 3] ** 2 * 4 * anchors[:, 1, None, None] / net_h)
    return (np.exp(yi[..., 2]) * anchors[:, 0, None, None] / net_w,
            np.exp(yi[..., 3]) * anchors[:, 1, None, None] / net_h)


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """``-points 0``: walking back from the last rank, delta recall times the running maximum
    precision, plus the area down to recall 0."""
    if len(precision) == 0:
        return 0.0
    last_recall, last_precision = recall[-1], precision[-1]
    ap = 0.0
    for rank in range(len(precision) - 2, -1, -1):
        ap += (last_recall - recall[rank]) * max(last_precision, precision[rank])
        last_recall = recall[rank]
        last_precision = max(last_precision, precision[rank])
    return float(ap + last_recall * last_precision)


def mean_average_precision(detections: Sequence[tuple[np.ndarray, np.ndarray]],
                           truths: Sequence[np.ndarray], classes: int,
                           iou_thresh: float = 0.5) -> tuple[float, np.ndarray]:
    """(mAP, AP per class) for per-image (boxes, probs after NMS) and truth rows
    (class, x, y, w, h), all relative to the image."""
    cand_prob, cand_cls, cand_truth, cand_image = [], [], [], []
    truth_count = np.zeros(classes, dtype=np.int64)
    for n, ((boxes, probs), gt) in enumerate(zip(detections, truths)):
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
        gcls = gt[:, 0].astype(np.int64)
        for c in gcls[(gcls >= 0) & (gcls < classes)]:
            truth_count[c] += 1
        rows, ks = np.nonzero(probs > 0)
        if not len(rows):
            continue
        ious = np_box_iou(boxes[rows].astype(np.float64), gt[:, 1:5]) if len(gt) else \
            np.zeros((len(rows), 0))
        same = ks[:, None] == gcls[None, :]
        ious = np.where(same & (ious > iou_thresh), ious, -1.0)
        best = ious.argmax(axis=1) if len(gt) else np.zeros(len(rows), dtype=np.int64)
        matched = (ious.max(axis=1) > 0) if len(gt) else np.zeros(len(rows), dtype=bool)
        cand_prob.append(probs[rows, ks])
        cand_cls.append(ks)
        cand_truth.append(np.where(matched, best, -1))
        cand_image.append(np.full(len(rows), n))
    ap = np.zeros(classes)
    if not cand_prob:
        return 0.0, ap
    prob = np.concatenate(cand_prob)
    cls = np.concatenate(cand_cls)
    tru = np.concatenate(cand_truth)
    img = np.concatenate(cand_image)
    order = np.argsort(-prob, kind="stable")
    claimed: set[tuple[int, int]] = set()
    tp = np.zeros(len(order), dtype=bool)
    for r, c in enumerate(order):
        if tru[c] >= 0 and (img[c], tru[c]) not in claimed:
            claimed.add((img[c], tru[c]))
            tp[r] = True
    cls_sorted = cls[order]
    for k in range(classes):
        sel = cls_sorted == k
        if not sel.any() or truth_count[k] == 0:
            continue
        tpk = np.cumsum(tp[sel])
        fpk = np.cumsum(~tp[sel])
        ap[k] = average_precision(tpk / (tpk + fpk), tpk / truth_count[k])
    return float(ap.mean()), ap


class MapEvaluator:
    """mAP@0.5 of a model on a :class:`~darkcsp.data.datasets.DetectionSource`."""

    def __init__(self, source, classes: int, batch_size: int = 8, thresh: float = 0.005,
                 nms: float = 0.45, iou_thresh: float = 0.5, max_images: int | None = None
                 ) -> None:
        self.source, self.classes = source, classes
        self.batch_size, self.thresh, self.nms, self.iou_thresh = batch_size, thresh, nms, \
            iou_thresh
        self.count = len(source) if max_images is None else min(max_images, len(source))
        self.last_ap: np.ndarray | None = None

    @torch.no_grad()
    def __call__(self, model, device: torch.device) -> float:
        net = model.net
        net_w, net_h, letter = int(net.width), int(net.height), bool(net.letter_box)
        heads = [model.layers[i] for i in model.output_indices
                 if isinstance(model.layers[i], YoloHead)]
        kind, beta = (heads[-1].nms_kind, heads[-1].beta_nms) if heads else ("default", 0.6)
        was_training = model.training
        model.eval()
        detections, truths = [], []
        try:
            for start in range(0, self.count, self.batch_size):
                images, sizes = [], []
                for i in range(start, min(start + self.batch_size, self.count)):
                    img = self.source.image(i)
                    if img is None:
                        continue
                    images.append(eval_tensor(img, net_w, net_h, letter, int(net.channels)))
                    sizes.append((img.shape[1], img.shape[0]))
                    truths.append(self.source.labels(i))
                if not images:
                    continue
                outputs = model(torch.stack(images).to(device))
                for (boxes, probs), (iw, ih) in zip(
                        decode_yolo(model, outputs, net_w, net_h, self.thresh), sizes):
                    if letter:
                        boxes = _unletterbox(boxes, iw, ih, net_w, net_h)
                    detections.append((boxes, nms_sort(boxes, probs, self.nms, kind, beta)))
        finally:
            model.train(was_training)
        value, self.last_ap = mean_average_precision(detections, truths, self.classes,
                                                     self.iou_thresh)
        return value


def _unletterbox(boxes: np.ndarray, img_w: int, img_h: int, net_w: int,
                 net_h: int) -> np.ndarray:
    """``correct_yolo_boxes`` for a letterboxed input."""
    new_w, new_h = letterbox_size(img_w, img_h, net_w, net_h)
    out = boxes.copy()
    out[:, 0] = (boxes[:, 0] - (net_w - new_w) / 2 / net_w) * net_w / new_w
    out[:, 1] = (boxes[:, 1] - (net_h - new_h) / 2 / net_h) * net_h / new_h
    out[:, 2] *= net_w / new_w
    out[:, 3] *= net_h / new_h
    return out


def darknet_evaluator(source, classes: int, max_images: int | None = None) -> Evaluator:
    """An evaluator built on ``darkcsp.evaluate.darknet_map`` and ``darkcsp.infer`` (the full
    ``detector map`` implementation), imported when called."""
    from darkcsp.evaluate import ImageDetections, ImageTruth, darknet_map
    from darkcsp.infer.decode import get_network_boxes
    from darkcsp.infer.nms import apply_nms

    count = len(source) if max_images is None else min(max_images, len(source))

    @torch.no_grad()
    def evaluate(model, device: torch.device) -> float:
        net = model.net
        was_training = model.training
        model.eval()
        dets, gts = [], []
        try:
            for i in range(count):
                img = source.image(i)
                if img is None:
                    continue
                x = eval_tensor(img, int(net.width), int(net.height), bool(net.letter_box),
                                int(net.channels)).unsqueeze(0).to(device)
                outputs = [o.cpu() for o in model(x)]
                rows = get_network_boxes(model, outputs, img.shape[1], img.shape[0], 0.005,
                                         bool(net.letter_box))
                rows = apply_nms(model, rows, 0.45)
                dets.append(ImageDetections.from_probs(rows[:, :4], rows[:, 5:]))
                gt = source.labels(i)
                gts.append(ImageTruth(gt[:, 1:5], gt[:, 0].astype(np.int64)))
        finally:
            model.train(was_training)
        return float(darknet_map(dets, gts, classes, box_format="cxcywh").map)

    return evaluate
