"""``darkcsp synthetic DIR``: the built-in synthetic set on disk as a Darknet ``.data``, e.g. for
``darkcsp map`` after a quick training run."""
from __future__ import annotations

import argparse

from darkcsp.cli import arguments
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.errors import DarkcspError
from darkcsp.files import output_dir

def add_arguments(parser: argparse.ArgumentParser) -> None:
    spec = SyntheticSpec()
    parser.add_argument("out", help="folder for images/, train.txt, valid.txt, obj.names, "
                        "obj.data")
    parser.add_argument("--train", type=arguments.image_count, default=spec.train, help="training images")
    parser.add_argument("--valid", type=arguments.held_out_count, default=spec.valid, help="held-out images")
    parser.add_argument("--classes", type=arguments.shape_classes, default=spec.classes, help="1..5 shape classes")
    parser.add_argument("--size", type=arguments.synthetic_size, default=spec.size, help="image side in pixels")
    parser.add_argument("--seed", type=arguments.seed, default=spec.seed,
                        help="the seed (darkcsp train --seed) that made the training run's set")
    parser.add_argument("--ext", default=".png", help="image file extension")
    parser.add_argument("--exist-ok", action="store_true", help="write into an existing, "
                        "non-empty folder (its obj.data, lists and images of the same names "
                        "are replaced)")


def run(args: argparse.Namespace) -> int:
    """Write the set that ``darkcsp train`` (no --data, same counts and seed) trains on."""
    try:
        spec = SyntheticSpec(train=args.train, valid=args.valid, size=args.size,
                             classes=args.classes, seed=args.seed)
    except ValueError as exc:
        raise DarkcspError(str(exc)) from None
    output_dir(args.out, exist_ok=args.exist_ok, what="dataset folder")
    print(SyntheticShapes(spec).write(args.out, args.ext, progress=True))
    return 0
