"""The [Gaussian_yolo] training loss (``forward_gaussian_yolo_layer``): hand-computed deltas,
the surrogate's gradient, and a short ``darkcsp train`` run."""
from __future__ import annotations

import math

import pytest
import torch

from darkcsp import Darknet
from darkcsp.train.loss import GaussianSpec, YoloLoss

from train_support import TINY_CFG_TEXT, train_three_iterations

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SQRT_2PI = math.sqrt(2 * math.pi)


def gaussian_cfg(extra: str = "", iou_loss: str = "mse") -> str:
    """A 64x64 net whose single [Gaussian_yolo] (one anchor 32x32, one class) sits on a 2x2
    grid: 1 x (9 + 1) = 10 channels."""
    return f"""[net]
width=64
height=64
channels=3
[maxpool]
size=32
stride=32
[convolutional]
filters=10
size=1
stride=1
activation=linear
[Gaussian_yolo]
mask=0
anchors=32,32
num=1
classes=1
iou_loss={iou_loss}
iou_normalizer=0.75
ignore_thresh=0.5
{extra}
"""


def run(cfg: str, truth: list[list[float]], z: torch.Tensor | None = None):
    loss = YoloLoss(Darknet(cfg))
    assert isinstance(loss.specs[0], GaussianSpec)
    z = torch.zeros(1, 10, 2, 2) if z is None else z
    z.requires_grad_(True)
    result = loss([z], torch.tensor([truth]), 64, 64)
    result.surrogate.backward()
    assert torch.allclose(z.grad, -result.heads[0].delta)  # the gradient is -delta
    return result, result.heads[0].delta[0]


def nll_deltas(d: float, sigma: float, scale: float) -> tuple[float, float]:
    """delta_gaussian_yolo_box for one coordinate: N = exp(-(d/s)^2/2) / (sqrt(2 pi)(s+0.3)),
    temp = 0.5 N / (N + 1e-9) * scale; mean: temp * (d/s) / s; sigma:
    temp * ((d/s)^2 / s - 1 / (s + 0.3))."""
    normal = math.exp(-0.5 * (d / sigma) ** 2) / (SQRT_2PI * (sigma + 0.3))
    temp = 0.5 * normal / (normal + 1e-9) * scale
    return temp * d / sigma / sigma, temp * ((d / sigma) ** 2 / sigma - 1 / (sigma + 0.3))


