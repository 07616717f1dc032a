"""``darkcsp export CFG WEIGHTS --to darknet|opencv|onnx OUT``: a model written for another engine.

``--to darknet`` writes the lowered cfg and its ``.weights`` (the same stream). ``--to opencv``
writes what OpenCV 4.x's ``readNetFromDarknet`` computes exactly (see
:mod:`darkcsp.export.opencv`): rewritten sections, and a ``.weights`` holding each exported
layer's copied or computed weights, every conv's BN variance raised by 9e-6 (OpenCV's BN eps is
1e-6, Darknet's 1e-5). That ``.weights`` is for OpenCV only: Darknet (and darkcsp) would read
those variances 9e-6 too high. ``--to onnx`` writes one ``.onnx`` file.
"""
from __future__ import annotations

import argparse

from darkcsp.cli import arguments
from darkcsp.export import TARGETS, export_model
from darkcsp.export.onnx import export_onnx
from darkcsp.files import output_dir, output_file
from darkcsp.network import Darknet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg")
    parser.add_argument("weights", help=".weights of the cfg (its Darknet lowering)")
    parser.add_argument("--to", dest="target", choices=(*TARGETS, "onnx"), default="darknet",
                        help="opencv: cfg + .weights for cv2.dnn.readNetFromDarknet (4.x); "
                             "onnx: one .onnx file (OUT is its path), BN folded, raw heads")
    parser.add_argument("--decoded", action="store_true",
                        help="onnx: decode [yolo] boxes in the graph (OpenCV's layout)")
    parser.add_argument("out_dir", metavar="OUT", help="output directory (.onnx file for onnx)")
    parser.add_argument("--exist-ok", action="store_true", help="write into an existing, "
                        "non-empty OUT folder, even the one holding the inputs (the inputs "
                        "themselves are never replaced)")
    arguments.add_max_memory(parser)


def run(args: argparse.Namespace) -> int:
    inputs = [args.cfg, args.weights]
    if args.target == "onnx":  # OUT is the .onnx file: checked before the export
        output_file(args.out_dir, inputs, "OUT", exist_ok=args.exist_ok)
    else:
        output_dir(args.out_dir, inputs, exist_ok=args.exist_ok, what="OUT folder")
    if args.target == "onnx":
        model = Darknet(args.cfg, max_memory=args.max_memory)
        model.load_weights(args.weights)
        print(f"wrote {export_onnx(model, args.out_dir, decoded=args.decoded)}")
        return 0
    cfg_path, weights_path = export_model(args.cfg, args.weights, args.out_dir, args.target,
                                            args.max_memory)
    print(f"wrote {cfg_path} and {weights_path}")
    return 0
