"""The :class:`Darknet` ``nn.Module``: one PyTorch module per layer of the typed graph, run in
Darknet's layer order, with Darknet's ``.weights`` read and written in place."""
from __future__ import annotations

import os

import torch
from torch import nn

from darkcsp.budget import AUTO, MaxMemory, check_memory, resolve_max_memory
from darkcsp.config.options import OptionValues
from darkcsp.config.writer import format_cfg
from darkcsp.layers.registry import NETWORK_INPUT, Node, WeightBlock
from darkcsp.lower import CfgLike, load_graph
from darkcsp.weights import WeightsHeader, load_weights, save_weights


class Darknet(nn.Module):
    """A Darknet cfg as a PyTorch module with Darknet's exact numbers.

    ``Darknet(cfg)`` takes a cfg path, cfg text or a list of sections. Layers are
    ``self.layers[i]`` with Darknet's indices; ``model(x)`` returns the outputs of the detection
    heads (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``, ``[detection]``) as a list, or a
    one-element list with the last layer's output; ``model.forward_layers(x)`` returns every
    layer's output.

    Before any tensor is made, the model's memory at batch 1 is checked against ``max_memory``
    bytes (default: half the memory available, or the CLI's ``--max-memory``; ``None``: no
    limit); a larger model is a :class:`~darkcsp.errors.CfgError` at its largest layer (see
    :mod:`darkcsp.budget`). A model built on the ``meta`` device allocates nothing and is not
    checked.
    """

    def __init__(self, cfg: CfgLike, max_memory: MaxMemory = AUTO) -> None:
        super().__init__()
        self.layer_graph = load_graph(cfg)
        if torch.get_default_device().type != "meta":
            limit = resolve_max_memory(max_memory)
            if limit is not None:
                check_memory(self.layer_graph.memory_estimate(limit), limit,
                             self.layer_graph.sections[0].source)
        modules: list[nn.Module] = []
        for node in self.layer_graph.nodes:
            modules.append(node.kind.module(node, modules))
        self.layers = nn.ModuleList(modules)
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
        load_weights(self, path, cutoff)

    def save_weights(self, path: str | os.PathLike, cutoff: int | None = None) -> None:
        """Write a Darknet ``.weights`` file; see :func:`darkcsp.weights.save_weights`."""
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
