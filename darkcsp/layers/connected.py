"""Classifier-side layers: ``[connected]``, ``[softmax]``, ``[dropout]``, ``[cost]``, ``[crop]``,
and the standalone ``[batchnorm]`` and ``[activation]``."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.activations import ACTIVATIONS, Activation, activation_option
from darkcsp.layers.conv import BN_EPS, BN_MOMENTUM, batchnorm_blocks
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, Shape,
                                     WeightBlock, register)
from darkcsp.layers.route import Identity



class Connected(DarknetModule):
    """``y = act(BN(W x + b))`` on the flattened CHW input; output (outputs, 1, 1).

    Stream: biases, weights (outputs x inputs), then the BN triple (after the weights, unlike
    conv). Darknet's fuse_conv_batchnorm does not fold it.
    """

    def __init__(self, inputs: int, outputs: int, batch_normalize: bool, activation: str
                 ) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs, bias=not batch_normalize)
        self.bn = (nn.BatchNorm1d(outputs, eps=BN_EPS, momentum=BN_MOMENTUM)
                   if batch_normalize else None)
        self.activation = activation
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.flatten(1))
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)[:, :, None, None]

    def weight_blocks(self) -> list[WeightBlock]:
        bias = self.linear.bias if self.bn is None else self.bn.bias
        blocks = [WeightBlock(bias), WeightBlock(self.linear.weight, "fc")]
        return blocks if self.bn is None else blocks + batchnorm_blocks(self.bn)


@register
class ConnectedType(LayerType):
    name = "connected"
    aliases = ("conn",)
    options = (Option("output", "int", 1, minimum=1), activation_option("logistic"),
               Option("batch_normalize", "int", 0))

    def shape(self, node: Node) -> Shape:
        return Shape(node.opts.output, 1, 1)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        return Connected(node.in_shape.size, opts.output, bool(opts.batch_normalize),
                         opts.activation)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """Written without BN: OpenCV reads a connected layer's BN triple before its weights
        (Darknet stores it after), so the BN is folded into the weights at export."""
        low.emit("connected", fill=_fold_connected, output=node.opts.output,
                 activation=low.activation())

    def describe(self, node: Node) -> str:
        return f"{node.in_shape.size:5d} -> {node.opts.output}"


def _fold_connected(source: nn.Module, target: nn.Module) -> None:
    """``W x + b`` of the exported layer = the source's ``BN(W x)`` (folded in double)."""
    assert isinstance(source, Connected) and isinstance(target, Connected)
    if source.bn is None:
        target.load_state_dict(source.state_dict())
        return
    bn = source.bn
    factor = bn.weight.double() / torch.sqrt(bn.running_var.double() + BN_EPS)
    target.linear.weight.copy_(source.linear.weight.double() * factor[:, None])
    target.linear.bias.copy_(bn.bias.double() - factor * bn.running_mean.double())


class Softmax(DarknetModule):
    """Softmax(x / temperature) over each of ``groups`` contiguous chunks of the flat CHW input
    (on a spatial map with groups=1 that is over all C*H*W values, as Darknet does)."""

    def __init__(self, groups: int, temperature: float) -> None:
        super().__init__()
        self.groups, self.temperature = groups, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], self.groups, -1) / self.temperature
        return F.softmax(flat, dim=2).reshape(x.shape)


