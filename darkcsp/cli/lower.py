"""``darkcsp lower IN.cfg -o OUT.cfg [--target darknet|opencv]``: a dialect cfg as the plain
Darknet cfg Darknet reads, or as the rewritten cfg OpenCV 4.x computes exactly."""
from __future__ import annotations

import argparse

from darkcsp.cli import arguments
from darkcsp.export import TARGETS, cfg_text_for
from darkcsp.files import atomic_write, output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="dialect or Darknet cfg")
    parser.add_argument("-o", "--output", required=True, help="lowered cfg to write")
    parser.add_argument("--target", choices=TARGETS, default="darknet",
                        help="opencv: only sections OpenCV 4.x computes exactly (rewritten)")
    arguments.add_exist_ok(parser, "-o")


def run(args: argparse.Namespace) -> int:
    output_file(args.output, [args.cfg], "-o", exist_ok=args.exist_ok)  # never the input cfg
    atomic_write(args.output, cfg_text_for(args.cfg, args.target).encode("utf-8"))
    print(f"wrote {args.output}")
    return 0
