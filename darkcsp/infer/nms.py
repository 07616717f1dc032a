"""Darknet's per-class greedy NMS (``do_nms_sort``, ``diounms_sort``) on detection rows.

Rows are ``[x, y, w, h, objectness, prob_0 ..]`` (see :mod:`darkcsp.infer.decode`). For each
class, boxes are taken by decreasing probability; a box whose probability for that class is
still non-zero zeroes that class in every later box whose overlap with it is > the threshold.
Suppressed boxes keep their other classes; nothing is removed (Darknet zeroes, then the printer
skips rows without a probability above the threshold). Rows with objectness 0 are left out, as
Darknet moves them to the end of the array first.

Overlaps, in float32 as in ``box.c``:

* ``default`` (and ``cornersnms``): IoU;
* ``greedynms``: DIoU with a FIXED exponent, ``IoU - (d^2/c^2)^0.6`` (``box_diou``);
* ``diounms``: ``IoU - (d^2/c^2)^beta_nms`` (``box_diounms``).

Darknet's qsort is not stable, so among boxes of exactly equal probability the order (and thus
which one survives) is unspecified in Darknet; here it is the row order.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import RegionHead, YoloHead

F32 = np.float32
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


def _split(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    b = np.asarray(boxes, dtype=F32)
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``box_iou`` in float32, elementwise with broadcasting over (..., 4) boxes (x, y, w, h).

    Exactly symmetric in ``a`` and ``b``, as in C (max, min, + and * commute in IEEE).
    """
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    two = F32(2)
    w = np.minimum(ax + aw / two, bx + bw / two) - np.maximum(ax - aw / two, bx - bw / two)
    h = np.minimum(ay + ah / two, by + bh / two) - np.maximum(ay - ah / two, by - bh / two)
    inter = np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)
    union = (aw * ah + bw * bh) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter == 0) | (union == 0), F32(0), inter / union)
    return iou.astype(F32)


