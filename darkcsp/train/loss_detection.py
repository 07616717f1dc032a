"""The ``[detection]`` (YOLOv1) training delta as ``forward_detection_layer`` computes it.

``[detection]`` (:func:`detection_delta`, :class:`DetectionSpec`) is YOLOv1's delta on the flat
outputs (per image: ``side^2`` class rows, then ``side^2 x num`` confidences, then the boxes
x, y (offsets in the cell), w, h (their square roots with ``sqrt=1``)), all applied to the
outputs directly (no logistic; with ``softmax=1`` the class delta is taken on the softmax
probabilities and passed through as is, as Darknet does): every confidence
``noobject_scale * (0 - c)``; each cell holding a truth's centre (the first truth of a cell,
``fill_truth_region``; sizes below .001 skipped) takes ``class_scale * (onehot - p)`` and picks
one responsible box: the best IoU once any IoU is > 0, else the smallest rmse (below 20),
``forced=1``: box 1 for truths with w*h < .1 else box 0, ``random=`` while ``seen`` < 64000:
a random box (torch's generator for C's ``rand``). That box gets ``object_scale * (1 - c)``
(``rescore``: ``iou - c``) and ``coord_scale * (truth - out)`` (``sqrt``: sqrt of the truth's
w, h). Reported: the squared norms of the box, confidence and class deltas (they add up to
Darknet's ``cost``). Not reproduced: Darknet's out-of-range writes (no box found, or
``forced`` with ``num=1``: box 0 is used); a truth with a class id >= classes is skipped (as by
the other losses) where Darknet would mark its cell with an all-zero class row; ``coords``
other than 4 is refused. The trainer takes no mAP of a ``[detection]`` model (``infer/`` has
no YOLOv1 decoding) and no multi-scale from its ``random=`` (a box rule here).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import DetectionHead
from darkcsp.train.loss_boxes import box_iou
from darkcsp.train.loss_common import HeadLoss, _pick


@dataclass
class DetectionSpec:
    """One ``[detection]`` (YOLOv1) layer's loss settings (``parse_detection``)."""

    index: int
    side: int
    num: int
    classes: int
    softmax: bool = False
    sqrt: bool = False
    rescore: bool = False
    forced: bool = False
    random: bool = False
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    max_boxes: int = 200
    delta_normalizer: float = 1.0  # Darknet's detection has none; kept for the shared plumbing

    @classmethod
    def from_node(cls, node, head: DetectionHead) -> "DetectionSpec":
        o = node.opts
        if int(o.coords) != 4:  # forward_detection_layer reads 4 box entries whatever coords
            raise DarkcspError(f"layer {node.index}: [detection] coords={o.coords}: the "
                               "training loss needs coords=4 (x, y, w, h)")
        return cls(index=node.index, side=int(o.side), num=int(o.num), classes=int(o.classes),
                   softmax=bool(o.softmax), sqrt=bool(o.sqrt), rescore=bool(o.rescore),
                   forced=bool(o.forced), random=bool(o.random),
                   coord_scale=float(o.coord_scale), object_scale=float(o.object_scale),
                   noobject_scale=float(o.noobject_scale), class_scale=float(o.class_scale),
                   max_boxes=int(o.max))


DETECTION_RANDOM_SEEN = 64000  # forward_detection_layer: random= picks a random box before


