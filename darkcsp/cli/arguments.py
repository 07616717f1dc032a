"""argparse types for every number and device a ``darkcsp`` command takes.

Each type checks its range when the command line is parsed, so a bad value is argparse's
one-line error (exit 2) before any work starts: ``--thresh -1`` and ``--thresh nan`` never reach
a detector, ``--workers -1`` never reaches a data loader, ``--device 0`` on a machine without CUDA
never reaches a training loop.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from darkcsp import budget


def _integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_range(minimum: int, maximum: int | None = None, name: str | None = None
              ) -> Callable[[str], int]:
    """An argparse type: an integer in ``minimum..maximum`` (no upper bound when None)."""
    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum or (maximum is not None and value > maximum):
            span = f"at least {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {span}")
        return value
    parse.__name__ = name or f"integer {minimum}..{'' if maximum is None else maximum}"
    return parse


def float_range(minimum: float, maximum: float | None = None, *, open_min: bool = False,
                name: str | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[minimum, maximum]`` (``(minimum, ...]`` when
    ``open_min``); nan and inf are refused."""
    def parse(text: str) -> float:
        value = _real(text)
        low_ok = value > minimum if open_min else value >= minimum
        if not low_ok or (maximum is not None and value > maximum):
            low = f"> {minimum:g}" if open_min else f">= {minimum:g}"
            span = low if maximum is None else f"{low} and <= {maximum:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {span}")
        return value
    parse.__name__ = name or "number"
    return parse


C_INT_MAX = 2 ** 31 - 1  # Darknet's counters are C ints
positive_int = int_range(1, C_INT_MAX, name="positive integer")
non_negative_int = int_range(0, C_INT_MAX, name="non-negative integer")
MAX_GENERATED_IMAGES = 1_000_000  # synthetic images are indexed in memory
image_count = int_range(1, MAX_GENERATED_IMAGES, name="image count")
held_out_count = int_range(0, MAX_GENERATED_IMAGES, name="held-out image count")
worker_count = int_range(0, 1024, name="worker count")
thread_count = int_range(1, 4096, name="thread count")
seed = int_range(0, 2 ** 32 - 1, name="seed")
probability = float_range(0.0, 1.0, name="probability")  # thresholds and IoU: [0, 1]
positive_float = float_range(0.0, open_min=True, name="positive number")


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N``, ``N`` (a CUDA index) or ``auto``, and only a device this
    machine has."""
    import torch

    name = text.strip()
    if name in ("", "auto", "cpu"):
        return name or "auto"
    index: int | None
    if name.isdigit():
        kind, index = "cuda", int(name)
    else:
        try:
            parsed = torch.device(name)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N or "
                                             "N)") from None
        kind, index = parsed.type, parsed.index
    if kind == "cpu":
        return name
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
        return name
    if kind != "cuda":
        raise argparse.ArgumentTypeError(f"{text!r}: darkcsp runs on cpu or cuda devices")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s) "
                                         f"(0..{count - 1})")
    return name


def memory_size(text: str) -> budget.MaxMemory:
    """``--max-memory``: ``8G``, ``512M``, ``1000000`` (bytes), ``none`` (no limit) or ``auto``
    (the default: :func:`darkcsp.budget.default_max_memory`)."""
    if text.strip().lower() == budget.AUTO:
        return budget.AUTO
    try:
        return budget.parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_exist_ok(parser: argparse.ArgumentParser, outputs: str) -> None:
    """``--exist-ok``: the command's ``outputs`` may replace existing files (never its inputs)."""
    parser.add_argument("--exist-ok", action="store_true",
                        help=f"let {outputs} replace an existing file (inputs are never replaced)")


def add_max_memory(parser: argparse.ArgumentParser) -> None:
    """``--max-memory`` for a command that builds a model (passed on as ``max_memory``)."""
    parser.add_argument("--max-memory", type=memory_size, default=budget.AUTO,
                        metavar="SIZE",
                        help="refuse a model that needs more memory than SIZE at batch 1 "
                        "(e.g. 8G, 512M, or 'none'; default: half the available memory)")
anchor_count = int_range(1, budget.MAX_ANCHORS, name="anchor count")
shape_classes = int_range(1, 5, name="shape classes")  # darkcsp.data.synthetic.SHAPES
synthetic_size = int_range(32, 8192, name="image size")


def add_precision(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """``--precision fp32|bf16|int8`` and ``--calib IMAGE...`` (int8 calibration images), and
    with ``backend`` a ``--backend`` whose default follows the precision (onnx for int8,
    torch otherwise); :func:`backend_for` resolves it."""
    if backend:
        parser.add_argument("--backend", choices=("torch", "opencv", "onnx"), default=None,
                            help="what runs the network (same pre-processing, decode and "
                                 "NMS): darkcsp's module (default; onnx for --precision "
                                 "int8), OpenCV 4.x DNN or onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="fp32 (default); bf16: torch backend on a CPU with native bf16 "
                             "(AVX512-BF16/AMX); int8: onnx backend, ONNX Runtime static "
                             "quantization, calibrated once and cached (~/.cache/darkcsp)")
    parser.add_argument("--calib", nargs="+", metavar="IMAGE", default=None,
                        help="int8 calibration images (about 20 real frames; default: "
                             "built-in synthetic shapes, which calibrate worse)")


def backend_for(args: argparse.Namespace) -> str:
    """The ``--backend`` given, else onnx for ``--precision int8`` and torch otherwise."""
    if args.backend is not None:
        return str(args.backend)
    return "onnx" if args.precision == "int8" else "torch"
