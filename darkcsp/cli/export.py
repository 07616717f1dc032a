"""``darkcsp export CFG WEIGHTS --to darknet|opencv|onnx OUT``: a model written for another engine.

``--to darknet`` writes the lowered cfg and its ``.weights`` (the same stream). ``--to opencv``
writes what OpenCV 4.x's ``readNetFromDarknet`` computes exactly (see
:mod:`darkcsp.export.opencv`): rewritten sections, and a ``.weights`` holding each exported
layer's copied or computed weights, every conv's BN variance raised by 9e-6 (OpenCV's BN eps is
1e-6, Darknet's 1e-5). That ``.weights`` is for OpenCV only: Darknet (and darkcsp) would read
those variances 9e-6 too high. ``--to onnx`` writes one ``.onnx`` file; with ``--int8`` it is
ONNX Runtime's static quantization (QDQ, uint8 activations, int8 per-channel weights, heads,
the convs feeding them and the first conv in float32), calibrated on ``--calib`` images through
darkcsp's pre-processing (about 20 frames; default: the built-in synthetic shapes, with a
warning that real frames calibrate better).
"""
from __future__ import annotations

import argparse
import sys
import warnings

from darkcsp.cli import arguments
from darkcsp.errors import DarkcspError
from darkcsp.export import TARGETS, export_model
from darkcsp.export.onnx import export_onnx
from darkcsp.export.quantize import quantize_onnx
from darkcsp.files import output_dir, output_file
from darkcsp.infer.precision import calibration_frames
from darkcsp.network import Darknet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg")
    parser.add_argument("weights", help=".weights of the cfg (its Darknet lowering)")
    parser.add_argument("--to", dest="target", choices=(*TARGETS, "onnx"), default="darknet",
                        help="opencv: cfg + .weights for cv2.dnn.readNetFromDarknet (4.x); "
                             "onnx: one .onnx file (OUT is its path), BN folded, raw heads")
    parser.add_argument("--decoded", action="store_true",
                        help="onnx: decode [yolo] boxes in the graph (OpenCV's layout)")
    parser.add_argument("--int8", action="store_true",
                        help="onnx: int8 static quantization (ONNX Runtime, QDQ)")
    parser.add_argument("--calib", nargs="+", metavar="IMAGE", default=None,
                        help="--int8 calibration images (~20 real frames; default: built-in "
                             "synthetic shapes, which calibrate worse)")
    parser.add_argument("out_dir", metavar="OUT", help="output directory (.onnx file for onnx)")
    parser.add_argument("--exist-ok", action="store_true", help="write into an existing, "
                        "non-empty OUT folder, even the one holding the inputs (the inputs "
                        "themselves are never replaced)")
    arguments.add_max_memory(parser)


def run(args: argparse.Namespace) -> int:
    inputs = [args.cfg, args.weights, *(args.calib or [])]
    if (args.int8 or args.calib) and args.target != "onnx":
        raise DarkcspError("--int8 and --calib are for --to onnx")
    if args.calib and not args.int8:
        raise DarkcspError("--calib is for --int8")
    if args.int8 and args.decoded:
        raise DarkcspError("--int8 quantizes the raw-head export: drop --decoded")
    if args.target == "onnx":  # OUT is the .onnx file: checked before the export
        output_file(args.out_dir, inputs, "OUT", exist_ok=args.exist_ok)
    else:
        output_dir(args.out_dir, inputs, exist_ok=args.exist_ok, what="OUT folder")
    if args.target == "onnx":
        model = Darknet(args.cfg, max_memory=args.max_memory)
        model.load_weights(args.weights)
        if args.int8:
            if args.calib is None:
                print("warning: no --calib images: calibrating int8 on darkcsp's built-in "
                      "synthetic shapes; ~20 real frames from your data calibrate better",
                      file=sys.stderr)
            with warnings.catch_warnings():  # said above, once
                warnings.simplefilter("ignore", UserWarning)
                frames = calibration_frames(model, args.calib)
            print(f"wrote {quantize_onnx(model, args.out_dir, frames)} (int8, "
                  f"{len(frames)} calibration frames)")
            return 0
        print(f"wrote {export_onnx(model, args.out_dir, decoded=args.decoded)}")
        return 0
    cfg_path, weights_path = export_model(args.cfg, args.weights, args.out_dir, args.target,
                                            args.max_memory)
    print(f"wrote {cfg_path} and {weights_path}")
    return 0
