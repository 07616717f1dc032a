"""``[local]`` (locally connected, YOLOv1) and ``[crnn]`` (convolutional RNN, one time step).

``[local]`` is a convolution whose filters differ at every output location. Darknet
(``local_layer.c``) sizes it with ``pad`` as a *flag* (out = (in - 1)/stride + 1 when set, else
(in - size)/stride + 1) but its im2col pads by ``pad`` *pixels*; darkcsp rejects the cfgs where
the two disagree (Darknet would read outside its column buffer). Stream: ``biases[n*out_h*out_w]``
(CHW), then ``weights[out_h*out_w][n][c*size*size]`` (location-major; each row in im2col order
channel, kernel row, kernel column). Darknet gives ``[local]`` no BFLOPs term (``l.bflops`` is never
set), so neither does darkcsp.

``[crnn]`` holds three convolutions: input (c -> hidden), self (hidden -> hidden, on the state)
and output (hidden -> output, on the new state). Stream: the three conv blocks in that order.
BFLOPs: the float32 sum of the three convs' terms, as ``make_crnn_layer`` adds them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.config.options import Option
from darkcsp.layers.activations import ACTIVATIONS, activation_option
from darkcsp.layers.conv import Conv, conv_output_size
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, Shape, WeightBlock,
                                     register)


class LocallyConnected(DarknetModule):
    """``y[n, j] = act(b[n, j] + sum_k W[j, n, k] * col[k, j])`` with ``col`` Darknet's im2col
    of the input (``F.unfold`` has the same row order) and ``j`` the output location."""

    def __init__(self, in_channels: int, filters: int, size: int, stride: int, padding: int,
                 out_hw: tuple[int, int], activation: str) -> None:
        super().__init__()
        out_h, out_w = out_hw
        self.size, self.stride, self.padding, self.out_hw = size, stride, padding, out_hw
        self.weight = nn.Parameter(torch.zeros(out_h * out_w, filters,
                                               in_channels * size * size))
        self.bias = nn.Parameter(torch.zeros(filters, out_h, out_w))
        self.activation = activation
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.size, padding=self.padding, stride=self.stride)  # (B, K, L)
        y = torch.einsum("lnk,bkl->bnl", self.weight, cols)
        return self.act(y.reshape(x.shape[0], -1, *self.out_hw) + self.bias)

    def weight_blocks(self) -> list[WeightBlock]:
        return [WeightBlock(self.bias), WeightBlock(self.weight)]


@register
class LocalType(LayerType):
    name = "local"
    options = (Option("filters", "int", 1, minimum=1), Option("size", "int", 1, minimum=1),
               Option("stride", "int", 1, minimum=1),
               Option("pad", "int", 0, minimum=0,
                      doc="flag for the output size, but im2col pads by this many pixels"),
               activation_option("logistic"))

    def shape(self, node: Node) -> Shape:
        opts, inp = node.opts, node.in_shape
        size, stride, pad = opts.size, opts.stride, opts.pad
        if not pad and size > min(inp.h, inp.w):
            raise node.error(f"a {size}x{size} kernel does not fit the {inp.w}x{inp.h} input",
                             "size")
        # local_out_height / local_out_width
        out_h = (inp.h - (size if not pad else 1)) // stride + 1
        out_w = (inp.w - (size if not pad else 1)) // stride + 1
        # what im2col_cpu actually produces with `pad` pixels of padding
        col_h = (inp.h + 2 * pad - size) // stride + 1
        col_w = (inp.w + 2 * pad - size) // stride + 1
        if (col_h, col_w) != (out_h, out_w):
            raise node.error(f"pad={pad} with size={size}: Darknet sizes the output "
                             f"{out_w}x{out_h} but its im2col pads by {pad} pixel(s) and makes "
                             f"{col_w}x{col_h} columns (its output is garbage); use size=3 with "
                             "pad=1, or pad=0", "pad")
        return Shape(opts.filters, out_h, out_w)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts, out = node.opts, node.out_shape
        return LocallyConnected(node.in_shape.c, opts.filters, opts.size, opts.stride, opts.pad,
                                (out.h, out.w), opts.activation)

    def describe(self, node: Node) -> str:
        opts = node.opts
        return f"{opts.filters:5d} {opts.size:2d} x{opts.size:2d}/{opts.stride:>2}"


class Crnn(DarknetModule):
    """One time step of Darknet's convolutional RNN from a zero state (inference):
    ``state = input(x) + self(0)`` (``shortcut=1`` adds the old state, which is 0), output
    ``= output(state)``. Each sub-layer is a full Darknet conv (BN, activation).

    Darknet keeps ``l.state`` between inference calls (a recurrence over video frames); darkcsp
    computes every call as Darknet's first one after loading. No ``fuse()``: Darknet's
    fuse_conv_batchnorm only folds top-level convolutional layers, not a crnn's sub-layers.
    """

    def __init__(self, input_layer: Conv, self_layer: Conv, output_layer: Conv,
                 hidden: int, shortcut: bool) -> None:
        super().__init__()
        self.input_layer, self.self_layer, self.output_layer = (input_layer, self_layer,
                                                                output_layer)
        self.hidden = hidden
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero_state = x.new_zeros(x.shape[0], self.hidden, x.shape[2], x.shape[3])
        state = self.input_layer(x) + self.self_layer(zero_state)  # + 0 when shortcut=1
        return self.output_layer(state)

    def weight_blocks(self) -> list[WeightBlock]:
        # Darknet loads the sub-layers with load_convolutional_weights(*l.input_layer...), whose
        # dontloadscales is always 0: a crnn's BN triples are never skipped, so no "bn" role.
        return [WeightBlock(block.tensor) for conv in
                (self.input_layer, self.self_layer, self.output_layer)
                for block in conv.weight_blocks()]


def _conv_bflops(c_in: int, filters: int, groups: int, size: int, out: Shape,
                 xnor: bool) -> np.float32:
    """make_convolutional_layer's l.bflops, a float32."""
    nweights = c_in // groups * filters * size * size
    bflops = np.float32(2.0 * nweights * out.h * out.w / 1e9)
    return np.float32(bflops / np.float32(32)) if xnor else bflops


