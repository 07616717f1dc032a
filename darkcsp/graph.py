"""The typed graph: one shaped, type-checked :class:`Node` per primitive section, and the
builder that adds sections one at a time (the dialect lowering in :mod:`darkcsp.lower` drives it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkcsp import layers as _layers  # noqa: F401  (fills the registry)
from darkcsp.config.net import parse_net
from darkcsp.config.options import OptionValues
from darkcsp.config.reader import Section
from darkcsp.errors import CfgError
from darkcsp.layers.registry import NETWORK_INPUT, NetInfo, Node, Shape, layer_type


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
