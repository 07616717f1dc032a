"""``darkcsp map``'s statistics at ``--thresh`` (TP, FP, FN, average IoU) as Darknet's
``validate_detector_map`` counts them (issue 12).

Darknet decides them while it walks one image's detection array, box by box and class by class,
and that array is in the order its NMS (``do_nms_sort``/``diounms_sort``) leaves it: one stable
``qsort`` per class, class 0 first, so the final order is by the last class's probability, ties
by the class before it, ... down to class 0, then decode order. darkcsp used to sort by the last
class only and keep decode order for ties, so a low-score candidate decoded early could take a
truth away from a high-score one (Darknet lets any EARLIER candidate of the image, whatever its
score, take the truth away at ``--thresh``).
"""
from __future__ import annotations

import numpy as np
import pytest

from darkcsp.evaluate.darknet_map import DarknetMap, ImageTruth, nms_sort_order
from darkcsp.evaluate.run import nms_candidates
from darkcsp.infer.nms import box_iou


def row(x1: float, y1: float, x2: float, y2: float, p0: float, p1: float, p2: float) -> list:
    """A ``get_network_boxes`` row ``[cx, cy, w, h, objectness, p0, p1, p2]`` from corners."""
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, max(p0, p1, p2), p0, p1, p2]


def cxcywh(x1: float, y1: float, x2: float, y2: float) -> list:
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


# Image 1 (3 classes). Truths: Ta class 0 [5,5,15,15], Tb class 1 [45,5,55,15].
# Rows in decode order; "top"/"bottom" halves are 10 x 6 boxes with IoU 60/100 = 0.6 with their
# truth and 20/100 = 0.2 with each other, so NMS (0.45) keeps both of a pair.
IMAGE1_ROWS = [row(5, 5, 15, 11, .1, 0, 0),     # r0: top of Ta,    class 0 .1 (below .25)
               row(5, 9, 15, 15, .9, .3, 0),    # r1: bottom of Ta, class 0 .9 AND class 1 .3
               row(45, 5, 55, 11, 0, .4, 0),    # r2: top of Tb,    class 1 .4
               row(45, 9, 55, 15, 0, .7, 0)]    # r3: bottom of Tb, class 1 .7
IMAGE1_TRUTH = ImageTruth([cxcywh(5, 5, 15, 15), cxcywh(45, 5, 55, 15)], [0, 1])
# Image 2. Truths: Tc class 2 [0,0,10,10], Td class 2 [1,0,11,10] (Tc/Td IoU 90/110),
# Te class 0 [30,0,40,10].
IMAGE2_ROWS = [row(0, 0, 10, 6, 0, 0, .3),       # r0 "A": IoU .6 with Tc, 54/106 = .509 with Td
               row(0, 4, 10, 10, 0, 0, .7),      # r1 "B": the same, other half
               row(30, 0, 40, 6, .1, 0, 0),      # r2: top of Te, class 0 .1 (below .25)
               row(30, 4, 40, 10, .5, 0, 0),     # r3: bottom of Te, class 0 .5
               row(30, .5, 40, 10.5, .3, 0, 0)]  # r4: IoU .6 with r3 -> suppressed by NMS
IMAGE2_TRUTH = ImageTruth([cxcywh(0, 0, 10, 10), cxcywh(1, 0, 11, 10), cxcywh(30, 0, 40, 10)],
                          [2, 2, 0])


def darknet_stats(rows_per_image: list[list[list[float]]], truths: list[ImageTruth]):
    acc = DarknetMap(3, thresh=0.25, iou_thresh=0.5, box_format="cxcywh")
    for rows, truth in zip(rows_per_image, truths):
        acc.add(nms_candidates(np.array(rows, dtype=np.float32), 0.45, "default", 0.6), truth)
    return acc.result(points=0)


