"""Multiplicative layers: ``[sam]`` (element-wise), ``[scale_channels]`` (per channel, or per
pixel with ``scale_wh``) and ``[implicit]`` (a learned constant tensor)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.activations import ACTIVATIONS, activation_option
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, register,
                                     resolve_index, Shape, WeightBlock)



class Multiply(DarknetModule):
    """``act(previous * other)`` with broadcasting (SAM, SE, spatial weights)."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]

    def forward(self, previous: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.act(other * previous)


class _FromLayerType(LayerType):
    references = ("from",)
    options = (Option("from", "int", required=True, doc="the layer to multiply with"),
               activation_option("linear"))

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        return [index - 1, resolve_index(section, "from", opts["from"], index)]

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Multiply(node.opts.activation)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV multiplies the previous layer by ``from`` like Darknet."""
        low.emit(node.section.type, **{"from": [low.ref(low.input(1))]},
                 activation=low.activation())

    def describe(self, node: Node) -> str:
        return str(node.inputs[1])


@register
class SamType(_FromLayerType):
    """Darknet's ``[sam]`` (``from=`` given). Without ``from`` it is the dialect's modified SAM
    block: a 1x1 conv + BN + logistic gate computed from the input, then the product."""

    name = "sam"

    def lower(self, section: Section, lowering: Any) -> bool:
        if section.get("from") is not None:
            return False
        activation = section.get("activation") or "linear"
        channels = lowering.shape(lowering.previous).c
        lowering.emit("convolutional", batch_normalize=1, filters=channels, size=1, stride=1,
                      pad=1, activation="logistic")
        lowering.emit("sam", **{"from": -2}, activation=activation)
        return True

    def shape(self, node: Node) -> Shape:
        prev, other = node.in_shapes
        if prev != other:
            raise node.error(f"layer {node.inputs[1]} is {other} but the previous layer is "
                             f"{prev}: [sam] multiplies maps of one shape", "from")
        return prev


@register
class ScaleChannelsType(_FromLayerType):
    name = "scale_channels"
    options = (*_FromLayerType.options, Option("scale_wh", "int", 0))

    def shape(self, node: Node) -> Shape:
        prev, other = node.in_shapes
        if node.opts.scale_wh:
            if prev.c != 1 or (prev.h, prev.w) != (other.h, other.w):
                raise node.error(f"scale_wh=1 needs a 1-channel {other.w}x{other.h} previous "
                                 f"layer, got {prev}", "scale_wh")
        elif prev.c != other.c or (prev.h, prev.w) != (1, 1):
            raise node.error(f"needs a {other.c} x 1 x 1 previous layer to scale layer "
                             f"{node.inputs[1]}'s channels, got {prev}", "from")
        return other

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        if node.opts.scale_wh:
            raise low.cannot("scale_wh=1 (it reads only the per-channel form)", "scale_wh")
        super().opencv_lower(node, low)


class Implicit(DarknetModule):
    """A learned (filters, atoms, 1) tensor repeated over the batch."""

    def __init__(self, filters: int, atoms: int, mean: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((filters, atoms, 1), float(mean)))

    def forward(self, previous: torch.Tensor) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(previous.shape[0], -1, -1, -1)

    def weight_blocks(self) -> list[WeightBlock]:
        return [WeightBlock(self.weight)]


@register
class ImplicitType(LayerType):
    name = "implicit"
    options = (Option("filters", "int", 128, minimum=1), Option("atoms", "int", 1, minimum=1),
               Option("mean", "float", 0.0), Option("std", "float", 0.2))

    def shape(self, node: Node) -> Shape:
        return Shape(node.opts.filters, node.opts.atoms, 1)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Implicit(node.opts.filters, node.opts.atoms, node.opts.mean)
