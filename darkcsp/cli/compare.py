"""``darkcsp compare CFG WEIGHTS``: the same input through darkcsp and other engines, and where
each one leaves darkcsp's (= Darknet's) numbers.

The input is Darknet's pre-processing of --image, or a seeded uniform input without one. Per
engine: the max relative error of the final outputs, the first Darknet layer whose output
differs by more than --tolerance (and its type), how many of darkcsp's detections (thresh 0.25,
Darknet's NMS) it reproduces (same class, IoU >= 0.5), and the cause where it can tell (OpenCV's
BN eps 1e-6, a key OpenCV's importer reads differently). Engines: torch (darkcsp, the
reference), opencv (readNetFromDarknet on the files as given), opencv-export (on ``darkcsp
export --to opencv``), onnx (onnxruntime on the ONNX export) and darknet (your own
libdarknet.so through ctypes, --darknet-lib; nothing is downloaded). An engine that cannot load
or run the model is reported with the reason.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from darkcsp.cli import arguments
from darkcsp.files import output_file
from darkcsp.infer.compare import DEFAULT_ENGINES, DEFAULT_TOLERANCE, ENGINES, compare


def engine_list(text: str) -> list[str]:
    """``--engines``: comma-separated names from :data:`ENGINES`, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or text!r}: engines are "
                                         f"{', '.join(ENGINES)} (comma-separated)")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights or darkcsp .pt file")
    parser.add_argument("--image", metavar="IMG",
                        help="run Darknet's pre-processing of this image (default: a seeded "
                             "uniform 0..1 input at the cfg size)")
    parser.add_argument("--engines", type=engine_list, default=None, metavar="LIST",
                        help=f"comma-separated, from {','.join(ENGINES)} (default: "
                             f"{','.join(DEFAULT_ENGINES)}, plus darknet with --darknet-lib)")
    parser.add_argument("--darknet-lib", metavar="PATH",
                        help="your own AlexeyAB libdarknet.so for the darknet engine")
    parser.add_argument("--tolerance", type=arguments.positive_float,
                        default=DEFAULT_TOLERANCE,
                        help="max |a-b|/max|b| for a layer to agree (default 1e-4)")
    parser.add_argument("--seed", type=arguments.seed, default=0,
                        help="seed of the input without --image (default 0)")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON here")
    arguments.add_max_memory(parser)
    arguments.add_exist_ok(parser, "--json")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def run(args: argparse.Namespace) -> int:
    inputs = [args.cfg, args.weights] + ([args.image] if args.image else [])
    if args.json:
        output_file(args.json, inputs, "--json", exist_ok=args.exist_ok)
    engines = args.engines or (list(DEFAULT_ENGINES) + (["darknet"] if args.darknet_lib
                                                        else []))
    reports = compare(args.cfg, args.weights, args.image, engines, args.darknet_lib,
                      args.tolerance, args.seed, args.max_memory)
    print(f"{'engine':14} {'max_rel':>9} {'first layer':>18} {'detections':>11}  cause")
    for name, item in reports.items():
        if item.error is not None:
            print(f"{name:14} cannot run: {item.error}")
            continue
        layer = ("-" if item.first_divergent_layer is None
                 else f"{item.first_divergent_layer} {item.layer_type}")
        found = ("-" if item.detections is None
                 else f"{item.detections['matched']}/{item.detections['total']}")
        print(f"{name:14} {_number(item.max_rel):>9} {layer:>18} {found:>11}  "
              f"{item.cause or ''}")
    if args.json:
        data = {"engines": {name: item.as_dict() for name, item in reports.items()}}
        text = json.dumps(data, indent=1, allow_nan=False)  # a non-finite max_rel is null
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0
