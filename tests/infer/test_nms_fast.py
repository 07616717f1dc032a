"""The fast NMS (spatial join + vectorised greedy) and the vectorised printing order give
exactly what the plain Darknet loops give."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkcsp.infer import nms
from darkcsp.infer.nms import NMS_KINDS, box_diou, box_iou, greedy_keep, nms_sort, \
    overlapping_pairs
from darkcsp.infer.output import darknet_order, detections_from_rows

F32 = np.float32


# -- references ---------------------------------------------------------------------------------

def _measure(a: np.ndarray, b: np.ndarray, kind: str, beta: float) -> F32:
    if kind == "greedynms":
        return box_diou(a, b, 0.6)
    if kind == "diounms":
        return box_diou(a, b, beta)
    return box_iou(a, b)


def _reference_nms(dets: np.ndarray, thresh: float, kind: str, beta: float) -> np.ndarray:
    """do_nms_sort / diounms_sort as the C loops run, one pair at a time: rows with
    objectness 0 left out; per class a stable sort by decreasing probability; a box with a
    non-zero probability zeroes every later box whose overlap with it is > thresh."""
    out = np.array(dets, dtype=F32, copy=True)
    if thresh <= 0:
        return out
    t = F32(thresh)
    rows = [r for r in range(len(out)) if out[r, 4] != 0]
    boxes = out[:, :4]
    cache: dict[tuple[int, int], bool] = {}

    def hit(i: int, j: int) -> bool:
        key = (min(i, j), max(i, j))
        if key not in cache:
            cache[key] = bool(_measure(boxes[key[0]], boxes[key[1]], kind, beta) > t)
        return cache[key]

    for k in range(out.shape[1] - 5):
        order = sorted(rows, key=lambda r: -out[r, 5 + k])  # NaN: see the strategies (none)
        for a, i in enumerate(order):
            if out[i, 5 + k] == 0:
                continue
            for j in order[a + 1:]:
                if hit(i, j):
                    out[j, 5 + k] = 0
    return out


def _all_pairs_reference(boxes: np.ndarray, thresh: float, kind: str, beta: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The all-pairs test (the implementation before the spatial join)."""
    t = F32(thresh)
    boxes = np.asarray(boxes, dtype=F32)
    n = len(boxes)
    iou = box_iou(boxes[:, None, :], boxes[None, :, :])
    i, j = np.nonzero((iou > t) & (np.arange(n)[None, :] > np.arange(n)[:, None]))
    if kind in ("greedynms", "diounms") and len(i):
        keep = _measure(boxes[i], boxes[j], kind, beta) > t
        i, j = i[keep], j[keep]
    return i, j


def _pairs_nms_reference(dets: np.ndarray, thresh: float, kind: str, beta: float
                         ) -> np.ndarray:
    """Darknet's greedy per class on the all-pairs overlap graph, one box at a time."""
    out = np.array(dets, dtype=F32, copy=True)
    rows = np.flatnonzero((out[:, 4] != 0) & (out[:, 5:] != 0).any(axis=1))
    first, second = _all_pairs_reference(out[rows, :4], thresh, kind, beta)
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(rows[first].tolist(), rows[second].tolist()):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    for k in range(out.shape[1] - 5):
        probs = out[:, 5 + k]
        cand = rows[probs[rows] != 0]
        order = cand[np.argsort(-probs[cand], kind="stable")].tolist()
        position = {r: p for p, r in enumerate(order)}
        for r in order:
            if out[r, 5 + k] == 0:
                continue
            for s in neighbours.get(r, ()):
                if position.get(s, -1) > position[r]:
                    out[s, 5 + k] = 0
    return out


def _reference_order(rows: np.ndarray, thresh: float, names) -> list[tuple[int, list[int]]]:
    """draw_detections_v3's selection and order, row by row."""
    t = F32(thresh)
    selected = []
    for i in range(len(rows)):
        best, best_prob = -1, t
        for j in range(rows.shape[1] - 5):
            p = rows[i, 5 + j]
            if not p > t:
                continue
            if names is not None and j < len(names) and names[j].startswith("dont_show"):
                continue
            if p > best_prob:
                best, best_prob = j, p
        if best >= 0:
            selected.append((i, best))
    lefts = [F32(rows[i, 0]) - F32(rows[i, 2]) / F32(2) for i, _ in selected]
    ordered = [selected[k] for k in sorted(range(len(selected)), key=lambda k: lefts[k])]
    return [(i, [best] + [j for j in range(rows.shape[1] - 5) if rows[i, 5 + j] > t
                          and j != best]) for i, best in ordered]


# -- strategies ---------------------------------------------------------------------------------

_COORDS = [0.0, 0.1, 0.25, 0.3, 0.31, 0.5, 0.5000001, 0.7, 1.0]
_SIZES = [0.0, 0.05, 0.1, 0.2, 0.2000001, 0.3, 0.5, 1.0]
_PROBS = [0.0, 0.0, 0.1, 0.5, 0.5, 0.9]
_WILD = [np.inf, -np.inf, np.nan, 1e-30, 1e-8, 3e-4, 1e8, 1e30, -0.3, -1e-8, 0.0]


