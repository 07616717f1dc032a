"""Darknet's learning-rate schedule (``get_current_rate``) and optimizer set-up.

Why a pure function of the iteration: a resumed run must use exactly the rate an uninterrupted
run would, and tests can compare it with hand-computed values.

Darknet increments ``seen`` by the images of each sub-batch *before* the update, so the k-th
optimizer step (k = 1, 2, ...) uses ``rate(k)`` where k = seen / batch after that step's images.

Burn-in comes first for every policy: ``lr * (it / burn_in) ** power`` while it < burn_in
(``power`` defaults to 4: a quartic ramp; it is the same key that ``poly`` uses). Then:
constant; step (``lr * scale ** (it // step)``); steps (times every ``scales[i]`` with
``steps[i] <= it``); exp (``lr * gamma ** it``); poly (``lr * (1 - it / max_batches) **
power``); random (``lr * U(0, 1) ** power``, seeded by the iteration here); sig
(``lr / (1 + exp(gamma * (it - step)))``); sgdr (cosine restarts, the cycle starting at
``sgdr_cycle`` and growing by ``sgdr_mult``, a cycle ends *after* iteration start + length,
Darknet's pi constant 3.14159265). An unknown policy name means constant, as in Darknet.

Optimizer: Darknet's SGD update ``upd -= decay*B*w; w += lr/B*upd; upd *= momentum`` with
gradients summed over the B images of a batch is PyTorch SGD (momentum, dampening 0) on the
batch-mean gradient with ``weight_decay=decay``; decay only on weights (conv/connected
kernels), never on biases or batch-norm scales. ``adam=1`` uses Adam with ``B1``, ``B2``,
``eps`` (Darknet's Adam exists on GPU builds only; decay is applied as Adam's L2 term). The
per-layer ``learning_rate=`` multiplier is honoured; ``stopbackward=1`` freezes that layer and
every earlier one (Darknet still decays their weights; here they are simply not updated).
Not implemented: ``dont_update``, ``burnin_update``, ``train_only_bn``, ``seq_scales``.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn

from darkcsp.config.options import OptionValues


def darknet_rate(net: OptionValues, iteration: int, seed: int = 0) -> float:
    """``get_current_rate`` at batch number ``iteration``."""
    lr = float(net.learning_rate)
    it = int(iteration)
    burn_in = int(net.burn_in)
    power = float(net.power)
    if it < burn_in:
        return lr * math.pow(it / burn_in, power)
    policy = str(net.policy)
    if policy == "step":
        return lr * math.pow(float(net.scale), it // int(net.step))
    if policy == "steps":
        rate = lr
        for step, scale in zip(net.steps or [], net.scales or []):
            if step > it:
                return rate
            rate *= scale
        return rate
    if policy == "exp":
        return lr * math.pow(float(net.gamma), it)
    if policy == "poly":
        return lr * math.pow(1 - it / int(net.max_batches), power)
    if policy == "random":
        u = float(np.random.default_rng([seed, it]).random())
        return lr * math.pow(u, power)
    if policy == "sig":
        return lr * (1.0 / (1.0 + math.exp(float(net.gamma) * (it - int(net.step)))))
    if policy == "sgdr":
        start, cycle = 0, int(net.sgdr_cycle)
        while start + cycle < it:
            start += cycle
            cycle *= int(net.sgdr_mult)
        lr_min = float(net.learning_rate_min)
        return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos((it - start) * 3.14159265 / cycle))
    return lr


def frozen_prefix(model) -> int:
    """Layers 0..k-1 get no update when layer k-1 has ``stopbackward=1`` (0: none frozen)."""
    frozen = 0
    for node in model.nodes:
        if node.opts.get("stopbackward", 0):
            frozen = node.index + 1
    return frozen


def param_groups(model) -> list[dict]:
    """Parameters grouped by (weight decay?, per-layer learning_rate multiplier)."""
    frozen = frozen_prefix(model)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for index, module in enumerate(model.layers):
        scale = float(model.nodes[index].opts.get("learning_rate", 1.0))
        for param in module.parameters():
            if id(param) in seen:  # shared (share_index) weights: the first owner's settings
                continue
            seen.add(id(param))
            if index < frozen:
                param.requires_grad_(False)
                continue
            groups.setdefault((param.ndim > 1, scale), []).append(param)
    return [{"params": params, "decay": decay, "lr_scale": scale}
            for (decay, scale), params in groups.items()]


def make_optimizer(model, net: OptionValues) -> torch.optim.Optimizer:
    """SGD (or Adam with ``adam=1``) with Darknet's momentum/decay split."""
    decay = float(net.decay)
    groups = [{"params": g["params"], "weight_decay": decay if g["decay"] else 0.0,
               "lr_scale": g["lr_scale"], "lr": 0.0} for g in param_groups(model)]
    if int(net.adam):
        return torch.optim.Adam(groups, lr=0.0, betas=(float(net.B1), float(net.B2)),
                                eps=float(net.eps))
    return torch.optim.SGD(groups, lr=0.0, momentum=float(net.momentum), dampening=0.0)


def set_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate * group.get("lr_scale", 1.0)


def rates(net: OptionValues, iterations: Iterable[int], seed: int = 0) -> list[float]:
    return [darknet_rate(net, it, seed) for it in iterations]
