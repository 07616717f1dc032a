"""Darknet's ``detector map`` (``validate_detector_map`` in ``src/detector.c``), rule for rule.

Why a re-implementation rather than COCO/VOC code: Darknet's numbers differ from both in small,
deliberate ways (strict ``>`` at the IoU threshold, one truth chosen per candidate before the
global ranking, classes without ground truth averaged in as AP 0, its own 11/101-point loop), and
users compare darkcsp against the mAP Darknet printed while training.

Inputs are plain arrays, one :class:`ImageDetections` and one :class:`ImageTruth` per image:

* ``boxes`` is ``(N, 4)`` in one of three layouts, named by ``box_format``:
  ``"xyxy"`` (x1, y1, x2, y2), ``"cxcywh"`` (centre x, centre y, w, h: Darknet's own ``box`` and
  the YOLO label-file layout) or ``"ltwh"`` (left, top, w, h: COCO's). Any unit works (relative
  0..1 like Darknet, or pixels) as long as detections and truths share it: IoU does not change
  when an axis is scaled.
* detections are *candidates*: one row per (box, class) pair with its probability
  ``objectness * class prob`` as left after Darknet's 0.005 threshold and NMS. Rows with score 0
  are ignored (Darknet's ``prob > 0``). :meth:`ImageDetections.from_probs` flattens Darknet's
  ``(boxes, classes)`` probability matrix in Darknet's loop order (box, then class).

The order of candidates within an image matters, as in Darknet, for the TP/FP count at
``thresh`` (see :class:`DarknetMap`) and otherwise only among exactly equal scores in the ranking.
For a model's output, Darknet's order is the one its NMS leaves (:func:`nms_sort_order`).

IoU is Darknet's ``box_iou`` evaluated in float32 on centre boxes, with the same operation order,
so a pair sitting exactly on the threshold is decided as Darknet decides it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence, Union

import numpy as np

BoxFormat = Literal["xyxy", "cxcywh", "ltwh"]
BOX_FORMATS: tuple[str, ...] = ("xyxy", "cxcywh", "ltwh")

DARKNET_MAP_THRESH = 0.005  # detection threshold hard-coded in validate_detector_map
DARKNET_MAP_NMS = 0.45  # NMS threshold hard-coded in validate_detector_map


def to_cxcywh(boxes: np.ndarray | Sequence[Sequence[float]], box_format: str) -> np.ndarray:
    """``(N, 4)`` float32 centre boxes (Darknet's ``box``) from any of :data:`BOX_FORMATS`."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "cxcywh":
        out = b
    elif box_format == "xyxy":
        out = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                        b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    elif box_format == "ltwh":
        out = np.stack([b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, b[:, 2], b[:, 3]], axis=1)
    else:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
    return out.astype(np.float32)


def darknet_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of float32 centre boxes, as Darknet's ``box_iou`` computes it.

    Same float32 operations in the same order (``overlap`` on each axis, 0 when either overlap is
    negative, ``union = w1*h1 + w2*h2 - I``, 0 when ``I`` or ``union`` is 0), so results on the
    threshold agree with Darknet's.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(1, -1, 4)
    two = np.float32(2)

    def overlap(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray) -> np.ndarray:
        left = np.maximum(x1 - w1 / two, x2 - w2 / two)
        right = np.minimum(x1 + w1 / two, x2 + w2 / two)
        return right - left

    w = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
    h = overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    inter = np.where((w < 0) | (h < 0), np.float32(0), w * h)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter == 0) | (union == 0), np.float32(0), inter / union)
    return iou.astype(np.float32, copy=False)


