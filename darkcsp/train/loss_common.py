"""What every detection head's training delta shares: :class:`HeadLoss` (one head's delta
and reported values) and Darknet's assignment rules over predictions: the first maximum of a
strict ``>`` loop (:func:`_first_index_of_max`), which of several writers of one cell wins
(:func:`_pick`), and the focal-loss factor of ``delta_yolo_class`` / ``delta_region_class``
(:func:`_focal_factor`). Kept out of ``loss.py`` so that the head modules and the dispatcher,
which imports them, share these without an import circle.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class HeadLoss:
    """One head's delta and reported values (sums over the mini-batch)."""

    delta: Tensor
    box: float
    obj: float
    cls: float
    count: int
    iou_sum: float


def _first_index_of_max(values: Tensor) -> Tensor:
    """argmax over the last dim that returns the first maximum (Darknet's strict ``>``)."""
    best = values.max(dim=-1, keepdim=True).values
    n = values.shape[-1]
    idx = torch.arange(n, device=values.device).expand_as(values)
    first = torch.where(values == best, idx, torch.full_like(idx, n)).min(dim=-1).values
    return first.clamp(max=n - 1)  # an all-NaN row (overflowed box) gives the last index


def _pick(cell: Tensor, order: Tensor, first: bool) -> Tensor:
    """Boolean mask selecting, per cell, the assignment with the lowest (first=True) or the
    highest order."""
    span = int(order.max()) + 2 if len(order) else 1
    key = cell * span + (order + 1)
    perm = torch.argsort(key, stable=True)
    sorted_cell = cell[perm]
    if first:
        edge = torch.ones_like(sorted_cell, dtype=torch.bool)
        edge[1:] = sorted_cell[1:] != sorted_cell[:-1]
    else:
        edge = torch.ones_like(sorted_cell, dtype=torch.bool)
        edge[:-1] = sorted_cell[:-1] != sorted_cell[1:]
    out = torch.zeros_like(edge)
    out[perm] = edge
    return out


def _focal_factor(p: Tensor, cls_id: Tensor) -> Tensor:
    """Darknet's focal-loss factor ``alpha * grad`` (alpha 0.5, gamma 2) of the true class's
    probability (``delta_yolo_class``, ``delta_region_class``)."""
    pt = p.gather(1, cls_id[:, None])[:, 0] + 1e-15
    return 0.5 * (-(1 - pt) * (2 * pt * torch.log(pt) + pt - 1))
