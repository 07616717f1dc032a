"""``[convolutional]``: conv, then batch norm (eps 1e-5, Darknet's rolling statistics), then the
activation. Weight stream: biases, [scales, rolling mean, rolling variance], weights (OIHW)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.activations import ACTIVATIONS, activation_option
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, register,
                                     resolve_index, Shape, WeightBlock)


BN_EPS = 1e-5  # Darknet's normalize_cpu and fuse_conv_batchnorm both use 1e-5
BN_MOMENTUM = 0.01  # rolling = 0.99 * rolling + 0.01 * batch statistic


def batchnorm_blocks(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> list[WeightBlock]:
    """Darknet's BN triple after the biases: scales, rolling mean, rolling variance."""
    return [WeightBlock(bn.weight, "bn"), WeightBlock(bn.running_mean, "bn"),
            WeightBlock(bn.running_var, "bn")]


def _binarize_weights(weight: torch.Tensor) -> torch.Tensor:
    """Darknet's binarize_weights: each filter becomes +-mean|w| (XNOR-Net)."""
    scale = weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(weight > 0, scale, -scale)


class Conv(DarknetModule):
    """One Darknet convolutional layer."""

    def __init__(self, in_channels: int, filters: int, size: int, stride: tuple[int, int],
                 padding: int, dilation: int, groups: int, batch_normalize: bool,
                 activation: str, binary: bool = False, xnor: bool = False,
                 shared: "Conv | None" = None) -> None:
        super().__init__()
        self.shared = shared is not None
        # Its own geometry, always: a share_index conv borrows only the weights, biases and BN
        # parameters of the other layer, as Darknet does (TridentNet-style cfgs share one conv
        # across dilations 1, 2 and 3).
        self.stride, self.padding, self.dilation = stride, padding * dilation, dilation
        self.groups = groups
        if shared is not None:
            self.conv, self.bn = shared.conv, shared.bn
        else:
            self.conv = nn.Conv2d(in_channels, filters, size, stride, padding * dilation,
                                  dilation, groups, bias=not batch_normalize)
            self.bn = (nn.BatchNorm2d(filters, eps=BN_EPS, momentum=BN_MOMENTUM)
                       if batch_normalize else None)
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.binary = binary or xnor
        self.xnor = xnor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary or self.shared:
            if self.xnor:
                x = torch.where(x > 0, 1.0, -1.0).to(x.dtype)
            weight = self.conv.weight
            y = F.conv2d(x, _binarize_weights(weight) if self.binary else weight,
                         self.conv.bias, self.stride, self.padding, self.dilation, self.groups)
        else:
            y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)

    def weight_blocks(self) -> list[WeightBlock]:
        if self.shared:
            return []  # Darknet stores nothing for a layer with share_index
        if self.bn is None:
            return [WeightBlock(self.conv.bias), WeightBlock(self.conv.weight)]
        return [WeightBlock(self.bn.bias), *batchnorm_blocks(self.bn),
                WeightBlock(self.conv.weight)]

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the convolution, as Darknet's fuse_conv_batchnorm does (in double)."""
        if self.bn is None or self.shared:
            return
        bn, conv = self.bn, self.conv
        factor = bn.weight.double() / torch.sqrt(bn.running_var.double() + BN_EPS)
        weight = conv.weight.double() * factor.view(-1, 1, 1, 1)
        bias = bn.bias.double() - factor * bn.running_mean.double()
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True)
        fused.weight.copy_(weight.float())
        fused.bias.copy_(bias.float())
        self.conv, self.bn = fused, None


def conv_output_size(node: Node, size: int, stride: tuple[int, int], padding: int,
                     dilation: int) -> tuple[int, int]:
    """(out_h, out_w) by Darknet's formula, which ignores dilation; a geometry where the real
    dilated convolution would give another size is rejected (Darknet's output is garbage)."""
    inp = node.in_shape
    stride_y, stride_x = stride
    out_h = (inp.h + 2 * padding - size) // stride_y + 1
    out_w = (inp.w + 2 * padding - size) // stride_x + 1
    span = dilation * (size - 1) + 1
    true_h = (inp.h + 2 * padding * dilation - span) // stride_y + 1
    true_w = (inp.w + 2 * padding * dilation - span) // stride_x + 1
    if (true_w, true_h) != (out_w, out_h):
        raise node.error(f"dilation={dilation} with padding={padding}: Darknet sizes the "
                         f"output {out_w}x{out_h} but computes {true_w}x{true_h} (its output "
                         "is garbage); use pad=1", "dilation")
    return out_h, out_w


def conv_geometry(opts: OptionValues) -> tuple[int, int, int, int]:
    """(stride_x, stride_y, padding, dilation) as parse_convolutional derives them."""
    stride_x = opts.stride_x if opts.stride_x >= 1 else opts.stride
    stride_y = opts.stride_y if opts.stride_y >= 1 else opts.stride
    padding = opts.size // 2 if opts.pad else opts.padding
    dilation = 1 if opts.size == 1 else opts.dilation
    return stride_x, stride_y, padding, dilation


