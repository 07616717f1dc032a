"""The [region] (YOLOv2) training loss (``forward_region_layer``, CPU): hand-computed deltas,
the prior warm-up, the surrogate's gradient, and a short ``darkcsp train`` run."""
from __future__ import annotations

import math

import pytest
import torch

from darkcsp import Darknet
from darkcsp.errors import DarkcspError
from darkcsp.train.loss import RegionSpec, YoloLoss

from train_support import train_three_iterations

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def region_cfg(extra: str = "bias_match=1\nrescore=1") -> str:
    """A 64x64 net whose [region] (anchors 1x1 and 0.5x0.5 grid cells, 2 classes, softmax)
    sits on a 2x2 grid: 2 x (5 + 2) = 14 channels, anchor a's entry e at channel 7a + e."""
    return f"""[net]
width=64
height=64
channels=3
[maxpool]
size=32
stride=32
[convolutional]
filters=14
size=1
stride=1
activation=linear
[region]
anchors=1,1, 0.5,0.5
num=2
classes=2
coords=4
softmax=1
thresh=0.6
object_scale=5
noobject_scale=1
coord_scale=1
class_scale=1
{extra}
"""


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def run(cfg: str, truth: list[list[float]], z: torch.Tensor, seen: int):
    loss = YoloLoss(Darknet(cfg))
    assert isinstance(loss.specs[0], RegionSpec)
    z = z.clone().requires_grad_(True)
    result = loss([z], torch.tensor([truth]), 64, 64, seen=seen)
    result.surrogate.backward()
    assert torch.allclose(z.grad, -result.heads[0].delta)  # the gradient is -delta
    return result, result.heads[0].delta[0]


def start_input() -> torch.Tensor:
    """Zeros, but anchor 0 at cell (j, i) = (1, 1) has raw x = 1 and raw w = 0.5."""
    z = torch.zeros(1, 14, 2, 2)
    z[0, 0, 1, 1] = 1.0
    z[0, 2, 1, 1] = 0.5
    return z


def test_hand_computed_with_the_prior_warm_up():
    """Truth (0.3, 0.2, 0.25, 0.25) class 1 lies in cell (0, 0) (i = (int)(0.3*2)). With
    bias_match the anchors' shapes are (1/2, 1/2) and (0.5/2, 0.5/2): anchor 1 matches the
    truth's shape exactly, so it is the best. delta_region_box (coord_scale 1) on the raw
    input 0: logistic 0.5, gradient 0.25; tx = 0.3*2 - 0 = 0.6, ty = 0.4, tw = th =
    log(0.25*2/0.5) = 0 -> (0.1*0.25, -0.1*0.25, 0, 0) = (0.025, -0.025, 0, 0).
    Its prediction (0.25, 0.25, 0.25, 0.25) overlaps the truth 0.2 x 0.2: IoU 0.04 / 0.085 =
    0.470588; rescore: obj delta = 5 * (0.470588 - 0.5) * 0.25 = -0.0367647.
    Classes: softmax of (0, 0) = 0.5 each -> (0 - 0.5, 1 - 0.5).
    Every other prediction: best IoU <= 0.25 < thresh 0.6, so noobject 1 * (0 - 0.5) * 0.25 =
    -0.125; and as seen = 8 < 12800, delta_region_box towards its prior (cell centre, anchor
    shape: targets 0.5, 0.5, 0, 0) with scale 0.01, zero for a raw 0 input; for anchor 0 at
    cell (1, 1) (raw x = 1, raw w = 0.5): x: 0.01 * (0.5 - s(1)) * s(1)(1 - s(1)) =
    -4.5429e-4, w: 0.01 * (0 - 0.5) = -0.005. At seen = 12800 that warm-up is gone."""
    truth = [[0.3, 0.2, 0.25, 0.25, 1]]
    result, delta = run(region_cfg(), truth, start_input(), seen=8)
    positive = delta[7:14, 0, 0].tolist()  # anchor 1 at cell (0, 0)
    iou = 0.04 / 0.085
    assert positive == pytest.approx([0.025, -0.025, 0, 0, 5 * (iou - 0.5) * 0.25, -0.5, 0.5],
                                     abs=1e-6)
    s1 = sig(1.0)
    warm = [0.01 * (0.5 - s1) * s1 * (1 - s1), 0, -0.005, 0]
    assert warm[0] == pytest.approx(-4.5429e-4, rel=1e-4)
    assert delta[0:7, 1, 1].tolist() == pytest.approx(warm + [-0.125, 0, 0], abs=1e-7)
    for a, j, i in ((0, 0, 0), (0, 0, 1), (1, 1, 1), (1, 0, 1)):
        assert delta[7 * a:7 * a + 7, j, i].tolist() == pytest.approx(
            [0, 0, 0, 0, -0.125, 0, 0], abs=1e-7)
    assert result.count == 1 and result.iou_sum == pytest.approx(iou, rel=1e-6)
    assert result.obj == pytest.approx(7 * 0.125 ** 2 + (5 * (iou - 0.5) * 0.25) ** 2,
                                       rel=1e-5)
    assert result.cls == pytest.approx(0.5, rel=1e-6)
    assert result.box == pytest.approx(2 * 0.025 ** 2 + warm[0] ** 2 + warm[2] ** 2, rel=1e-4)

    _, late = run(region_cfg(), truth, start_input(), seen=12800)
    assert late[0:7, 1, 1].tolist() == pytest.approx([0, 0, 0, 0, -0.125, 0, 0], abs=1e-7)
    assert late[7:14, 0, 0].tolist() == pytest.approx(positive, abs=1e-7)


