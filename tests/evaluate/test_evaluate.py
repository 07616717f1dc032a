"""darkcsp.evaluate: Darknet's ``detector map`` rules, COCO metrics, anchors, PR plots, CLI.

Expected Darknet numbers are worked out by hand in the comments (not taken from darkcsp), COCO
numbers come from running pycocotools' COCOeval directly, and a literal re-statement of
``validate_detector_map``'s loops (global ranking with every class carried through every rank)
checks the vectorised implementation on random data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from darkcsp.evaluate.anchors import calc_anchors
from darkcsp.evaluate.coco import coco_metrics
from darkcsp.evaluate.darknet_map import (DarknetMap, ImageDetections, ImageTruth,
                                          average_precision, darknet_box_iou, darknet_map,
                                          to_cxcywh)
from darkcsp.data.darknet import label_path, read_data_cfg, read_labels

# --------------------------------------------------------------------------------------------
# The worked example (boxes xyxy, pixels)
#
# image A truths: A1 = [0,0,10,10] (class 0), A2 = [20,0,30,10] (class 0)
# image B truths: B1 = [0,0,10,10] (class 0), B2 = [20,20,30,30] (class 0),
#                 C1 = [40,40,60,60] (class 1)
# class 2 has no truth at all.
#
# detections, in each image's order:
#   A: .9 class 0 on A1 (exact)               -> ranking TP (claims A1)
#      .8 class 0 [1,0,11,10] (IoU 90/110)    -> ranking FP: A1 already claimed (duplicate)
#      .5 class 0 on A2 (exact)               -> ranking TP
#      .3 class 2 far away                    -> FP (class without truth)
#   B: .95 class 1 on C1 (exact)              -> TP
#      .7 class 0 on B1 (exact)               -> TP
#      .6 class 0 far away                    -> FP
#
# class 0, its own ranks by score (.9 .8 .7 .6 .5), N = 4 truths:
#   rank  TP/FP  tp fp  precision  recall
#    1     TP     1  0    1          .25
#    2     FP     1  1    1/2        .25
#    3     TP     2  1    2/3        .50
#    4     FP     2  2    1/2        .50
#    5     TP     3  2    3/5        .75
#
# points 0 (area under the max-to-the-right envelope):
#   .25 * 1 + .25 * max(2/3, .5, .6) + .25 * .6 = .25 + 1/6 + .15 = 17/30 = 0.566667
# points 11 (r = 0, .1, ..., 1; max precision at recall >= r):
#   r = 0, .1, .2          -> 1    (3 points)
#   r = .3, .4, .5         -> 2/3  (3 points; recall .5 >= .5 counts)
#   r = .6, .7             -> .6   (2 points)
#   r = .8, .9, 1          -> 0    (3 points)
#   (3 + 2 + 1.2) / 11 = 6.2 / 11 = 0.563636
# points 101 (r = p/100):
#   p = 0..25  (26 points, recall .25 >= .25 counts) -> 1
#   p = 26..50 (25 points)                           -> 2/3
#   p = 51..75 (25 points)                           -> .6
#   p = 76..100                                      -> 0
#   (26 + 50/3 + 15) / 101 = 173/303 = 0.570957
# class 1: one truth, one exact detection ranked first -> AP 1 for every method.
# class 2: no truth -> AP 0, and it still counts in Darknet's mean over 3 classes.
# --------------------------------------------------------------------------------------------

TRUTH_A = ImageTruth([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0])
TRUTH_B = ImageTruth([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 60, 60]], [0, 0, 1])
DETS_A = ImageDetections([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [70, 70, 80, 80]],
                         [.9, .8, .5, .3], [0, 0, 0, 2])
DETS_B = ImageDetections([[40, 40, 60, 60], [0, 0, 10, 10], [50, 50, 55, 55]],
                         [.95, .7, .6], [1, 0, 0])

HAND_AP0 = {0: 17 / 30, 11: 6.2 / 11, 101: 173 / 303}


@pytest.mark.parametrize("points", [0, 11, 101])
def test_worked_example_ap(points: int) -> None:
    result = darknet_map([DETS_A, DETS_B], [TRUTH_A, TRUTH_B], 3, points=points)
    expected = [HAND_AP0[points], 1.0, 0.0]
    assert result.ap == pytest.approx(expected, abs=1e-12)
    # Darknet's mAP divides by ALL classes (3), the class without truth included ...
    assert result.map == pytest.approx((HAND_AP0[points] + 1.0) / 3, abs=1e-12)
    # ... the mean over the classes that have truth divides by 2.
    assert result.map_present == pytest.approx((HAND_AP0[points] + 1.0) / 2, abs=1e-12)
    assert list(result.truth_count) == [4, 1, 0]
    assert list(result.detection_count) == [5, 1, 1]


def test_worked_example_thresh_stats() -> None:
    # At thresh .25 every candidate counts: TP = A1, A2, C1, B1 = 4; FP = the duplicate on A1,
    # the class-2 box, the far class-0 box = 3; FN = 5 truths - 4 = 1.
    # precision 4/7, recall 4/5, F1 = 2 * 4/7 * 4/5 / (4/7 + 4/5) = 2/3.
    # avg IoU = (1 + 1 + 1 + 1) / (TP + FP) = 4/7 (Darknet divides by TP + FP, not by TP).
    r = darknet_map([DETS_A, DETS_B], [TRUTH_A, TRUTH_B], 3, thresh=0.25)
    assert (r.tp, r.fp, r.fn) == (4, 3, 1)
    assert r.precision == pytest.approx(4 / 7, rel=1e-6)
    assert r.recall == pytest.approx(4 / 5, rel=1e-6)
    assert r.f1 == pytest.approx(2 / 3, rel=1e-6)
    assert r.avg_iou == pytest.approx(4 / 7, rel=1e-6)
    assert list(r.tp_per_class) == [3, 1, 0] and list(r.fp_per_class) == [2, 0, 1]
    # At thresh .75 only .95 (C1), .9 (A1) and .8 (duplicate of A1) count: TP 2, FP 1, FN 3;
    # precision 2/3, recall 2/5.
    r = darknet_map([DETS_A, DETS_B], [TRUTH_A, TRUTH_B], 3, thresh=0.75)
    assert (r.tp, r.fp, r.fn) == (2, 1, 3)
    assert r.precision == pytest.approx(2 / 3, rel=1e-6)
    assert r.recall == pytest.approx(2 / 5, rel=1e-6)


def test_box_formats_agree() -> None:
    def convert(boxes: np.ndarray, fmt: str) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64)
        if fmt == "cxcywh":
            return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                             b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
        return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)

    for fmt in ("cxcywh", "ltwh"):
        dets = [ImageDetections(convert(d.boxes, fmt), d.scores, d.labels)
                for d in (DETS_A, DETS_B)]
        truths = [ImageTruth(convert(t.boxes, fmt), t.labels) for t in (TRUTH_A, TRUTH_B)]
        r = darknet_map(dets, truths, 3, box_format=fmt)
        assert r.ap == pytest.approx([17 / 30, 1.0, 0.0], abs=1e-12)


def test_classes_without_truth_pull_the_mean_down() -> None:
    # One perfect class among 10: Darknet's mAP is 1/10, the mean over present classes is 1.
    truth = ImageTruth([[0, 0, 10, 10]], [4])
    dets = ImageDetections([[0, 0, 10, 10]], [0.9], [4])
    r = darknet_map([dets], [truth], 10)
    assert r.ap[4] == 1.0 and r.map == pytest.approx(0.1) and r.map_present == 1.0
    # Detections of a class without truth are pure FPs and change nothing in the other APs.
    dets2 = ImageDetections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.95], [4, 7])
    r2 = darknet_map([dets2], [truth], 10)
    assert r2.ap[4] == 1.0 and r2.ap[7] == 0.0 and r2.map == pytest.approx(0.1)


def test_iou_threshold_is_strict() -> None:
    # det [0,0,10,10] vs truth [0,0,10,20]: intersection 100, union 100 + 200 - 100 = 200,
    # IoU exactly 0.5 (also in float32). Darknet needs IoU > iou_thresh.
    truth = ImageTruth([[0, 0, 10, 20]], [0])
    dets = ImageDetections([[0, 0, 10, 10]], [0.9], [0])
    assert darknet_box_iou(to_cxcywh(dets.boxes, "xyxy"),
                           to_cxcywh(truth.boxes, "xyxy"))[0, 0] == np.float32(0.5)
    at_half = darknet_map([dets], [truth], 1, iou_thresh=0.5)
    assert at_half.ap[0] == 0.0 and (at_half.tp, at_half.fp) == (0, 1)
    below = darknet_map([dets], [truth], 1, iou_thresh=0.49)
    assert below.ap[0] == 1.0 and (below.tp, below.fp) == (1, 0)


def test_duplicates_are_false_positives() -> None:
    # Three boxes on one truth: ranks TP, FP, FP -> precision 1, 1/2, 1/3 at recall 1.
    # AP (points 0) = 1 * 1 = 1, but the ranking holds 1 TP and 2 FP.
    truth = ImageTruth([[0, 0, 10, 10]], [0])
    dets = ImageDetections([[0, 0, 10, 10], [0, 0, 10, 11], [1, 0, 10, 10]], [.9, .8, .7],
                           [0, 0, 0])
    r = darknet_map([dets], [truth], 1)
    curve = r.curves[0]
    assert list(curve.tp) == [1, 1, 1] and list(curve.fp) == [0, 1, 2]
    assert curve.precision == pytest.approx([1, 1 / 2, 1 / 3])
    assert r.ap[0] == 1.0 and (r.tp, r.fp, r.fn) == (1, 2, 0)


def test_truth_chosen_per_candidate_by_best_iou() -> None:
    # Truths T1 = [0,0,10,10], T2 = [2,0,12,10].
    # .9 box [0.5,0,10.5,10]: IoU 95/105 = .905 with T1, 85/115 = .739 with T2 -> takes T1.
    # .8 box [0,0,10,10]: IoU 1 with T1, 80/120 = .667 with T2 -> its truth is T1, already
    # claimed -> FP, although T2 is free and above the threshold (no fall-back in Darknet).
    # Class ranks: TP (P 1, R .5), FP (P .5, R .5) -> AP = .5 * 1 = .5.
    truth = ImageTruth([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])
    dets = ImageDetections([[0.5, 0, 10.5, 10], [0, 0, 10, 10]], [.9, .8], [0, 0])
    iou = darknet_box_iou(to_cxcywh(dets.boxes, "xyxy"), to_cxcywh(truth.boxes, "xyxy"))
    assert iou[0, 0] > iou[0, 1] > 0.5 and iou[1, 0] > iou[1, 1] > 0.5
    r = darknet_map([dets], [truth], 1)
    assert r.ap[0] == pytest.approx(0.5) and list(r.curves[0].tp) == [1, 1]


def test_thresh_counts_follow_image_order() -> None:
    # At --thresh, only the FIRST candidate of an image (in the given order, whatever its score)
    # pointing at a truth can be a TP: with the .1 box listed first, the .9 box is an FP there,
    # while the ranking (by score) makes the .9 box the TP.
    truth = ImageTruth([[0, 0, 10, 10]], [0])
    dets = ImageDetections([[0, 0, 10, 10], [0, 0, 10, 10]], [.1, .9], [0, 0])
    r = darknet_map([dets], [truth], 1, thresh=0.25)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)
    assert r.ap[0] == 1.0
    swapped = ImageDetections(dets.boxes[::-1], dets.scores[::-1], dets.labels[::-1])
    r = darknet_map([swapped], [truth], 1, thresh=0.25)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)


def test_difficult_boxes_drop_unmatched_candidates() -> None:
    # The .9 box sits on a difficult object: it leaves the ranking (it would otherwise be rank
    # 1 FP, giving AP .5) but is still an FP in the --thresh counts, as in Darknet.
    truth = ImageTruth([[0, 0, 10, 10]], [0], difficult_boxes=[[50, 50, 60, 60]],
                       difficult_labels=[0])
    dets = ImageDetections([[50, 50, 60, 60], [0, 0, 10, 10]], [.9, .8], [0, 0])
    r = darknet_map([dets], [truth], 1)
    assert r.ap[0] == 1.0 and r.detections_count == 1
    assert (r.tp, r.fp) == (1, 1)
    plain = darknet_map([dets], [ImageTruth(truth.boxes, truth.labels)], 1)
    assert plain.ap[0] == pytest.approx(0.5)


def test_from_probs_uses_darknet_loop_order() -> None:
    probs = np.array([[0.0, 0.7], [0.6, 0.5]], dtype=np.float32)
    d = ImageDetections.from_probs(np.array([[1, 1, 2, 2], [3, 3, 4, 4]]), probs)
    assert d.labels.tolist() == [1, 0, 1]
    assert d.scores.tolist() == pytest.approx([0.7, 0.6, 0.5])
    assert d.boxes[:, 0].tolist() == [1, 3, 3]


def test_relative_centre_boxes_follow_darknet_rules() -> None:
    """Training's mAP rules (moved from the helper darkcsp.train.metrics had): Darknet's
    probability matrix per image, truth rows ``class, x, y, w, h`` relative to the image."""
    truth = np.array([[0, 0.3, 0.3, 0.2, 0.2], [1, 0.7, 0.7, 0.2, 0.2]])
    gt = ImageTruth(truth[:, 1:5], truth[:, 0])
    perfect = ImageDetections.from_probs(np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]),
                                         np.array([[0.9, 0.0], [0.0, 0.8]]))
    result = darknet_map([perfect], [gt], 2, box_format="cxcywh")
    assert result.map == 1.0 and result.ap.tolist() == [1.0, 1.0]
    # class 0: a false positive ranked first, then the hit: precision 0 then 1/2 at recall 1
    ranked = ImageDetections.from_probs(np.array([[0.8, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]),
                                        np.array([[0.9], [0.5]]))
    one = ImageTruth(truth[:1, 1:5], truth[:1, 0])
    assert darknet_map([ranked], [one], 1, box_format="cxcywh").map == pytest.approx(0.5)
    # a third class without truth counts as 0 in the mean (Darknet's mAP)
    assert darknet_map([perfect], [gt], 3, box_format="cxcywh").map == pytest.approx(2 / 3)
    # -points 0: the area under the running maximum of precision, walking back
    assert average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]), 0) == \
        pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


# --------------------------------------------------------------------------------------------
# A literal re-statement of validate_detector_map's loops, for random cross-checks.
# --------------------------------------------------------------------------------------------

def _scalar_iou(a: np.ndarray, b: np.ndarray) -> np.float32:
    f, two = np.float32, np.float32(2)

    def overlap(x1: np.float32, w1: np.float32, x2: np.float32, w2: np.float32) -> np.float32:
        return f(min(x1 + w1 / two, x2 + w2 / two) - max(x1 - w1 / two, x2 - w2 / two))

    w = overlap(a[0], a[2], b[0], b[2])
    h = overlap(a[1], a[3], b[1], b[3])
    inter = f(0) if (w < 0 or h < 0) else f(w * h)
    union = f(a[2] * a[3] + b[2] * b[3] - inter)
    return f(0) if (inter == 0 or union == 0) else f(inter / union)


def _literal_darknet_map(images: list[tuple[ImageDetections, ImageTruth]], classes: int,
                         iou_thresh: float, points: int) -> tuple[list[float], float]:
    thr = np.float32(iou_thresh)
    cands: list[tuple[float, int, int]] = []  # (prob, class, unique truth index or -1)
    truth_count = [0] * classes
    unique = 0
    for dets, gt in images:
        db, tb = to_cxcywh(dets.boxes, "xyxy"), to_cxcywh(gt.boxes, "xyxy")
        for t in gt.labels:
            truth_count[int(t)] += 1
        for i in range(len(dets)):
            prob, cls = dets.scores[i], int(dets.labels[i])
            if not prob > 0:
                continue
            best, max_iou = -1, np.float32(0)
            for j in range(len(gt)):
                cur = _scalar_iou(db[i], tb[j])
                if cur > thr and cls == gt.labels[j] and cur > max_iou:
                    max_iou, best = cur, unique + j
            cands.append((float(prob), cls, best))
        unique += len(gt)
    cands.sort(key=lambda c: -c[0])
    n = len(cands)
    tp = [[0] * n for _ in range(classes)]
    fp = [[0] * n for _ in range(classes)]
    prec = [[0.0] * n for _ in range(classes)]
    rec = [[0.0] * n for _ in range(classes)]
    claimed: set[int] = set()
    for rank, (_, cls, truth) in enumerate(cands):
        if rank > 0:
            for k in range(classes):
                tp[k][rank], fp[k][rank] = tp[k][rank - 1], fp[k][rank - 1]
        if truth >= 0 and truth not in claimed:
            claimed.add(truth)
            tp[cls][rank] += 1
        else:
            fp[cls][rank] += 1
        for k in range(classes):
            t, f_ = tp[k][rank], fp[k][rank]
            prec[k][rank] = t / (t + f_) if t + f_ > 0 else 0.0
            rec[k][rank] = t / truth_count[k] if truth_count[k] > 0 else 0.0
    aps: list[float] = []
    for k in range(classes):
        ap = 0.0
        if points == 0:
            last_r, last_p = rec[k][n - 1], prec[k][n - 1]
            for rank in range(n - 2, -1, -1):
                delta = last_r - rec[k][rank]
                last_r = rec[k][rank]
                if prec[k][rank] > last_p:
                    last_p = prec[k][rank]
                ap += delta * last_p
            ap += (last_r - 0) * last_p
        else:
            for point in range(points):
                cur_r, cur_p = point * 1.0 / (points - 1), 0.0
                for rank in range(n):
                    if rec[k][rank] >= cur_r and prec[k][rank] > cur_p:
                        cur_p = prec[k][rank]
                ap += cur_p
            ap /= points
        aps.append(ap)
    total = 0.0
    for ap in aps:
        total += ap
    return aps, total / classes


def _random_images(rng: np.random.Generator, count: int,
                   classes: int) -> list[tuple[ImageDetections, ImageTruth]]:
    images = []
    for _ in range(count):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (m, 2))
        wh = rng.uniform(5, 30, (m, 2))
        gt_boxes = np.concatenate([xy, xy + wh], axis=1)
        gt_labels = rng.integers(0, classes, m)
        boxes, labels = [], []
        for box, label in zip(gt_boxes, gt_labels):
            for _ in range(int(rng.integers(0, 3))):  # 0-2 noisy copies: TPs and duplicates
                boxes.append(box + rng.normal(0, 2.5, 4))
                labels.append(label if rng.random() < 0.85 else rng.integers(0, classes))
        for _ in range(int(rng.integers(0, 4))):  # background boxes
            xy0 = rng.uniform(0, 90, 2)
            boxes.append(np.concatenate([xy0, xy0 + rng.uniform(3, 20, 2)]))
            labels.append(rng.integers(0, classes))
        scores = rng.uniform(0.005, 1, len(boxes))
        images.append((ImageDetections(np.reshape(boxes, (-1, 4)), scores, labels),
                       ImageTruth(gt_boxes, gt_labels)))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_literal_darknet_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = _random_images(rng, 8, 4)
    for points in (0, 11, 101):
        for iou_thresh in (0.5, 0.3):
            want_ap, want_map = _literal_darknet_map(images, 4, iou_thresh, points)
            got = darknet_map([d for d, _ in images], [t for _, t in images], 4,
                              points=points, iou_thresh=iou_thresh)
            assert got.ap.tolist() == want_ap  # bit for bit
            assert got.map == want_map


def test_accumulator_streaming_equals_batch() -> None:
    acc = DarknetMap(3)
    acc.add(DETS_A, TRUTH_A)
    acc.add((DETS_B.boxes, DETS_B.scores, DETS_B.labels), {"boxes": TRUTH_B.boxes,
                                                            "labels": TRUTH_B.labels})
    assert acc.result(11).ap.tolist() == darknet_map([DETS_A, DETS_B], [TRUTH_A, TRUTH_B], 3,
                                                     points=11).ap.tolist()


def test_bad_class_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="class id 3"):
        darknet_map([DETS_A], [ImageTruth([[0, 0, 1, 1]], [3])], 3)


# --------------------------------------------------------------------------------------------
# COCO: darkcsp vs pycocotools run directly
# --------------------------------------------------------------------------------------------

def _pycocotools_stats(gt: dict, records: list[dict]) -> np.ndarray:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(records)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_matches_pycocotools(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    classes, images = 3, []
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(classes)]}
    records = []
    for img in range(10):
        image_id = 100 + img
        gt["images"].append({"id": image_id})
        m = int(rng.integers(1, 6))
        xy = rng.uniform(0, 500, (m, 2))
        wh = rng.uniform(8, 200, (m, 2))  # small, medium and large objects
        labels = rng.integers(0, classes, m)
        for (x, y), (w, h), c in zip(xy, wh, labels):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": int(c), "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": 0})
        det_ltwh = np.concatenate([xy, wh], axis=1) + rng.normal(0, 4, (m, 4))
        det_ltwh = np.concatenate([det_ltwh, rng.uniform(0, 400, (3, 4)) + [0, 0, 10, 10]])
        det_labels = np.concatenate([labels, rng.integers(0, classes, 3)])
        scores = rng.uniform(0.01, 1, len(det_labels))
        for box, s, c in zip(det_ltwh, scores, det_labels):
            records.append({"image_id": image_id, "category_id": int(c),
                            "bbox": [float(v) for v in box], "score": float(s)})
        xyxy = det_ltwh.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        images.append((ImageDetections(xyxy, scores, det_labels),
                       ImageTruth(np.concatenate([xy, xy + wh], axis=1), labels)))
    want = _pycocotools_stats(gt, records)
    out = tmp_path / "dets.json"
    got = coco_metrics([d for d, _ in images], [t for _, t in images], classes,
                       box_format="xyxy", image_ids=list(range(100, 110)), json_path=out,
                       clip=False)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert [got[n] for n in names] == pytest.approx(list(want[:6]), abs=1e-12)
    assert 0 < got["AP"] < got["AP50"] <= 1 and got["APs"] >= 0
    written = json.loads(out.read_text())
    assert len(written) == len(records)
    assert _pycocotools_stats(gt, written)[0] == pytest.approx(want[0], abs=1e-4)


def test_coco_relative_boxes_and_no_detections() -> None:
    # Relative centre boxes scaled by the image size; no detections -> AP 0 (not an error).
    truth = ImageTruth([[0.5, 0.5, 0.2, 0.4]], [0])
    stats = coco_metrics([ImageDetections.empty()], [truth], 1, box_format="cxcywh",
                         image_sizes=[(640, 480)])
    assert stats["AP"] == 0.0
    exact = ImageDetections([[0.5, 0.5, 0.2, 0.4]], [0.9], [0])
    stats = coco_metrics([exact], [truth], 1, box_format="cxcywh", image_sizes=[(640, 480)])
    # 128 x 192 pixels = 24576 > 96^2: a large object, found exactly
    assert stats["AP"] == pytest.approx(1.0) and stats["APl"] == pytest.approx(1.0)
    assert stats["APs"] == -1.0 and stats["APm"] == -1.0


# --------------------------------------------------------------------------------------------
# anchors
# --------------------------------------------------------------------------------------------

def test_anchors_hand_example() -> None:
    # boxes (2,2) (4,4) (10,10) (12,12), k = 2 starting from boxes 0 and 1:
    #  E: (2)->c0, (4)->c1, (10)->c1 (IoU 16/100 > 4/100), (12)->c1; M: c0 = 2, c1 = 26/3
    #  E: (4): IoU with 2 is 4/16 = .25 > 16/75.1 = .21 -> c0; M: c0 = 3, c1 = 11
    #  E: (2): 4/9 -> c0, (4): 9/16 -> c0, (10): 100/121, (12): 121/144 -> c1: converged
    # anchors (3,3), (11,11); avg IoU = (4/9 + 9/16 + 100/121 + 121/144) / 4 = 0.668424
    wh = np.array([[2, 2], [4, 4], [10, 10], [12, 12]], dtype=np.float32)
    r = calc_anchors(wh, 2, 1, 1, init_indices=np.array([0, 1]))
    assert r.anchors.tolist() == [[3, 3], [11, 11]]
    assert r.iterations == 2
    assert r.avg_iou == pytest.approx((4 / 9 + 9 / 16 + 100 / 121 + 121 / 144) / 4, rel=1e-6)
    assert r.assignments.tolist() == [0, 0, 1, 1]


def test_anchors_recover_synthetic_clusters() -> None:
    rng = np.random.default_rng(3)
    true = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], float)
    rel = np.concatenate([(c * rng.uniform(0.95, 1.05, (200, 2))) / 416 for c in true])
    # Started from one box of each cluster, the iteration converges to the cluster means.
    seeded = calc_anchors(rel, len(true), 416, 416, init_indices=np.arange(6) * 200)
    assert np.allclose(seeded.anchors, true, rtol=0.02)
    assert seeded.avg_iou > 0.93
    assert seeded.format(416).startswith(" 10, 14,  23, 27,  37, 58")
    # Random starts (Darknet's) can merge two clusters; the best of a few runs recovers them.
    best = max((calc_anchors(rel, len(true), 416, 416, seed=s) for s in range(6)),
               key=lambda r: r.avg_iou)
    assert np.allclose(best.anchors, true, rtol=0.02)


# --------------------------------------------------------------------------------------------
# dataset files, plots, CLI
# --------------------------------------------------------------------------------------------

def test_darknet_dataset_rules(tmp_path: Path) -> None:
    assert label_path("coco/images/val2017/000000000139.jpg") == \
        "coco/labels/val2017/000000000139.txt"
    assert label_path("VOC2007/JPEGImages/x.images.png") == "VOC2007/labels/x.images.txt"
    assert label_path("any/images/x.jpg") == "any/images/x.txt"  # no generic images/ swap
    data = tmp_path / "a.data"
    data.write_text("# comment\nclasses = 2\nnames = my names.txt\nclasses=3\n")
    assert read_data_cfg(data) == {"classes": "2", "names": "mynames.txt"}
    labels = tmp_path / "l.txt"
    labels.write_text("1 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\nbad 1 1 1 1\n2 .5 .5 .5 .5\n")
    got = read_labels(labels)  # the one label reader: a bad row is skipped (and reported),
    assert got.classes.tolist() == [1, 0, 2] and got.boxes.shape == (3, 4)  # not the end
    assert read_labels(tmp_path / "none.txt").missing


def test_pr_plots(tmp_path: Path) -> None:
    from darkcsp.evaluate.plots import plot_pr_curves
    result = darknet_map([DETS_A, DETS_B], [TRUTH_A, TRUTH_B], 3)
    paths = plot_pr_curves(result, ["a b", "c", "d/e"], tmp_path)
    assert [p.name for p in paths] == ["pr_000_a_b.png", "pr_001_c.png", "pr_002_d_e.png",
                                       "pr_all.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


TINY_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
filters=14
size=1
stride=8
activation=linear

[yolo]
mask=0,1
anchors=8,8,16,16
classes=2
num=2
"""


