"""``darkcsp lower`` and ``darkcsp export``: a dialect cfg as plain Darknet cfg (+ weights).

``lower IN.cfg -o OUT.cfg --target darknet`` writes the primitive sections Darknet reads.
``export CFG WEIGHTS --to darknet DIR`` writes the lowered cfg and its ``.weights``; the
``.weights`` of a dialect cfg is by definition that of its Darknet lowering, so the file is the
same stream.

``--target opencv`` / ``--to opencv`` write what OpenCV 4.x's ``readNetFromDarknet`` computes
exactly (see :mod:`darkcsp.opencv_target`): rewritten sections, and a ``.weights`` holding each
exported layer's copied or computed weights, every conv's BN variance raised by 9e-6 (OpenCV's BN
eps is 1e-6, Darknet's 1e-5). That ``.weights`` is for OpenCV only: Darknet (and darkcsp) would
read those variances 9e-6 too high.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from darkcsp.config.writer import format_cfg
from darkcsp.errors import CfgError
from darkcsp.graph import Darknet, load_graph
from darkcsp.layers.conv import Conv
from darkcsp.lower import TARGETS
from darkcsp.opencv_target import (VARIANCE_SHIFT, OpenCVPlan, lower_for_opencv,
                                   opencv_weight_floats)
from darkcsp.weights import WeightsHeader, atomic_write


def lowered_cfg_text(cfg: str | Path, target: str = "darknet") -> str:
    graph = load_graph(str(cfg), target)
    return format_cfg(graph.sections, header=f"lowered by darkcsp from {Path(cfg).name} "
                                             f"(target {target})")


def export_model(cfg: str | Path, weights: str | Path | None, out_dir: str | Path,
                 target: str = "darknet") -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` for ``target`` into ``out_dir``."""
    if target == "opencv":
        return export_opencv(cfg, weights, out_dir)
    if target != "darknet":
        raise CfgError(f"unknown export target {target!r}; use one of {', '.join(TARGETS)}")
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


def export_opencv(cfg: str | Path, weights: str | Path | None, out_dir: str | Path
                  ) -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` for OpenCV 4.x into ``out_dir``.

    Both passes run on the model itself: the Darknet lowering with its weights loaded, then the
    OpenCV form, whose weights are filled from it (:func:`opencv_model`).
    """
    model = Darknet(str(cfg))
    if weights is not None:
        model.load_weights(str(weights))
    plan = lower_for_opencv(model.layer_graph)
    exported = opencv_model(model, plan)
    data = opencv_weights_bytes(exported)
    expected = exported.header.size + 4 * sum(opencv_weight_floats(plan.graph))
    if len(data) != expected:  # OpenCV never checks the length: a mismatch would load garbage
        raise RuntimeError(f"internal: {len(data)} weight bytes written, OpenCV reads "
                           f"{expected}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(cfg).stem
    cfg_path, weights_path = out / f"{name}.cfg", out / f"{name}.weights"
    text = format_cfg(plan.graph.sections, header=f"lowered by darkcsp from {Path(cfg).name} "
                                                  "(target opencv)")
    atomic_write(cfg_path, text.encode("utf-8"))
    atomic_write(weights_path, data)
    return cfg_path, weights_path


def opencv_model(model: Darknet, plan: OpenCVPlan) -> Darknet:
    """The OpenCV form of ``model`` as a darkcsp model (Darknet semantics, BN eps 1e-5), each
    layer's weights made by its fill from the Darknet layer it was lowered from. It computes
    what ``model`` computes (up to float rounding), which is what OpenCV must reproduce."""
    exported = Darknet(plan.graph.sections)
    with torch.no_grad():
        for index, module in enumerate(exported.layers):
            fill = plan.fills.get(index)
            if (fill is None) == bool(module.weight_blocks()):
                state = "has no weight source" if fill is None else "carries no weights"
                raise RuntimeError(f"internal: exported layer {index} "
                                   f"[{exported.nodes[index].section.type}] {state}")
            if fill is not None:
                fill(model.layers[plan.origins[index]], module)
    exported.header = WeightsHeader(0, 2, 5, model.header.seen)  # the header OpenCV reads
    return exported.eval()


def opencv_weights_bytes(model: Darknet) -> bytes:
    """``model``'s ``.weights`` with every conv BN variance raised by :data:`VARIANCE_SHIFT`,
    so OpenCV's sqrt(var + 1e-6) is Darknet's sqrt(var + 1e-5)."""
    parts = [model.header.to_bytes()]
    with torch.no_grad():
        for index, blocks in model.weight_blocks():
            module = model.layers[index]
            variance = (module.bn.running_var if isinstance(module, Conv) and
                        module.bn is not None else None)
            for block in blocks:
                tensor = block.tensor.detach().to("cpu", torch.float32)
                if block.tensor is variance:
                    tensor = tensor + VARIANCE_SHIFT
                parts.append(tensor.contiguous().numpy().astype("<f4", copy=False).tobytes())
    return b"".join(parts)


def add_lower_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="dialect or Darknet cfg")
    parser.add_argument("-o", "--output", required=True, help="lowered cfg to write")
    parser.add_argument("--target", choices=TARGETS, default="darknet",
                        help="opencv: only sections OpenCV 4.x computes exactly (rewritten)")


def run_lower(args: argparse.Namespace) -> int:
    atomic_write(args.output, lowered_cfg_text(args.cfg, args.target).encode("utf-8"))
    print(f"wrote {args.output}")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg")
    parser.add_argument("weights", help=".weights of the cfg (its Darknet lowering)")
    parser.add_argument("--to", dest="target", choices=(*TARGETS, "onnx"), default="darknet",
                        help="opencv: cfg + .weights for cv2.dnn.readNetFromDarknet (4.x); "
                             "onnx: one .onnx file (OUT is its path), BN folded, raw heads")
    parser.add_argument("--decoded", action="store_true",
                        help="onnx: decode [yolo] boxes in the graph (OpenCV's layout)")
    parser.add_argument("out_dir", metavar="OUT", help="output directory (.onnx file for onnx)")


def run_export(args: argparse.Namespace) -> int:
    if args.target == "onnx":
        from darkcsp.deploy.onnx import export_onnx
        model = Darknet(args.cfg)
        model.load_weights(args.weights)
        print(f"wrote {export_onnx(model, args.out_dir, decoded=args.decoded)}")
        return 0
    cfg_path, weights_path = export_model(args.cfg, args.weights, args.out_dir, args.target)
    print(f"wrote {cfg_path} and {weights_path}")
    return 0
