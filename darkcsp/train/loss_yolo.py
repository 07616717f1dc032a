"""The ``[yolo]`` (``forward_yolo_layer``) and ``[Gaussian_yolo]``
(``forward_gaussian_yolo_layer``) training deltas: :func:`yolo_delta` with a :class:`YoloSpec`
or a :class:`GaussianSpec`. ``[Gaussian_yolo]`` is ``[yolo]`` with Darknet's differences, so both
share one vectorised loop (``loss.py`` explains the delta and the surrogate).

Per ``[yolo]`` (all options from the cfg):

* every prediction: ``obj_delta = obj_normalizer * (0 - obj)``, cleared when its best IoU with
  any truth is above ``ignore_thresh`` (only predictions with some class prob > 0.25 count, as
  ``compare_yolo_class``); above ``truth_thresh`` it becomes a positive for that truth;
* every truth: the best of *all* anchors by shape IoU; if that anchor is in this head's
  ``mask``, the cell containing the truth's centre is a positive; with ``iou_thresh < 1`` also
  every other masked anchor whose ``iou_thresh_kind`` IoU with the truth exceeds it (then the
  box deltas of a cell are averaged over its positive classes, ``averages_yolo_deltas``);
* positives: box delta (``iou_loss``: mse on tx, ty, log-scale tw, th with weight
  ``2 - w*h``, or Darknet's giou/diou/ciou/iou derivatives times ``exp(tw)``), times
  ``iou_normalizer``, clipped to ``max_delta`` (IoU losses); ``obj_delta = obj_normalizer *
  (1 - obj)``; class deltas ``target - p`` with ``label_smooth_eps``
  (target ``1 - eps + eps/2`` / ``eps/2``) or the focal-loss delta (``focal_loss=1``, alpha 0.5,
  gamma 2); several truths in one cell give a multi-hot class target, box deltas add up;
* ``scale_x_y`` and ``new_coords`` change the decode and the mse targets exactly as Darknet;
* ``counters_per_class`` gives class multipliers (capped at ``max_delta``); note that, as in
  Darknet, ``cls_normalizer`` *only* acts through them (without ``counters_per_class`` Darknet
  never reads it in the yolo loss);
* ``objectness_smooth`` follows Darknet's branches; ``delta_normalizer`` scales the delta
  (Darknet applies it in the GPU backward only).

Reported loss values (for logs and charts; they do not drive the gradient): ``obj`` and
``cls`` are the squared norms of those deltas (Darknet's ``mag_array`` squared); ``box`` is the
squared norm of the box deltas for ``mse``, and ``iou_normalizer * sum(1 - IoU_kind)`` over the
positives for giou/diou/ciou/iou (Darknet's printed "iou_loss" uses the mean of ``1 - IoU`` for
every kind but giou, and multiplies the class part by ``obj_normalizer`` once more; ours are
plain sums so that they add up).

Simplified or left out: a truth centred exactly on the right/bottom edge (x = 1) uses the last
cell (Darknet indexes one past it); ties between exactly-zero deltas (a class probability of
exactly 0) are not reproduced; the adversarial, ``equidistant_point`` and bad-label rejection
branches, ``map=`` class remapping and the embedding/track outputs are not implemented.

``[Gaussian_yolo]`` (:func:`yolo_delta` with a :class:`GaussianSpec`) follows the same steps with
Darknet's differences: 8 box entries (mean and sigma of x, y, w, h; logistic on all but the
w, h means), the box delta of ``delta_gaussian_yolo_box`` (:func:`gaussian_box_delta`: the
Gaussian negative log-likelihood gradients for mse, Darknet's ``dx_box_iou`` for the means
otherwise; ``uc_normalizer`` on the sigmas; ``max_delta`` clips every box entry, for mse too),
``yolo_point`` (the box's centre, left-top or right-bottom corner is the predicted point and
picks the truth's cell), ``averages_gaussian_yolo_deltas`` after every image (not only with
``iou_thresh < 1``), a positive's objectness always assigned (no ``objectness_smooth`` branch
there), ``objectness_smooth`` at ignored predictions giving ``iou^2`` objectness and a class
delta, no focal loss. Reported: ``box`` is the squared norm of all 8 box deltas, so box + obj +
cls is Darknet's ``cost`` (the squared norm of the delta).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import YoloHead
from darkcsp.train.loss_boxes import box_iou, box_iou_kind, dx_box_iou, iou_kind_name
from darkcsp.train.loss_common import HeadLoss, _first_index_of_max, _focal_factor, _pick


@dataclass
class YoloSpec:
    """One ``[yolo]`` layer's loss settings, read from its cfg options."""

    index: int
    anchors: Tensor  # (num, 2) all anchors, input pixels
    mask: list[int]
    classes: int
    scale_x_y: float = 1.0
    new_coords: bool = False
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: str = "iou"
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0
    max_delta: float = float("inf")
    label_smooth_eps: float = 0.0
    objectness_smooth: bool = False
    focal_loss: bool = False
    class_multipliers: Tensor | None = None
    max_boxes: int = 200

    @classmethod
    def from_node(cls, node, head: YoloHead) -> "YoloSpec":
        o = node.opts
        anchors = list(o.anchors or [])
        anchors += [0.5] * (2 * o.num - len(anchors))  # Darknet's default bias for missing ones
        pairs = torch.tensor(anchors[:2 * o.num], dtype=torch.float32).view(-1, 2)
        mask = list(o.mask) if o.mask is not None else list(range(o.num))
        mult = None
        if o.get("counters_per_class"):
            counts = torch.tensor(o.counters_per_class, dtype=torch.float32)
            if len(counts) != o.classes:
                raise DarkcspError(f"layer {node.index}: counters_per_class has {len(counts)} "
                                   f"values for classes={o.classes}")
            mult = torch.clamp(counts.max() / counts, max=float(o.max_delta))
        return cls(index=node.index, anchors=pairs, mask=mask, classes=int(o.classes),
                   scale_x_y=float(o.scale_x_y), new_coords=bool(o.get("new_coords", 0)),
                   ignore_thresh=float(o.ignore_thresh), truth_thresh=float(o.truth_thresh),
                   iou_thresh=float(o.iou_thresh),
                   iou_thresh_kind=iou_kind_name(str(o.iou_thresh_kind)),
                   iou_loss=iou_kind_name(str(o.iou_loss)),
                   iou_normalizer=float(o.iou_normalizer), obj_normalizer=float(o.obj_normalizer),
                   cls_normalizer=float(o.cls_normalizer),
                   delta_normalizer=float(o.delta_normalizer), max_delta=float(o.max_delta),
                   label_smooth_eps=float(o.label_smooth_eps),
                   objectness_smooth=bool(o.objectness_smooth), focal_loss=bool(o.focal_loss),
                   class_multipliers=mult, max_boxes=int(o.max))


