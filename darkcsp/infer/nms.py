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


def overlapping_pairs(boxes: np.ndarray, thresh: float, kind: str = "default",
                      beta_nms: float = 0.6, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of (N, 4) boxes whose overlap measure is > ``thresh``.

    The measure is symmetric, so each pair is tested once. The DIoU penalty is never negative,
    so only pairs with IoU > thresh are candidates for it (computed on those alone).
    """
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
    return np.concatenate(firsts), np.concatenate(seconds)


def greedy_keep(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy NMS keep-mask for ``n`` boxes in priority order, given the suppression edges
    ``src[e] < dst[e]`` (box ``src`` suppresses ``dst`` if ``src`` is kept).

    Solved as the fixed point of keep[j] = no kept i < j has an edge to j: each sweep fixes
    at least one more leading position and the fixed point is unique, so it is exactly the
    sequential greedy result; a sweep costs O(edges).
    """
    keep = np.ones(n, dtype=bool)
    for _ in range(n + 1):
        new = np.ones(n, dtype=bool)
        new[dst[keep[src]]] = False
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


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
    first, second = overlapping_pairs(out[rows, :4], thresh, kind, beta_nms)
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
        ra, rb = ra[both], rb[both]
        keep = greedy_keep(len(order), np.minimum(ra, rb), np.maximum(ra, rb))
        out[rows[order[~keep]], 5 + k] = 0
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