def nms_sort_order(objectness: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The order ``do_nms_sort``/``diounms_sort`` leave Darknet's detection array in: indices
    into the rows of ``get_network_boxes`` (``objectness`` (N,), ``probs`` (N, classes), both
    as they were BEFORE suppression).

    Darknet first moves every row with objectness 0 to the end (swapping it with the current
    last row), then, for class 0, 1, ..., classes-1 in turn, ``qsort``s the other rows by that
    class's probability, descending, and suppresses that class. Suppressing class k only zeroes
    class k, so each sort's key is still the pre-suppression value. glibc's ``qsort`` is a
    stable merge sort, so the sorts compose: the final order is by the LAST class's
    probability, ties by the one before it, and so on down to class 0, then by the row order
    left by the first step.
    """
    obj = np.asarray(objectness, dtype=np.float32).reshape(-1)
    p = np.asarray(probs, dtype=np.float32).reshape(len(obj), -1)
    order = np.arange(len(obj))
    total = len(obj)
    if (obj == 0).any():  # Darknet's swap loop, step for step
        i, last = 0, total - 1
        while i <= last:
            if obj[order[i]] == 0:
                order[i], order[last] = order[last], order[i]
                last -= 1
            else:
                i += 1
        total = last + 1
    head = order[:total]
    if p.shape[1] and total:
        # np.lexsort: stable, the LAST key is the primary one
        head = head[np.lexsort([-p[head, k] for k in range(p.shape[1])])]
    return np.concatenate([head, order[total:]])


@dataclass
class ImageDetections:
    """One image's candidates: ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes, {len(self.scores)} scores and "
                             f"{len(self.labels)} labels: they must match")

    @classmethod
    def from_probs(cls, boxes: np.ndarray, probs: np.ndarray) -> "ImageDetections":
        """Candidates from Darknet's per-box probability matrix ``probs`` (N, classes): every
        (box i, class k) with ``probs[i, k] > 0``, in Darknet's loop order (i, then k)."""
        probs = np.asarray(probs, dtype=np.float32)
        rows, classes = np.nonzero(probs > 0)  # row-major: Darknet's for-i-for-class loop
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return cls(boxes[rows], probs[rows, classes], classes)

    @classmethod
    def empty(cls) -> "ImageDetections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class ImageTruth:
    """One image's ground truth: ``boxes`` (M, 4) and ``labels`` (M,), plus the optional
    "difficult" list (Darknet's ``difficult=`` file in ``.data``; VOC's difficult objects)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult_boxes: np.ndarray | None = None
    difficult_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.difficult_boxes is None:
            self.difficult_boxes = np.zeros((0, 4))
            self.difficult_labels = np.zeros(0, dtype=np.int64)
        self.difficult_boxes = np.asarray(self.difficult_boxes, dtype=np.float64).reshape(-1, 4)
        self.difficult_labels = np.asarray(self.difficult_labels, dtype=np.int64).reshape(-1)
        if len(self.difficult_boxes) != len(self.difficult_labels):
            raise ValueError(f"{len(self.difficult_boxes)} difficult boxes but "
                             f"{len(self.difficult_labels)} difficult labels")

    def __len__(self) -> int:
        return len(self.labels)


DetectionsLike = Union[ImageDetections, Mapping[str, Any], Sequence[Any]]
TruthLike = Union[ImageTruth, Mapping[str, Any], Sequence[Any]]


def as_detections(value: DetectionsLike) -> ImageDetections:
    """An :class:`ImageDetections` from itself, a dict with ``boxes/scores/labels`` or a
    ``(boxes, scores, labels)`` tuple."""
    if isinstance(value, ImageDetections):
        return value
    if isinstance(value, Mapping):
        return ImageDetections(value["boxes"], value["scores"], value["labels"])
    boxes, scores, labels = value
    return ImageDetections(boxes, scores, labels)


def as_truth(value: TruthLike) -> ImageTruth:
    """An :class:`ImageTruth` from itself, a dict with ``boxes/labels`` (and optionally
    ``difficult_boxes/difficult_labels``) or a ``(boxes, labels)`` tuple."""
    if isinstance(value, ImageTruth):
        return value
    if isinstance(value, Mapping):
        return ImageTruth(value["boxes"], value["labels"], value.get("difficult_boxes"),
                          value.get("difficult_labels"))
    boxes, labels = value
    return ImageTruth(boxes, labels)


@dataclass
class PRCurve:
    """One class's ranking: score, precision and recall after each of its own candidates."""

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray  # cumulative
    fp: np.ndarray  # cumulative