def test_map_cli_end_to_end(tmp_path: Path) -> None:
    import cv2
    import torch

    from darkcsp.cli import main
    from darkcsp.checkpoint import save_pt
    from darkcsp.network import Darknet

    torch.manual_seed(0)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    save_pt(Darknet(str(cfg)), tmp_path / "tiny.pt")  # random weights: random detections
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    paths = []
    for i in range(3):
        path = tmp_path / "img" / f"{i + 1}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        path.with_suffix(".txt").write_text(f"{i % 2} 0.5 0.5 0.4 0.4\n")
        paths.append(str(path))
    (tmp_path / "valid.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "names").write_text("a\nb\n")
    data = tmp_path / "t.data"
    data.write_text(f"classes=2\nvalid={tmp_path / 'valid.txt'}\nnames={tmp_path / 'names'}\n")
    metrics = tmp_path / "m.json"
    dets = tmp_path / "d.json"
    rc = main(["detector", "map", str(data), str(cfg), str(tmp_path / "tiny.pt"),
               "--points", "101", "--metrics-json", str(metrics), "--json", str(dets),
               "--quiet"])
    assert rc == 0
    m = json.loads(metrics.read_text())
    assert set(m) >= {"mAP", "per_class", "precision", "recall", "f1", "avg_iou", "tp", "fp",
                      "fn", "coco"}
    assert set(m["per_class"]) == {"a", "b"} and m["points"] == 101
    assert m["tp"] + m["fn"] == 3
    assert set(m["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    for value in [m["mAP"], m["precision"], m["recall"], *m["per_class"].values()]:
        assert 0 <= value <= 1
    assert {r["image_id"] for r in json.loads(dets.read_text())} <= {1, 2, 3}
