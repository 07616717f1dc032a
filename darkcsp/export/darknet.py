"""A dialect cfg as plain Darknet cfg and ``.weights``: ``darkcsp lower`` and
``darkcsp export --to darknet``.

The ``.weights`` of a dialect cfg is by definition that of its Darknet lowering, so the exported
file is the same stream; the lowered cfg is the graph's primitive sections written back.
"""
from __future__ import annotations

from pathlib import Path

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.config.writer import format_cfg
from darkcsp.files import atomic_write
from darkcsp.graph import Graph
from darkcsp.lower import load_graph
from darkcsp.network import Darknet


def graph_cfg_text(graph: Graph, origin: str | Path, target: str) -> str:
    """``graph``'s sections as cfg text with a header naming where they came from."""
    return format_cfg(graph.sections, header=f"lowered by darkcsp from {Path(origin).name} "
                                             f"(target {target})")


def lowered_cfg_text(cfg: str | Path) -> str:
    """The plain Darknet cfg of a (dialect) cfg."""
    return graph_cfg_text(load_graph(str(cfg)), cfg, "darknet")


def export_darknet(cfg: str | Path, weights: str | Path | None, out_dir: str | Path,
                   max_memory: MaxMemory = AUTO) -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` (Darknet's own reader) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Darknet(str(cfg), max_memory=max_memory)
    if weights is not None:
        model.load_weights(str(weights))
    name = Path(cfg).stem
    cfg_path, weights_path = out / f"{name}.cfg", out / f"{name}.weights"
    atomic_write(cfg_path, graph_cfg_text(model.layer_graph, cfg, "darknet").encode("utf-8"))
    model.save_weights(weights_path)
    return cfg_path, weights_path