@dataclass
class DarknetMapResult:
    """What ``detector map`` prints, as numbers (fractions 0..1, not percent)."""

    points: int
    iou_thresh: float
    thresh: float
    ap: np.ndarray  # (classes,) AP per class, 0 for classes without ground truth
    truth_count: np.ndarray  # (classes,) ground-truth boxes per class (difficult excluded)
    detection_count: np.ndarray  # (classes,) ranked candidates per class
    map: float  # mean over ALL classes: Darknet's mAP
    map_present: float  # mean over classes with ground truth (0.0 when there is none)
    tp: int  # at ``thresh``
    fp: int
    fn: int
    precision: float  # at ``thresh``; 0.0 where Darknet divides 0 by 0 and prints nan
    recall: float
    f1: float
    avg_iou: float  # Darknet's "average IoU": sum of TP IoUs / (TP + FP)
    tp_per_class: np.ndarray
    fp_per_class: np.ndarray
    avg_iou_per_class: np.ndarray
    detections_count: int
    unique_truth_count: int
    curves: list[PRCurve] = field(repr=False, default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.ap)

    def summary(self, names: Sequence[str] | None = None, per_class: bool = True) -> str:
        """Darknet's closing lines (per-class AP, then precision/recall/F1, TP/FP/FN, mAP)."""
        names = list(names) if names is not None else [str(i) for i in range(self.classes)]
        lines = [f" detections_count = {self.detections_count}, "
                 f"unique_truth_count = {self.unique_truth_count}"]
        for i in range(self.classes if per_class else 0):
            lines.append(f"class_id = {i}, name = {names[i]}, ap = {self.ap[i] * 100:.2f}%   "
                         f"\t (TP = {self.tp_per_class[i]}, FP = {self.fp_per_class[i]}) ")
        lines.append(f"\n for conf_thresh = {self.thresh:.2f}, precision = {self.precision:.2f},"
                     f" recall = {self.recall:.2f}, F1-score = {self.f1:.2f} ")
        lines.append(f" for conf_thresh = {self.thresh:.2f}, TP = {self.tp}, FP = {self.fp}, "
                     f"FN = {self.fn}, average IoU = {self.avg_iou * 100:.2f} % ")
        lines.append(f"\n IoU threshold = {self.iou_thresh * 100:.0f} %, " + (
            f"used {self.points} Recall-points " if self.points
            else "used Area-Under-Curve for each unique Recall "))
        lines.append(f" mean average precision (mAP@{self.iou_thresh:.2f}) = {self.map:.6f}, "
                     f"or {self.map * 100:.2f} % ")
        return "\n".join(lines)


def _f32_ratio(num: float | np.floating, den: float | np.floating) -> float:
    """Darknet's float32 ``num / den``; 0.0 where it would be 0/0 (nan)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = np.float32(num) / np.float32(den)
    return 0.0 if not np.isfinite(value) else float(value)


def average_precision(precision: np.ndarray, recall: np.ndarray, points: int) -> float:
    """AP of one class from its own ranks (precision/recall after each of its candidates).

    Equal, to the last bit, to Darknet's loops over the global ranking (where the class's
    precision and recall are carried unchanged through the ranks of other classes; those ranks
    add zero-width steps or repeat a value, so they change neither the maxima nor the sums):

    * ``points == 0``: walking from the last rank back, each recall step ``r_j - r_(j-1)``
      (``r_(-1) = 0``) times the highest precision at ranks ``>= j - 1``, summed in that order.
      (Darknet takes the running maximum *including* the rank before the step.)
    * ``points == n``: for ``r = p / (n - 1)``, p = 0..n-1, the highest precision at a rank with
      recall ``>= r`` (0 if none), averaged over the n points.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if len(precision) == 0:
        return 0.0
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at ranks >= j
    if points == 0:
        prev_recall = np.concatenate([[0.0], recall[:-1]])
        steps = np.nonzero(recall != prev_recall)[0]
        total = 0.0
        for j in steps[::-1]:  # Darknet's backward walk, same double operations and order
            running_max = suffix_max[max(j - 1, 0)]
            total += (float(recall[j]) - float(prev_recall[j])) * float(running_max)
        return total
    if points < 2:
        raise ValueError(f"points must be 0 (area under the curve) or >= 2, got {points}")
    total = 0.0
    for point in range(points):
        cur_recall = point * 1.0 / (points - 1)
        first = int(np.searchsorted(recall, cur_recall, side="left"))  # recall is monotone
        total += float(suffix_max[first]) if first < len(recall) else 0.0
    return total / points


