"""``[route]`` (concatenate earlier layers, optionally taking one channel group of each) and the
identity ``[empty]``/``[silence]``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, Shape, register,
                                     resolve_indices)



class Route(DarknetModule):
    """Channel block ``group_id`` of ``groups`` from each input, concatenated in order."""

    def __init__(self, channels: Sequence[int], groups: int, group_id: int) -> None:
        super().__init__()
        self.slices = [(group_id * c // groups, c // groups) for c in channels]
        self.identity = groups == 1 and len(channels) == 1

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return inputs[0]
        parts = [x if start == 0 and length == x.shape[1] else x.narrow(1, start, length)
                 for x, (start, length) in zip(inputs, self.slices)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@register
class RouteType(LayerType):
    name = "route"
    references = ("layers",)
    options = (
        Option("layers", "ints", required=True, doc="layers to concatenate (relative if < 0)"),
        Option("groups", "int", 1, minimum=1, doc="split each input into this many blocks"),
        Option("group_id", "int", 0, minimum=0, doc="which block to take"),
    )

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.group_id >= opts.groups:
            raise section.error(f"group_id={opts.group_id} must be below groups={opts.groups}",
                                "group_id")

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        return resolve_indices(section, "layers", opts.layers, index)

    def shape(self, node: Node) -> Shape:
        first = node.in_shapes[0]
        for source, shape in zip(node.inputs, node.in_shapes):
            if (shape.h, shape.w) != (first.h, first.w):
                raise node.error(f"layer {source} is {shape.w}x{shape.h} but layer "
                                 f"{node.inputs[0]} is {first.w}x{first.h}: a route joins maps "
                                 "of one size", "layers")
            if shape.c % node.opts.groups:
                raise node.error(f"layer {source} has {shape.c} channels, not divisible by "
                                 f"groups={node.opts.groups}", "groups")
        channels = sum(shape.c for shape in node.in_shapes) // node.opts.groups
        return Shape(channels, first.h, first.w)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Route([s.c for s in node.in_shapes], node.opts.groups, node.opts.group_id)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV takes groups on a single input only (over several, its bookkeeping breaks):
        one grouped route per input, then a plain concat."""
        opts = node.opts
        inputs = [low.input(k) for k in range(len(node.inputs))]
        if opts.groups == 1 or len(inputs) == 1:
            low.route(*inputs, groups=opts.groups, group_id=opts.group_id)
            return
        parts = [low.route(i, groups=opts.groups, group_id=opts.group_id) for i in inputs]
        low.route(*parts)

    def describe(self, node: Node) -> str:
        text = " ".join(str(i) for i in node.inputs)
        if node.opts.groups > 1:
            text += f" {node.opts.group_id}/{node.opts.groups}"
        return text


class Identity(DarknetModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register
class EmptyType(LayerType):
    """``[empty]``: passes the previous layer through (Darknet shares its buffer)."""

    name = "empty"
    aliases = ("silence",)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Identity()

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV does not know the section; a one-input ``[route]`` is the same identity."""
        low.route(low.materialize(low.input()))
