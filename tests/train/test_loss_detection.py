"""The [detection] (YOLOv1) training loss (``forward_detection_layer``): a hand-computed delta,
the best-box rules, the surrogate's gradient, and a short ``darkcsp train`` run."""
from __future__ import annotations


import pytest
import torch

from darkcsp import Darknet
from darkcsp.errors import DarkcspError
from darkcsp.train.loss import DetectionSpec, YoloLoss

from train_support import train_three_iterations

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def detection_cfg(extra: str = "rescore=1\nsqrt=1") -> str:
    """A 64x64 net whose [detection] has side=2 (4 cells), num=2 boxes, 2 classes: 4 x (2 +
    2 + 2 x 4) = 48 flat outputs: class k of cell l at 2l + k, the confidence of box j at
    8 + 2l + j, box j's x, y, w, h at 16 + 4(2l + j)."""
    return f"""[net]
width=64
height=64
channels=3
[maxpool]
size=32
stride=32
[connected]
output=48
activation=linear
[detection]
side=2
num=2
classes=2
coords=4
object_scale=1
noobject_scale=.5
class_scale=1
coord_scale=5
{extra}
"""


def run(cfg: str, truth: list[list[float]], z: torch.Tensor, seen: int = 0):
    loss = YoloLoss(Darknet(cfg))
    assert isinstance(loss.specs[0], DetectionSpec)
    z = z.clone().requires_grad_(True)
    result = loss([z], torch.tensor([truth]), 64, 64, seen=seen)
    result.surrogate.backward()
    assert torch.allclose(z.grad, -result.heads[0].delta)  # the gradient is -delta
    return result, result.heads[0].delta[0]


def hand_input() -> torch.Tensor:
    """Cell 0: box 0 confidence 0.3. Cell 1: class probs (0.1, 0.7); confidences (0.2, 0.6);
    box 0 (0.25, 0.5, 0.5, 0.5), box 1 (0.5, 0.5, 0.4, 0.4) (x, y offsets, sqrt of w, h)."""
    z = torch.zeros(1, 48)
    z[0, 8] = 0.3
    z[0, 2:4] = torch.tensor([0.1, 0.7])
    z[0, 10:12] = torch.tensor([0.2, 0.6])
    z[0, 24:28] = torch.tensor([0.25, 0.5, 0.5, 0.5])
    z[0, 28:32] = torch.tensor([0.5, 0.5, 0.4, 0.4])
    return z


TRUTH = [[0.75, 0.25, 0.25, 0.25, 1]]  # centre in cell (row 0, col 1) = cell 1, class 1


def test_hand_computed_delta():
    """The truth (0.75, 0.25, 0.25, 0.25) lies in cell 1 at offsets (0.5, 0.5). Darknet
    compares boxes with x, y offsets / side and (sqrt=1) squared predicted w, h:
    truth (0.25, 0.25, 0.25, 0.25); box 0 (0.125, 0.25, 0.25, 0.25): overlap 0.125 x 0.25 =
    1/32, union 2/16 - 1/32 = 3/32, IoU 1/3; box 1 (0.25, 0.25, 0.16, 0.16) inside the truth:
    IoU 0.16^2 / 0.25^2 = 0.4096 > 1/3, so box 1 is responsible. Deltas:
    * every confidence: noobject .5 x (0 - c): cell 0 box 0 -0.15, cell 1 box 0 -0.1;
    * box 1's confidence (rescore): 1 x (IoU - 0.6) = -0.1904;
    * box 1: coord 5 x (0.5 - 0.5, 0.5 - 0.5, sqrt(.25) - 0.4, sqrt(.25) - 0.4) = (0, 0, .5, .5);
    * cell 1's classes: 1 x ((0, 1) - (0.1, 0.7)) = (-0.1, 0.3); all else 0.
    Cost (Darknet's squared norm of the delta) = .0225 + .01 + .1904^2 + .01 + .09 + .5."""
    result, delta = run(detection_cfg(), TRUTH, hand_input())
    expected = torch.zeros(48)
    expected[8], expected[10], expected[11] = -0.15, -0.1, 0.4096 - 0.6
    expected[30:32] = 0.5
    expected[2:4] = torch.tensor([-0.1, 0.3])
    assert torch.allclose(delta, expected, atol=1e-6)
    assert result.count == 1 and result.iou_sum == pytest.approx(0.4096)
    assert result.obj == pytest.approx(0.0225 + 0.01 + 0.1904 ** 2)
    assert result.box == pytest.approx(0.5) and result.cls == pytest.approx(0.1)
    assert result.total == pytest.approx(float((expected ** 2).sum()))