class DarknetMap:
    """Accumulates images one at a time, then ranks them like ``validate_detector_map``.

    Per image, the candidates are walked in the order given (for a model: Darknet's detection
    array after NMS, box by box and class by class, see
    :func:`darkcsp.evaluate.run.nms_candidates`):

    1. each candidate's truth is the same-class truth with the highest IoU ``> iou_thresh``
       (strict; ties keep the first truth); without one, a candidate whose IoU with a same-class
       *difficult* box is ``> iou_thresh`` is dropped from the ranking;
    2. the ``--thresh`` statistics are decided right there, before anything is ranked, for each
       candidate whose score is ``> thresh`` (strict): it is a TP when it has a truth and no
       EARLIER candidate of the SAME image points at that truth, whatever that earlier
       candidate's score (one below ``thresh`` still takes the truth away) and whether or not
       it was itself counted; otherwise (no truth, or the truth already pointed at, or dropped
       as difficult) it is an FP, with no fall-back to a second-best truth. There is no
       "claimed" flag as in the ranking: all that counts is which earlier candidates of the
       image point at the truth, so the order of the candidates decides. A TP adds its IoU
       with its truth to a float32 running sum (overall and per class); the average IoU is
       that sum over TP + FP. FN = all truths of all images - TP.

    Then (:meth:`result`) all candidates of all images and classes are sorted by score,
    descending (ties keep insertion order, as glibc's stable ``qsort`` does), and walked: TP if
    the truth is not claimed yet (it then is), else FP. mAP divides by the number of classes.
    """

    def __init__(self, num_classes: int, *, iou_thresh: float = 0.5, thresh: float = 0.25,
                 box_format: str = "xyxy") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
        self.num_classes = num_classes
        self.iou_thresh = float(iou_thresh)
        self.thresh = float(thresh)
        self.box_format = box_format
        self._iou_thresh32 = np.float32(iou_thresh)  # Darknet's `const float iou_thresh`
        self._thresh32 = np.float32(thresh)
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._truth_index: list[np.ndarray] = []
        self.truth_count = np.zeros(num_classes, dtype=np.int64)
        self.unique_truth_count = 0
        self.images = 0
        self.tp_for_thresh = 0
        self.fp_for_thresh = 0
        self.tp_per_class = np.zeros(num_classes, dtype=np.int64)
        self.fp_per_class = np.zeros(num_classes, dtype=np.int64)
        self._iou_sum = np.float32(0)  # Darknet's float accumulators
        self._iou_sum_per_class = np.zeros(num_classes, dtype=np.float32)

    def _check_labels(self, labels: np.ndarray, what: str) -> None:
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0]
            raise ValueError(f"{what} class id {bad} is outside 0..{self.num_classes - 1}")

    def add(self, detections: DetectionsLike, truth: TruthLike) -> None:
        """Add one image's candidates and ground truth."""
        dets = as_detections(detections)
        gt = as_truth(truth)
        self._check_labels(dets.labels, "detection")
        self._check_labels(gt.labels, "truth")
        self._check_labels(gt.difficult_labels, "difficult truth")

        keep = dets.scores > 0  # Darknet: `if (prob > 0)`
        scores = dets.scores[keep]
        labels = dets.labels[keep]
        boxes = to_cxcywh(dets.boxes[keep], self.box_format)
        n = len(scores)

        iou = darknet_box_iou(boxes, to_cxcywh(gt.boxes, self.box_format))
        # `current_iou > iou_thresh && class matches && current_iou > max_iou (starts at 0)`
        valid = (iou > self._iou_thresh32) & (iou > 0) & (labels[:, None] == gt.labels[None, :])
        masked = np.where(valid, iou, np.float32(0))
        matched = valid.any(axis=1) if len(gt) else np.zeros(n, dtype=bool)
        local = masked.argmax(axis=1) if len(gt) else np.zeros(n, dtype=np.int64)
        max_iou = masked.max(axis=1) if len(gt) else np.zeros(n, dtype=np.float32)

        dropped = np.zeros(n, dtype=bool)
        if len(gt.difficult_labels) and n:
            iou_dif = darknet_box_iou(boxes, to_cxcywh(gt.difficult_boxes, self.box_format))
            hit = (iou_dif > self._iou_thresh32) & (labels[:, None] == gt.difficult_labels[None, :])
            dropped = ~matched & hit.any(axis=1)

        truth_index = np.where(matched, self.unique_truth_count + local, -1)

        # TP/FP at `thresh`: the first candidate (in image order, any score) pointing at a truth
        # is the only one that can be a TP there.
        first = np.zeros(n, dtype=bool)
        if matched.any():
            rows = np.nonzero(matched)[0]
            _, first_pos = np.unique(local[rows], return_index=True)
            first[rows[first_pos]] = True
        above = scores > self._thresh32
        tp_mask = above & matched & first
        fp_mask = above & ~tp_mask
        self.tp_for_thresh += int(tp_mask.sum())
        self.fp_for_thresh += int(fp_mask.sum())
        np.add.at(self.tp_per_class, labels[tp_mask], 1)
        np.add.at(self.fp_per_class, labels[fp_mask], 1)
        for i in np.nonzero(tp_mask)[0]:  # sequential float32 sums, as Darknet's `+=`
            self._iou_sum = np.float32(self._iou_sum + max_iou[i])
            k = labels[i]
            self._iou_sum_per_class[k] = np.float32(self._iou_sum_per_class[k] + max_iou[i])

        ranked = ~dropped
        self._scores.append(scores[ranked])
        self._labels.append(labels[ranked])
        self._truth_index.append(truth_index[ranked])
        self.truth_count += np.bincount(gt.labels, minlength=self.num_classes)
        self.unique_truth_count += len(gt)
        self.images += 1

    def result(self, points: int = 0) -> DarknetMapResult:
        """Rank everything added so far and compute AP per class, mAP and the thresh stats."""
        if points != 0 and points < 2:
            raise ValueError(f"points must be 0 (area under the curve) or >= 2, got {points}")
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0, np.float32)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        truth = np.concatenate(self._truth_index) if self._truth_index else np.zeros(0, np.int64)
        order = np.argsort(-scores, kind="stable")  # `detections_comparator`: by prob, desc
        scores, labels, truth = scores[order], labels[order], truth[order]

        # Walking the ranking: TP when the truth is claimed for the first time.
        tp_flag = np.zeros(len(scores), dtype=bool)
        matched = np.nonzero(truth >= 0)[0]
        if len(matched):
            _, first_pos = np.unique(truth[matched], return_index=True)
            tp_flag[matched[first_pos]] = True

        ap = np.zeros(self.num_classes, dtype=np.float64)
        curves: list[PRCurve] = []
        for k in range(self.num_classes):
            own = np.nonzero(labels == k)[0]
            tp = np.cumsum(tp_flag[own])
            fp = np.cumsum(~tp_flag[own])
            n_truth = int(self.truth_count[k])
            precision = tp / np.maximum(tp + fp, 1)
            recall = tp / n_truth if n_truth > 0 else np.zeros(len(own))
            ap[k] = average_precision(precision, recall, points) if len(scores) else 0.0
            curves.append(PRCurve(scores[own], precision, recall, tp, fp))

        total = 0.0
        for value in ap:  # Darknet's sequential double sum
            total += float(value)
        present = self.truth_count > 0
        tp, fp = self.tp_for_thresh, self.fp_for_thresh
        # Darknet: (float)tp / ((float)tp + (float)fp), and likewise with FN for the recall.
        precision = _f32_ratio(tp, np.float32(tp) + np.float32(fp))
        recall = _f32_ratio(tp, np.float32(tp) + np.float32(self.unique_truth_count - tp))
        f1 = _f32_ratio(2 * np.float32(precision) * np.float32(recall),
                        np.float32(precision) + np.float32(recall))
        avg_iou = _f32_ratio(float(self._iou_sum), tp + fp) if tp + fp else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            counted = (self.tp_per_class + self.fp_per_class).astype(np.float32)
            per_class_iou = np.where(counted > 0, self._iou_sum_per_class / counted, 0.0)
        return DarknetMapResult(
            points=points, iou_thresh=self.iou_thresh, thresh=self.thresh, ap=ap,
            truth_count=self.truth_count.copy(),
            detection_count=np.bincount(labels, minlength=self.num_classes),
            map=total / self.num_classes,
            map_present=float(ap[present].mean()) if present.any() else 0.0,
            tp=tp, fp=fp, fn=self.unique_truth_count - tp, precision=precision, recall=recall,
            f1=f1, avg_iou=avg_iou, tp_per_class=self.tp_per_class.copy(),
            fp_per_class=self.fp_per_class.copy(),
            avg_iou_per_class=per_class_iou.astype(np.float64),
            detections_count=len(scores), unique_truth_count=self.unique_truth_count,
            curves=curves)


def darknet_map(detections: Sequence[DetectionsLike], truths: Sequence[TruthLike],
                num_classes: int, *, points: int = 0, iou_thresh: float = 0.5,
                thresh: float = 0.25, box_format: str = "xyxy") -> DarknetMapResult:
    """Darknet's ``detector map`` numbers for per-image ``detections`` and ``truths``.

    ``detections[i]`` and ``truths[i]`` belong to the same image; see the module docstring for
    the array layouts and :class:`DarknetMap` for the rules.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists but {len(truths)} truth lists")
    acc = DarknetMap(num_classes, iou_thresh=iou_thresh, thresh=thresh, box_format=box_format)
    for dets, gt in zip(detections, truths):
        acc.add(dets, gt)
    return acc.result(points)