@register
class SoftmaxType(LayerType):
    name = "softmax"
    aliases = ("soft",)
    options = (Option("groups", "int", 1, minimum=1), Option("temperature", "float", 1.0),
               Option("tree", "str", None), Option("spatial", "float", 0.0),
               Option("noloss", "int", 0))

    def validate(self, opts: OptionValues, section: Section) -> None:
        if opts.tree is not None:
            raise section.error("hierarchical softmax (tree=) is not supported by darkcsp", "tree")
        if opts.temperature == 0:
            raise section.error("temperature must not be 0", "temperature")

    def shape(self, node: Node) -> Shape:
        if node.in_shape.size % node.opts.groups:
            raise node.error(f"{node.in_shape.size} inputs are not divisible by "
                             f"groups={node.opts.groups}", "groups")
        return node.in_shape

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Softmax(node.opts.groups, node.opts.temperature)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV's softmax runs over the channels of each pixel; Darknet's over all C*H*W
        values of each group: the same only for one group on a 1x1 map."""
        opts, inp = node.opts, node.in_shape
        if opts.groups != 1:
            raise low.cannot(f"[softmax] groups={opts.groups}", "groups")
        if opts.temperature != 1:
            raise low.cannot(f"[softmax] temperature={opts.temperature:g} (it ignores the key)",
                             "temperature")
        if inp.h * inp.w != 1:
            raise low.cannot(f"a [softmax] over a {inp.w}x{inp.h} map (it normalises each pixel "
                             "over the channels, Darknet over all C*H*W values)")
        low.emit("softmax")


@register
class DropoutType(LayerType):
    """Identity at inference (no rescaling); scales kept values by 1/(1-p) in training."""

    name = "dropout"
    options = (Option("probability", "float", 0.2, minimum=0, maximum=1),
               Option("dropblock", "int", 0), Option("dropblock_size_rel", "float", 0.0),
               Option("dropblock_size_abs", "float", 0.0))

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Dropout(node.opts.probability)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        low.emit("dropout", probability=node.opts.probability)

    def describe(self, node: Node) -> str:
        return f"p = {node.opts.probability:.2f}"


class Dropout(DarknetModule):
    def __init__(self, probability: float) -> None:
        super().__init__()
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.probability, self.training)


@register
class CostType(LayerType):
    """Training-only cost; passes its input through at inference."""

    name = "cost"
    options = (Option("type", "str", "sse", choices=("sse", "masked", "smooth", "L1", "seg",
                                                       "wgan")),
               Option("scale", "float", 1.0), Option("ratio", "float", 0.0),
               Option("noobject_scale", "float", 1.0), Option("thresh", "float", 0.0))

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Identity()

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        low.emit("cost", type=node.opts.type)


class BatchNorm(DarknetModule):
    """Standalone BN; stream: biases, scales, rolling mean, rolling variance."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)

    def weight_blocks(self) -> list[WeightBlock]:
        return [WeightBlock(self.bn.bias), *batchnorm_blocks(self.bn)]


@register
class BatchNormType(LayerType):
    name = "batchnorm"

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return BatchNorm(node.in_shape.c)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV does not know the section: a depthwise 1x1 conv carrying the folded scale
        and shift (in double, with Darknet's eps)."""
        low.channel_conv(low.input(), _bn_scale, _bn_shift)


@register
class ActivationType(LayerType):
    name = "activation"
    options = (activation_option("linear"),)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Activation(node.opts.activation)

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV does not know the section: an identity depthwise 1x1 conv carrying the
        activation."""
        channels = node.in_shape.c
        activation = low.activation()
        low.channel_conv(low.input(), lambda _: torch.ones(channels), activation=activation)


def _bn_factor(module: nn.Module) -> torch.Tensor:
    assert isinstance(module, BatchNorm)
    bn = module.bn
    return bn.weight.double() / torch.sqrt(bn.running_var.double() + BN_EPS)


def _bn_scale(module: nn.Module) -> torch.Tensor:
    return _bn_factor(module).float()


def _bn_shift(module: nn.Module) -> torch.Tensor:
    assert isinstance(module, BatchNorm)
    bn = module.bn
    return (bn.bias.double() - _bn_factor(module) * bn.running_mean.double()).float()


class Crop(DarknetModule):
    """Centre crop at inference, values mapped to 2x - 1 unless ``noadjust``."""

    def __init__(self, top: int, left: int, height: int, width: int, noadjust: bool) -> None:
        super().__init__()
        self.box = (top, left, height, width)
        self.noadjust = noadjust

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, left, height, width = self.box
        y = x[:, :, top:top + height, left:left + width]
        return y if self.noadjust else y * 2 - 1


@register
class CropType(LayerType):
    name = "crop"
    options = (Option("crop_height", "int", 1, minimum=1), Option("crop_width", "int", 1, minimum=1),
               Option("flip", "int", 0), Option("angle", "float", 0.0),
               Option("saturation", "float", 1.0), Option("exposure", "float", 1.0),
               Option("noadjust", "int", 0), Option("shift", "float", 0.0))

    def shape(self, node: Node) -> Shape:
        inp, opts = node.in_shape, node.opts
        if opts.crop_height > inp.h or opts.crop_width > inp.w:
            raise node.error(f"a {opts.crop_width}x{opts.crop_height} crop does not fit the "
                             f"{inp.w}x{inp.h} input", "crop_width")
        return Shape(inp.c, opts.crop_height, opts.crop_width)

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        inp, out = node.in_shape, node.out_shape
        return Crop((inp.h - out.h) // 2, (inp.w - out.w) // 2, out.h, out.w,
                    bool(node.opts.noadjust))
