"""The model side of a training run: the tensors the loss needs, Darknet's initialisation and
the device.

Why a forward pre-hook: Darknet's ``[yolo]`` delta is applied to the head's *input* (the raw
conv output), so the trainer runs the whole model unchanged and captures those inputs, rather
than keeping a second, training-only forward.

Precision (``--precision fp32|bf16|auto``): on a CPU, ``auto`` is bf16 autocast where the CPU
computes bf16 natively (AVX512-BF16 or AMX: :func:`cpu_has_native_bf16`), fp32 elsewhere (an
emulated bf16 is slower than fp32). The weights stay fp32 (autocast casts per op), the loss is
computed in fp32 and the ``.weights`` written are fp32 as always. On CUDA ``auto`` keeps AMP
(fp16 autocast + GradScaler, off with ``--no-amp``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from darkcsp.errors import DarkcspError
from darkcsp.infer.precision import cpu_has_native_bf16
from darkcsp.network import Darknet


class HeadInputs(nn.Module):
    """Runs the Darknet model and returns the inputs of the given ``[yolo]`` layers (the raw
    conv outputs that Darknet's delta is applied to)."""

    def __init__(self, model: Darknet, indices: list[int]) -> None:
        super().__init__()
        self.model = model
        self.indices = indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        captured: dict[int, torch.Tensor] = {}
        handles = [self.model.layers[i].register_forward_pre_hook(_capture(captured, i))
                   for i in self.indices]
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[i] for i in self.indices]


def _capture(store: dict[int, torch.Tensor], index: int) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        store[index] = args[0]
    return hook


@torch.no_grad()
def darknet_init(model: nn.Module, seed: int) -> None:
    """Darknet's initialisation: conv/connected weights ``sqrt(2/fan_in) * U(-1, 1)``, biases
    0, batch-norm scales 1 (rolling mean 0, variance 1)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            w = torch.rand(module.weight.shape, generator=gen) * 2 - 1
            module.weight.copy_(w * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()


def resolve_device(name: str | None, local_rank: int) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.isdigit():
        return torch.device(f"cuda:{int(name) + local_rank}")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DarkcspError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


PRECISIONS = ("auto", "fp32", "bf16")
def resolve_precision(name: str | None, device: torch.device) -> str:
    """``fp32`` or ``bf16`` on a CPU, ``amp`` (today's CUDA rule: the AMP flag decides),
    ``fp32`` or ``bf16`` on CUDA, from ``--precision`` ``auto|fp32|bf16`` (None: auto)."""
    value = "auto" if name is None else str(name).strip().lower()
    if value not in PRECISIONS:
        raise DarkcspError(f"--precision {name!r}: one of {', '.join(PRECISIONS)}")
    if value == "auto":
        if device.type == "cuda":
            return "amp"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return value