@register
class CrnnType(LayerType):
    name = "crnn"
    options = (
        Option("size", "int", 3, minimum=1), Option("stride", "int", 1, minimum=1),
        Option("dilation", "int", 1, minimum=1), Option("pad", "int", 0),
        Option("padding", "int", 0, minimum=0, doc="in pixels, used when pad=0"),
        Option("output", "int", 1, minimum=1), Option("hidden", "int", 1, minimum=1),
        Option("groups", "int", 1, minimum=1), activation_option("logistic"),
        Option("batch_normalize", "int", 0), Option("xnor", "int", 0),
        Option("shortcut", "int", 0, doc="add the old state (no effect on a first step)"),
    )

    def shape(self, node: Node) -> Shape:
        opts, inp = node.opts, node.in_shape
        for key, channels in (("groups", inp.c), ("hidden", opts.hidden),
                              ("output", opts.output)):
            if channels % opts.groups:
                raise node.error(f"{key}: {channels} channels are not divisible by "
                                 f"groups={opts.groups}", "groups")
        padding = opts.size // 2 if opts.pad else opts.padding
        stride, dilation = opts.stride, opts.dilation
        out_h, out_w = conv_output_size(node, opts.size, (stride, stride), padding, dilation)
        if (out_h, out_w) != (inp.h, inp.w):
            # make_crnn_layer asserts input_layer->outputs == output_layer->inputs (= h*w*hidden)
            raise node.error(f"size={opts.size}, stride={stride}, padding={padding} turn the "
                             f"{inp.w}x{inp.h} input into {out_w}x{out_h}, but the recurrent "
                             "state must keep the input size (Darknet asserts); use stride=1 "
                             "and pad=1", "size")
        node.info.update(padding=padding)
        return Shape(opts.output, out_h, out_w)

    def flops(self, node: Node) -> float:
        opts, inp, out = node.opts, node.in_shape, node.out_shape
        xnor = bool(opts.xnor)
        total = np.float32(0)
        for c_in, filters in ((inp.c, opts.hidden), (opts.hidden, opts.hidden),
                              (opts.hidden, opts.output)):
            total = np.float32(total + _conv_bflops(c_in, filters, opts.groups, opts.size, out,
                                                    xnor))
        return float(total) * 1e9

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        dilation, padding = opts.dilation, node.info["padding"]

        def conv(c_in: int, filters: int) -> Conv:
            return Conv(c_in, filters, opts.size, (opts.stride, opts.stride), padding, dilation,
                        opts.groups, bool(opts.batch_normalize), opts.activation,
                        xnor=bool(opts.xnor))

        return Crnn(conv(node.in_shape.c, opts.hidden), conv(opts.hidden, opts.hidden),
                    conv(opts.hidden, opts.output), opts.hidden, bool(opts.shortcut))

    def describe(self, node: Node) -> str:
        return f"{node.opts.hidden:5d} -> {node.opts.output}"
