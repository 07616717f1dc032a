"""From sections to a graph of typed, shaped layers, and the :class:`Darknet` ``nn.Module``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from darkcsp import layers as _layers  # noqa: F401  (fills the registry)
from darkcsp.config.options import OptionValues
from darkcsp.config.reader import Section, read_cfg
from darkcsp.config.writer import format_cfg
from darkcsp.errors import CfgError
from darkcsp.layers.registry import (NETWORK_INPUT, NetInfo, Node, Shape, WeightBlock,
                                     layer_type)
from darkcsp.net import parse_net

CfgLike = Union[str, os.PathLike, Sequence[Section]]


@dataclass
class Graph:
    """The network as Darknet sees it after parsing: ``[net]`` options and one node per layer."""

    net: OptionValues
    sections: list[Section]  # [net] first, then one primitive section per layer
    nodes: list[Node]

    @property
    def input_shape(self) -> Shape:
        return Shape(self.net.channels, self.net.height, self.net.width)

    @property
    def output_indices(self) -> list[int]:
        """The detection heads, or the last layer when there is none."""
        heads = [n.index for n in self.nodes if n.kind.detection_head]
        return heads or [len(self.nodes) - 1]

    def total_bflops(self) -> float:
        """Darknet's ``Total BFLOPS``: per-layer float32 values summed in float32."""
        total = np.float32(0)
        for node in self.nodes:
            total = np.float32(total + np.float32(node.kind.flops(node) / 1e9))
        return float(total)


class GraphBuilder:
    """Adds primitive sections one at a time, type-checking each and computing its shape as it
    arrives (the dialect lowering needs the shapes of what it has emitted so far)."""

    def __init__(self, net_section: Section) -> None:
        self.net = parse_net(net_section)
        self.info = NetInfo(self.net.width, self.net.height, self.net.channels)
        self.input_shape = Shape(self.net.channels, self.net.height, self.net.width)
        self.sections: list[Section] = [net_section]
        self.nodes: list[Node] = []

    def shape_of(self, index: int) -> Shape:
        return self.input_shape if index == NETWORK_INPUT else self.nodes[index].out_shape

    def add(self, section: Section) -> Node:
        index = len(self.nodes)
        kind = layer_type(section)
        if kind.macro:
            raise section.error("a dialect section must be lowered before it is built")
        opts = kind.parse(section)
        inputs = kind.sources(opts, index, section)
        node = Node(index, section, kind, opts, inputs, [self.shape_of(i) for i in inputs],
                    self.info)
        node.out_shape = kind.shape(node)
        if min(node.out_shape.c, node.out_shape.h, node.out_shape.w) < 1:
            raise node.error(f"the output would be empty ({node.out_shape})")
        self.sections.append(section)
        self.nodes.append(node)
        return node

    def graph(self) -> Graph:
        if not self.nodes:
            first = self.sections[0]
            raise CfgError("the cfg has no layers after [net]", source=first.source,
                           line=first.line, section=first.type)
        return Graph(self.net, self.sections, self.nodes)


def build_graph(sections: Sequence[Section], target: str = "darknet") -> Graph:
    """Lower dialect sections (for ``target``), type-check every section, resolve its inputs and
    compute every layer's shape."""
    from darkcsp.lower import lower_into  # the lowering drives the builder
    if not sections:
        raise CfgError("empty cfg")
    builder = GraphBuilder(sections[0])
    lower_into(builder, sections[1:], target)
    return builder.graph()


def load_graph(cfg: CfgLike, target: str = "darknet") -> Graph:
    """The graph of a cfg path, cfg text or section list."""
    sections = list(cfg) if not isinstance(cfg, (str, os.PathLike)) else read_cfg(cfg)
    return build_graph(sections, target)


class Darknet(nn.Module):
    """A Darknet cfg as a PyTorch module with Darknet's exact numbers.

    ``Darknet(cfg)`` takes a cfg path, cfg text or a list of sections. Layers are
    ``self.layers[i]`` with Darknet's indices; ``model(x)`` returns the outputs of the detection
    heads (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``, ``[detection]``) as a list, or a
    one-element list with the last layer's output; ``model.forward_layers(x)`` returns every
    layer's output.
    """

    def __init__(self, cfg: CfgLike) -> None:
        super().__init__()
        self.layer_graph = load_graph(cfg)
        modules: list[nn.Module] = []
        for node in self.layer_graph.nodes:
            modules.append(node.kind.module(node, modules))
        self.layers = nn.ModuleList(modules)
        from darkcsp.weights import WeightsHeader
        self.header = WeightsHeader()
        self.output_indices = self.layer_graph.output_indices
        self._inputs = [node.inputs for node in self.layer_graph.nodes]
        last_use = [-1] * len(self.layer_graph.nodes)
        for node in self.layer_graph.nodes:
            for source in node.inputs:
                if source != NETWORK_INPUT:
                    last_use[source] = node.index
        for index in self.output_indices:
            last_use[index] = len(last_use)
        self._last_use = last_use

    @property
    def nodes(self) -> list[Node]:
        return self.layer_graph.nodes

    @property
    def net(self) -> OptionValues:
        return self.layer_graph.net

    @property
    def cfg_text(self) -> str:
        """The (lowered) cfg this model was built from, as Darknet cfg text."""
        return format_cfg(self.layer_graph.sections)

    def _run(self, x: torch.Tensor, keep_all: bool) -> list[torch.Tensor | None]:
        if x.dim() != 4 or x.shape[1] != self.layer_graph.net.channels:
            raise ValueError(f"expected an (N, {self.layer_graph.net.channels}, H, W) input, got "
                             f"{tuple(x.shape)}")
        outputs: list[torch.Tensor | None] = []
        for index, (module, sources) in enumerate(zip(self.layers, self._inputs)):
            args = [x if s == NETWORK_INPUT else outputs[s] for s in sources]
            outputs.append(module(*args))
            if not keep_all:
                for s in sources:
                    if s != NETWORK_INPUT and self._last_use[s] <= index:
                        outputs[s] = None
        return outputs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = self._run(x, keep_all=False)
        return [outputs[i] for i in self.output_indices]  # type: ignore[misc]

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output, indexed like Darknet's layers."""
        return self._run(x, keep_all=True)  # type: ignore[return-value]

    def weight_blocks(self, cutoff: int | None = None) -> list[tuple[int, list[WeightBlock]]]:
        """(layer index, blocks) for the first ``cutoff`` layers, in ``.weights`` order."""
        count = len(self.layers) if cutoff is None else min(cutoff, len(self.layers))
        return [(i, self.layers[i].weight_blocks()) for i in range(count)]

    def load_weights(self, path: str | os.PathLike, cutoff: int | None = None) -> None:
        """Read a Darknet ``.weights`` file; see :func:`darkcsp.weights.load_weights`."""
        from darkcsp.weights import load_weights
        load_weights(self, path, cutoff)

    def save_weights(self, path: str | os.PathLike, cutoff: int | None = None) -> None:
        """Write a Darknet ``.weights`` file; see :func:`darkcsp.weights.save_weights`."""
        from darkcsp.weights import save_weights
        save_weights(self, path, cutoff)

    def fuse(self) -> "Darknet":
        """Fold every conv's BN into its weights (as Darknet does before inference)."""
        for module in self.layers:
            fuse = getattr(module, "fuse", None)
            if fuse is not None:
                fuse()
        return self

    def total_bflops(self) -> float:
        return self.layer_graph.total_bflops()
