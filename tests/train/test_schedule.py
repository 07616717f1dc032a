"""Darknet's learning-rate schedule and optimizer semantics, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from darkcsp import Darknet
from darkcsp.config.reader import parse_cfg
from darkcsp.config.net import parse_net
from darkcsp.train.schedule import darknet_rate, make_optimizer, param_groups, set_rate


def net(**options) -> object:
    text = "[net]\nwidth=32\nheight=32\nchannels=3\n" + "".join(
        f"{k}={v}\n" for k, v in options.items())
    return parse_net(parse_cfg(text)[0])


def test_burn_in_is_a_quartic_ramp():
    n = net(learning_rate=0.001, burn_in=1000, max_batches=5000)
    assert darknet_rate(n, 0) == 0
    assert darknet_rate(n, 1) == pytest.approx(0.001 * 1e-12)
    assert darknet_rate(n, 250) == pytest.approx(0.001 * 0.25 ** 4)  # 3.90625e-06
    assert darknet_rate(n, 500) == pytest.approx(6.25e-05)
    assert darknet_rate(n, 999) == pytest.approx(0.001 * 0.999 ** 4)
    assert darknet_rate(n, 1000) == 0.001
    custom = net(learning_rate=0.01, burn_in=100, power=2, max_batches=500)
    assert darknet_rate(custom, 50) == pytest.approx(0.01 * 0.25)


def test_steps_apply_from_their_iteration():
    n = net(learning_rate=0.00261, burn_in=10, max_batches=2000, policy="steps",
            steps="1600,1800", scales=".1,.1")
    assert darknet_rate(n, 1599) == pytest.approx(0.00261)
    assert darknet_rate(n, 1600) == pytest.approx(0.000261)
    assert darknet_rate(n, 1799) == pytest.approx(0.000261)
    assert darknet_rate(n, 1800) == pytest.approx(0.0000261)
    assert darknet_rate(n, 5) == pytest.approx(0.00261 * 0.5 ** 4)  # burn-in first


def test_step_exp_poly_sig():
    step = net(learning_rate=0.1, policy="step", step=100, scale=0.5, max_batches=1000)
    assert darknet_rate(step, 99) == pytest.approx(0.1)
    assert darknet_rate(step, 250) == pytest.approx(0.025)
    exp = net(learning_rate=0.1, policy="exp", gamma=0.99, max_batches=1000)
    assert darknet_rate(exp, 10) == pytest.approx(0.1 * 0.99 ** 10)
    poly = net(learning_rate=0.1, policy="poly", power=4, max_batches=1000, burn_in=100)
    assert darknet_rate(poly, 500) == pytest.approx(0.1 * 0.5 ** 4)  # 0.00625
    assert darknet_rate(poly, 50) == pytest.approx(0.1 * 0.5 ** 4)  # burn-in uses power too
    assert darknet_rate(poly, 1000) == 0
    sig = net(learning_rate=0.1, policy="sig", gamma=0.1, step=50, max_batches=100)
    assert darknet_rate(sig, 50) == pytest.approx(0.05)


def test_sgdr_cosine_restarts():
    n = net(learning_rate=0.1, learning_rate_min=0.001, policy="sgdr", sgdr_cycle=100,
            sgdr_mult=2, max_batches=1000)
    half = 0.001 + 0.5 * 0.099 * (1 + math.cos(50 * 3.14159265 / 100))
    assert darknet_rate(n, 0) == pytest.approx(0.1)
    assert darknet_rate(n, 50) == pytest.approx(half)
    assert darknet_rate(n, 100) == pytest.approx(0.001, abs=1e-9)  # still the first cycle
    assert darknet_rate(n, 101) == pytest.approx(
        0.001 + 0.5 * 0.099 * (1 + math.cos(1 * 3.14159265 / 200)))
    assert darknet_rate(n, 300) == pytest.approx(0.001, abs=1e-9)  # end of the 200-long cycle
    assert darknet_rate(n, 500) == pytest.approx(
        0.001 + 0.5 * 0.099 * (1 + math.cos(200 * 3.14159265 / 400)))
    default_cycle = net(learning_rate=0.1, policy="sgdr", max_batches=400)
    assert darknet_rate(default_cycle, 200) == pytest.approx(
        0.00001 + 0.5 * (0.1 - 0.00001) * (1 + math.cos(200 * 3.14159265 / 400)))


def test_unknown_policy_is_constant():
    assert darknet_rate(net(learning_rate=0.3, policy="weird", max_batches=10), 7) == 0.3


CFG = """[net]
width=16
height=16
channels=3
momentum=0.9
decay=0.01
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
stopbackward=1
[convolutional]
filters=4
size=1
activation=linear
learning_rate=0.5
"""


def test_decay_only_on_weights_and_darknet_sgd_step():
    """One step equals Darknet's update: upd = grad_sum - decay*B*w; w += lr/B*upd; and the
    layer learning_rate multiplier; stopbackward freezes that layer and the ones before."""
    model = Darknet(CFG)
    groups = param_groups(model)
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    decayed = [p for g in groups if g["decay"] for p in g["params"]]
    assert [p.shape for p in decayed] == [model.layers[1].conv.weight.shape]
    assert {g["lr_scale"] for g in groups} == {0.5}
    opt = make_optimizer(model, model.net)
    set_rate(opt, 0.1)
    conv = model.layers[1].conv
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    B = 4
    x = torch.randn(B, 3, 16, 16)
    out = model(x)[0]
    (out.sum() / B).backward()  # batch-mean gradient, as Darknet's sum / B
    g_w, g_b = conv.weight.grad.clone(), conv.bias.grad.clone()
    opt.step()
    lr = 0.1 * 0.5
    upd_w = -g_w * B - 0.01 * B * w0  # Darknet accumulates the negative gradient sum
    assert torch.allclose(conv.weight, w0 + lr / B * upd_w, atol=1e-6)
    assert torch.allclose(conv.bias, b0 + lr / B * (-g_b * B), atol=1e-6)  # no decay


def test_darknet_ema_starts_half_way_and_is_applied_1000_before_the_end():
    from darkcsp.train.ema import DarknetEMA

    model = Darknet(CFG)
    ema = DarknetEMA(model, alpha=0.5, max_batches=3000)  # start 1500, apply at 2000
    conv = model.layers[1].conv
    with torch.no_grad():
        conv.weight.fill_(1.0)
    ema.step(1499)
    assert not ema.initialized
    ema.step(1500)  # initialised from the live weights (then alpha*w + (1-alpha)*w)
    with torch.no_grad():
        conv.weight.fill_(3.0)
    ema.step(1501)  # 0.5 * 1 + 0.5 * 3
    with ema.swapped():
        assert torch.all(conv.weight == 2.0)
    assert torch.all(conv.weight == 3.0)
    ema.step(2000)  # the averages replace the weights
    assert torch.all(conv.weight == 2.0)
    ema.step(2001)  # and are no longer updated
    slot = next(i for i, p in enumerate(ema.params) if p is conv.weight)
    assert torch.all(ema.shadow[slot] == 2.0)


def test_schedule_warnings_name_what_the_run_will_not_do():
    from darkcsp.train.settings import schedule_warnings

    assert schedule_warnings(net(max_batches=100, policy="steps", steps="80,90",
                                 scales=".1,.1"), True) == []
    beyond = schedule_warnings(net(max_batches=100, policy="steps", steps="400000,450000",
                                   scales=".1,.1"), True)
    assert len(beyond) == 1 and "never steps down" in beyond[0] and "100" in beyond[0]
    assert ["track=1" in w for w in schedule_warnings(net(max_batches=9, track=1), True)] == [
        True]
    assert any("cutmix" in w for w in schedule_warnings(net(max_batches=9, cutmix=1), True))
    assert schedule_warnings(net(max_batches=9, cutmix=1, mosaic=1), True) == []
    classifier = schedule_warnings(net(max_batches=9, mixup=1), False)
    assert len(classifier) == 1 and "mixup=1 is not implemented for classifiers" in classifier[0]
