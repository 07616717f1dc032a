"""The typed graph: one shaped, type-checked :class:`Node` per primitive section, and the
builder that adds sections one at a time (the dialect lowering in :mod:`darkcsp.lower` drives it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from darkcsp import layers as _layers  # noqa: F401  (fills the registry)
from darkcsp.budget import MAX_LAYERS, LayerCost, MemoryEstimate
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

    def memory_estimate(self, max_bytes: int | None = None) -> MemoryEstimate:
        """Floats the model needs at batch 1 (see :mod:`darkcsp.budget`), without allocating:
        each layer's output from its shape, its parameters and buffers from its module built
        on the ``meta`` device (so the count is exactly what the real module holds). Stops
        early, with ``complete=False``, once ``max_bytes`` is exceeded."""
        net_input = self.input_shape.size
        costs: list[LayerCost] = []
        built: list[torch.nn.Module] = []
        seen: set[int] = set()
        total = net_input
        limit = None if max_bytes is None else max_bytes // 4
        for node in self.nodes:  # outputs first: the cheap check catches huge shapes at once
            total += node.out_shape.size
        complete = limit is None or total <= limit
        for node in self.nodes:
            parameters = 0
            if complete:
                try:
                    with torch.device("meta"):
                        module = node.kind.module(node, built)
                except CfgError:
                    raise
                except (RuntimeError, ValueError, OverflowError) as exc:
                    raise node.error(f"this layer cannot be built: {exc}") from None
                built.append(module)
                for tensor in (*module.parameters(), *module.buffers()):
                    if id(tensor) not in seen:  # shared convolutions count once
                        seen.add(id(tensor))
                        parameters += tensor.numel()
                total += parameters
                if limit is not None and total > limit:
                    complete = False
            costs.append(LayerCost(node.index, node.section.source, node.section.line,
                                   node.section.type, parameters, node.out_shape.size))
        return MemoryEstimate(net_input, tuple(costs), complete)


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
        if index >= MAX_LAYERS:
            raise section.error(f"more than {MAX_LAYERS:,} layers (after lowering dialect "
                                "sections): larger than any real network")
        kind = layer_type(section)
        if kind.macro:
            raise section.error("a dialect section must be lowered before it is built")
        opts = kind.parse(section)
        inputs = kind.sources(opts, index, section)
        node = Node(index, section, kind, opts, inputs, [self.shape_of(i) for i in inputs],
                    self.info)
        node.refs = {i: self.nodes[i] for i in kind.referenced(opts)}
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
