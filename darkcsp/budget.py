"""Budgets: the one place that decides how large a network, a count or an image may be.

A few bytes of cfg can ask for terabytes (``filters=100000000``, ``width=height=65536``) or for
billions of Python objects (``[yolo] num=2000000000``, ``[csp] blocks=2000000000``). darkcsp
checks every such request *before* it allocates anything, and refuses with a :class:`CfgError`
naming file:line instead of dying with a MemoryError, an allocator abort or a hang.

* **Counts** (checked while options are parsed and while dialect sections are lowered):
  at most :data:`MAX_LAYERS` layers after lowering, :data:`MAX_ANCHORS` anchors per head
  (``num=``), :data:`MAX_BLOCKS` blocks per ``[csp]``.
* **Memory** (checked by :meth:`darkcsp.graph.Graph.memory_estimate` + :func:`check_memory`
  before :class:`darkcsp.Darknet` makes its modules): parameters and buffers plus every layer's
  output at batch 1, in float32, must fit in ``max_memory`` bytes. The default is
  :data:`MEMORY_FRACTION` of the memory this process can get (``MemAvailable``, a cgroup limit
  and ``RLIMIT_AS``, whichever is smallest); ``darkcsp <cmd> --max-memory 8G`` or
  ``Darknet(cfg, max_memory=...)`` changes it (``None``: no limit). Models built on the
  ``meta`` device (``darkcsp summary``) allocate nothing and skip the memory check.
* **Images**: at most :data:`MAX_IMAGE_PIXELS` pixels (width x height), read from the file
  header before decoding (:mod:`darkcsp.images`); ``DARKCSP_MAX_IMAGE_PIXELS`` changes it.
"""
from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from typing import Union

from darkcsp.errors import CfgError

MAX_LAYERS = 20_000  # the largest published Darknet cfgs have about 1,000 layers
MAX_ANCHORS = 4_096  # anchors per head (num=); real cfgs use 3 to 9
MAX_BLOCKS = MAX_LAYERS  # blocks of one [csp]
MAX_CLASSES = 100_000  # classes of a dataset (ImageNet-22k has 21,841; Darknet's 9k tree 9,418)
MEMORY_FRACTION = 0.5  # of the memory available to this process
MAX_IMAGE_PIXELS = 1 << 28  # 16384 x 16384; a float32 RGB copy is 3 GiB
FLOAT_BYTES = 4

AUTO = "auto"
MaxMemory = Union[int, None, str]  # bytes, None (no limit), a size like "8G", or AUTO



def available_memory() -> int | None:
    """Bytes this process can still allocate: the smallest of ``MemAvailable`` (or the free
    physical pages), the cgroup v2 limit minus its usage, and ``RLIMIT_AS``; None if unknown."""
    candidates: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
                used = int(handle.read().strip() or 0)
            candidates.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            candidates.append(soft)
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def default_max_memory() -> int | None:
    """:data:`MEMORY_FRACTION` of :func:`available_memory` (None when it cannot be read)."""
    available = available_memory()
    return None if available is None else int(available * MEMORY_FRACTION)


def resolve_max_memory(value: MaxMemory = AUTO) -> int | None:
    """Bytes allowed for one model: ``value`` (bytes, a size like ``"8G"``, None for no limit),
    or for :data:`AUTO` :func:`default_max_memory`."""
    if isinstance(value, str):
        return default_max_memory() if value == AUTO else parse_bytes(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_memory must be a positive number of bytes or None, not {value!r}")
    return value


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int | None:
    """``"8G"``, ``"512MiB"``, ``"1.5g"``, ``"1000000"`` -> bytes (binary units);
    ``"none"``/``"off"`` -> None (no limit). ValueError otherwise."""
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 8G, 512M, 1000000, or 'none')")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError(f"{text!r}: the size must be at least 1 byte")
    return size


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


@dataclass(frozen=True)
class LayerCost:
    """One layer's share of a model's memory at batch 1 (floats)."""

    index: int
    source: str
    line: int
    section: str
    parameters: int  # parameters and buffers (BN statistics...)
    activations: int  # the layer's output (C x H x W)

    @property
    def floats(self) -> int:
        return self.parameters + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Floats a model needs at batch 1: the input, every parameter and buffer, every layer's
    output (all of them are kept by ``forward_layers``)."""

    input: int
    layers: tuple[LayerCost, ...]
    complete: bool = True  # False when the estimate stopped early (already over the limit)

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def activations(self) -> int:
        return self.input + sum(layer.activations for layer in self.layers)

    @property
    def bytes(self) -> int:
        return FLOAT_BYTES * (self.parameters + self.activations)


def check_memory(estimate: MemoryEstimate, max_memory: int | None, source: str = "<cfg>"
                 ) -> None:
    """A :class:`CfgError` at the costliest layer's section when ``estimate`` is over
    ``max_memory`` bytes (None: no limit)."""
    if max_memory is None or estimate.bytes <= max_memory:
        return
    counted = estimate.complete or estimate.parameters > 0
    floats = (f"{estimate.parameters:,} parameters, " if counted else "") + \
        f"{estimate.activations:,} activation floats"
    what = (f"needs {'' if estimate.complete else 'at least '}{format_bytes(estimate.bytes)} "
            f"at batch 1 ({floats}), more than the memory budget of {format_bytes(max_memory)} "
            "(--max-memory or Darknet(cfg, max_memory=...) to change it)")
    if not estimate.layers:
        raise CfgError(f"the network input {what}", source=source, line=1, section="net")
    worst = max(estimate.layers, key=lambda layer: layer.floats)
    share = (f"{worst.parameters:,} parameters, " if counted else "") + \
        f"{worst.activations:,} output floats"
    raise CfgError(f"the network {what}; the largest layer is layer {worst.index} ({share})",
                   source=worst.source, line=worst.line, section=worst.section)


def max_image_pixels() -> int:
    """:data:`MAX_IMAGE_PIXELS`, or ``DARKCSP_MAX_IMAGE_PIXELS`` when it is set."""
    text = os.environ.get("DARKCSP_MAX_IMAGE_PIXELS", "")
    try:
        value = int(text)
    except ValueError:
        return MAX_IMAGE_PIXELS
    return value if value > 0 else MAX_IMAGE_PIXELS
