"""The detection-head training losses exactly as Darknet computes them: ``[yolo]``
(``forward_yolo_layer``), ``[Gaussian_yolo]`` (``forward_gaussian_yolo_layer``), ``[region]``
(YOLOv2, ``forward_region_layer``, the CPU build) and ``[detection]`` (YOLOv1,
``forward_detection_layer``).

Darknet does not differentiate a loss: each ``[yolo]`` layer writes a *delta* (the negative
gradient with respect to its input, i.e. the raw conv output) and back-propagates it. This
module computes the same delta tensor, vectorised, and returns a surrogate
``-(delta * input).sum()`` whose autograd gradient is exactly ``-delta``. So training follows
Darknet's gradients, including its hand-written IoU-loss derivatives (``dx_box_iou``), which
are *not* the true gradients of 1 - IoU (e.g. dw is not halved and x, y, obj and class deltas
are applied to the logits directly, which makes them logistic/BCE gradients).

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

``[region]`` (:func:`region_delta`, :class:`RegionSpec`) is YOLOv2's delta: noobject delta
``noobject_scale * (0 - obj) * obj * (1 - obj)`` (cleared above ``thresh``; ``classfix``
branches), while Darknet's ``seen`` < 12800 every prediction is pulled to its anchor prior
(scale 0.01), every truth picks the anchor of its cell by shape IoU (``bias_match``: the anchor,
else the predicted shape) and writes ``delta_region_box`` with ``coord_scale`` (x, y through the
logistic gradient, w, h on the log scale), objectness ``object_scale * (1 - obj)`` (``rescore``:
``iou - obj``) times the logistic gradient, and ``class_scale * (onehot - p)`` (focal_loss as
Darknet). Deltas are assigned, so a later truth on the same prediction wins. ``tree=``
(YOLO9000) is refused, as its inference is; ``map=`` is not applied.

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

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import DetectionHead, RegionHead, YoloHead

IOU_KINDS = ("mse", "iou", "giou", "diou", "ciou")


def iou_kind_name(name: str) -> str:
    """Darknet's parse: mse, giou, diou, ciou; any other string is plain IoU."""
    return name if name in IOU_KINDS else "iou"


# -- Darknet's box measures (box.c), on (..., 4) x, y, w, h tensors --------------------------

def _tblr(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y, w, h = b.unbind(-1)
    return y - h / 2, y + h / 2, x - w / 2, x + w / 2


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """``box_iou``: 0 when the intersection or the union is 0 (or the boxes do not overlap)."""
    at, ab, al, ar = _tblr(a)
    bt, bb, bl, br = _tblr(b)
    iw = torch.minimum(ar, br) - torch.maximum(al, bl)
    ih = torch.minimum(ab, bb) - torch.maximum(at, bt)
    inter = torch.where((iw < 0) | (ih < 0), torch.zeros_like(iw), iw * ih)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    ok = (inter != 0) & (union != 0)
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)),
                       torch.zeros_like(inter))