def test_thresh_counts_hand_worked() -> None:
    """Worked by hand from validate_detector_map's loop (thresh .25, iou_thresh .5, NMS .45).

    NMS. Class 0 in image 2: r3 (.5) comes before r4 (.3) and their IoU is .6 > .45, so r4's
    class 0 becomes 0 and r4 is no candidate at all (it would have been one more FP on Te).
    No other pair of same-class rows overlaps by more than .45; the probabilities survive.

    Darknet's order (keys p2, then p1, then p0, all descending; decode order last):
      image 1: r3 (0,.7,0), r2 (0,.4,0), r1 (0,.3,.9), r0 (0,0,.1)
      image 2: r1 (.7,0,0), r0 (.3,0,0), r3 (0,0,.5), r4 (0,0,.3), r2 (0,0,.1)
    Walk (each candidate's truth = best same-class IoU > .5; TP if score > .25 and no earlier
    candidate of the image points at that truth):
      image 1: r3 c1 .7 -> Tb, first          TP, IoU .6
               r2 c1 .4 -> Tb, r3 had it       FP  (duplicate on one truth)
               r1 c0 .9 -> Ta, first          TP, IoU .6
               r1 c1 .3 -> no class-1 truth    FP  (second class of the same box)
               r0 c0 .1 -> Ta                  below thresh: not counted
      image 2: r1 c2 .7 -> Tc (.6 > .509)      TP, IoU .6
               r0 c2 .3 -> Tc (.6 > .509)      FP: Tc already pointed at; no fall-back to Td
                                               although its IoU with Td (.509) is above .5
               r3 c0 .5 -> Te, first          TP, IoU .6
               r2 c0 .1 -> Te                  below thresh
    TP 4, FP 3, FN = 5 truths - 4 = 1 (Td), average IoU = 4 * .6 / (4 + 3) = .342857,
    precision 4/7, recall 4/5, F1 2/3. Per class: TP 2/1/1, FP 0/2/1.

    The old order (last class only, ties in decode order) walked image 1 as r0, r1, r2, r3 and
    image 2 as r1, r0, r2, r3: r0 (.1, below thresh) pointed at Ta first, so r1's .9 on Ta was
    an FP; r2 (.4) took Tb before r3 (.7), which became the FP; r2 (.1) took Te before r3 (.5).
    It counted TP 2, FP 5, FN 3, average IoU 1.2 / 7 = .171429.

    mAP does not depend on that order (the ranking is by score): class 0 ranks .9 TP (Ta),
    .5 TP (Te), .1 FP, .1 FP -> AP 1; class 1 .7 TP (Tb), .4 FP, .3 FP -> AP 1; class 2
    .7 TP (Tc), .3 FP (Tc claimed) with 2 truths -> recall .5, AP .5; mAP 2.5 / 3.
    """
    r = darknet_stats([IMAGE1_ROWS, IMAGE2_ROWS], [IMAGE1_TRUTH, IMAGE2_TRUTH])
    assert (r.tp, r.fp, r.fn) == (4, 3, 1)
    assert r.avg_iou == pytest.approx(2.4 / 7, rel=1e-6)
    assert r.precision == pytest.approx(4 / 7, rel=1e-6)
    assert r.recall == pytest.approx(0.8, rel=1e-6)
    assert r.f1 == pytest.approx(2 / 3, rel=1e-6)
    assert list(r.tp_per_class) == [2, 1, 1] and list(r.fp_per_class) == [0, 2, 1]
    assert r.ap.tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert r.map == pytest.approx(2.5 / 3)


def test_candidates_follow_darknet_nms_order() -> None:
    """The candidate list itself, in the order worked out above (image 2)."""
    found = nms_candidates(np.array(IMAGE2_ROWS, dtype=np.float32), 0.45, "default", 0.6)
    assert found.labels.tolist() == [2, 2, 0, 0]
    assert found.scores.tolist() == pytest.approx([.7, .3, .5, .1])
    assert found.boxes[:, 1].tolist() == pytest.approx([7, 3, 7, 3])  # B, A, r3, r2
    # without NMS (nms 0) Darknet does not sort: decode order, nothing suppressed
    raw = nms_candidates(np.array(IMAGE2_ROWS, dtype=np.float32), 0, "default", 0.6)
    assert raw.scores.tolist() == pytest.approx([.3, .7, .1, .5, .3])


def _literal_do_nms_sort(rows: np.ndarray, nms: float) -> tuple[list[int], np.ndarray]:
    """``do_nms_sort`` statement by statement: the objectness-0 swap loop, then per class a
    stable sort (glibc's qsort is a merge sort) by that class, descending, and the greedy
    suppression. Returns the final order (original row indices) and the probabilities."""
    dets = [[i, rows[i, :4], float(rows[i, 4]), rows[i, 5:].astype(np.float32).copy()]
            for i in range(len(rows))]
    k = len(dets) - 1
    i = 0
    while i <= k:
        if dets[i][2] == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    for c in range(rows.shape[1] - 5):
        dets[:total] = sorted(dets[:total], key=lambda d: -d[3][c])
        for i in range(total):
            if dets[i][3][c] == 0:
                continue
            for j in range(i + 1, total):
                if box_iou(dets[i][1], dets[j][1]) > np.float32(nms):
                    dets[j][3][c] = 0
    return [d[0] for d in dets], np.array([d[3] for d in dets])


@pytest.mark.parametrize("seed", range(4))
def test_order_equals_literal_darknet_nms(seed: int) -> None:
    """Random rows with many zero probabilities (ties) and some objectness 0: the candidates
    equal the literal loop's array walked box by box, class by class."""
    rng = np.random.default_rng(seed)
    n, classes = 60, 4
    obj = rng.uniform(0.01, 1, n).astype(np.float32)
    obj[rng.random(n) < 0.15] = 0
    probs = (rng.uniform(0, 1, (n, classes)) * obj[:, None]).astype(np.float32)
    probs[rng.random((n, classes)) < 0.6] = 0
    rows = np.concatenate([rng.uniform(0, 1, (n, 2)), rng.uniform(0.05, 0.4, (n, 2)),
                           obj[:, None], probs], axis=1).astype(np.float32)
    order, after = _literal_do_nms_sort(rows, 0.45)
    assert nms_sort_order(rows[:, 4], rows[:, 5:]).tolist() == order
    found = nms_candidates(rows, 0.45, "default", 0.6)
    box_i, cls_k = np.nonzero(after > 0)
    assert found.labels.tolist() == cls_k.tolist()
    assert found.scores.tolist() == after[box_i, cls_k].tolist()
    assert np.array_equal(found.boxes, rows[np.array(order, dtype=np.int64)[box_i], :4])
