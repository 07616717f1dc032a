"""``darkcsp summary CFG``: Darknet's layer table, ``Total BFLOPS`` and ``Total parameters``
(the last two lines, so scripts can ``tail -2``)."""
from __future__ import annotations

import argparse

from darkcsp.summary import format_summary, meta_model

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet .cfg file")


def run(args: argparse.Namespace) -> int:
    """Print the table for ``args.cfg``; a bad cfg raises CfgError (the CLI prints it, exit 2)."""
    print(format_summary(meta_model(args.cfg)))
    return 0