def test_the_last_truth_on_a_prediction_wins():
    """A second truth (0.4, 0.3, 0.25, 0.25) class 0 on the same cell and anchor: Darknet
    assigns (not adds) box, objectness and class deltas, so its own win: tx = 0.8 ->
    0.3 * 0.25 = 0.075, ty = 0.6 -> 0.025; IoU with the prediction 0.1 x 0.2 = 0.02 over
    0.105 = 0.190476 -> obj 5 * (0.190476 - 0.5) * 0.25; classes (0.5, -0.5). Without
    rescore the objectness target is 1: 5 * 0.5 * 0.25 = 0.625."""
    truth = [[0.3, 0.2, 0.25, 0.25, 1], [0.4, 0.3, 0.25, 0.25, 0]]
    result, delta = run(region_cfg(), truth, torch.zeros(1, 14, 2, 2), seen=0)
    iou = 0.02 / 0.105
    assert delta[7:14, 0, 0].tolist() == pytest.approx(
        [0.075, 0.025, 0, 0, 5 * (iou - 0.5) * 0.25, 0.5, -0.5], abs=1e-6)
    assert result.count == 2 and result.iou_sum == pytest.approx(0.04 / 0.085 + iou, rel=1e-6)
    _, plain = run(region_cfg("bias_match=1"), truth, torch.zeros(1, 14, 2, 2), seen=0)
    assert plain[11, 0, 0].item() == pytest.approx(0.625, rel=1e-6)


def test_without_bias_match_the_predicted_shape_picks_the_anchor():
    """bias_match=0: the anchor is chosen by the IoU of the *predicted* shape at the cell.
    Raw w = h = log 0.5 on anchor 0 makes its prediction 0.5 * 1/2 = 0.25 wide, the truth's
    size, while anchor 1 predicts 0.25 too but is second (strict >, first best): anchor 0."""
    z = torch.zeros(1, 14, 2, 2)
    z[0, 2:4, 0, 0] = math.log(0.5)
    truth = [[0.3, 0.2, 0.25, 0.25, 1]]
    _, delta = run(region_cfg("bias_match=0"), truth, z, seen=20000)
    assert delta[0:7, 0, 0].tolist() == pytest.approx([0.025, -0.025, 0, 0, 0.625, -0.5, 0.5],
                                                      abs=1e-6)
    assert delta[11, 0, 0].item() == pytest.approx(-0.125)  # anchor 1: a plain negative
    _, matched = run(region_cfg("bias_match=1"), truth, z, seen=20000)
    assert matched[11, 0, 0].item() == pytest.approx(0.625)  # by the anchors: anchor 1


def test_gradient_is_the_delta_on_random_inputs():
    torch.manual_seed(0)
    truth = [[0.3, 0.2, 0.25, 0.25, 1], [0.7, 0.8, 0.4, 0.3, 0]]
    result, delta = run(region_cfg("bias_match=1\nrescore=1\nclassfix=2\nthresh=0.1"), truth,
                        torch.randn(1, 14, 2, 2), seen=100)
    assert torch.isfinite(delta).all() and result.count == 2


def test_tree_is_refused():
    with pytest.raises(DarkcspError, match="tree="):
        YoloLoss(Darknet(region_cfg("tree=data/9k.tree")))


TINY_REGION = """[net]
batch=4
subdivisions=1
width=64
height=64
channels=3
learning_rate=0.001
burn_in=1
max_batches=3
policy=steps
steps=1000
scales=.1
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[maxpool]
size=4
stride=4
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=4
stride=4
[convolutional]
size=1
stride=1
pad=1
filters=40
activation=linear
[region]
anchors=0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778, 9.77052, 9.16828
bias_match=1
classes=3
coords=4
num=5
softmax=1
jitter=.2
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
absolute=1
thresh=.6
random=1
"""


def test_darkcsp_train_runs_a_region_cfg(tmp_path, single_thread):
    """Three iterations of ``darkcsp train`` (the quick synthetic run: anchors fitted by
    k-means and given to the [region] in grid cells, classes fitted) on a tiny YOLOv2 cfg;
    the saved .weights load back into the cfg as trained."""
    model = train_three_iterations(TINY_REGION, tmp_path, "v2")
    region = model.nodes[-1]
    assert region.section.type == "region" and region.opts.num == 5
    assert max(region.opts.anchors) <= 2  # k-means pixels -> cells of the 2x2 grid
