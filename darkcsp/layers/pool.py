"""Pooling: ``[maxpool]`` (spatial, and channel max-out with ``maxpool_depth``),
``[local_avgpool]`` and the global ``[avgpool]``.

Darknet's spatial pools share one geometry: ``out = (in + padding - size) / stride + 1`` with the
window origin at ``-padding/2`` (integer division), so the default ``padding = size - 1`` pads an
even kernel only on the right/bottom. PyTorch's symmetric padding cannot express that, so the
modules pad explicitly. The ONNX export writes a max pool as one ``MaxPool`` with asymmetric
``pads`` instead (:class:`_OnnxMaxPool`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.registry import (ConvWeights, DarknetModule, LayerType, Node, OpenCVEmitter,
                                     register, Shape)


POOL_OPTIONS = (
    Option("stride", "int", 1, minimum=1),
    Option("stride_x", "int", lambda v: v.stride, minimum=1),
    Option("stride_y", "int", lambda v: v.stride, minimum=1),
    Option("size", "int", lambda v: v.stride, minimum=1),
    Option("padding", "int", lambda v: v.size - 1, minimum=0),
    Option("antialiasing", "int", 0, doc="not supported by darkcsp"),
)


def pool_out(length: int, size: int, stride: int, padding: int) -> int:
    return (length + padding - size) // stride + 1


class DarknetPool(DarknetModule):
    """Max or valid-cells average pooling with Darknet's asymmetric padding.

    The geometry is computed from the actual input, so the module runs at any input size.
    """

    def __init__(self, size: int, stride: tuple[int, int], padding: int, average: bool) -> None:
        super().__init__()
        self.size, self.stride, self.padding, self.average = size, stride, padding, average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, (stride_h, stride_w), padding = self.size, self.stride, self.padding
        in_h, in_w = x.shape[-2:]
        out_h = pool_out(in_h, size, stride_h, padding)
        out_w = pool_out(in_w, size, stride_w, padding)
        begin = padding // 2
        # right/bottom padding so that the last window fits; never negative
        end_h = max(0, (out_h - 1) * stride_h + size - begin - in_h)
        end_w = max(0, (out_w - 1) * stride_w + size - begin - in_w)
        pads = (begin, end_w, begin, end_h)
        if (not self.average and torch.onnx.is_in_onnx_export()
                and max(pads) < size):  # ONNX Runtime wants every pad below the kernel
            # one ONNX MaxPool with Darknet's asymmetric pads: no -inf Pad, no Slice
            return _OnnxMaxPool.apply(x, size, (stride_h, stride_w),
                                      (int(begin), int(begin), int(end_h), int(end_w)),
                                      (int(out_h), int(out_w)))
        if self.average:
            ones = torch.ones_like(x[:1, :1])
            total = F.avg_pool2d(F.pad(x, pads), size, self.stride)
            count = F.avg_pool2d(F.pad(ones, pads), size, self.stride)
            y = total / count
        elif padding or end_h or end_w:
            y = F.max_pool2d(F.pad(x, pads, value=float("-inf")), size, self.stride)
        else:
            y = F.max_pool2d(x, size, self.stride)
        return y[:, :, :out_h, :out_w]


class _OnnxMaxPool(torch.autograd.Function):
    """Darknet's max pool as it is exported: ONNX ``MaxPool`` with asymmetric ``pads``
    ``(top, left, bottom, right)``. ONNX pads a max pool with -inf in effect, and with the
    right/bottom pads of :class:`DarknetPool` its floor-mode output size is Darknet's exactly,
    so no Pad or Slice is needed. The forward (what the tracer runs) is the explicit form."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, size: int, stride: tuple[int, int],
                pads: tuple[int, int, int, int], out: tuple[int, int]) -> torch.Tensor:
        top, left, bottom, right = pads
        y = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), size, stride)
        return y[:, :, :out[0], :out[1]]

    @staticmethod
    def symbolic(g: object, x: object, size: int, stride: tuple[int, int],
                 pads: tuple[int, int, int, int], out: tuple[int, int]) -> object:
        return g.op("MaxPool", x, kernel_shape_i=[size, size], strides_i=list(stride),
                    pads_i=list(pads))  # type: ignore[attr-defined]