def box_diou(a: np.ndarray, b: np.ndarray, beta: float = 0.6) -> np.ndarray:
    """``box_diou`` / ``box_diounms``: IoU minus (centre distance^2 / enclosing diagonal^2)
    to the power ``beta`` (the power taken in double, as C's ``pow``); broadcasting."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    two = F32(2)
    w = np.maximum(ax + aw / two, bx + bw / two) - np.minimum(ax - aw / two, bx - bw / two)
    h = np.maximum(ay + ah / two, by + bh / two) - np.minimum(ay - ah / two, by - bh / two)
    c = w * w + h * h
    iou = box_iou(a, b)
    d = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (d / c).astype(F32)
        u = np.power(ratio.astype(np.float64), float(beta)).astype(F32)
    return np.where(c == 0, iou, iou - u).astype(F32)


def _overlap(a: np.ndarray, b: np.ndarray, kind: str, beta_nms: float) -> np.ndarray:
    """The overlap measure of ``kind`` (broadcasting)."""
    if kind == "greedynms":
        return box_diou(a, b, 0.6)
    if kind == "diounms":
        return box_diou(a, b, beta_nms)
    return box_iou(a, b)


# -- candidate pairs ----------------------------------------------------------------------------
#
# Few rows (the common case) are tested all against all, in chunks. Many rows (an untrained head
# at a low threshold gives tens of thousands) go through a spatial join first, which yields a
# SUPERSET of the pairs whose float32 overlap can be > thresh; the exact float32 measure
# (``box_iou``/``_overlap`` elementwise, so bit-identical) then decides, as for few rows.
#
# The superset, in the float32 edges box_iou computes (l = x - w/2, r = x + w/2, ...):
# * box_iou > 0 needs min(r) - max(l) > 0 and the same in y, and a float32 difference is > 0
#   exactly when its operands are ordered, so only boxes with l < r and t < b take part, and a
#   pair must have intersecting edge rectangles: the exact join (:func:`_rect_pairs`), used
#   for every pair when thresh < _TIGHT_MIN, and for the pairs with a box that is not plain;
# * for thresh >= _TIGHT_MIN and "plain" boxes (finite, sizes W = r - l, H = b - t in
#   [1e-15, 1e15], at least 2^-10 of the edge magnitudes, so w and h differ from W and H by a
#   relative 2^-14 at most and every float32 step of box_iou stays within a relative 2^-10
#   of exact arithmetic), IoU > t implies, for ts = t (1 - 2^-7) (t (1 - 2^-9) suffices),
#   I (1 + ts) > ts (W_a H_a + W_b H_b) with I <= OW OH, OW <= min(W_a, W_b) and
#   OW <= (W_a + W_b)/2 - |centre_a - centre_b| (same in y): :func:`_centre_pairs` finds all
#   pairs that meet this bound.

_ALL_PAIRS_MAX = 384  # up to this many boxes, all pairs (one or few chunks)
_TIGHT_MIN = 0.05     # below this thresh the shrunk join gains little: exact join for all
_CLIP = (1 << 30) - 1  # largest grid cell index of the join, per axis
_GROUP = 2.0 ** 0.5     # size ratio spanned by a group of the tight join
_CELLS = 3             # cells per group size, per axis


def _all_pairs(boxes: np.ndarray, thresh: float, kind: str, beta_nms: float,
               chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Every pair tested (the reference method), pairs in (i, j) order."""
    t = F32(thresh)
    n = len(boxes)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    cols = np.arange(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        iou = box_iou(boxes[start:stop, None, :], boxes[None, :, :])
        hit = (iou > t) & (cols[None, :] > np.arange(start, stop)[:, None])
        i, j = np.nonzero(hit)
        i = i + start
        if kind in ("greedynms", "diounms") and len(i):
            keep = _overlap(boxes[i], boxes[j], kind, beta_nms) > t
            i, j = i[keep], j[keep]
        firsts.append(i)
        seconds.append(j)
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


def _ragged(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value): for each k, values starts[k] .. starts[k] + counts[k] - 1, owner k."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    if total == 0:
        return owner, np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return owner, np.arange(total) - np.repeat(offsets - starts, counts)


def _rect_pairs(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                flag: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a, b), a < b, of closed rectangles [x0, x1] x [y0, y1] (float64, finite,
    x0 <= x1, y0 <= y1) that intersect; with ``flag``, only pairs with a flagged member.
    Unordered output.

    A grid per size level: a rectangle of level L (extent <= s0 2^L) is stored in the few cells
    of grid L it touches and meets the rectangles of level <= L in those cells; each pair is
    reported once, in the cell of the point (max x0, max y0), which lies in both."""
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    n = len(x0)
    if n < 2:
        return empty
    ext = np.maximum(x1 - x0, y1 - y0)
    ox, oy = float(x0.min()), float(y0.min())
    positive = ext[ext > 0]
    s0 = float(np.quantile(positive, 0.05)) if len(positive) else 1.0
    s0 = max(s0, float(ext.max()) * 2.0 ** -900)  # at most 900 levels, cell sizes finite
    level = np.ceil(np.log2(np.maximum(ext / s0, 1.0))).astype(np.int64)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    by_level = np.argsort(level, kind="stable")
    bounds = np.searchsorted(level[by_level], np.arange(level.max() + 2))
    for lev in np.unique(level):
        stored = by_level[bounds[lev]:bounds[lev + 1]]
        queries = by_level[:bounds[lev + 1]]
        if flag is not None:
            # a pair needs a flagged member: flagged stored x all queries, the rest x flagged
            parts = [(stored[flag[stored]], queries), (stored[~flag[stored]],
                                                       queries[flag[queries]])]
        else:
            parts = [(stored, queries)]
        size = s0 * 2.0 ** int(lev)
        # cell indices, clipped (monotone, so pairs are still found) to fit in the cell id
        ix0, ix1, iy0, iy1 = (np.clip(np.floor((v - o) / size), 0, _CLIP).astype(np.int64)
                              for v, o in ((x0, ox), (x1, ox), (y0, oy), (y1, oy)))
        ny = _CLIP + 1
        for st, qu in parts:
            if len(st) == 0 or len(qu) == 0:
                continue
            a, b, cell = _shared_cells(*_cells(st, ix0, ix1, iy0, iy1, ny),
                                       *_cells(qu, ix0, ix1, iy0, iy1, ny))
            if len(a) == 0:
                continue
            keep = (level[a] < lev) | (a < b)
            keep &= cell == np.maximum(ix0[a], ix0[b]) * ny + np.maximum(iy0[a], iy0[b])
            keep &= (x0[b] <= x1[a]) & (x0[a] <= x1[b]) & (y0[b] <= y1[a]) & (y0[a] <= y1[b])
            firsts.append(a[keep])
            seconds.append(b[keep])
    return _as_ordered_pairs(firsts, seconds)


def _as_ordered_pairs(firsts: list[np.ndarray], seconds: list[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The pairs found, each as (smaller index, larger index)."""
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(a, b), np.maximum(a, b)


def _cells(boxes: np.ndarray, ix0: np.ndarray, ix1: np.ndarray, iy0: np.ndarray,
           iy1: np.ndarray, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """(box, cell id) for every grid cell each of ``boxes`` touches."""
    cy = iy1[boxes] - iy0[boxes] + 1
    counts = (ix1[boxes] - ix0[boxes] + 1) * cy
    owner, k = _ragged(np.zeros(len(boxes), dtype=np.int64), counts)
    box = boxes[owner]
    cyo = cy[owner]
    return box, (ix0[box] + k // cyo) * ny + iy0[box] + k % cyo


def _shared_cells(stored_box: np.ndarray, stored_cell: np.ndarray, query_box: np.ndarray,
                  query_cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query box, stored box, cell) for every query entry and stored entry in the same grid
    cell (entries: a box and one cell it occupies)."""
    by_cell = np.argsort(stored_cell, kind="stable")
    stored_box, stored_cell = stored_box[by_cell], stored_cell[by_cell]
    lo = np.searchsorted(stored_cell, query_cell, "left")
    hi = np.searchsorted(stored_cell, query_cell, "right")
    owner, where = _ragged(lo, hi - lo)
    return query_box[owner], stored_box[where], query_cell[owner]


def _centre_pairs(cx: np.ndarray, cy: np.ndarray, ww: np.ndarray, hh: np.ndarray,
                  ts: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, of boxes (centres, sizes; float64, finite, sizes > 0) that can
    have an overlap OW x OH > g (W_a H_a + W_b H_b), g = ts / (1 + ts), with OW <= min(W),
    OW <= (W_a + W_b)/2 - |cx_a - cx_b| (same in y): what IoU > ts needs. Unordered.

    Hence |cx_a - cx_b| < k (W_a + W_b), k = 1/2 - g, and min(W)/max(W) > ts (same in y), so
    also max(W, H) within a factor 1/ts. The boxes are grouped by size e = max(W, H) (groups
    spanning a factor about _GROUP); each group is stored by centre in a grid of cells a
    fraction of its largest e, and looked up by the boxes of e > ts x its smallest e, up to
    its own, from the cells their windows cover; pairs within a group are kept once (a < b)."""
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if len(cx) < 2 or ts >= 1.5:  # an IoU is at most 1 (give or take rounding)
        return empty
    g = ts / (1 + ts)
    k = 0.5 - g
    ext = np.maximum(ww, hh)
    area = ww * hh
    by_ext = np.argsort(ext, kind="stable")
    ext_sorted = ext[by_ext]
    s0 = float(ext_sorted[len(ext_sorted) // 20])
    group = np.ceil(np.log(np.maximum(ext_sorted / s0, 1.0)) / np.log(_GROUP)).astype(np.int64)
    group = np.maximum.accumulate(group)  # (monotone already; guards against log rounding)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    stops = np.r_[starts[1:], len(group)]
    rank = np.empty(len(ext), dtype=np.int64)
    rank[by_ext] = np.arange(len(ext))
    ox, oy = float(cx.min()), float(cy.min())
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for lo, hi in zip(starts.tolist(), stops.tolist()):
        stored = by_ext[lo:hi]
        first_query = int(np.searchsorted(ext_sorted, ts * ext_sorted[lo] * (1 - 1e-9), "right"))
        queries = by_ext[min(first_query, lo):hi]
        top = float(ext_sorted[hi - 1])  # every stored W and H is <= top
        size = top / _CELLS
        if size <= 0 or not np.isfinite(size):
            size = 1.0
        sx = np.clip(np.floor((cx[stored] - ox) / size), 0, _CLIP).astype(np.int64)
        sy = np.clip(np.floor((cy[stored] - oy) / size), 0, _CLIP).astype(np.int64)
        s_cell = sx * (_CLIP + 1) + sy
        qx, qy, qw, qh = cx[queries], cy[queries], ww[queries], hh[queries]
        rx = k * (qw + np.minimum(top, qw / ts)) * (1 + 1e-9)
        ry = k * (qh + np.minimum(top, qh / ts)) * (1 + 1e-9)
        ix0, ix1, iy0, iy1 = (np.clip(np.floor((v - o) / size), 0, _CLIP).astype(np.int64)
                              for v, o in ((qx - rx, ox), (qx + rx, ox), (qy - ry, oy),
                                           (qy + ry, oy)))
        q_box, q_cell = _cells(np.arange(len(queries)), ix0, ix1, iy0, iy1, _CLIP + 1)
        a, b, _ = _shared_cells(stored, s_cell, queries[q_box], q_cell)
        if len(a) == 0:
            continue
        keep = (rank[a] < lo) | (a < b)
        a, b = a[keep], b[keep]
        wa, wb, ha, hb = ww[a], ww[b], hh[a], hh[b]
        ox_ = np.minimum(np.minimum(wa, wb), (wa + wb) / 2 - np.abs(cx[a] - cx[b]))
        oy_ = np.minimum(np.minimum(ha, hb), (ha + hb) / 2 - np.abs(cy[a] - cy[b]))
        keep = (ox_ > 0) & (oy_ > 0) & (ox_ * oy_ > g * (1 - 1e-9) * (area[a] + area[b]))
        firsts.append(a[keep])
        seconds.append(b[keep])
    return _as_ordered_pairs(firsts, seconds)


def _joined_pairs(boxes: np.ndarray, thresh: float, kind: str,
                  beta_nms: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`overlapping_pairs` through the spatial join (unordered pairs, i < j)."""
    b = np.asarray(boxes, dtype=F32)
    x, y, w, h = _split(b)
    two = F32(2)
    # the float32 edges exactly as box_iou forms them
    left, right = (x - w / two).astype(np.float64), (x + w / two).astype(np.float64)
    top, bottom = (y - h / two).astype(np.float64), (y + h / two).astype(np.float64)
    live = np.flatnonzero((left < right) & (top < bottom))
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    if len(live) >= 2:
        big = 1e300
        l, r = np.clip(left[live], -big, big), np.clip(right[live], -big, big)
        t, bt = np.clip(top[live], -big, big), np.clip(bottom[live], -big, big)
        if thresh >= _TIGHT_MIN:
            with np.errstate(over="ignore", invalid="ignore"):
                ww, hh = r - l, bt - t
                plain = ((ww >= 1e-15) & (ww <= 1e15) & (hh >= 1e-15) & (hh <= 1e15)
                         & (ww * 1024 >= np.abs(l) + np.abs(r))
                         & (hh * 1024 >= np.abs(t) + np.abs(bt))
                         & np.isfinite(left[live]) & np.isfinite(right[live])
                         & np.isfinite(top[live]) & np.isfinite(bottom[live]))
            ts = float(thresh) * (1 - 2.0 ** -7)
            p = np.flatnonzero(plain)
            i, j = _centre_pairs((l[p] + r[p]) / 2, (t[p] + bt[p]) / 2, ww[p], hh[p], ts)
            firsts.append(live[p[i]])
            seconds.append(live[p[j]])
            if not plain.all():
                i, j = _rect_pairs(l, r, t, bt, flag=~plain)
                firsts.append(live[i])
                seconds.append(live[j])
        else:
            i, j = _rect_pairs(l, r, t, bt)
            firsts.append(live[i])
            seconds.append(live[j])
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    i, j = np.concatenate(firsts), np.concatenate(seconds)
    tt = F32(thresh)
    keep = box_iou(b[i], b[j]) > tt
    i, j = i[keep], j[keep]
    if kind in ("greedynms", "diounms") and len(i):
        keep = _overlap(b[i], b[j], kind, beta_nms) > tt  # DIoU <= IoU: only IoU hits can pass
        i, j = i[keep], j[keep]
    return i, j


def overlapping_pairs(boxes: np.ndarray, thresh: float, kind: str = "default",
                      beta_nms: float = 0.6, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of (N, 4) boxes whose overlap measure is > ``thresh``, in
    (i, j) order.

    The measure is symmetric, so each pair is tested once. The DIoU penalty is never negative,
    so only pairs with IoU > thresh are candidates for it (computed on those alone). Many boxes
    are first narrowed down by a spatial join that keeps every pair that can pass (see above);
    ``chunk`` is the row block of the all-pairs test used for few boxes.
    """
    boxes = np.asarray(boxes, dtype=F32)
    if len(boxes) <= _ALL_PAIRS_MAX:
        return _all_pairs(boxes, thresh, kind, beta_nms, chunk)
    i, j = _joined_pairs(boxes, thresh, kind, beta_nms)
    order = np.lexsort((j, i))
    return i[order], j[order]


# -- the greedy ---------------------------------------------------------------------------------

_UNDECIDED, _KEPT, _REMOVED = 0, 1, 2
Order = Callable[[np.ndarray], np.ndarray]  # nodes -> the same nodes in topological order


def _greedy_state(n: int, src: np.ndarray, dst: np.ndarray, topo: Order) -> np.ndarray:
    """Kept mask of the greedy over a DAG of ``n`` nodes: a node is kept unless an edge
    ``src -> dst`` comes from a kept node. ``topo(nodes)`` returns ``nodes`` in a topological
    order (only called when needed).

    Rounds of vectorised propagation (a node whose sources are all removed is kept; a node
    with a kept source is removed), dropping decided nodes and dead edges each round. Every
    round decides at least the first undecided node in topological order; when a round leaves
    more than half of the undecided nodes (a long suppression chain), the rest is finished by
    one sequential pass. Total work O(n + edges)."""
    state = np.zeros(n, dtype=np.int8)
    src, dst = np.asarray(src), np.asarray(dst)
    if src.dtype.kind not in "iu" or dst.dtype.kind not in "iu":
        src, dst = src.astype(np.int64), dst.astype(np.int64)
    blocked = np.zeros(n, dtype=bool)
    blocked[dst] = True
    state[~blocked] = _KEPT  # no incoming edge: kept at once
    undecided = np.flatnonzero(blocked)
    blocked[dst] = False
    previous = -1
    while True:
        state[dst[state[src] == _KEPT]] = _REMOVED
        live = (state[src] == _UNDECIDED) & (state[dst] == _UNDECIDED)
        src, dst = src[live], dst[live]
        undecided = undecided[state[undecided] == _UNDECIDED]
        if len(undecided) == 0:
            break
        if previous >= 0 and len(undecided) * 2 > previous:
            _sequential(state, undecided, src, dst, topo)
            break
        previous = len(undecided)
        blocked[dst] = True
        free = undecided[~blocked[undecided]]
        blocked[dst] = False
        state[free] = _KEPT
    return state == _KEPT


def _sequential(state: np.ndarray, undecided: np.ndarray, src: np.ndarray, dst: np.ndarray,
                topo: Order) -> None:
    """Finish the greedy in ``state``: the ``undecided`` nodes one at a time in topological
    order; ``src -> dst`` are the edges among them (all others are settled)."""
    order = np.asarray(topo(undecided), dtype=np.int64).tolist()
    by_src = np.argsort(src, kind="stable")
    sorted_src = src[by_src]
    targets = dst[by_src].tolist()
    starts = np.searchsorted(sorted_src, order, "left").tolist()
    stops = np.searchsorted(sorted_src, order, "right").tolist()
    removed: set[int] = set()
    kept = []
    for node, a, z in zip(order, starts, stops):
        if node in removed:
            continue
        kept.append(node)
        removed.update(targets[a:z])
    state[undecided] = _REMOVED
    state[np.asarray(kept, dtype=np.int64)] = _KEPT


def greedy_keep(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy NMS keep-mask for ``n`` boxes in priority order, given the suppression edges
    ``src[e] < dst[e]`` (box ``src`` suppresses ``dst`` if ``src`` is kept): box j is kept
    when no kept i < j has an edge to j, i.e. the sequential greedy result.
    """
    return _greedy_state(n, src, dst, np.sort)


def _nms_per_class(out: np.ndarray, rows: np.ndarray, first: np.ndarray,
                   second: np.ndarray) -> None:
    """Per class, in place: the cheaper way when there are few rows, or many pairs per row
    (a low NMS threshold), as the classes' edges would outnumber the rows many times."""
    rank = np.empty(len(rows), dtype=np.int64)
    for k in range(out.shape[1] - 5):
        probs = out[rows, 5 + k]
        cand = np.flatnonzero(probs != 0)  # zero entries never suppress; zeroing them is a no-op
        if len(cand) < 2:
            continue
        order = cand[np.argsort(-probs[cand], kind="stable")]
        rank.fill(-1)
        rank[order] = np.arange(len(order))
        ra, rb = rank[first], rank[second]
        both = (ra >= 0) & (rb >= 0)
        if not both.any():
            continue
        ra, rb = ra[both], rb[both]
        keep = greedy_keep(len(order), np.minimum(ra, rb), np.maximum(ra, rb))
        out[rows[order[~keep]], 5 + k] = 0


def _nms_batched(out: np.ndarray, rows: np.ndarray, first: np.ndarray,
                 second: np.ndarray) -> None:
    """All classes as one graph, in place: node (class k, row r) = k * len(rows) + r; the pair
    (i, j), i < j, is an edge of class k when both probabilities are non-zero, directed from
    the one Darknet's sort puts first (higher probability; ties: lower row; NaN last)."""
    m = len(rows)
    probs = out[rows, 5:]  # (m, classes) copy
    classes = probs.shape[1]
    nonzero = probs != 0
    nans = bool(np.isnan(probs).any())
    index = np.int32 if m * classes < 2 ** 31 else np.int64
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    step = max(1, (1 << 21) // max(1, classes))
    for start in range(0, len(first), step):
        fi, se = first[start:start + step], second[start:start + step]
        both = nonzero[fi] & nonzero[se]
        pf, ps = probs[fi], probs[se]
        j_first = ps > pf
        if nans:
            j_first |= np.isnan(pf) & ~np.isnan(ps)
        e, k = np.nonzero(both)
        j_first = j_first[both]
        base = k.astype(index) * index(m)
        i, j = fi.astype(index)[e], se.astype(index)[e]
        srcs.append(base + np.where(j_first, j, i))
        dsts.append(base + np.where(j_first, i, j))
    if not srcs:
        return
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    if len(src) == 0:
        return

    def topo(nodes: np.ndarray) -> np.ndarray:
        # Darknet's order within a class: decreasing probability, NaN last, ties by row
        k, r = nodes // m, nodes % m
        neg = -probs[r, k]
        nan = np.isnan(neg)
        return nodes[np.lexsort((r, np.where(nan, 0, neg), nan, k))]

    keep = _greedy_state(m * classes, src, dst, topo)
    lost = np.flatnonzero(~keep)
    out[rows[lost % m], 5 + lost // m] = 0


def nms_sort(dets: np.ndarray, thresh: float, kind: str = "default",
             beta_nms: float = 0.6) -> np.ndarray:
    """Darknet's ``do_nms_sort`` (kind ``default``) or ``diounms_sort``: a copy of ``dets``
    with suppressed class probabilities set to 0. Row order is kept.

    ``thresh <= 0`` skips NMS, as ``darknet detector test`` does for ``nms == 0``.
    """
    if kind not in NMS_KINDS:
        raise ValueError(f"unknown NMS kind {kind!r}; expected one of {NMS_KINDS}")
    out = np.array(dets, dtype=F32, copy=True)
    if thresh <= 0 or len(out) == 0:
        return out
    # rows that can take part: objectness != 0 (Darknet's first step) and some class > 0
    rows = np.flatnonzero((out[:, 4] != 0) & (out[:, 5:] != 0).any(axis=1))
    if len(rows) <= _ALL_PAIRS_MAX:
        first, second = _all_pairs(out[rows, :4], thresh, kind, beta_nms)
        _nms_per_class(out, rows, first, second)
    else:
        first, second = _joined_pairs(out[rows, :4], thresh, kind, beta_nms)
        # measured costs (ns): per class ~ classes x (130 rows + 14 pairs); batched ~ 90 per
        # edge of a class, about classes x pairs x (fraction of non-zero probabilities)^2
        filled = float(np.count_nonzero(out[rows, 5:])) / max(1, out[rows, 5:].size)
        if 130 * len(rows) + 14 * len(first) < 90 * filled * filled * len(first):
            _nms_per_class(out, rows, first, second)
        else:
            _nms_batched(out, rows, first, second)
    return out


def drop_empty(dets: np.ndarray) -> np.ndarray:
    """The rows with at least one non-zero class probability (what the oracle's ``dets_nms``
    and Darknet's printer keep)."""
    return dets[(dets[:, 5:] != 0).any(axis=1)]


def nms_settings(model: torch.nn.Module) -> tuple[str, float]:
    """(kind, beta_nms) of the LAST ``[yolo]``/``[Gaussian_yolo]``/``[region]`` layer, the one
    ``darknet detector test`` takes them from (``[region]`` has no NMS options: default)."""
    last = None
    for index in model.output_indices:
        module = model.layers[index]
        if isinstance(module, (YoloHead, RegionHead)):
            last = module
    if last is None:
        raise DarkcspError("the network has no detection layer")
    if isinstance(last, YoloHead):
        kind = last.nms_kind if last.nms_kind in NMS_KINDS else "default"
        if kind == "cornersnms" and not last.gaussian:
            kind = "default"
        return kind, float(last.beta_nms)
    return "default", 0.6


def apply_nms(model: torch.nn.Module, dets: np.ndarray, thresh: float) -> np.ndarray:
    """NMS as ``darknet detector test`` runs it for ``model`` (kind from its last head)."""
    kind, beta = nms_settings(model)
    return nms_sort(dets, thresh, kind, beta)


__all__ = ["box_iou", "box_diou", "overlapping_pairs", "greedy_keep", "nms_sort", "drop_empty",
           "nms_settings", "apply_nms", "NMS_KINDS"]
