"""The [yolo] training loss: hand-computed cases and a per-element port of Darknet's
``process_batch`` loop as an oracle for the vectorised delta."""
from __future__ import annotations

import math

import pytest
import torch

from darkcsp import Darknet
from darkcsp.train.loss import YoloLoss, YoloSpec, box_iou_kind, yolo_delta

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def one_head_cfg(iou_loss: str, extra: str = "", classes: int = 1, anchors: str = "32,32",
                 mask: str = "0", num: int = 1, filters: int | None = None) -> str:
    """A 64x64 net whose single [yolo] sits on a 2x2 grid."""
    filters = filters or len(mask.split(",")) * (5 + classes)
    return f"""[net]
width=64
height=64
channels=3
[maxpool]
size=32
stride=32
[convolutional]
filters={filters}
size=1
stride=1
activation=linear
[yolo]
mask={mask}
anchors={anchors}
num={num}
classes={classes}
iou_loss={iou_loss}
iou_normalizer=0.75
ignore_thresh=0.5
{extra}
"""


def hand_case(iou_loss: str):
    model = Darknet(one_head_cfg(iou_loss))
    loss = YoloLoss(model)
    z = torch.zeros(1, 6, 2, 2, requires_grad=True)  # sigmoid 0.5 everywhere, tw = th = 0
    truth = torch.tensor([[[0.25, 0.25, 0.25, 0.25, 0.0]]])  # in cell (0, 0), anchor 0
    return loss([z], truth, 64, 64), z


def test_mse_hand_computed():
    """pred (0.25, 0.25, 0.5, 0.5) vs truth (0.25, 0.25, 0.25, 0.25):
    tx = 0.5 = x, so dx = dy = 0; tw = log(0.25*64/32) = log 0.5; scale = 2 - 0.0625;
    dw = dh = 1.9375 * 0.75 * log 0.5; obj: +0.5 at the positive, -0.5 at 3 others;
    class: 1 - 0.5."""
    result, z = hand_case("mse")
    dw = 1.9375 * 0.75 * math.log(0.5)
    assert result.box == pytest.approx(2 * dw * dw, rel=1e-6)
    assert result.obj == pytest.approx(4 * 0.25, rel=1e-6)
    assert result.cls == pytest.approx(0.25, rel=1e-6)
    assert result.count == 1
    delta = result.heads[0].delta[0, :, 0, 0]
    assert delta.tolist() == pytest.approx([0, 0, dw, dw, 0.5, 0.5], rel=1e-6)
    result.surrogate.backward()
    assert torch.allclose(z.grad, -result.heads[0].delta)


def test_ciou_hand_computed():
    """Same boxes, ciou: same centre and aspect, so CIoU = IoU = 0.0625 / 0.25; the box value
    is 0.75 * (1 - 0.25). Darknet's derivative for a pred containing the truth:
    p_dt = -p_db = I*|dX|/U^2 = 0.5, p_dl = -p_dr = 0.5, so dx = dy = 0, dw = dh = -1, times
    exp(tw) = 1 and iou_normalizer 0.75; the centre-distance and aspect terms vanish."""
    result, z = hand_case("ciou")
    assert result.box == pytest.approx(0.75 * (1 - 0.25), rel=1e-6)
    assert result.obj == pytest.approx(1.0, rel=1e-6)
    delta = result.heads[0].delta[0, :, 0, 0]
    assert delta.tolist() == pytest.approx([0, 0, -0.75, -0.75, 0.5, 0.5], abs=1e-6)
    result.surrogate.backward()
    assert torch.allclose(z.grad, -result.heads[0].delta)


