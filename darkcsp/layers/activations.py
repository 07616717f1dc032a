"""Darknet's activations, with its exact formulas (``activations.h``).

Darknet's CPU build outputs zeros for some activations in some layer types (relu6 everywhere;
mish/swish/hard_mish/normalize_channels outside conv). darkcsp computes the intended function
everywhere and never reproduces those zeros.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from darkcsp.config.options import Option
from darkcsp.layers.registry import DarknetModule

ActivationFn = Callable[[torch.Tensor], torch.Tensor]


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def _mish(x: torch.Tensor) -> torch.Tensor:
    # Darknet's softplus uses threshold 20 on both sides; exp(x) below -20 equals log1p(exp(x))
    # to float precision, so torch's softplus (threshold 20) matches.
    return x * torch.tanh(F.softplus(x, threshold=20.0))


def _hard_mish(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.where(x > -2, x * x * 0.5 + x, torch.zeros_like(x)))


def _stair(x: torch.Tensor) -> torch.Tensor:
    n = torch.floor(x)
    half = torch.floor(x / 2)
    return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)


def _normalize_channels(x: torch.Tensor) -> torch.Tensor:
    positive = torch.relu(x)
    return positive / (positive.sum(dim=1, keepdim=True) + 1e-4)


def _normalize_channels_softmax(x: torch.Tensor, use_max: bool) -> torch.Tensor:
    shifted = x - x.amax(dim=1, keepdim=True) if use_max else x
    e = torch.exp(shifted)
    return e / (e.sum(dim=1, keepdim=True) + 1e-4)


ACTIVATIONS: dict[str, ActivationFn] = {
    "linear": lambda x: x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0, 6),
    "elu": lambda x: torch.where(x >= 0, x, torch.expm1(x)),
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * torch.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x * x * x)),
    "relie": lambda x: F.leaky_relu(x, 0.01),
    "ramp": lambda x: torch.relu(x) + 0.1 * x,
    "leaky": _leaky,
    "revleaky": _leaky,
    "tanh": torch.tanh,
    "plse": lambda x: torch.where(x < -4, 0.01 * (x + 4),
                                  torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
    "stair": _stair,
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": lambda x: torch.where(x < 0, 0.001 * x,
                                   torch.where(x > 1, 0.001 * (x - 1) + 1, x)),
    "swish": lambda x: x * torch.sigmoid(x),
    "mish": _mish,
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}

# What OpenCV 4.x's Darknet importer computes (the rest fail to load there).
OPENCV_ACTIVATIONS = frozenset({"linear", "leaky", "relu", "logistic", "tanh", "swish", "mish"})


def activation_option(default: str) -> Option:
    return Option("activation", "str", default, choices=tuple(ACTIVATIONS),
                  doc="activation applied to the layer output")


class Activation(DarknetModule):
    """An activation by Darknet name, applied in place of a separate layer."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name