YOLO_POINTS = ("center", "left_top", "right_bottom")


@dataclass
class GaussianSpec(YoloSpec):
    """One ``[Gaussian_yolo]`` layer: the ``[yolo]`` settings (``parse_gaussian_yolo`` reads the
    same keys, but no ``new_coords`` and no ``focal_loss``) plus ``uc_normalizer`` and
    ``yolo_point``."""

    uc_normalizer: float = 1.0
    yolo_point: str = "center"

    @classmethod
    def from_node(cls, node, head: YoloHead) -> "GaussianSpec":
        spec = super().from_node(node, head)
        point = str(node.opts.yolo_point)  # Darknet: any other string is "center"
        return dataclasses.replace(spec, new_coords=False, focal_loss=False,
                                   uc_normalizer=float(node.opts.uc_normalizer),
                                   yolo_point=point if point in YOLO_POINTS else "center")


def activate(spec: YoloSpec, z: Tensor) -> Tensor:
    """The ``[yolo]`` forward on (B, A, H, W, E): logistic on x, y, obj, classes (unless
    new_coords), then the scale_x_y affine on x, y. ``[Gaussian_yolo]``: logistic on every
    entry but the w, h means (4, 6), scale_x_y on the x, y means (0, 2)."""
    gaussian = isinstance(spec, GaussianSpec)
    raw = (4, 6) if gaussian else (2, 3)
    xy = (0, 2) if gaussian else (0, 1)
    keep = torch.zeros(z.shape[-1], dtype=torch.bool, device=z.device)
    keep[list(raw)] = True
    y = z if spec.new_coords else torch.where(keep, z, torch.sigmoid(z))
    if spec.scale_x_y != 1:
        s = spec.scale_x_y
        scaled = torch.zeros_like(keep)
        scaled[list(xy)] = True
        y = torch.where(scaled, y * s - 0.5 * (s - 1), y)
    return y