def test_ciou_value_with_offset_and_aspect():
    """box_ciou for pred (0.5, 0.5, 0.4, 0.2), truth (0.6, 0.5, 0.2, 0.2): I = 0.2*0.2 = 0.04,
    U = 0.08 + 0.04 - 0.04 = 0.08, IoU = 0.5; enclosing 0.4 x 0.2 -> c = 0.2, d = 0.01;
    v = 4/pi^2 (atan 1 - atan 2)^2, alpha = v / (1 - 0.5 + v + 1e-6)."""
    pred = torch.tensor([0.5, 0.5, 0.4, 0.2])
    truth = torch.tensor([0.6, 0.5, 0.2, 0.2])
    v = 4 / math.pi ** 2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (0.5 + v + 1e-6)
    expected = 0.5 - (0.01 / 0.2 + alpha * v)
    assert float(box_iou_kind(pred, truth, "ciou")) == pytest.approx(expected, rel=1e-5)
    assert float(box_iou_kind(pred, truth, "diou")) == pytest.approx(0.5 - 0.05 ** 0.6, rel=1e-5)
    assert float(box_iou_kind(pred, truth, "giou")) == pytest.approx(0.5 - (0.08 - 0.08) / 0.08)


# -- a literal, per-element port of forward_yolo_layer (process_batch) as the oracle ----------

def _iou(a, b) -> float:
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0 if (w < 0 or h < 0) else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return 0 if inter == 0 or union == 0 else inter / union


