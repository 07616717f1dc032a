"""Time ``model.load_weights`` against a bare ``np.fromfile`` of the same file.

Why: loading should cost about one read of the file (goal: at most 1.5x ``np.fromfile``), even
though darkcsp checks sizes and NaN/inf before touching the model. Both timings are medians of
``--repeats`` interleaved runs with the file in the page cache (after an untimed warm-up).

    python tools/bench_load.py [--cfg CFG] [--weights WEIGHTS] [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "models" / "yolov3-tiny"


def median_seconds(actions: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each action over ``repeats`` rounds, after one warm-up round.

    The actions alternate within each round, so background load on a shared machine hits
    them alike.
    """
    times: list[list[float]] = [[] for _ in actions]
    for round_ in range(repeats + 1):
        for action, spent in zip(actions, times):
            start = time.perf_counter()
            action()
            if round_:
                spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", type=Path, default=DEFAULT_DIR / "yolov3-tiny.cfg")
    parser.add_argument("--weights", type=Path, default=DEFAULT_DIR / "yolov3-tiny.weights")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from darkcsp.network import Darknet  # after the path tweak, so a checkout works uninstalled

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet(args.cfg)
    path = str(args.weights)
    size = args.weights.stat().st_size
    load, raw = median_seconds([lambda: model.load_weights(path),
                                lambda: np.fromfile(path, dtype=np.uint8)], args.repeats)
    print(f"file             {path} ({size / 1e6:.1f} MB)")
    print(f"np.fromfile      {raw * 1e3:8.2f} ms  ({size / raw / 1e9:.2f} GB/s)")
    print(f"load_weights     {load * 1e3:8.2f} ms  ({size / load / 1e9:.2f} GB/s)")
    print(f"ratio            {load / raw:8.2f}x  (goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
