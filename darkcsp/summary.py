"""Print a cfg's layer table the way Darknet prints it while parsing, with its BFLOPs and size.

``darkcsp summary CFG`` builds the network on PyTorch's ``meta`` device (shapes only, no tensor
memory), so it is instant even for a cfg whose weights take a gigabyte. The last two lines are
always ``Total BFLOPS <x.xxx>`` and ``Total parameters <n>``, so scripts can read them with
``tail -2``.
"""
from __future__ import annotations

import warnings
from typing import Union

import torch

from darkcsp.graph import Graph
from darkcsp.layers.registry import Node
from darkcsp.network import Darknet
from darkcsp.weights import expected_size

ModelOrGraph = Union[Darknet, Graph]

# Darknet's names in its layer table, where they differ from the section name.
_SHORT_NAMES: dict[str, str] = {
    "convolutional": "conv",
    "maxpool": "max",
    "local_avgpool": "avg",
    "avgpool": "avg",
    "reorg3d": "reorg",
    "reorg": "reorg_old",
    "scale_channels": "scale",
    "silence": "empty",
}

HEADER = "   layer   filters  size/strd(dil)      input                output"
_TYPE_WIDTH = 6  # Darknet pads "conv  " / "max   " to six characters
_DESCRIBE_WIDTH = 21  # the filters / size column


def layer_name(node: Node) -> str:
    """Darknet's short name for ``node`` (``conv``, ``convS`` for a shared conv, ``max``...)."""
    kind, opts = node.kind, node.opts
    if kind.name == "convolutional":
        if opts.get("xnor") and opts.get("bin_output"):
            return "convXB"
        if opts.get("xnor"):
            return "convX"
        if opts.get("share_index") is not None:
            return "convS"
        if opts.get("assisted_excitation"):
            return "convAE"
        return "conv"
    if kind.name == "maxpool" and opts.get("maxpool_depth"):
        return "max-depth"
    if kind.name == "upsample" and opts.get("stride", 1) < 0:
        return "downsample"
    if kind.summary_name:
        return kind.summary_name
    return _SHORT_NAMES.get(kind.name, kind.name)


def _whc(shape: object) -> str:
    """``W x H x C`` with Darknet's ``%4d x%4d x%4d`` widths."""
    return f"{shape.w:4d} x{shape.h:4d} x{shape.c:4d}"  # type: ignore[attr-defined]


def meta_model(cfg: object) -> Darknet:
    """``Darknet(cfg)`` with every tensor on the meta device: shapes without memory."""
    with torch.device("meta"):
        return Darknet(cfg)  # type: ignore[arg-type]


def parameter_count(model: Darknet) -> int:
    """Floats in the model's ``.weights`` body, i.e. ``(expected_size - header) / 4``.

    That is Darknet's notion of a parameter: every stored float, BN rolling statistics
    included, shared convolutions counted once (they store nothing).
    """
    return (expected_size(model) - model.header.size) // 4


def format_summary(model_or_graph: ModelOrGraph) -> str:
    """Darknet's layer table for a :class:`Darknet` model or a :class:`Graph`.

    One row per layer: index, short type name, the filters/size column (each layer type's
    ``describe``), input and output ``W x H x C`` and the layer's BFLOPs (``%5.3f``). The last two
    lines are ``Total BFLOPS <x.xxx>`` (:meth:`Graph.total_bflops`) and ``Total parameters <n>``,
    where n is the number of float32 values in the ``.weights`` body (:func:`parameter_count`).
    A graph is rebuilt as a meta-device model to count them (no tensor memory is used).
    """
    if isinstance(model_or_graph, Darknet):
        model = model_or_graph
    elif isinstance(model_or_graph, Graph):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the graph's build already warned
            model = meta_model(model_or_graph.sections)
    else:
        raise TypeError(f"format_summary needs a Darknet model or a Graph, got "
                        f"{type(model_or_graph).__name__}")
    graph = model.layer_graph
    nodes = graph.nodes
    names = [layer_name(node) for node in nodes]
    describes = [node.kind.describe(node) for node in nodes]
    type_width = max([_TYPE_WIDTH, *map(len, names)])
    describe_width = max([_DESCRIBE_WIDTH, *(len(d) + 1 for d in describes)])
    lines = [HEADER]
    for node, name, describe in zip(nodes, names, describes):
        bflops = node.kind.flops(node) / 1e9
        lines.append(f"{node.index:4d} {name:<{type_width}} {describe:<{describe_width}}"
                     f"{_whc(node.in_shape)} -> {_whc(node.out_shape)} {bflops:5.3f} BF")
    lines.append(f"Total BFLOPS {graph.total_bflops():.3f}")
    lines.append(f"Total parameters {parameter_count(model)}")
    return "\n".join(lines)