def test_without_rescore_sqrt_the_goal_is_one_and_the_box_linear():
    """rescore=0: confidence goal 1; sqrt=0: w, h compared and regressed as they are. Box 1
    (0.4 x 0.4 around the truth's centre: IoU .0625 / .16 = 0.390625) beats box 0 (x .125,
    0.5 x 0.5: it covers the truth, IoU .0625 / .25 = 0.25); box 1's w, h delta 5 x (.25 - .4)."""
    _, delta = run(detection_cfg("rescore=0\nsqrt=0"), TRUTH, hand_input())
    assert delta[11].item() == pytest.approx(1 - 0.6)
    assert delta[28:32].tolist() == pytest.approx([0, 0, 5 * (0.25 - 0.4), 5 * (0.25 - 0.4)])
    assert delta[24:28].abs().sum() == 0


def test_without_overlap_the_smallest_rmse_picks_the_box():
    """Neither box overlaps the truth: the box with the smaller rmse is responsible."""
    z = hand_input()
    z[0, 24:28] = torch.tensor([0.0, 0.0, 0.1, 0.1])  # far corner of the cell, tiny
    z[0, 28:32] = torch.tensor([-0.9, 0.5, 0.1, 0.1])  # further still in x
    _, delta = run(detection_cfg(), TRUTH, z)
    assert delta[10].item() == pytest.approx(0 - 0.2)  # rescore with IoU 0
    assert delta[24:28].tolist() == pytest.approx([2.5, 2.5, 2.0, 2.0])
    assert delta[28:32].abs().sum() == 0


def test_forced_and_random_pick_the_box():
    _, forced = run(detection_cfg("forced=1"), TRUTH, hand_input())  # w*h < .1: box 1
    assert forced[28:32].abs().sum() > 0 and forced[24:28].abs().sum() == 0
    _, big = run(detection_cfg("forced=1"), [[0.75, 0.25, 0.5, 0.5, 1]], hand_input())
    assert big[24:28].abs().sum() > 0 and big[28:32].abs().sum() == 0  # w*h >= .1: box 0
    picked = set()
    for seed in range(12):
        torch.manual_seed(seed)
        _, d = run(detection_cfg("random=1"), TRUTH, hand_input(), seen=0)
        picked.add(int(d[28:32].abs().sum() > 0))
    assert picked == {0, 1}
    _, late = run(detection_cfg("random=1"), TRUTH, hand_input(), seen=64000)
    assert late[28:32].abs().sum() > 0  # after 64000 images: by IoU again


def test_one_truth_a_cell_and_softmax():
    """Two truths in one cell: the first one counts (fill_truth_region); softmax=1 takes the
    class delta on the softmax probabilities."""
    truth = TRUTH + [[0.8, 0.3, 0.1, 0.1, 0]]
    result, delta = run(detection_cfg("softmax=1"), truth, hand_input())
    p = torch.softmax(torch.tensor([0.1, 0.7]), 0)
    assert result.count == 1
    assert delta[2:4].tolist() == pytest.approx((torch.tensor([0.0, 1.0]) - p).tolist())


def test_gradient_is_the_delta_on_random_inputs():
    torch.manual_seed(0)
    truth = [[0.3, 0.2, 0.25, 0.35, 1], [0.7, 0.8, 0.4, 0.3, 0], [0.6, 0.3, 0.2, 0.2, 1]]
    result, delta = run(detection_cfg("rescore=1\nsqrt=1\nsoftmax=1"), truth,
                        torch.rand(1, 48))
    assert torch.isfinite(delta).all() and result.count == 3


def test_coords_other_than_four_are_refused():
    cfg = detection_cfg().replace("coords=4", "coords=2").replace("output=48", "output=32")
    with pytest.raises(DarkcspError, match="coords=2"):
        YoloLoss(Darknet(cfg))


TINY_DETECTION = """[net]
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
filters=8
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=4
stride=4
[connected]
output=52
activation=linear
[detection]
classes=3
coords=4
rescore=1
side=2
num=2
softmax=0
sqrt=1
jitter=.2
object_scale=1
noobject_scale=.5
class_scale=1
coord_scale=5
random=1
"""


def test_darkcsp_train_runs_a_detection_cfg(tmp_path, single_thread):
    """Three iterations of ``darkcsp train`` (synthetic data) on a tiny YOLOv1 cfg (2x2 grid,
    2 boxes, 3 classes: 4 x (3 + 2 x 5) = 52 outputs; its random=1 picks random boxes, it is
    no multi-scale); the saved .weights load back into the cfg as trained."""
    model = train_three_iterations(TINY_DETECTION, tmp_path, "v1")
    assert model.nodes[-1].section.type == "detection"
