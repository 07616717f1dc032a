"""``darkcsp convert CFG IN OUT [--cutoff N]``: ``.weights`` <-> ``.pt`` (direction from the
extensions; ``--cutoff`` keeps the first N layers of a ``.weights`` output, like ``darknet partial``)."""
from __future__ import annotations

import argparse

from darkcsp.checkpoint import convert
from darkcsp.cli import arguments
from darkcsp.files import output_file

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet .cfg file the weights belong to")
    parser.add_argument("input", help="weights to read (.weights or .pt)")
    parser.add_argument("output", help="file to write (.weights or .pt)")
    parser.add_argument("--cutoff", type=arguments.positive_int, default=None, metavar="N",
                        help="write only the first N layers (.weights output, like darknet "
                             "partial)")
    arguments.add_max_memory(parser)
    arguments.add_exist_ok(parser, "OUTPUT")


def run(args: argparse.Namespace) -> int:
    output_file(args.output, [args.cfg, args.input], "OUTPUT", exist_ok=args.exist_ok)  # before the work; never an input
    convert(args.cfg, args.input, args.output, args.cutoff, max_memory=args.max_memory)
    print(f"wrote {args.output}")
    return 0