def _dx_iou(p, t, kind):
    pt, pb, pl, pr = p[1] - p[3] / 2, p[1] + p[3] / 2, p[0] - p[2] / 2, p[0] + p[2] / 2
    tt, tb, tl, tr = t[1] - t[3] / 2, t[1] + t[3] / 2, t[0] - t[2] / 2, t[0] + t[2] / 2
    X = (pb - pt) * (pr - pl)
    Xh = (tb - tt) * (tr - tl)
    Ih = min(pb, tb) - max(pt, tt)
    Iw = min(pr, tr) - max(pl, tl)
    I, U = Iw * Ih, X + (Xh - Iw * Ih)
    U = X + Xh - I
    S = (p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
    Cw_, Ch_ = max(pr, tr) - min(pl, tl), max(pb, tb) - min(pt, tt)
    dX = dict(t=-(pr - pl), b=pr - pl, l=-(pb - pt), r=pb - pt)
    dI = dict(t=-Iw if pt > tt else 0, b=Iw if pb < tb else 0, l=-Ih if pl > tl else 0,
              r=Ih if pr < tr else 0)
    dU = {k: dX[k] - dI[k] for k in dX}
    dC = dict(t=-Cw_ if pt < tt else 0, b=Cw_ if pb > tb else 0, l=-Ch_ if pl < tl else 0,
              r=Ch_ if pr > tr else 0)
    d = {k: ((U * dI[k] - I * dU[k]) / (U * U) if U > 0 else 0) for k in dX}
    if kind == "giou":
        C = Cw_ * Ch_
        for k in d:
            if C > 0:
                d[k] += (C * dU[k] - U * dC[k]) / (C * C)
            if Iw <= 0 or Ih <= 0:
                d[k] = (C * dU[k] - U * dC[k]) / (C * C)
    dx, dy, dw, dh = d["l"] + d["r"], d["t"] + d["b"], d["r"] - d["l"], d["b"] - d["t"]
    if kind in ("diou", "ciou"):
        C = Cw_ ** 2 + Ch_ ** 2
        cx = (1 if pr > tr else 0) - (1 if pl < tl else 0)
        cw = (0.5 if pr > tr else 0) - (-0.5 if pl < tl else 0)
        cy = (1 if pb > tb else 0) - (1 if pt < tt else 0)
        ch = (0.5 if pb > tb else 0) - (-0.5 if pt < tt else 0)
        ex = (2 * (t[0] - p[0]) * C - 2 * Cw_ * cx * S) / (C * C)
        ey = (2 * (t[1] - p[1]) * C - 2 * Ch_ * cy * S) / (C * C)
        ew = 2 * Cw_ * cw * S / (C * C)
        eh = 2 * Ch_ * ch * S / (C * C)
        if kind == "ciou":
            at = math.atan(t[2] / t[3]) - math.atan(p[2] / p[3])
            v = 4 / math.pi ** 2 * at * at
            alpha = v / (1 - I / U + v + 0.000001)
            ew += alpha * 8 / math.pi ** 2 * at * p[3]
            eh += alpha * -8 / math.pi ** 2 * at * p[2]
        if Iw <= 0 or Ih <= 0:
            dx, dy, dw, dh = ex, ey, ew, eh
        elif C > 0:
            dx, dy, dw, dh = dx + ex, dy + ey, dw + ew, dh + eh
    return dx, dy, dw, dh


def reference_delta(spec: YoloSpec, z: torch.Tensor, truth: torch.Tensor, netw: int, neth: int):
    """Darknet's loops, element by element (float64)."""
    B, _, H, W = z.shape
    A, C = len(spec.mask), spec.classes
    E = 5 + C
    zz = z.double().view(B, A, E, H, W)
    out = zz.clone()
    s = spec.scale_x_y
    for idx in [0, 1] + list(range(4, E)):
        if not spec.new_coords:
            out[:, :, idx] = torch.sigmoid(zz[:, :, idx])
    out[:, :, 0:2] = out[:, :, 0:2] * s - 0.5 * (s - 1)
    o = out.tolist()
    delta = [[[[[0.0] * W for _ in range(H)] for _ in range(E)] for _ in range(A)]
             for _ in range(B)]
    anchors = spec.anchors.tolist()
    eps = spec.label_smooth_eps

    def box_at(b, a, j, i):
        n = spec.mask[a]
        if spec.new_coords:
            w = o[b][a][2][j][i] ** 2 * 4 * anchors[n][0] / netw
            h = o[b][a][3][j][i] ** 2 * 4 * anchors[n][1] / neth
        else:
            w = math.exp(o[b][a][2][j][i]) * anchors[n][0] / netw
            h = math.exp(o[b][a][3][j][i]) * anchors[n][1] / neth
        return ((i + o[b][a][0][j][i]) / W, (j + o[b][a][1][j][i]) / H, w, h)

    def delta_box(t, b, a, j, i, n):
        scale = 2 - t[2] * t[3]
        if spec.iou_loss == "mse":
            tx, ty = t[0] * W - i, t[1] * H - j
            if spec.new_coords:
                tw, th = math.sqrt(t[2] * netw / (4 * anchors[n][0])), \
                    math.sqrt(t[3] * neth / (4 * anchors[n][1]))
            else:
                tw = math.log(t[2] * netw / anchors[n][0])
                th = math.log(t[3] * neth / anchors[n][1])
            for e, target in enumerate((tx, ty, tw, th)):
                delta[b][a][e][j][i] += scale * (target - o[b][a][e][j][i]) * spec.iou_normalizer
        else:
            p = box_at(b, a, j, i)
            d = list(_dx_iou(p, t, spec.iou_loss))
            if not spec.new_coords:
                d[2] *= math.exp(o[b][a][2][j][i])
                d[3] *= math.exp(o[b][a][3][j][i])
            for e in range(4):
                v = d[e] * spec.iou_normalizer
                v = 0.0 if not math.isfinite(v) else v
                v = max(-spec.max_delta, min(spec.max_delta, v))
                delta[b][a][e][j][i] += v

    def delta_class(b, a, j, i, cls):
        if delta[b][a][5 + cls][j][i]:
            delta[b][a][5 + cls][j][i] = (1 - eps) + 0.5 * eps - o[b][a][5 + cls][j][i] \
                if eps else 1 - o[b][a][5 + cls][j][i]
            return
        if spec.focal_loss:
            pt = o[b][a][5 + cls][j][i] + 1e-15
            grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
            for k in range(C):
                delta[b][a][5 + k][j][i] = ((k == cls) - o[b][a][5 + k][j][i]) * 0.5 * grad
            return
        for k in range(C):
            y = 1.0 if k == cls else 0.0
            if eps:
                y = y * (1 - eps) + 0.5 * eps
            delta[b][a][5 + k][j][i] = y - o[b][a][5 + k][j][i]

    for b in range(B):
        truths = [t for t in truth[b].double().tolist() if t[0]]
        for j in range(H):
            for i in range(W):
                for a in range(A):
                    pred = box_at(b, a, j, i)
                    best_match, best_iou, best_t = 0.0, 0.0, 0
                    match = any(o[b][a][5 + k][j][i] > 0.25 for k in range(C))
                    for t_idx, t in enumerate(truths):
                        iou = _iou(pred, t)
                        if iou > best_match and match:
                            best_match = iou
                        if iou > best_iou:
                            best_iou, best_t = iou, t_idx
                    delta[b][a][4][j][i] = spec.obj_normalizer * (0 - o[b][a][4][j][i])
                    if best_match > spec.ignore_thresh:
                        delta[b][a][4][j][i] = 0
                    if best_iou > spec.truth_thresh:
                        delta[b][a][4][j][i] = spec.obj_normalizer * (1 - o[b][a][4][j][i])
                        delta_class(b, a, j, i, int(truths[best_t][4]))
                        delta_box(truths[best_t], b, a, j, i, spec.mask[a])
        for t in truths:
            i, j = int(t[0] * W), int(t[1] * H)
            best, best_n = 0.0, 0
            for n in range(len(anchors)):
                iou = _iou((0, 0, anchors[n][0] / netw, anchors[n][1] / neth), (0, 0, t[2], t[3]))
                if iou > best:
                    best, best_n = iou, n
            chosen = [best_n] if best_n in spec.mask else []
            if spec.iou_thresh < 1:
                for n in range(len(anchors)):
                    if n in spec.mask and n != best_n:
                        kind_iou = float(box_iou_kind(
                            torch.tensor([0, 0, anchors[n][0] / netw, anchors[n][1] / neth]),
                            torch.tensor([0, 0, t[2], t[3]]), spec.iou_thresh_kind))
                        if kind_iou > spec.iou_thresh:
                            chosen.append(n)
            for n in chosen:
                a = spec.mask.index(n)
                delta_box(t, b, a, j, i, n)
                delta[b][a][4][j][i] = spec.obj_normalizer * (1 - o[b][a][4][j][i])
                delta_class(b, a, j, i, int(t[4]))
        if spec.iou_thresh < 1:
            for j in range(H):
                for i in range(W):
                    for a in range(A):
                        if delta[b][a][4][j][i] != 0:
                            k = sum(1 for c in range(C) if delta[b][a][5 + c][j][i] > 0)
                            if k:
                                for e in range(4):
                                    delta[b][a][e][j][i] /= k
    return torch.tensor(delta, dtype=torch.float64).view(B, A * E, H, W)


CASES = {
    "mse": "",
    "ciou": "",
    "giou": "",
    "diou": "",
    "iou": "",
    "ciou_thresh": "iou_thresh=0.2\nscale_x_y=1.1",
    "mse_smooth": "label_smooth_eps=0.1\nscale_x_y=1.05",
    "giou_focal": "focal_loss=1\ntruth_thresh=0.3",
    "diou_maxdelta": "max_delta=0.05\niou_thresh=0.3\niou_thresh_kind=ciou",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_delta_matches_darknet_loops(case):
    iou_loss = case.split("_")[0]
    cfg = f"""[net]
width=64
height=64
channels=3
[maxpool]
size=16
stride=16
[convolutional]
filters=24
size=1
stride=1
activation=linear
[yolo]
mask=1,3,4
anchors=8,8, 16,12, 12,24, 30,28, 48,40, 60,60
num=6
classes=3
iou_loss={iou_loss}
iou_normalizer=0.5
obj_normalizer=0.8
ignore_thresh=0.3
{CASES[case]}
"""
    model = Darknet(cfg)
    spec = YoloLoss(model).specs[0]
    gen = torch.Generator().manual_seed(sum(map(ord, case)))
    z = torch.randn(2, 24, 4, 4, generator=gen) * 1.5
    truth = torch.zeros(2, 5, 5)
    # several truths, two sharing a cell (multi-hot classes, summed box deltas)
    truth[0, 0] = torch.tensor([0.30, 0.30, 0.40, 0.30, 1])
    truth[0, 1] = torch.tensor([0.35, 0.40, 0.20, 0.35, 2])
    truth[0, 2] = torch.tensor([0.80, 0.70, 0.70, 0.60, 0])
    truth[0, 3] = torch.tensor([0.10, 0.90, 0.15, 0.10, 1])
    truth[1, 0] = torch.tensor([0.55, 0.45, 0.50, 0.80, 2])
    ours = yolo_delta(spec, z, truth, 64, 64).delta.double()
    ref = reference_delta(spec, z, truth, 64, 64)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=2e-5)
