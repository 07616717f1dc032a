"""Resampling: ``[upsample]`` (nearest x s times ``scale``; a negative stride sums s x s blocks),
``[reorg3d]`` (true space-to-depth, offset-major channel order) and YOLOv2's quirky ``[reorg]``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, register, Shape)



class _OnnxNearest(torch.autograd.Function):
    """Nearest up-sampling by an integer factor as it is exported: ONNX ``Resize`` with constant
    scales ``(1, 1, s, s)``, ``asymmetric`` coordinates and ``floor`` rounding, which reads
    ``in[y // s, x // s]`` exactly. The forward (what the tracer runs) is the explicit form."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, s: int) -> torch.Tensor:
        b, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)

    @staticmethod
    def symbolic(g: object, x: object, s: int) -> object:
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))  # type: ignore
        scales = g.op("Constant",  # type: ignore[attr-defined]
                      value_t=torch.tensor([1.0, 1.0, float(s), float(s)]))
        return g.op("Resize", x, roi, scales, mode_s="nearest",  # type: ignore[attr-defined]
                    coordinate_transformation_mode_s="asymmetric", nearest_mode_s="floor")


class Upsample(DarknetModule):
    def __init__(self, stride: int, scale: float) -> None:
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 0 and torch.onnx.is_in_onnx_export():
            y = _OnnxNearest.apply(x, self.stride)  # one Resize (nearest), no shape arithmetic
        elif self.stride > 0:
            s = self.stride
            b, c, h, w = x.shape
            y = x[:, :, :, None, :, None].expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)
        else:
            s = -self.stride
            b, c, h, w = x.shape
            x = x[:, :, :h // s * s, :w // s * s]
            y = x.reshape(b, c, h // s, s, w // s, s).sum(dim=(3, 5))
        return y * self.scale if self.scale != 1 else y


@register
class UpsampleType(LayerType):
    name = "upsample"
    options = (Option("stride", "int", 2, doc="negative: down-sample by summing blocks"),
               Option("scale", "float", 1.0))

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.stride == 0:
            raise section.error("stride must not be 0", "stride")

    def shape(self, node: Node) -> Shape:
        inp, s = node.in_shape, node.opts.stride
        if s > 0:
            return Shape(inp.c, inp.h * s, inp.w * s)
        if inp.h < -s or inp.w < -s:
            raise node.error(f"cannot down-sample a {inp.w}x{inp.h} map by {-s}", "stride")
        return Shape(inp.c, inp.h // -s, inp.w // -s)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Upsample(node.opts.stride, node.opts.scale)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """Nearest up-sampling with the stride written out (OpenCV's default is 1)."""
        opts = node.opts
        if opts.stride < 0:
            raise low.cannot(f"a down-sampling [upsample] (stride={opts.stride})", "stride")
        if opts.scale != 1:
            raise low.cannot(f"[upsample] scale={opts.scale:g} (it ignores the key)", "scale")
        low.emit("upsample", stride=opts.stride)

    def describe(self, node: Node) -> str:
        return f"           {node.opts.stride:2d}x"


def space_to_depth(x: torch.Tensor, s: int) -> torch.Tensor:
    """``out[(dy*s + dx)*C + c, y, x] = in[c, y*s + dy, x*s + dx]`` (Darknet's channel order)."""
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, s * s * c, h // s, w // s)


def old_reorg_index(c: int, h: int, w: int, s: int) -> torch.Tensor:
    """Flat source index of every output value of YOLOv2's ``[reorg]`` (Darknet's reorg_cpu
    with forward=0): the input read as (C/s^2, H*s, W*s), space-to-depth there, reinterpreted
    flat. Channel counts not divisible by s^2 are allowed, as in Darknet."""
    out_c = c // (s * s)
    k = torch.arange(c).view(c, 1, 1)
    j = torch.arange(h).view(1, h, 1)
    i = torch.arange(w).view(1, 1, w)
    c2, offset = k % out_c, k // out_c
    w2 = i * s + offset % s
    h2 = j * s + offset // s
    return (w2 + w * s * (h2 + h * s * c2)).reshape(-1)


class Reorg(DarknetModule):
    def __init__(self, stride: int, old: bool) -> None:
        super().__init__()
        self.stride, self.old = stride, old
        self._index: dict[tuple[int, int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        b, c, h, w = x.shape
        if not self.old:
            return space_to_depth(x, s)
        key = (c, h, w)
        if key not in self._index:
            self._index[key] = old_reorg_index(c, h, w, s).to(x.device)
        y = x.reshape(b, -1)[:, self._index[key]]
        return y.reshape(b, c * s * s, h // s, w // s)


class _ReorgBaseType(LayerType):
    options = (Option("stride", "int", 1, minimum=1), Option("reverse", "int", 0))
    old: bool = False

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.reverse:
            raise section.error("reverse=1 is not supported (in Darknet it is not the inverse "
                                "and crashes for C < stride^4)", "reverse")

    def shape(self, node: Node) -> Shape:
        inp, s = node.in_shape, node.opts.stride
        if inp.h % s or inp.w % s:
            raise node.error(f"a {inp.w}x{inp.h} map is not divisible by stride {s}", "stride")
        if self.old and inp.c < s * s:
            raise node.error(f"{inp.c} channels: [reorg] needs at least stride^2 = {s * s}",
                             "stride")
        return Shape(inp.c * s * s, inp.h // s, inp.w // s)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Reorg(node.opts.stride, self.old)

    def describe(self, node: Node) -> str:
        return f"           /{node.opts.stride:2d}"


@register
class Reorg3dType(_ReorgBaseType):
    name = "reorg3d"


@register
class ReorgType(_ReorgBaseType):
    name = "reorg"
    old = True

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV's Reorg layer has YOLOv2's (old) semantics; ``[reorg3d]`` has no form there."""
        low.emit("reorg", stride=node.opts.stride)