@st.composite
def _dets(draw: st.DrawFn, wild: bool = False) -> np.ndarray:
    n = draw(st.integers(0, 14))
    classes = draw(st.integers(1, 3))
    value = st.sampled_from(_COORDS)
    size = st.sampled_from(_SIZES)
    if wild:
        value = st.one_of(value, st.sampled_from(_WILD), st.floats(-2, 2, width=32))
        size = st.one_of(size, st.sampled_from(_WILD), st.floats(0, 2, width=32))
    rows = []
    for _ in range(n):
        if rows and draw(st.integers(0, 4)) == 0:
            box = list(rows[draw(st.integers(0, len(rows) - 1))][:4])  # a duplicate box
        else:
            box = [draw(value), draw(value), draw(size), draw(size)]
        obj = draw(st.sampled_from([0.0, 0.5, 1.0]))
        probs = [draw(st.sampled_from(_PROBS)) for _ in range(classes)]
        rows.append(box + [obj] + probs)
    return np.array(rows, dtype=F32).reshape(n, 5 + classes)


_THRESHES = st.sampled_from([0.0, 0.01, 0.3, 0.45, 0.6, 0.9, 1.0])
_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _both_paths(dets: np.ndarray, thresh: float, kind: str, beta: float) -> list[np.ndarray]:
    """nms_sort as it runs, and through the spatial join with either greedy (per class, all
    classes batched)."""
    results = [nms_sort(dets, thresh, kind, beta)]
    if thresh > 0:
        out = np.array(dets, dtype=F32, copy=True)
        rows = np.flatnonzero((out[:, 4] != 0) & (out[:, 5:] != 0).any(axis=1))
        first, second = nms._joined_pairs(out[rows, :4], thresh, kind, beta)
        for greedy in (nms._nms_per_class, nms._nms_batched):
            copy = out.copy()
            greedy(copy, rows, first, second)
            results.append(copy)
    return results


# -- NMS ----------------------------------------------------------------------------------------

@_SETTINGS
@given(dets=_dets(), thresh=_THRESHES, kind=st.sampled_from(NMS_KINDS),
       beta=st.sampled_from([0.6, 0.9, 1.3]))
def test_nms_equals_the_darknet_loops(dets, thresh, kind, beta):
    expected = _reference_nms(dets, thresh, kind, beta)
    for ours in _both_paths(dets, thresh, kind, beta):
        assert np.array_equal(ours, expected, equal_nan=True)


@_SETTINGS
@given(dets=_dets(wild=True), thresh=_THRESHES, kind=st.sampled_from(NMS_KINDS))
def test_nms_equals_the_darknet_loops_on_odd_boxes(dets, thresh, kind):
    """inf, NaN, negative, zero, tiny and huge coordinates and sizes."""
    with np.errstate(all="ignore"):
        expected = _reference_nms(dets, thresh, kind, 0.6)
        for ours in _both_paths(dets, thresh, kind, 0.6):
            assert np.array_equal(ours, expected, equal_nan=True)


@_SETTINGS
@given(dets=_dets(wild=True), thresh=_THRESHES.filter(lambda t: t > 0),
       kind=st.sampled_from(NMS_KINDS))
def test_joined_pairs_equal_all_pairs(dets, thresh, kind):
    boxes = dets[:, :4]
    with np.errstate(all="ignore"):
        expected = _all_pairs_reference(boxes, thresh, kind, 0.6)
        i, j = nms._joined_pairs(boxes, thresh, kind, 0.6)
        order = np.lexsort((j, i))
        assert np.array_equal(i[order], expected[0]) and np.array_equal(j[order], expected[1])
        with mock.patch.object(nms, "_ALL_PAIRS_MAX", 0):
            got = overlapping_pairs(boxes, thresh, kind, 0.6)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def _crowd(n: int, classes: int, seed: int) -> np.ndarray:
    """Rows like a yolo head's at a low threshold: centres on grids, sizes from anchors
    jittered, random objectness and probabilities, many of them zeroed."""
    rng = np.random.default_rng(seed)
    anchors = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119]]) / 416
    grid = rng.choice([13, 26, 52], n)
    cells = rng.integers(0, 52, (n, 2)) % grid[:, None]
    dets = np.zeros((n, 5 + classes), dtype=F32)
    dets[:, 0:2] = (cells + rng.random((n, 2))) / grid[:, None]
    dets[:, 2:4] = anchors[rng.integers(0, len(anchors), n)] * np.exp(rng.normal(0, .3, (n, 2)))
    dets[:, 4] = rng.random(n)
    probs = dets[:, 4:5] * rng.random((n, classes)) ** 3
    probs = np.round(probs, 2)  # ties
    dets[:, 5:] = np.where(probs > 0.005, probs, 0)
    dets[rng.random(n) < 0.05, 4] = 0
    dets[rng.integers(0, n, 20)] = dets[rng.integers(0, n, 20)]  # duplicates
    return dets


@pytest.mark.parametrize("kind,thresh", [("default", 0.45), ("greedynms", 0.45),
                                         ("diounms", 0.3), ("default", 0.02)])
