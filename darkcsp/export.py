"""``darkcsp lower`` and ``darkcsp export``: a dialect cfg as plain Darknet cfg (+ weights).

``lower IN.cfg -o OUT.cfg --target darknet`` writes the primitive sections Darknet and OpenCV
read. ``export CFG WEIGHTS --to darknet DIR`` writes the lowered cfg and its ``.weights``; the
``.weights`` of a dialect cfg is by definition that of its Darknet lowering, so the file is the
same stream.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from darkcsp.config.writer import format_cfg
from darkcsp.graph import Darknet, load_graph
from darkcsp.weights import atomic_write


def lowered_cfg_text(cfg: str | Path, target: str = "darknet") -> str:
    graph = load_graph(str(cfg), target)
    return format_cfg(graph.sections, header=f"lowered by darkcsp from {Path(cfg).name} "
                                             f"(target {target})")


def export_model(cfg: str | Path, weights: str | Path | None, out_dir: str | Path,
                 target: str = "darknet") -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` for ``target`` into ``out_dir``."""
    if target != "darknet":
        raise NotImplementedError(f"export --to {target} is not implemented yet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Darknet(str(cfg))
    if weights is not None:
        model.load_weights(str(weights))
    name = Path(cfg).stem
    cfg_path, weights_path = out / f"{name}.cfg", out / f"{name}.weights"
    atomic_write(cfg_path, lowered_cfg_text(cfg, target).encode("utf-8"))
    model.save_weights(weights_path)
    return cfg_path, weights_path


def add_lower_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="dialect or Darknet cfg")
    parser.add_argument("-o", "--output", required=True, help="lowered cfg to write")
    parser.add_argument("--target", choices=("darknet",), default="darknet")


def run_lower(args: argparse.Namespace) -> int:
    atomic_write(args.output, lowered_cfg_text(args.cfg, args.target).encode("utf-8"))
    print(f"wrote {args.output}")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg")
    parser.add_argument("weights", help=".weights of the cfg (its Darknet lowering)")
    parser.add_argument("--to", dest="target", choices=("darknet",), default="darknet")
    parser.add_argument("out_dir")


def run_export(args: argparse.Namespace) -> int:
    cfg_path, weights_path = export_model(args.cfg, args.weights, args.out_dir, args.target)
    print(f"wrote {cfg_path} and {weights_path}")
    return 0