def test_mse_hand_computed():
    """z = 0: every logistic entry is 0.5 (means of x, y and all sigmas), the w, h means 0.
    Truth (0.3, 0.2, 0.25, 0.5) lies in cell (0, 0) of the 2x2 grid; the one anchor is the
    best. Targets: tx = 0.3*2 - 0 = 0.6, ty = 0.4, tw = log(0.25*64/32) = log 0.5,
    th = log(0.5*64/32) = 0, so d = (0.1, -0.1, log 0.5, 0); scale = 2 - 0.25*0.5 = 1.875.
    With s = 0.5, temp = 0.5 * 1.875 (N / (N + 1e-9) = 1 to 1e-8):
      mean delta = 0.9375 * d / 0.25 * iou_normalizer 0.75 = 2.8125 d
        -> (0.28125, -0.28125, -1.94948, 0);
      sigma delta = 0.9375 * (d^2 / 0.125 - 1 / 0.8) * uc_normalizer 0.5
        -> x, y: -0.5484375; w: 0.9375 * (3.84362 - 1.25) * 0.5 = 1.21576; h: -0.5859375.
    Objectness: the prediction (0.25, 0.25, 0.5, 0.5) has IoU 0.1125 / 0.2625 = 0.43 < 0.5
    with the truth, so only the positive is set: 1 - 0.5; the three other cells 0 - 0.5.
    Class: 1 - 0.5. Averaging: one positive class at the cell, so / 1. Reported box is the
    squared norm of the 8 box deltas, obj 4 * 0.25, cls 0.25."""
    result, delta = run(gaussian_cfg("uc_normalizer=0.5"), [[0.3, 0.2, 0.25, 0.5, 0]])
    mx, sx = nll_deltas(0.1, 0.5, 1.875)
    mw, sw = nll_deltas(math.log(0.5), 0.5, 1.875)
    mh, sh = nll_deltas(0.0, 0.5, 1.875)
    expected = [0.75 * mx, 0.5 * sx, -0.75 * mx, 0.5 * sx, 0.75 * mw, 0.5 * sw, 0.75 * mh,
                0.5 * sh, 0.5, 0.5]
    assert expected[:8] == pytest.approx([0.28125, -0.5484375, -0.28125, -0.5484375,
                                          -1.94948, 1.21576, 0, -0.5859375], abs=1e-5)
    assert delta[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    for j, i in ((0, 1), (1, 0), (1, 1)):
        assert delta[:, j, i].tolist() == pytest.approx([0] * 8 + [-0.5, 0], abs=1e-7)
    assert result.box == pytest.approx(sum(v * v for v in expected[:8]), rel=1e-5)
    assert result.obj == pytest.approx(1.0, rel=1e-6)
    assert result.cls == pytest.approx(0.25, rel=1e-6)
    assert result.count == 1


def test_left_top_point_picks_the_corner_cell():
    """yolo_point=left_top: the predicted point is the box's left-top corner, and the truth
    (0.55, 0.55, 0.25, 0.25) goes to the cell of its corner (0.425, 0.425) -> (0, 0), not to
    the cell of its centre (1, 1). tx = 0.425*2 - 0 = 0.85, so d = (0.35, 0.35, log 0.5,
    log 0.5) with scale 2 - 0.0625 = 1.9375, s = 0.5:
      mean x = 0.96875 * 0.35 / 0.25 * 0.75 = 1.0171875;
      sigma x = 0.96875 * (0.1225 / 0.125 - 1.25) = -0.2615625 (uc_normalizer 1).
    The prediction at (0, 0) is (0.5, 0.5, 0.5, 0.5) (corner 0.25 + w/2): it contains the
    truth, IoU 0.25."""
    result, delta = run(gaussian_cfg("yolo_point=left_top"), [[0.55, 0.55, 0.25, 0.25, 0]])
    mx, sx = nll_deltas(0.35, 0.5, 1.9375)
    mw, sw = nll_deltas(math.log(0.5), 0.5, 1.9375)
    assert (0.75 * mx, sx) == pytest.approx((1.0171875, -0.2615625), abs=1e-6)
    expected = [0.75 * mx, sx, 0.75 * mx, sx, 0.75 * mw, sw, 0.75 * mw, sw, 0.5, 0.5]
    assert delta[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert delta[:, 1, 1].tolist() == pytest.approx([0] * 8 + [-0.5, 0], abs=1e-7)
    assert result.iou_sum == pytest.approx(0.25, rel=1e-6)


def test_ciou_means_take_darknets_iou_derivative_sigmas_the_nll():
    """iou_loss=ciou, max_delta=1: the means take dx_box_iou (for the prediction
    (0.25, 0.25, 0.5, 0.5) containing the truth (0.25, 0.25, 0.25, 0.25) with the same centre
    and aspect, dx = dy = 0 and dw = dh = -1, as test_loss.py's ciou case derives), times
    exp(w mean) = 1 and 0.75; the sigmas keep the NLL delta of the mse targets
    d = (0, 0, log 0.5, log 0.5), scale 1.9375: x, y: 0.96875 * -1.25 = -1.2109375;
    w, h: 0.96875 * (log(0.5)^2 / 0.125 - 1.25) = 2.5126; all clipped to [-1, 1] by
    max_delta=1 (Darknet clips all eight box entries, mse or not)."""
    result, delta = run(gaussian_cfg("max_delta=1", iou_loss="ciou"),
                        [[0.25, 0.25, 0.25, 0.25, 0]])
    _, sx = nll_deltas(0.0, 0.5, 1.9375)
    _, sw = nll_deltas(math.log(0.5), 0.5, 1.9375)
    assert (sx, sw) == pytest.approx((-1.2109375, 2.51257), abs=1e-5)
    expected = [0, -1.0, 0, -1.0, -0.75, 1.0, -0.75, 1.0, 0.5, 0.5]
    assert delta[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_two_classes_in_one_cell_average_the_box_delta():
    """Two truths of different classes in the same cell and anchor: the box deltas add up,
    and averages_gaussian_yolo_deltas divides them by the 2 classes with a positive delta
    (Darknet does it for every image, not only with iou_thresh < 1)."""
    cfg = gaussian_cfg().replace("classes=1", "classes=2").replace("filters=10", "filters=11")
    loss = YoloLoss(Darknet(cfg))
    truths = [[0.3, 0.2, 0.25, 0.5, 0], [0.2, 0.3, 0.25, 0.5, 1]]
    z = torch.zeros(1, 11, 2, 2)
    both = loss([z], torch.tensor([truths]), 64, 64).heads[0].delta[0, :8, 0, 0]
    single = [loss([z], torch.tensor([[t]]), 64, 64).heads[0].delta[0, :8, 0, 0]
              for t in truths]
    assert torch.allclose(both, (single[0] + single[1]) / 2, atol=1e-6)


def test_gradient_is_the_delta_on_random_inputs():
    torch.manual_seed(0)
    cfg = gaussian_cfg("scale_x_y=1.05\niou_thresh=0.2", iou_loss="giou")
    result, delta = run(cfg, [[0.3, 0.2, 0.25, 0.5, 0], [0.7, 0.8, 0.4, 0.3, 0]],
                        torch.randn(1, 10, 2, 2))
    assert torch.isfinite(delta).all() and result.count == 2


def test_darkcsp_train_runs_a_gaussian_cfg(tmp_path, single_thread):
    """Three iterations of ``darkcsp train`` on the tiny two-head cfg with [Gaussian_yolo]
    heads (3 anchors x (9 + 3) = 36 filters); the saved .weights load back."""
    text = TINY_CFG_TEXT.replace("filters=24", "filters=36").replace("[yolo]",
                                                                     "[Gaussian_yolo]")
    model = train_three_iterations(text, tmp_path, "gauss")
    assert [n.section.type for n in model.nodes].count("Gaussian_yolo") == 2
