"""Anchor boxes by k-means with the IoU distance, as Darknet's ``detector calc_anchors``.

Darknet (``calc_anchors`` in detector.c, ``do_kmeans`` in matrix.c):

* data: every label's ``(w * width, h * height)``;
* distance ``1 - IoU`` of two boxes sharing a corner (``min(w)*min(h)`` over the union), in
  float32;
* initialisation: ``random_centers``, i.e. k *distinct* boxes drawn at random (a shuffle of all
  indices, first k kept). Darknet seeds ``rand()`` with the clock, so its anchors vary from run to
  run; here ``seed`` (or ``init_indices``, to start from given boxes) makes it repeatable;
* iteration, at most 1000 times: assign each box to the nearest centre (ties to the lower index;
  every assignment starts at 0), stop when no assignment changed, else move each centre to the
  arithmetic mean of its boxes (a centre that got no box, or a mean component of exactly 0, keeps
  its old value). For k = 1 the mean is taken once before the loop;
* anchors sorted by area, ascending; avg IoU = mean over all boxes of the best IoU with any
  anchor (a box whose IoU falls outside 0..1 adds nothing but still counts in the mean).

Why not ``scipy.cluster.vq.kmeans``/``kmeans2``: both are hard-wired to Euclidean distance and use
other stopping rules, so they cannot give Darknet's centres. The IoU distance matrix is a numpy
broadcast and the means a float32 ``np.add.at`` (the same sequential float32 sums as Darknet's
loop), which is fast enough for millions of labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AnchorResult:
    """Sorted anchors ``(k, 2)`` in pixels of the network input, and the mean best IoU (0..1)."""

    anchors: np.ndarray
    avg_iou: float
    iterations: int
    assignments: np.ndarray

    def format(self, width: int) -> str:
        """Darknet's ``anchors = ...`` text: integers when ``width > 32``, else 4 decimals."""
        fmt = "{:3.0f},{:3.0f}" if width > 32 else "{:2.4f},{:2.4f}"
        return ", ".join(fmt.format(float(w), float(h)) for w, h in self.anchors)


def corner_iou(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(N, k)`` float32 IoU of corner-aligned (w, h) boxes, in Darknet's operation order.
    A degenerate pair (zero union) gets IoU 0 instead of nan."""
    x = boxes.astype(np.float32)[:, None, :]
    y = centers.astype(np.float32)[None, :, :]
    inter = np.minimum(x[..., 0], y[..., 0]) * np.minimum(x[..., 1], y[..., 1])
    union = (x[..., 0] * x[..., 1] + y[..., 0] * y[..., 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(np.isfinite(iou), iou, np.float32(0)).astype(np.float32)


def iou_distance(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(N, k)`` float32 ``1 - IoU``: Darknet's k-means ``dist``."""
    return np.float32(1) - corner_iou(boxes, centers)


def _maximization(data: np.ndarray, assignments: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Darknet's ``kmeans_maximization``: float32 means; zero components keep the old value."""
    sums = np.zeros_like(centers, dtype=np.float32)
    np.add.at(sums, assignments, data)  # sequential float32 `+=` in data order
    counts = np.bincount(assignments, minlength=len(centers)).astype(np.float32)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], sums)
    return np.where(new == 0, centers, new).astype(np.float32)


def calc_anchors(boxes_wh: np.ndarray, num: int, width: float = 1.0, height: float = 1.0, *,
                 seed: int | None = 0, init_indices: np.ndarray | None = None,
                 max_iterations: int = 1000) -> AnchorResult:
    """k-means anchors for ``boxes_wh`` (N, 2).

    ``boxes_wh`` are relative (0..1, as in YOLO label files) and are scaled by ``width`` and
    ``height`` (the network input size); pass ``width = height = 1`` for boxes already in pixels.
    ``init_indices`` (k distinct row numbers) replaces the random initialisation.
    """
    data = np.asarray(boxes_wh, dtype=np.float32).reshape(-1, 2)
    data = np.stack([data[:, 0] * np.float32(width), data[:, 1] * np.float32(height)], axis=1)
    n = len(data)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if n < num:
        raise ValueError(f"{n} boxes cannot make {num} clusters")
    if init_indices is None:
        init_indices = np.random.default_rng(seed).permutation(n)[:num]
    init_indices = np.asarray(init_indices, dtype=np.int64)
    if len(init_indices) != num or len(set(init_indices.tolist())) != num:
        raise ValueError(f"init_indices must be {num} distinct row numbers")
    centers = data[init_indices].copy()
    assignments = np.zeros(n, dtype=np.int64)  # Darknet's calloc'ed assignments
    if num == 1:
        centers = _maximization(data, assignments, centers)
    iterations = 0
    while iterations < max_iterations:
        closest = iou_distance(data, centers).argmin(axis=1)  # first minimum, as `<`
        converged = bool(np.array_equal(closest, assignments))
        assignments = closest
        if converged:
            break
        centers = _maximization(data, assignments, centers)
        iterations += 1

    order = np.argsort(centers[:, 0] * centers[:, 1], kind="stable")  # area, ascending
    centers = centers[order]
    ious = corner_iou(data, centers)
    best_iou = ious[np.arange(n), iou_distance(data, centers).argmin(axis=1)]
    ok = (best_iou >= 0) & (best_iou <= 1)  # Darknet skips "wrong labels" in the sum only
    total = np.float32(0)
    for value in best_iou[ok]:  # Darknet's float `+=`
        total = np.float32(total + value)
    avg = float(total / np.float32(n)) if n else 0.0
    remap = np.empty(num, dtype=np.int64)
    remap[order] = np.arange(num)
    return AnchorResult(centers.astype(np.float64), avg, iterations, remap[assignments])