@torch.no_grad()
def detection_delta(spec: DetectionSpec, z: Tensor, truth: Tensor, net_w: int, net_h: int,
                    seen: int = 0) -> HeadLoss:
    """Darknet's ``forward_detection_layer`` delta for one ``[detection]`` input ``z`` (the flat
    ``side^2 x (classes + num + 4 num)`` outputs of each image, in any shape) and truths
    (B, T, 5) as :func:`yolo_delta`; ``seen`` is Darknet's ``*net.seen`` (only ``random=``
    reads it). The delta has ``z``'s shape. ``net_w``/``net_h`` are unused."""
    shape = z.shape
    z = z.detach().float().reshape(shape[0], -1)
    B, S, N, C = shape[0], spec.side, spec.num, spec.classes
    L = S * S
    dev = z.device
    probs = z[:, :L * C].view(B, L, C)
    if spec.softmax:
        probs = torch.softmax(probs, dim=-1)
    conf = z[:, L * C:L * (C + N)].view(B, L, N)
    out = z[:, L * (C + N):].view(B, L, N, 4)  # x, y offsets in the cell; w, h (or sqrt)

    d_cls = torch.zeros(B, L, C, device=dev)
    d_conf = spec.noobject_scale * (0 - conf)
    d_box = torch.zeros(B, L, N, 4, device=dev)
    count, iou_sum = 0, 0.0

    # fill_truth_region: each truth marks its cell, the first one of a cell wins
    truth = truth.to(dev).float()
    valid = (truth[..., 0] > 0) & (truth[..., 2] >= .001) & (truth[..., 3] >= .001)
    valid &= (truth[..., 4] >= 0) & (truth[..., 4] < C)
    if truth.shape[1] and valid.any():
        tb, ti = valid.nonzero(as_tuple=True)
        tbox = truth[tb, ti, :4]
        col = (tbox[:, 0] * S).long().clamp(0, S - 1)  # x == 1: the last cell (not one past)
        row = (tbox[:, 1] * S).long().clamp(0, S - 1)
        cell = row * S + col
        first = _pick(tb * L + cell, ti, first=True)
        tb, ti, tbox, col, row, cell = (v[first] for v in (tb, ti, tbox, col, row, cell))
        target = torch.stack([tbox[:, 0] * S - col, tbox[:, 1] * S - row, tbox[:, 2],
                              tbox[:, 3]], dim=1)  # Darknet's truth row: offsets, w, h

        # the boxes Darknet compares: x, y offsets / side; predicted w, h squared with sqrt=1
        t_frame = torch.cat([target[:, :2] / S, target[:, 2:]], dim=1)
        mine = out[tb, cell]  # (n, N, 4)
        cand = torch.cat([mine[..., :2] / S, mine[..., 2:] ** 2 if spec.sqrt else
                          mine[..., 2:]], dim=-1)
        ious = box_iou(cand, t_frame[:, None])
        rmse = ((cand - t_frame[:, None]) ** 2).sum(dim=-1).sqrt()
        # the best box: by IoU once any IoU is > 0, else by the smallest rmse (below 20)
        best = torch.full_like(tb, -1)
        best_iou = torch.zeros_like(ious[:, 0])
        best_rmse = torch.full_like(best_iou, 20.0)
        for j in range(N):
            by_iou = (best_iou > 0) | (ious[:, j] > 0)
            take = torch.where(by_iou, ious[:, j] > best_iou, rmse[:, j] < best_rmse)
            best_iou = torch.where(by_iou & take, ious[:, j], best_iou)
            best_rmse = torch.where(~by_iou & take, rmse[:, j], best_rmse)
            best = torch.where(take, torch.full_like(best, j), best)
        best = best.clamp(min=0)  # no box found (every rmse >= 20): Darknet indexes box -1
        if spec.forced:  # box 1 for small truths (Darknet indexes past the cell with num=1)
            best = torch.where(tbox[:, 2] * tbox[:, 3] < .1, torch.ones_like(best),
                               torch.zeros_like(best)).clamp(max=N - 1)
        if spec.random and seen < DETECTION_RANDOM_SEEN:  # rand() % num
            best = torch.randint(N, best.shape, device=dev)
        iou = ious.gather(1, best[:, None])[:, 0]
        c = conf[tb, cell, best]
        goal = iou if spec.rescore else torch.ones_like(c)
        d_conf[tb, cell, best] = spec.object_scale * (goal - c)
        if spec.sqrt:
            target[:, 2:] = target[:, 2:].sqrt()
        d_box[tb, cell, best] = spec.coord_scale * (target - out[tb, cell, best])
        onehot = torch.nn.functional.one_hot(truth[tb, ti, 4].long(), C).to(probs.dtype)
        d_cls[tb, cell] = spec.class_scale * (onehot - probs[tb, cell])
        count, iou_sum = len(tb), float(iou.sum())

    delta = torch.cat([d_cls.flatten(1), d_conf.flatten(1), d_box.flatten(1)], dim=1)
    return HeadLoss(delta.reshape(shape), float((d_box ** 2).sum()),
                    float((d_conf ** 2).sum()), float((d_cls ** 2).sum()), count, iou_sum)