@torch.no_grad()
def yolo_delta(spec: YoloSpec, z: Tensor, truth: Tensor, net_w: int, net_h: int) -> HeadLoss:
    """Darknet's delta for one ``[yolo]`` input ``z`` (B, A*(5+C), H, W) and truths (B, T, 5)
    rows x, y, w, h, class (relative; rows with x == 0 are padding). With a
    :class:`GaussianSpec`, ``[Gaussian_yolo]``'s delta on (B, A*(9+C), H, W)."""
    z = z.detach().float().contiguous()  # channels_last (CUDA) inputs cannot be viewed
    gaussian = isinstance(spec, GaussianSpec)
    K = 8 if gaussian else 4  # box entries
    B, _, H, W = z.shape
    A, C = len(spec.mask), spec.classes
    E = K + 1 + C
    dev = z.device
    y = activate(spec, z.view(B, A, E, H, W).permute(0, 1, 3, 4, 2))  # (B, A, H, W, E)
    mean = y[..., 0:K:2] if gaussian else y[..., :4]  # x, y, w, h (the means for Gaussian)
    anchors = spec.anchors.to(dev)
    mask_t = torch.tensor(spec.mask, device=dev)
    aw = anchors[mask_t, 0].view(1, A, 1, 1)
    ah = anchors[mask_t, 1].view(1, A, 1, 1)
    col = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, 1, W)
    row = torch.arange(H, device=dev, dtype=torch.float32).view(1, 1, H, 1)
    if spec.new_coords:
        pw, ph = y[..., 2] ** 2 * 4 * aw / net_w, y[..., 3] ** 2 * 4 * ah / net_h
    else:
        pw, ph = torch.exp(mean[..., 2]) * aw / net_w, torch.exp(mean[..., 3]) * ah / net_h
    px, py = (col + mean[..., 0]) / W, (row + mean[..., 1]) / H
    if gaussian and spec.yolo_point != "center":  # get_gaussian_yolo_box: a corner is predicted
        sign = 1.0 if spec.yolo_point == "left_top" else -1.0
        px, py = px + sign * pw / 2, py + sign * ph / 2
    pred = torch.stack([px, py, pw, ph], dim=-1)

    truth = truth.to(dev).float()
    T = truth.shape[1]
    valid = truth[..., 0] > 0
    valid &= (truth[..., 4] >= 0) & (truth[..., 4] < C)
    tcls = truth[..., 4].long().clamp(0, C - 1)
    mult = spec.class_multipliers.to(dev) if spec.class_multipliers is not None else None

    obj = y[..., K]
    probs = y[..., K + 1:]
    d_box = torch.zeros(B, A, H, W, K, device=dev)
    d_cls = torch.zeros(B, A, H, W, C, device=dev)

    # -- every prediction: best IoU with any truth (ignore_thresh, truth_thresh) --------------
    best_iou = torch.zeros(B, A, H, W, device=dev)
    best_t = torch.zeros(B, A, H, W, dtype=torch.long, device=dev)
    if T:
        flat = pred.view(B, A * H * W, 1, 4)
        chunk = max(1, (1 << 22) // max(1, A * H * W * T))
        ious = []
        for b0 in range(0, B, chunk):
            iou = box_iou(flat[b0:b0 + chunk], truth[b0:b0 + chunk, None, :, :4])
            ious.append(torch.where(valid[b0:b0 + chunk, None, :], iou, torch.zeros_like(iou)))
        iou = torch.cat(ious).view(B, A, H, W, T)
        best_iou = iou.max(dim=-1).values
        best_t = _first_index_of_max(iou)
    class_match = (probs > 0.25).any(dim=-1)
    best_match = torch.where(class_match, best_iou, torch.zeros_like(best_iou))
    d_obj = spec.obj_normalizer * (0 - obj)
    ignore = best_match > spec.ignore_thresh
    written = torch.zeros(B * A * H * W, dtype=torch.bool, device=dev)  # class deltas set
    if spec.objectness_smooth and gaussian:  # iou^2 objectness and a class delta
        d_obj = torch.where(ignore, spec.obj_normalizer * (best_match ** 2 - obj), d_obj)
        if ignore.any():  # ignore implies a class match, so best_match_t is best_t
            k = tcls.gather(1, best_t.view(B, -1)).view(B, A, H, W)[ignore]
            d_cls[ignore] = _class_rows(spec, probs[ignore], k, mult)
            written = ignore.reshape(-1).clone()
    elif spec.objectness_smooth:
        d_obj = torch.where(ignore, torch.maximum(
            d_obj, spec.obj_normalizer * (best_match - obj)), d_obj)
    else:
        d_obj = torch.where(ignore, torch.zeros_like(d_obj), d_obj)

    # assignments: (b, a, j, i, t, anchor, order); order = Darknet's processing order
    parts: list[tuple[Tensor, ...]] = []
    tt = best_iou > spec.truth_thresh
    if tt.any():
        b, a, j, i = tt.nonzero(as_tuple=True)
        t = best_t[b, a, j, i]
        pos_obj = best_iou[b, a, j, i] ** 2 if spec.objectness_smooth else 1.0
        d_obj[b, a, j, i] = spec.obj_normalizer * (pos_obj - obj[b, a, j, i])
        parts.append((b, a, j, i, t, mask_t[a], torch.full_like(b, -1)))

    # -- every truth: best anchor by shape, plus iou_thresh anchors ---------------------------
    N = len(anchors)
    if T and valid.any():
        tb, ti = valid.nonzero(as_tuple=True)
        tbox = truth[tb, ti, :4]
        shift = torch.cat([torch.zeros_like(tbox[:, :2]), tbox[:, 2:]], dim=1)
        anchor_boxes = torch.cat([torch.zeros(N, 2, device=dev),
                                  anchors / torch.tensor([net_w, net_h], device=dev)], dim=1)
        shape_iou = box_iou(anchor_boxes[None], shift[:, None])  # (n_truth, N)
        best_n = _first_index_of_max(shape_iou)
        cx, cy = tbox[:, 0], tbox[:, 1]
        if gaussian and spec.yolo_point != "center":  # the corner's cell, clamped (as Darknet)
            sign = -1.0 if spec.yolo_point == "left_top" else 1.0
            cx, cy = cx + sign * tbox[:, 2] / 2, cy + sign * tbox[:, 3] / 2
            cx, cy = cx.clamp(min=0), cy.clamp(min=0)
        gi = (cx * W).long().clamp(0, W - 1)
        gj = (cy * H).long().clamp(0, H - 1)
        lookup = torch.full((N,), -1, dtype=torch.long, device=dev)
        lookup[mask_t] = torch.arange(A, device=dev)
        slot = lookup[best_n]
        keep = slot >= 0
        order = ti * (N + 1)
        parts.append((tb[keep], slot[keep], gj[keep], gi[keep], ti[keep], best_n[keep],
                      order[keep]))
        if spec.iou_thresh < 1.0:
            kind_iou = box_iou_kind(anchor_boxes[None], shift[:, None], spec.iou_thresh_kind)
            for a_idx, n in enumerate(spec.mask):
                extra = (best_n != n) & (kind_iou[:, n] > spec.iou_thresh)
                if extra.any():
                    parts.append((tb[extra], torch.full_like(tb[extra], a_idx), gj[extra],
                                  gi[extra], ti[extra], torch.full_like(tb[extra], n),
                                  order[extra] + 1 + n))

    count, iou_sum, box_value = 0, 0.0, 0.0
    if parts:
        b, a, j, i, t, n, order = (torch.cat(x) for x in zip(*parts))
        step2 = order >= 0
        tr = truth[b, t, :4]
        cls_id = tcls[b, t]
        cmult = mult[cls_id] if mult is not None else torch.ones_like(tr[:, 0])
        p = pred[b, a, j, i]
        out = mean[b, a, j, i]
        norm = spec.iou_normalizer * cmult
        if gaussian:
            contrib = gaussian_box_delta(spec, tr, out, y[b, a, j, i][:, 1:K:2], p, i, j,
                                         anchors[n], W, H, net_w, net_h, norm)
        elif spec.iou_loss == "mse":
            tx = tr[:, 0] * W - i.float()
            ty = tr[:, 1] * H - j.float()
            if spec.new_coords:
                tw = torch.sqrt(tr[:, 2] * net_w / (4 * anchors[n, 0]))
                th = torch.sqrt(tr[:, 3] * net_h / (4 * anchors[n, 1]))
            else:
                tw = torch.log(tr[:, 2] * net_w / anchors[n, 0])
                th = torch.log(tr[:, 3] * net_h / anchors[n, 1])
            scale = (2 - tr[:, 2] * tr[:, 3]) * norm
            contrib = torch.stack([tx, ty, tw, th], dim=1) - out[:, :4]
            contrib = contrib * scale[:, None]
        else:
            p_fixed = p.clone()
            p_fixed[:, 2] = torch.where(p[:, 2] == 0, torch.ones_like(p[:, 2]), p[:, 2])
            p_fixed[:, 3] = torch.where(p[:, 3] == 0, torch.ones_like(p[:, 3]), p[:, 3])
            contrib = dx_box_iou(p_fixed, tr, spec.iou_loss)
            if not spec.new_coords:
                contrib[:, 2] = contrib[:, 2] * torch.exp(out[:, 2])
                contrib[:, 3] = contrib[:, 3] * torch.exp(out[:, 3])
            contrib = torch.nan_to_num(contrib * norm[:, None], nan=0.0, posinf=0.0, neginf=0.0)
            if math.isfinite(spec.max_delta):
                contrib = contrib.clamp(-spec.max_delta, spec.max_delta)
            kind_iou = torch.nan_to_num(box_iou_kind(p, tr, spec.iou_loss), nan=0.0)
            box_value = float((norm * (1 - kind_iou)).sum())
        cell = ((b * A + a) * H + j) * W + i
        d_box.view(-1, K).index_add_(0, cell, contrib)
        plain_iou = box_iou(p, tr)
        count = int(step2.sum())
        iou_sum = float(plain_iou[step2].sum())

        # objectness of the positives (truth_thresh ones were set above)
        if step2.any():
            c2, o2, m2 = cell[step2], order[step2], cmult[step2]
            flat_obj = d_obj.view(-1)
            value = m2 * spec.obj_normalizer * (1 - obj.reshape(-1)[c2])
            if spec.objectness_smooth and not gaussian:  # only where the delta is still 0
                sel = _pick(c2, o2, first=True)
                c_sel, v_sel = c2[sel], value[sel]
                flat_obj[c_sel] = torch.where(flat_obj[c_sel] == 0, v_sel, flat_obj[c_sel])
            else:  # assignment: the last writer wins
                sel = _pick(c2, o2, first=False)
                flat_obj[c2[sel]] = value[sel]

        # classes: the first truth of a cell writes every class, later ones only their own
        flat_cls = d_cls.view(-1, C)
        flat_p = probs.reshape(-1, C)
        eps = spec.label_smooth_eps
        y1 = (1 - eps) + 0.5 * eps if eps else 1.0
        # (a Gaussian cell whose classes were set at an ignored prediction counts as written:
        # delta_gaussian_yolo_class tests class 0's delta, delta_yolo_class the true class's;
        # both are nonzero once a cell was written, but for a probability of exactly 0)
        first = _pick(cell, order, first=True) & ~written[cell]
        fc, fcls = cell[first], cls_id[first]
        flat_cls[fc] = _class_rows(spec, flat_p[fc], fcls, mult)
        later = ~first
        if spec.objectness_smooth and not step2.all():  # truth_thresh positives (one a cell)
            s1 = ~step2
            c1, k1 = cell[s1], cls_id[s1]
            m1 = mult[k1] if mult is not None else torch.ones_like(c1, dtype=torch.float32)
            iou2 = best_iou.reshape(-1)[c1] ** 2
            flat_cls[c1, k1] = m1 * (iou2 - flat_p[c1, k1])
            later = later & step2
        if later.any():
            lc, lk = cell[later], cls_id[later]
            value = y1 - flat_p[lc, lk]
            if mult is not None:
                value = value * mult[lk]
            flat_cls[lc, lk] = value

    if spec.iou_thresh < 1.0 or gaussian:  # averages_(gaussian_)yolo_deltas
        positives = (d_cls > 0).sum(dim=-1, keepdim=True)
        divide = positives > 0  # Gaussian: every image, whatever its objectness delta
        if not gaussian:
            divide = divide & (d_obj != 0).unsqueeze(-1)
        d_box = torch.where(divide, d_box / positives.clamp(min=1), d_box)

    if spec.iou_loss == "mse" or gaussian:
        box_value = float((d_box ** 2).sum())
    delta = torch.cat([d_box, d_obj.unsqueeze(-1), d_cls], dim=-1)  # (B, A, H, W, E)
    delta = delta.permute(0, 1, 4, 2, 3).reshape(B, A * E, H, W)
    return HeadLoss(delta, box_value, float((d_obj ** 2).sum()), float((d_cls ** 2).sum()),
                    count, iou_sum)


def _class_rows(spec: YoloSpec, p: Tensor, cls_id: Tensor, mult: Tensor | None) -> Tensor:
    """``delta_yolo_class`` for a prediction whose class deltas are still unset: every class,
    target ``1`` / ``0`` (label-smoothed), the true class times its ``counters_per_class``
    multiplier and ``cls_normalizer``; or the focal-loss delta. (n, C) rows."""
    C = p.shape[-1]
    onehot = torch.nn.functional.one_hot(cls_id, C).to(p.dtype)
    if spec.focal_loss:
        return (onehot - p) * _focal_factor(p, cls_id)[:, None]
    eps = spec.label_smooth_eps
    y1 = (1 - eps) + 0.5 * eps if eps else 1.0
    y0 = 0.5 * eps if eps else 0.0
    full = y0 + (y1 - y0) * onehot - p
    if mult is not None:
        factor = (mult[cls_id] * spec.cls_normalizer)[:, None]
        full = full * torch.where(onehot.bool(), factor, torch.ones_like(full))
    return full


def gaussian_box_delta(spec: GaussianSpec, truth: Tensor, mean: Tensor, sigma: Tensor,
                       pred: Tensor, i: Tensor, j: Tensor, anchor: Tensor, W: int, H: int,
                       net_w: int, net_h: int, norm: Tensor) -> Tensor:
    """``delta_gaussian_yolo_box`` for n positives: (n, 8) deltas in the layout's order
    (mean x, sigma x, mean y, sigma y, ... h). ``mean``/``sigma`` (n, 4) are the activated
    outputs, ``pred`` the decoded box, ``norm`` iou_normalizer x class multiplier.

    With d = t - mean (t: Darknet's mse target) and s = sigma, per coordinate:
    N = exp(-(d/s)^2 / 2) / (sqrt(2 pi) (s + 0.3)), temp = 0.5 * N / (N + 1e-9) * (2 - w*h),
    delta_mean = temp * d / s^2 (the Gaussian NLL gradient), delta_sigma =
    temp * (d^2 / s^3 - 1 / (s + 0.3)); for giou/diou/ciou/iou the means take Darknet's
    ``dx_box_iou`` (the x, y of a corner point shifted by -/+ dw/2), w, h times exp(mean).
    Means times ``norm``, sigmas times ``uc_normalizer``; NaN/inf -> 0; clipped to
    ``max_delta`` (all eight, as Darknet). The 0.3 and 1e-9 are Darknet's constants."""
    tx = truth[:, 0] * W - i.float()
    ty = truth[:, 1] * H - j.float()
    if spec.yolo_point != "center":
        sign = -1.0 if spec.yolo_point == "left_top" else 1.0
        tx = (truth[:, 0] + sign * truth[:, 2] / 2) * W - i.float()
        ty = (truth[:, 1] + sign * truth[:, 3] / 2) * H - j.float()
    tw = torch.log(truth[:, 2] * net_w / anchor[:, 0])
    th = torch.log(truth[:, 3] * net_h / anchor[:, 1])
    d = torch.stack([tx, ty, tw, th], dim=1) - mean
    scale = (2 - truth[:, 2] * truth[:, 3])[:, None]
    in_exp = d / sigma
    normal = torch.exp(in_exp ** 2 * -0.5) / (math.sqrt(math.pi * 2.0) * (sigma + 0.3))
    temp = 0.5 * (1.0 / (normal + 1e-9)) * normal * scale
    d_mean = temp * in_exp * (1.0 / sigma)
    d_sigma = temp * (in_exp ** 2 / sigma - 1.0 / (sigma + 0.3))
    if spec.iou_loss != "mse":
        p_fixed = pred.clone()  # Darknet sets a zero width/height to 1 before dx_box_iou
        p_fixed[:, 2:] = torch.where(pred[:, 2:] == 0, torch.ones_like(pred[:, 2:]),
                                     pred[:, 2:])
        dx = dx_box_iou(p_fixed, truth, spec.iou_loss)
        if spec.yolo_point != "center":
            sign = -1.0 if spec.yolo_point == "left_top" else 1.0
            dx[:, :2] = dx[:, :2] + sign * dx[:, 2:] / 2
        dx[:, 2:] = dx[:, 2:] * torch.exp(mean[:, 2:])
        d_mean = dx
    d_mean = torch.nan_to_num(d_mean * norm[:, None], nan=0.0, posinf=0.0, neginf=0.0)
    d_sigma = torch.nan_to_num(d_sigma * spec.uc_normalizer, nan=0.0, posinf=0.0, neginf=0.0)
    if math.isfinite(spec.max_delta):
        d_mean = d_mean.clamp(-spec.max_delta, spec.max_delta)
        d_sigma = d_sigma.clamp(-spec.max_delta, spec.max_delta)
    return torch.stack([d_mean, d_sigma], dim=2).reshape(-1, 8)
