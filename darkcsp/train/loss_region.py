"""The ``[region]`` (YOLOv2) training delta as Darknet's CPU build of ``forward_region_layer``
computes it.

``[region]`` (:func:`region_delta`, :class:`RegionSpec`) is YOLOv2's delta: noobject delta
``noobject_scale * (0 - obj) * obj * (1 - obj)`` (cleared above ``thresh``; ``classfix``
branches), while Darknet's ``seen`` < 12800 every prediction is pulled to its anchor prior
(scale 0.01), every truth picks the anchor of its cell by shape IoU (``bias_match``: the anchor,
else the predicted shape) and writes ``delta_region_box`` with ``coord_scale`` (x, y through the
logistic gradient, w, h on the log scale), objectness ``object_scale * (1 - obj)`` (``rescore``:
``iou - obj``) times the logistic gradient, and ``class_scale * (onehot - p)`` (focal_loss as
Darknet). Deltas are assigned, so a later truth on the same prediction wins. ``tree=``
(YOLO9000) is refused, as its inference is; ``map=`` is not applied.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import RegionHead
from darkcsp.train.loss_boxes import box_iou
from darkcsp.train.loss_common import HeadLoss, _first_index_of_max, _focal_factor, _pick


@dataclass
class RegionSpec:
    """One ``[region]`` (YOLOv2) layer's loss settings (``parse_region``); anchors in grid
    cells."""

    index: int
    anchors: Tensor  # (num, 2), grid cells
    classes: int
    softmax: bool = False
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    thresh: float = 0.5
    rescore: bool = False
    bias_match: bool = False
    classfix: int = 0
    focal_loss: bool = False
    max_boxes: int = 200
    delta_normalizer: float = 1.0  # Darknet's region has none; kept for the shared plumbing

    @classmethod
    def from_node(cls, node, head: RegionHead) -> "RegionSpec":
        o = node.opts
        if o.get("tree"):
            raise DarkcspError(f"layer {node.index}: [region] tree= (YOLO9000 hierarchical "
                               "softmax) is not supported by darkcsp (neither its inference "
                               "nor its loss)")
        return cls(index=node.index, anchors=torch.tensor(head.anchors, dtype=torch.float32),
                   classes=int(o.classes), softmax=bool(o.softmax),
                   coord_scale=float(o.coord_scale), object_scale=float(o.object_scale),
                   noobject_scale=float(o.noobject_scale), class_scale=float(o.class_scale),
                   thresh=float(o.thresh), rescore=bool(o.rescore),
                   bias_match=bool(o.bias_match), classfix=int(o.classfix),
                   focal_loss=bool(o.focal_loss), max_boxes=int(o.max))


REGION_WARMUP_SEEN = 12800  # forward_region_layer: priors are pulled in while seen < 12800


def _logistic_gradient(y: Tensor) -> Tensor:
    return (1 - y) * y


@torch.no_grad()
def region_delta(spec: RegionSpec, z: Tensor, truth: Tensor, net_w: int, net_h: int,
                 seen: int = 0) -> HeadLoss:
    """Darknet's CPU ``forward_region_layer`` delta for one ``[region]`` input ``z``
    (B, num*(5+C), H, W) and truths (B, T, 5) as :func:`yolo_delta`; ``seen`` is Darknet's
    ``*net.seen`` at this forward (images so far, this mini-batch included). The delta is
    returned in the input's layout (Darknet computes it on the flattened CPU layout and
    flattens it back). ``net_w``/``net_h`` are unused: region anchors are in grid cells."""
    z = z.detach().float().contiguous()
    B, _, H, W = z.shape
    A, C = len(spec.anchors), spec.classes
    E = 5 + C
    dev = z.device
    t = z.view(B, A, E, H, W).permute(0, 1, 3, 4, 2)  # (B, A, H, W, E), the raw input
    sx, sy = torch.sigmoid(t[..., 0]), torch.sigmoid(t[..., 1])
    obj = torch.sigmoid(t[..., 4])
    probs = torch.softmax(t[..., 5:], dim=-1) if spec.softmax else t[..., 5:]
    anchors = spec.anchors.to(dev)
    aw, ah = anchors[:, 0].view(1, A, 1, 1), anchors[:, 1].view(1, A, 1, 1)
    col = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, 1, W)
    row = torch.arange(H, device=dev, dtype=torch.float32).view(1, 1, H, 1)
    # get_region_box (DOABS): anchors in cells, so w = exp(tw) * anchor / grid width
    pred = torch.stack([(col + sx) / W, (row + sy) / H, torch.exp(t[..., 2]) * aw / W,
                        torch.exp(t[..., 3]) * ah / H], dim=-1)

    truth = truth.to(dev).float()
    T = truth.shape[1]
    valid = (truth[..., 0] > 0) & (truth[..., 4] >= 0) & (truth[..., 4] < C)
    tcls = truth[..., 4].long().clamp(0, C - 1)

    def box_delta(target: Tensor, out: Tensor, scale) -> Tensor:
        """delta_region_box: (..., 4) target box, (..., E) raw outputs."""
        ox, oy = torch.sigmoid(out[..., 0]), torch.sigmoid(out[..., 1])
        anchor_w, anchor_h = target[..., 4], target[..., 5]
        tx = target[..., 0] * W - target[..., 6]
        ty = target[..., 1] * H - target[..., 7]
        tw = torch.log(target[..., 2] * W / anchor_w)
        th = torch.log(target[..., 3] * H / anchor_h)
        return scale * torch.stack([(tx - ox) * _logistic_gradient(ox),
                                    (ty - oy) * _logistic_gradient(oy),
                                    tw - out[..., 2], th - out[..., 3]], dim=-1)

    # -- every prediction: best IoU with any truth, noobject delta, the prior warm-up ---------
    best_iou = torch.zeros(B, A, H, W, device=dev)
    best_t = torch.zeros(B, A, H, W, dtype=torch.long, device=dev)
    if T:
        iou = box_iou(pred.view(B, -1, 1, 4), truth[:, None, :, :4])
        iou = torch.where(valid[:, None, :], iou, torch.zeros_like(iou)).view(B, A, H, W, T)
        best_iou = iou.max(dim=-1).values
        best_t = _first_index_of_max(iou)
    d_cls = torch.zeros(B, A, H, W, C, device=dev)
    if spec.classfix == -1:
        d_obj = spec.noobject_scale * (best_iou - obj) * _logistic_gradient(obj)
    else:
        d_obj = spec.noobject_scale * (0 - obj) * _logistic_gradient(obj)
        above = best_iou > spec.thresh
        d_obj = torch.where(above, torch.zeros_like(d_obj), d_obj)
        if spec.classfix > 0 and above.any():  # a class delta for the best truth's class
            k = tcls.gather(1, best_t.view(B, -1)).view(B, A, H, W)[above]
            scale = spec.class_scale * (obj[above] if spec.classfix == 2 else 1.0)
            d_cls[above] = _region_class_rows(spec, probs[above], k, scale)
    d_box = torch.zeros(B, A, H, W, 4, device=dev)
    if seen < REGION_WARMUP_SEEN:  # every prediction towards its prior, scale .01
        shape = (B, A, H, W)
        prior = torch.stack([((col + 0.5) / W).expand(shape), ((row + 0.5) / H).expand(shape),
                             (aw / W).expand(shape), (ah / H).expand(shape),
                             aw.expand(shape), ah.expand(shape), col.expand(shape),
                             row.expand(shape)], dim=-1)
        d_box = box_delta(prior, t, 0.01)

    # -- every truth: the best anchor of its cell, by shape -----------------------------------
    count, iou_sum = 0, 0.0
    if T and valid.any():
        tb, ti = valid.nonzero(as_tuple=True)
        tbox = truth[tb, ti, :4]
        # Darknet: i = (int)(truth.x * w), unclamped; x == 1 would index one past the row
        gi = (tbox[:, 0] * W).long().clamp(0, W - 1)
        gj = (tbox[:, 1] * H).long().clamp(0, H - 1)
        if spec.bias_match:
            shapes = (anchors / torch.tensor([W, H], device=dev)).expand(len(tb), A, 2)
        else:
            shapes = pred[tb, :, gj, gi, 2:]  # (n, A, 2) the predicted shapes
        shape_boxes = torch.cat([torch.zeros_like(shapes), shapes], dim=-1)
        shift = torch.cat([torch.zeros_like(tbox[:, :2]), tbox[:, 2:]], dim=1)
        # (strict >: the first best; with every IoU 0 Darknet would write to the flat index
        # 0, batch 0's first prediction, a bug not reproduced: anchor 0 of the cell is used)
        best_n = _first_index_of_max(box_iou(shape_boxes, shift[:, None]))
        out = t[tb, best_n, gj, gi]
        target = torch.cat([tbox, anchors[best_n], gi[:, None].float(), gj[:, None].float()],
                           dim=1)
        box = box_delta(target, out, spec.coord_scale)
        iou = box_iou(pred[tb, best_n, gj, gi], tbox)
        o = obj[tb, best_n, gj, gi]
        goal = iou if spec.rescore else torch.ones_like(o)
        obj_value = spec.object_scale * (goal - o) * _logistic_gradient(o)
        cls_value = _region_class_rows(spec, probs[tb, best_n, gj, gi], tcls[tb, ti],
                                       spec.class_scale)
        # deltas are assigned: of several truths on one prediction the last one wins
        cell = ((tb * A + best_n) * H + gj) * W + gi
        last = _pick(cell, ti, first=False)
        d_box.view(-1, 4)[cell[last]] = box[last]
        d_obj.view(-1)[cell[last]] = obj_value[last]
        d_cls.view(-1, C)[cell[last]] = cls_value[last]
        count, iou_sum = len(tb), float(iou.sum())

    delta = torch.cat([d_box, d_obj.unsqueeze(-1), d_cls], dim=-1)  # (B, A, H, W, E)
    delta = delta.permute(0, 1, 4, 2, 3).reshape(B, A * E, H, W)
    return HeadLoss(delta, float((d_box ** 2).sum()), float((d_obj ** 2).sum()),
                    float((d_cls ** 2).sum()), count, iou_sum)


def _region_class_rows(spec: RegionSpec, p: Tensor, cls_id: Tensor, scale) -> Tensor:
    """``delta_region_class`` without a tree: ``scale * (onehot - p)`` over every class, times
    the focal factor with ``focal_loss``."""
    full = torch.nn.functional.one_hot(cls_id, p.shape[-1]).to(p.dtype) - p
    if torch.is_tensor(scale):
        scale = scale[:, None]
    full = scale * full
    if spec.focal_loss:
        full = full * _focal_factor(p, cls_id)[:, None]
    return full
