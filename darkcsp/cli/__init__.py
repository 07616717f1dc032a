"""The ``darkcsp`` command: one sub-command per module, each providing ``add_arguments(parser)``
and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from darkcsp.errors import DarkcspError

# sub-command -> (its module under darkcsp.cli, help); each module has add_arguments and run.
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("darkcsp.cli.summary", "print Darknet's layer table, BFLOPs and parameters"),
    "convert": ("darkcsp.cli.convert", "convert .weights <-> .pt"),
    "detect": ("darkcsp.cli.detect", "detect objects in images"),
    "train": ("darkcsp.cli.train", "train a cfg from its own [net] and [yolo] options"),
    "lower": ("darkcsp.cli.lower", "lower a dialect cfg to plain Darknet cfg"),
    "export": ("darkcsp.cli.export", "write a dialect model as Darknet cfg + weights"),
    "map": ("darkcsp.cli.map", "mAP with Darknet's rules and COCO metrics"),
    "synthetic": ("darkcsp.cli.synthetic", "write the embedded synthetic training set to disk"),
    "anchors": ("darkcsp.cli.anchors", "anchors by IoU k-means (detector calc_anchors)"),
    "valid": ("darkcsp.cli.valid", "classifier top-1/top-k (classifier valid)"),
    "compare": ("darkcsp.cli.compare", "where OpenCV, ONNX or Darknet leave darkcsp's numbers "
                "(per engine: error, first divergent layer, detections)"),
}

# Darknet's argument order: ``darkcsp detector train DATA CFG [WEIGHTS]``.
DETECTOR_ALIASES = {"train": "train", "map": "map", "test": "detect", "valid": "map"}


def _darknet_order(argv: list[str]) -> list[str]:
    """``detector <verb> DATA CFG [WEIGHTS] ...`` -> darkcsp's own argument order."""
    if len(argv) >= 2 and argv[0] == "detector" and argv[1] in DETECTOR_ALIASES:
        verb = DETECTOR_ALIASES[argv[1]]
        rest = argv[2:]
        positional = [a for a in rest[:3] if not a.startswith("-")]
        options = rest[len(positional):]
        if verb == "train" and len(positional) >= 2:
            data, cfg, *weights = positional
            return ["train", cfg, "--data", data] + (["--weights", weights[0]] if weights
                                                     else []) + options
        if verb == "detect" and len(positional) >= 3:
            _, cfg, weights = positional
            return ["detect", cfg, weights] + options
        return [verb, *positional, *options]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkcsp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_darknet_order(list(sys.argv[1:] if argv is None
                                                         else argv)))
    try:
        return int(args.handler(args) or 0)
    except DarkcspError as exc:
        print(f"darkcsp {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
