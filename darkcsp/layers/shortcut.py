"""``[shortcut]``: residual add of one or more earlier layers, optionally weighted.

Output shape = the previous layer's. Each input adds only its leading ``min(C, C_from)`` channels
(Darknet's flat-prefix rule), which is how partial residual (PRN) connections work in both
directions. Weighted shortcuts normalise their ``n + 1`` weights (per feature, or per channel)
by relu or softmax with Darknet's 1e-4 in the denominator.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.activations import ACTIVATIONS, activation_option
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, Shape,
                                     WeightBlock, register, resolve_indices)


WEIGHT_TYPES = ("none", "per_feature", "per_layer", "per_channel")
NORMALIZATIONS = ("none", "relu", "avg_relu", "softmax")


def add_prefix(out: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``out`` plus ``other`` on their common leading channels; ``out``'s shape is kept."""
    channels = min(out.shape[1], other.shape[1])
    if channels == out.shape[1]:
        return out + other[:, :channels]
    return torch.cat([out[:, :channels] + other[:, :channels], out[:, channels:]], dim=1)


class Shortcut(DarknetModule):
    def __init__(self, channels: int, n_from: int, weights_type: str, normalization: str,
                 activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.normalization = "relu" if normalization == "avg_relu" else normalization
        if weights_type == "per_channel":
            self.weight = nn.Parameter(torch.ones(n_from + 1, channels))
        elif weights_type in ("per_feature", "per_layer"):
            self.weight = nn.Parameter(torch.ones(n_from + 1, 1))
        else:
            self.weight = None

    def normalized_weights(self) -> torch.Tensor:
        """(n+1, C or 1) weights after Darknet's normalisation across the inputs."""
        assert self.weight is not None
        w = self.weight
        if self.normalization == "softmax":
            e = torch.exp(w - w.amax(dim=0, keepdim=True))
            return e / (e.sum(dim=0, keepdim=True) + 1e-4)
        positive = F.relu(w)
        return positive / (positive.sum(dim=0, keepdim=True) + 1e-4)

    def forward(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            out = x
            for other in others:
                out = add_prefix(out, other)
        else:
            w = self.normalized_weights()[:, :, None, None]
            out = x * w[0]
            for q, other in enumerate(others, start=1):
                c = min(x.shape[1], other.shape[1])
                out = add_prefix(out, other[:, :c] * w[q, :c] if w.shape[1] > 1
                                 else other[:, :c] * w[q])
        return self.act(out)

    def weight_blocks(self) -> list[WeightBlock]:
        return [] if self.weight is None else [WeightBlock(self.weight)]


@register
class ShortcutType(LayerType):
    name = "shortcut"
    references = ("from",)
    options = (
        Option("from", "ints", required=True, doc="layers to add (relative if < 0)"),
        activation_option("linear"),
        Option("weights_type", "str", "none", choices=WEIGHT_TYPES),
        Option("weights_normalization", "str", "none", choices=NORMALIZATIONS),
        Option("alpha", "float", 1.0, doc="pjreddie-era key, ignored by AlexeyAB Darknet"),
        Option("beta", "float", 1.0, doc="pjreddie-era key, ignored by AlexeyAB Darknet"),
    )

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.weights_type != "none" and opts.weights_normalization == "none":
            raise section.error("a weighted shortcut needs weights_normalization=relu or softmax "
                                "(Darknet rejects none)", "weights_normalization")

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        return [index - 1, *resolve_indices(section, "from", opts["from"], index)]

    def shape(self, node: Node) -> Shape:
        prev = node.in_shape
        for source, shape in zip(node.inputs[1:], node.in_shapes[1:]):
            if (shape.h, shape.w) != (prev.h, prev.w):
                raise node.error(f"layer {source} is {shape.w}x{shape.h} but the previous layer "
                                 f"is {prev.w}x{prev.h}: a shortcut adds maps of one size "
                                 "(Darknet asserts)", "from")
        return prev

    def flops(self, node: Node) -> float:
        n = len(node.inputs) - 1
        flops = float(node.out_shape.size * n)
        return flops * 2 if node.opts.weights_type != "none" else flops

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        return Shortcut(node.out_shape.c, len(node.inputs) - 1, opts.weights_type,
                        opts.weights_normalization, opts.activation)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV adds only the first ``from`` and reads no shortcut weights (so every later
        weight shifts): a chain of single-``from`` shortcuts, the activation on the last; a
        weighted shortcut first scales each input by its normalised weights (taken from the
        model at export) in a fixed depthwise 1x1 conv. The same products and sums in the same
        order as darkcsp's, so exact up to float rounding."""
        activation = low.activation()
        count = len(node.inputs) - 1
        terms = [low.input(k) for k in range(count + 1)]
        if node.opts.weights_type != "none":
            terms = [low.channel_conv(term, _input_weight(k, low.shape(term).c))
                     for k, term in enumerate(terms)]
        total = terms[0]
        for k, term in enumerate(terms[1:], start=1):
            total = low.shortcut(total, term, activation if k == count else "linear")

    def describe(self, node: Node) -> str:
        return " ".join(str(i) for i in node.inputs[1:])


def _input_weight(k: int, channels: int) -> Callable[[nn.Module], torch.Tensor]:
    """Per-channel scale of input ``k`` (0: the previous layer) of a weighted shortcut: its
    normalised weight on the channels it adds, 0 on any it has beyond the output's."""
    def scale(module: nn.Module) -> torch.Tensor:
        assert isinstance(module, Shortcut)
        weight = module.normalized_weights()[k].detach()
        values = torch.zeros(channels)
        if weight.numel() == 1:
            values[:] = weight[0]
        else:
            common = min(channels, weight.numel())
            values[:common] = weight[:common]
        return values
    return scale