def box_iou_kind(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """``box_iou``/``box_giou``/``box_diou`` (exponent 0.6)/``box_ciou`` of box.c."""
    iou = box_iou(a, b)
    if kind in ("iou", "mse"):
        return iou
    at, ab, al, ar = _tblr(a)
    bt, bb, bl, br = _tblr(b)
    cw = torch.maximum(ar, br) - torch.minimum(al, bl)
    ch = torch.maximum(ab, bb) - torch.minimum(at, bt)
    if kind == "giou":
        c = cw * ch
        iw = torch.minimum(ar, br) - torch.maximum(al, bl)
        ih = torch.minimum(ab, bb) - torch.maximum(at, bt)
        inter = torch.where((iw < 0) | (ih < 0), torch.zeros_like(iw), iw * ih)
        u = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
        safe = torch.where(c == 0, torch.ones_like(c), c)
        return torch.where(c == 0, iou, iou - (c - u) / safe)
    c = cw * cw + ch * ch
    safe = torch.where(c == 0, torch.ones_like(c), c)
    d = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
    if kind == "diou":
        return torch.where(c == 0, iou, iou - (d / safe) ** 0.6)
    ar_gt = torch.atan(b[..., 2] / b[..., 3])
    ar_pred = torch.atan(a[..., 2] / a[..., 3])
    ar_loss = 4 / (math.pi * math.pi) * (ar_gt - ar_pred) ** 2
    alpha = ar_loss / (1 - iou + ar_loss + 0.000001)
    return torch.where(c == 0, iou, iou - (d / safe + alpha * ar_loss))


def dx_box_iou(pred: Tensor, truth: Tensor, kind: str) -> Tensor:
    """Darknet's ``dx_box_iou``: its (dx, dy, dw, dh) for giou/diou/ciou/iou losses, (n, 4)."""
    px, py, pw, ph = pred.unbind(-1)
    gx, gy, gw, gh = truth.unbind(-1)
    pt, pb, pl, pr = _tblr(pred)  # w, h > 0 here, so min/max of the corners is a no-op
    gt, gb, gl, gr = _tblr(truth)
    zero = torch.zeros_like(px)
    X = (pb - pt) * (pr - pl)
    Xhat = (gb - gt) * (gr - gl)
    Ih = torch.minimum(pb, gb) - torch.maximum(pt, gt)
    Iw = torch.minimum(pr, gr) - torch.maximum(pl, gl)
    I = Iw * Ih  # noqa: E741  (Darknet's name; not clamped at 0, as in Darknet)
    U = X + Xhat - I
    S = (px - gx) ** 2 + (py - gy) ** 2
    gCw = torch.maximum(pr, gr) - torch.minimum(pl, gl)
    gCh = torch.maximum(pb, gb) - torch.minimum(pt, gt)
    gC = gCw * gCh
    dX = {"t": -(pr - pl), "b": pr - pl, "l": -(pb - pt), "r": pb - pt}
    dI = {"t": torch.where(pt > gt, -Iw, zero), "b": torch.where(pb < gb, Iw, zero),
          "l": torch.where(pl > gl, -Ih, zero), "r": torch.where(pr < gr, Ih, zero)}
    dU = {k: dX[k] - dI[k] for k in dX}
    dC = {"t": torch.where(pt < gt, -gCw, zero), "b": torch.where(pb > gb, gCw, zero),
          "l": torch.where(pl < gl, -gCh, zero), "r": torch.where(pr > gr, gCh, zero)}
    Usafe = torch.where(U > 0, U, torch.ones_like(U))
    p = {k: torch.where(U > 0, (U * dI[k] - I * dU[k]) / (Usafe * Usafe), zero) for k in dX}
    no_overlap = (Iw <= 0) | (Ih <= 0)
    if kind == "giou":
        Csafe = torch.where(gC > 0, gC, torch.ones_like(gC))
        for k in p:
            term = (gC * dU[k] - U * dC[k]) / (Csafe * Csafe)
            p[k] = torch.where(gC > 0, p[k] + term, p[k])
            p[k] = torch.where(no_overlap, term, p[k])
    Cw, Ch = gCw, gCh  # the enclosing box again (Ct, Cb, Cl, Cr of the source)
    C = Cw * Cw + Ch * Ch
    one = torch.ones_like(px)
    dCt_dy, dCt_dh = torch.where(pt < gt, one, zero), torch.where(pt < gt, -0.5 * one, zero)
    dCb_dy, dCb_dh = torch.where(pb > gb, one, zero), torch.where(pb > gb, 0.5 * one, zero)
    dCl_dx, dCl_dw = torch.where(pl < gl, one, zero), torch.where(pl < gl, -0.5 * one, zero)
    dCr_dx, dCr_dw = torch.where(pr > gr, one, zero), torch.where(pr > gr, 0.5 * one, zero)
    dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
    dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
    p_dx = p["l"] + p["r"]
    p_dy = p["t"] + p["b"]
    p_dw = p["r"] - p["l"]  # Darknet does not halve dw, dh
    p_dh = p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        Csafe = torch.where(C > 0, C, torch.ones_like(C))
        C2 = Csafe * Csafe
        tx = (2 * (gx - px) * C - (2 * Cw * dCw_dx) * S) / C2
        ty = (2 * (gy - py) * C - (2 * Ch * dCh_dy) * S) / C2
        tw = (2 * Cw * dCw_dw) * S / C2
        th = (2 * Ch * dCh_dh) * S / C2
        if kind == "ciou":
            atan_diff = torch.atan(gw / gh) - torch.atan(pw / ph)
            ar_loss = 4 / (math.pi * math.pi) * atan_diff * atan_diff
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            tw = tw + alpha * (8 / (math.pi * math.pi) * atan_diff * ph)
            th = th + alpha * (-8 / (math.pi * math.pi) * atan_diff * pw)
        pos = C > 0
        p_dx = torch.where(no_overlap, tx, torch.where(pos, p_dx + tx, p_dx))
        p_dy = torch.where(no_overlap, ty, torch.where(pos, p_dy + ty, p_dy))
        p_dw = torch.where(no_overlap, tw, torch.where(pos, p_dw + tw, p_dw))
        p_dh = torch.where(no_overlap, th, torch.where(pos, p_dh + th, p_dh))
    return torch.stack([p_dx, p_dy, p_dw, p_dh], dim=-1)


# -- per-head settings ------------------------------------------------------------------------

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


@dataclass
class HeadLoss:
    """One head's delta and reported values (sums over the mini-batch)."""

    delta: Tensor
    box: float
    obj: float
    cls: float
    count: int
    iou_sum: float


@dataclass
class LossResult:
    """The surrogate to back-propagate and the reported values (sums over the batch)."""

    surrogate: Tensor
    box: float = 0.0
    obj: float = 0.0
    cls: float = 0.0
    count: int = 0
    iou_sum: float = 0.0
    heads: list[HeadLoss] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.box + self.obj + self.cls


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


def _first_index_of_max(values: Tensor) -> Tensor:
    """argmax over the last dim that returns the first maximum (Darknet's strict ``>``)."""
    best = values.max(dim=-1, keepdim=True).values
    n = values.shape[-1]
    idx = torch.arange(n, device=values.device).expand_as(values)
    first = torch.where(values == best, idx, torch.full_like(idx, n)).min(dim=-1).values
    return first.clamp(max=n - 1)  # an all-NaN row (overflowed box) gives the last index


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


def _focal_factor(p: Tensor, cls_id: Tensor) -> Tensor:
    """Darknet's focal-loss factor ``alpha * grad`` (alpha 0.5, gamma 2) of the true class's
    probability (``delta_yolo_class``, ``delta_region_class``)."""
    pt = p.gather(1, cls_id[:, None])[:, 0] + 1e-15
    return 0.5 * (-(1 - pt) * (2 * pt * torch.log(pt) + pt - 1))


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


DETECTION_HEADS = (YoloHead, RegionHead, DetectionHead)  # the head modules with a loss here


class YoloLoss:
    """All detection heads of a model (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``,
    ``[detection]``):
    ``loss(head_inputs, truth, net_w, net_h, seen=...)``."""

    def __init__(self, model) -> None:
        self.specs: list[YoloSpec | RegionSpec | DetectionSpec] = []
        for index in model.output_indices:
            head, node = model.layers[index], model.nodes[index]
            if isinstance(head, DetectionHead):
                self.specs.append(DetectionSpec.from_node(node, head))
            elif isinstance(head, YoloHead):
                kind = GaussianSpec if head.gaussian else YoloSpec
                self.specs.append(kind.from_node(node, head))
            elif isinstance(head, RegionHead):
                self.specs.append(RegionSpec.from_node(node, head))
        if not self.specs:
            raise DarkcspError("the cfg has no [yolo], [Gaussian_yolo], [region] or [detection] "
                               "layer: darkcsp train handles those detectors (and softmax "
                               "classifiers)")

    @property
    def head_indices(self) -> list[int]:
        return [s.index for s in self.specs]

    def __call__(self, head_inputs: list[Tensor], truth: Tensor, net_w: int,
                 net_h: int, seen: int = 0) -> LossResult:
        """``seen``: Darknet's image count at this forward, this mini-batch included (only
        ``[region]``'s prior warm-up reads it)."""
        surrogate = head_inputs[0].new_zeros((), dtype=torch.float32)
        result = LossResult(surrogate)
        for spec, z in zip(self.specs, head_inputs):
            if isinstance(spec, RegionSpec):
                head = region_delta(spec, z, truth, net_w, net_h, seen)
            elif isinstance(spec, DetectionSpec):
                head = detection_delta(spec, z, truth, net_w, net_h, seen)
            else:
                head = yolo_delta(spec, z, truth, net_w, net_h)
            result.heads.append(head)
            surrogate = surrogate - (head.delta * z.float()).sum() * spec.delta_normalizer
            result.box += head.box
            result.obj += head.obj
            result.cls += head.cls
            result.count += head.count
            result.iou_sum += head.iou_sum
        result.surrogate = surrogate
        return result
