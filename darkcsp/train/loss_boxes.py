"""Darknet's box measures for the training deltas (``box.c``), on (..., 4) x, y, w, h tensors:
``box_iou`` and its giou/diou/ciou kinds (:func:`box_iou_kind`), the ``iou_loss`` and
``iou_thresh_kind`` names (:func:`iou_kind_name`), and ``dx_box_iou`` (:func:`dx_box_iou`),
Darknet's hand-written IoU-loss derivatives, which are *not* the true gradients of 1 - IoU (e.g.
dw is not halved). Shared by the ``[yolo]``/``[Gaussian_yolo]``, ``[region]`` and
``[detection]`` deltas (``loss_yolo.py``, ``loss_region.py``, ``loss_detection.py``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

IOU_KINDS = ("mse", "iou", "giou", "diou", "ciou")


def iou_kind_name(name: str) -> str:
    """Darknet's parse: mse, giou, diou, ciou; any other string is plain IoU."""
    return name if name in IOU_KINDS else "iou"


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