def test_medium_crowd_equals_the_all_pairs_greedy(kind, thresh):
    dets = _crowd(2000, 4, seed=7)
    ours = nms_sort(dets, thresh, kind, 0.8)
    assert np.array_equal(ours, _pairs_nms_reference(dets, thresh, kind, 0.8))
    assert (ours[:, 5:] == 0).sum() > (dets[:, 5:] == 0).sum() + 100  # much was suppressed


def test_overlapping_pairs_are_ordered_and_exact():
    dets = _crowd(1500, 1, seed=3)
    for thresh in (0.02, 0.45, 0.8):
        got = overlapping_pairs(dets[:, :4], thresh)
        expected = _all_pairs_reference(dets[:, :4], thresh, "default", 0.6)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


# -- the greedy ---------------------------------------------------------------------------------

def _sequential_keep(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    targets: dict[int, list[int]] = {}
    for a, b in zip(src.tolist(), dst.tolist()):
        targets.setdefault(a, []).append(b)
    for i in range(n):
        if keep[i]:
            for j in targets.get(i, ()):
                keep[j] = False
    return keep


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                         max_size=120))))
def test_greedy_keep_is_the_sequential_greedy(case):
    n, edges = case
    pairs = np.array([(min(a, b), max(a, b)) for a, b in edges if a != b],
                     dtype=np.int64).reshape(-1, 2)
    src, dst = pairs[:, 0], pairs[:, 1]
    assert np.array_equal(greedy_keep(n, src, dst), _sequential_keep(n, src, dst))


def test_greedy_keep_long_chains():
    """Suppression chains (each box overlaps the next only) need many propagation rounds:
    the sequential finish takes over; branches and skips on top."""
    rng = np.random.default_rng(0)
    n = 3000
    extra = rng.integers(0, n - 10, 300)
    src = np.r_[np.arange(n - 1), extra]
    dst = np.r_[np.arange(1, n), extra + rng.integers(2, 10, 300)]
    assert np.array_equal(greedy_keep(n, src, dst), _sequential_keep(n, src, dst))
    chain = np.arange(n - 1)
    assert greedy_keep(n, chain, chain + 1).tolist() == [i % 2 == 0 for i in range(n)]


def test_sliding_boxes_chain_through_nms():
    """Boxes sliding right with decreasing probability: a chain of suppressions in NMS."""
    n = 600
    dets = np.zeros((n, 7), dtype=F32)
    dets[:, 0] = 0.1 + np.arange(n) * 0.0004
    dets[:, 1] = 0.5
    dets[:, 2:4] = 0.002 * 3, 0.01
    dets[:, 4] = 1
    dets[:, 5] = np.linspace(0.9, 0.1, n)
    dets[:, 6] = dets[::-1, 5]
    ours = nms_sort(dets, 0.7)
    assert np.array_equal(ours, _pairs_nms_reference(dets, 0.7, "default", 0.6))
    assert 0 < (ours[:, 5] == 0).sum() < n - 1


# -- printing order -----------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(0, 40), classes=st.integers(1, 6),
       thresh=st.sampled_from([0.0, 0.25, 0.5]), hide=st.booleans(), short=st.booleans())
def test_darknet_order_equals_the_loop(seed, n, classes, thresh, hide, short):
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 5 + classes), dtype=F32)
    rows[:, 0] = rng.choice([0.2, 0.3, 0.5], n) + rng.choice([0, 0.01], n)  # tied left edges
    rows[:, 1] = rng.random(n)
    rows[:, 2] = rng.choice([0.1, 0.12, 0.3], n)
    rows[:, 3] = rng.random(n)
    rows[:, 4] = 1
    rows[:, 5:] = rng.choice([0.0, 0.25, 0.3, 0.6, 0.6, 0.9], (n, classes))  # tied probs
    names = [f"c{j}" for j in range(classes)]
    if hide:
        for j in rng.choice(classes, max(1, classes // 2), replace=False):
            names[j] = "dont_show" + names[j]
    if short:
        names = names[:max(0, classes - 2)]
    for nm in (names, None):
        assert darknet_order(rows, thresh, nm) == _reference_order(rows, thresh, nm)
    as64 = rows.astype(np.float64)
    assert darknet_order(as64, thresh, names) == _reference_order(as64, thresh, names)


def test_detections_from_rows_follow_the_order():
    rows = _crowd(300, 5, seed=11)
    names = ["a", "dont_show b", "c", "d", "e"]
    entries = detections_from_rows(rows, 640, 480, 0.1, names, "x.jpg")
    expected = []
    for i, classes in _reference_order(rows, 0.1, names):
        x, y, w, h = (float(v) for v in rows[i, :4])
        box = [(x - w / 2) * 640, (y - h / 2) * 480, (x + w / 2) * 640, (y + h / 2) * 480]
        expected += [{"image": "x.jpg", "class_id": c, "name": names[c],
                      "prob": float(rows[i, 5 + c]), "box": box} for c in classes]
    assert entries == expected and len(entries) > 50