@register
class ConvolutionalType(LayerType):
    name = "convolutional"
    aliases = ("conv",)
    references = ("share_index",)
    options = (
        Option("filters", "int", 1, minimum=1),
        Option("size", "int", 1, minimum=1),
        Option("stride", "int", 1, minimum=1),
        Option("stride_x", "int", -1),
        Option("stride_y", "int", -1),
        Option("groups", "int", 1, minimum=1),
        Option("dilation", "int", 1, minimum=1),
        Option("pad", "int", 0, doc="1: padding = size/2"),
        Option("padding", "int", 0, minimum=0, doc="padding in pixels when pad=0"),
        Option("batch_normalize", "int", 0),
        activation_option("logistic"),
        Option("share_index", "int", None, doc="reuse the weights of that layer"),
        Option("binary", "int", 0),
        Option("xnor", "int", 0),
        Option("bin_output", "int", 0),
        Option("antialiasing", "int", 0, doc="not supported by darkcsp"),
        Option("cbn", "int", 0),
        Option("assisted_excitation", "float", 0.0),
        Option("sway", "int", 0), Option("rotate", "int", 0), Option("stretch", "int", 0),
        Option("stretch_sway", "int", 0), Option("angle", "float", 15.0),
        Option("flipped", "int", 0, doc="not supported by darkcsp"),
        Option("dot", "float", 0.0), Option("grad_centr", "int", 0),
        Option("reverse", "float", 0.0), Option("coordconv", "int", 0),
    )

    def validate(self, opts: OptionValues, section: Section) -> None:
        for key in ("antialiasing", "flipped"):
            if opts[key]:
                raise section.error(f"{key}={opts[key]} is not supported by darkcsp", key)

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        if opts.share_index is not None:
            opts["share_index"] = resolve_index(section, "share_index", opts.share_index, index)
        return [index - 1]

    def shape(self, node: Node) -> Shape:
        opts, inp = node.opts, node.in_shape
        if inp.c % opts.groups:
            raise node.error(f"{inp.c} input channels are not divisible by groups={opts.groups}",
                             "groups")
        if opts.filters % opts.groups:
            raise node.error(f"filters={opts.filters} is not divisible by groups={opts.groups}",
                             "filters")
        stride_x, stride_y, padding, dilation = conv_geometry(opts)
        out_h, out_w = conv_output_size(node, opts.size, (stride_y, stride_x), padding, dilation)
        if out_w < 1 or out_h < 1:
            raise node.error(f"a {opts.size}x{opts.size} kernel does not fit the {inp.w}x{inp.h} "
                             "input", "size")
        node.info.update(stride=(stride_y, stride_x), padding=padding, dilation=dilation)
        return Shape(opts.filters, out_h, out_w)

    def flops(self, node: Node) -> float:
        opts = node.opts
        nweights = node.in_shape.c // opts.groups * opts.filters * opts.size * opts.size
        flops = 2.0 * nweights * node.out_shape.h * node.out_shape.w
        return flops / 32 if opts.xnor else flops

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        shared = None
        if opts.share_index is not None:
            shared = built[opts.share_index]
            if not isinstance(shared, Conv) or shared.conv.weight.shape != torch.Size(
                    (opts.filters, node.in_shape.c // opts.groups, opts.size, opts.size)) \
                    or (shared.bn is None) != (not opts.batch_normalize):
                raise node.error(f"layer {opts.share_index} is not a convolution of the same "
                                 "size, so its weights cannot be shared", "share_index")
        return Conv(node.in_shape.c, opts.filters, opts.size, node.info["stride"],
                    node.info["padding"], node.info["dilation"], opts.groups,
                    bool(opts.batch_normalize), opts.activation, bool(opts.binary),
                    bool(opts.xnor), shared)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """Passed through with explicit padding and activation (OpenCV's defaults differ); a
        ``share_index`` conv becomes a plain one holding a copy of the shared weights."""
        opts = node.opts
        stride_y, stride_x = node.info["stride"]
        if stride_x != stride_y:
            raise low.cannot(f"stride_x={stride_x} != stride_y={stride_y} (it reads only "
                             "`stride`)", "stride_x")
        if node.info["dilation"] > 1:
            raise low.cannot(f"dilation={opts.dilation} (it ignores the key)", "dilation")
        for key in ("binary", "xnor"):
            if opts[key]:
                raise low.cannot(f"{key}=1 (it ignores the key)", key)
        low.emit("convolutional", fill=low.copy, batch_normalize=opts.batch_normalize,
                 filters=opts.filters, size=opts.size, stride=stride_x, pad=0,
                 padding=node.info["padding"], groups=opts.groups,
                 activation=low.activation())

    def describe(self, node: Node) -> str:
        opts = node.opts
        sy, sx = node.info["stride"]
        stride = f"{sx}" if sx == sy else f"{sx}x{sy}"
        groups = f"{opts.groups}/" if opts.groups > 1 else ""
        return f"{groups}{opts.filters:4d} {opts.size:2d} x{opts.size:2d}/{stride:>2}"