class Maxout(DarknetModule):
    """Channel max-out: ``out[g] = max(in[g], in[g + N], in[g + 2N], ...)`` for N outputs
    (Darknet's interleaved grouping; the first ``C mod N`` groups get one extra member)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.members = math.ceil(in_channels / out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = self.members * self.out_channels - self.in_channels
        if missing:
            x = F.pad(x, (0, 0, 0, 0, 0, missing), value=float("-inf"))
        b, _, h, w = x.shape
        return x.reshape(b, self.members, self.out_channels, h, w).amax(dim=1)


class _SpatialPoolType(LayerType):
    average: bool = False

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.antialiasing:
            raise section.error("antialiasing is not supported by darkcsp", "antialiasing")

    def shape(self, node: Node) -> Shape:
        opts, inp = node.opts, node.in_shape
        out_w = pool_out(inp.w, opts.size, opts.stride_x, opts.padding)
        out_h = pool_out(inp.h, opts.size, opts.stride_y, opts.padding)
        if out_w < 1 or out_h < 1:
            raise node.error(f"a {opts.size}x{opts.size} window with padding {opts.padding} does "
                             f"not fit the {inp.w}x{inp.h} input", "size")
        return Shape(inp.c, out_h, out_w)

    def flops(self, node: Node) -> float:
        return float(node.opts.size ** 2 * node.in_shape.c * node.out_shape.h * node.out_shape.w)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        return DarknetPool(opts.size, (opts.stride_y, opts.stride_x), opts.padding,
                           self.average)

    def _square_stride(self, node: Node, low: OpenCVEmitter) -> int:
        opts = node.opts
        if opts.stride_x != opts.stride_y:
            raise low.cannot(f"stride_x={opts.stride_x} != stride_y={opts.stride_y} in a pool "
                             "(it reads only `stride`)", "stride_x")
        return opts.stride_x

    def describe(self, node: Node) -> str:
        opts = node.opts
        stride = (f"{opts.stride_x}" if opts.stride_x == opts.stride_y
                  else f"{opts.stride_x}x{opts.stride_y}")
        return f"     {opts.size:2d}x{opts.size:2d}/{stride:>2}"


@register
class MaxpoolType(_SpatialPoolType):
    name = "maxpool"
    aliases = ("max",)
    options = (*POOL_OPTIONS,
               Option("maxpool_depth", "int", 0, doc="non-zero: max-out over channels"),
               Option("out_channels", "int", 1, minimum=1, doc="max-out output channels"),
               Option("maxpool_zero_nonmax", "int", 0))

    def shape(self, node: Node) -> Shape:
        if node.opts.maxpool_depth:
            return Shape(node.opts.out_channels, node.in_shape.h, node.in_shape.w)
        return super().shape(node)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        if node.opts.maxpool_depth:
            return Maxout(node.in_shape.c, node.opts.out_channels)
        return super().module(node, built)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """A spatial pool with size, stride and padding written out (OpenCV's defaults are
        2/2, Darknet's stride 1, size = stride; both split the padding floor/ceil); a
        channel max-out (which OpenCV ignores) rewritten by :func:`maxout_for_opencv`."""
        if node.opts.maxpool_depth:
            maxout_for_opencv(node, low)
            return
        low.emit("maxpool", size=node.opts.size, stride=self._square_stride(node, low),
                 padding=node.opts.padding)


def maxout_for_opencv(node: Node, low: OpenCVEmitter) -> None:
    """Maxout from OpenCV primitives: max(a, b) = b + relu(a - b), applied k - 1 times.

    Member j of every group is the contiguous channel block j (the grouping is interleaved),
    i.e. a grouped ``[route]``; ``relu(a - b)`` is a 1x1 conv with fixed +1/-1 weights and a
    relu; the ``[shortcut]`` adds b back. Exact up to the rounding of a - b + b.
    """
    channels, groups = node.in_shape.c, node.opts.out_channels
    if channels % groups:
        raise low.cannot(f"a Maxout of {channels} channels into out_channels={groups} (not a "
                         "divisor: the groups have unequal sizes)", "out_channels")
    members = channels // groups
    x = low.materialize(low.input())
    if members == 1:
        low.route(x)
        return
    best = None
    for j in range(1, members):
        if best is None:  # relu(x_0 - x_1) straight from x
            diff = low.conv(x, groups, _max_difference(groups, channels), activation="relu")
            member = low.route(x, groups=members, group_id=j)
            best = low.shortcut(member, diff)
        else:
            member = low.route(x, groups=members, group_id=j)
            pair = low.route(best, member)
            diff = low.conv(pair, groups, _max_difference(groups, 2 * groups),
                            activation="relu")
            best = low.shortcut(diff, member)


def _max_difference(groups: int, in_channels: int) -> ConvWeights:
    """Weights of ``out[g] = in[g] - in[groups + g]`` (no bias)."""
    def weights(_: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.zeros(groups, in_channels, 1, 1)
        index = torch.arange(groups)
        weight[index, index] = 1.0
        weight[index, groups + index] = -1.0
        return weight, torch.zeros(groups)
    return weights


@register
class LocalAvgpoolType(_SpatialPoolType):
    name = "local_avgpool"
    aliases = ("local_avg",)
    options = POOL_OPTIONS
    average = True

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """A depthwise size x size conv with weights 1/size^2 (OpenCV has no local average
        pool), exact where every window lies inside the map, so Darknet divides by size^2."""
        opts, inp, out = node.opts, node.in_shape, node.out_shape
        stride = self._square_stride(node, low)
        inside = (opts.padding // 2 == 0 and (out.h - 1) * stride + opts.size <= inp.h
                  and (out.w - 1) * stride + opts.size <= inp.w)
        if not inside:
            raise low.cannot(f"a {opts.size}x{opts.size}/{stride} average pool whose windows "
                             f"reach into the padding of the {inp.w}x{inp.h} map (Darknet "
                             "divides those by the cells inside)", "size")
        channels, size = inp.c, opts.size

        def weights(_: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.full((channels, 1, size, size), 1.0 / size ** 2), torch.zeros(channels)

        low.conv(low.input(), channels, weights, size=size, stride=stride, groups=channels)


class GlobalAvgpool(DarknetModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


@register
class AvgpoolType(LayerType):
    name = "avgpool"
    aliases = ("avg",)

    def shape(self, node: Node) -> Shape:
        return Shape(node.in_shape.c, 1, 1)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return GlobalAvgpool()

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        low.emit("avgpool")
