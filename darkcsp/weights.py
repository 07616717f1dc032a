"""Darknet's ``.weights`` format: a version-aware header, then every layer's float32 blocks.

Header: int32 major, minor, revision; ``seen`` is uint64 when ``major*10 + minor >= 2`` (20-byte
header), uint32 otherwise (16 bytes); ``major > 1000 or minor > 1000`` marks connected-layer
weights stored transposed. The body is each layer's :meth:`weight_blocks` in index order.

Unlike Darknet (which silently loads half a file), a file whose size does not fit the network is
rejected with the bytes expected and found, and the model is left untouched. ``cutoff=N``
reads or writes only the first N layers, like ``darknet partial``.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO, Protocol, Sequence

import numpy as np
import torch

from darkcsp.errors import WeightsError
from darkcsp.files import FileRefused, atomic_write, regular_file
from darkcsp.layers.registry import Node, WeightBlock


@dataclass(frozen=True)
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def wide_seen(self) -> bool:
        return self.major * 10 + self.minor >= 2

    @property
    def size(self) -> int:
        return 20 if self.wide_seen else 16

    @property
    def transposed(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    def to_bytes(self) -> bytes:
        seen = struct.pack("<Q" if self.wide_seen else "<I", self.seen)
        return struct.pack("<iii", self.major, self.minor, self.revision) + seen

    @classmethod
    def from_bytes(cls, data: bytes, path: str) -> "WeightsHeader":
        if len(data) < 12:
            raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights "
                               "header (at least 16 expected)")
        major, minor, revision = struct.unpack_from("<iii", data)
        if min(major, minor, revision) < 0:
            raise WeightsError(f"{path}: the header version {major}.{minor}.{revision} is "
                               "negative: not a Darknet weights file")
        header = cls(major, minor, revision, 0)
        if len(data) < header.size:
            raise WeightsError(f"{path}: the header of version {major}.{minor} needs "
                               f"{header.size} bytes, the file has {len(data)}")
        seen, = struct.unpack_from("<Q" if header.wide_seen else "<I", data, 12)
        return cls(major, minor, revision, seen)


class WeightedModel(Protocol):
    """What the ``.weights`` reader and writer need of a model (:class:`darkcsp.Darknet` is one):
    its typed nodes, its tensors in ``.weights`` order and the header it was read with."""

    header: "WeightsHeader"

    @property
    def nodes(self) -> Sequence[Node]: ...

    def weight_blocks(self, cutoff: int | None = None) -> list[tuple[int, list[WeightBlock]]]: ...


def _layer_floats(model: WeightedModel, cutoff: int | None, loading: bool
                  ) -> list[tuple[int, list, int]]:
    """(layer index, blocks to read/write, float count) per layer up to ``cutoff``."""
    plan = []
    for index, blocks in model.weight_blocks(cutoff):
        opts = model.nodes[index].opts
        if loading and opts.dontload:
            continue
        if loading and opts.dontloadscales:
            blocks = [b for b in blocks if b.role != "bn"]
        plan.append((index, blocks, sum(b.tensor.numel() for b in blocks)))
    return plan


def expected_size(model: WeightedModel, cutoff: int | None = None,
                  header: WeightsHeader | None = None) -> int:
    """Bytes of a ``.weights`` file for ``model`` (as Darknet's save_weights writes it)."""
    header = header or model.header
    return header.size + 4 * sum(n for _, _, n in _layer_floats(model, cutoff, loading=False))


def _describe(model: WeightedModel, index: int) -> str:
    node = model.nodes[index]
    return f"layer {index} [{node.section.type}] ({node.section.source}:{node.section.line})"


# Floats checked per read while validating a file (1 MiB: the buffer stays in the CPU cache).
_CHECK_CHUNK = 1 << 18


def _read_exact(handle: BinaryIO, view: memoryview, path: str) -> None:
    """Fill ``view`` from ``handle``; a file that shrinks under us is an error."""
    done = 0
    while done < len(view):
        count = handle.readinto(view[done:])
        if not count:
            raise WeightsError(f"{path}: the file got shorter while it was being read (is "
                               "something writing it?)")
        done += count


def _read_up_to(handle: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    missing = size
    while missing:
        part = handle.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def _first_non_finite(handle: BinaryIO, count: int, path: str) -> int | None:
    """Index of the first NaN/inf among the next ``count`` floats, or None.

    Reads through a small reused buffer, so validating costs no copy of the whole file;
    ``max``/``min`` propagate NaN and expose inf, so one cheap pass finds any bad value.
    """
    buffer = np.empty(min(count, _CHECK_CHUNK), dtype="<f4")
    start = 0
    while start < count:
        chunk = buffer[:min(_CHECK_CHUNK, count - start)]
        _read_exact(handle, memoryview(chunk).cast("B"), path)
        if not (np.isfinite(chunk.max()) and np.isfinite(chunk.min())):
            return start + int(np.flatnonzero(~np.isfinite(chunk))[0])
        start += len(chunk)
    return None


def _read_block(handle: BinaryIO, block: WeightBlock, transposed: bool, path: str) -> None:
    """Read one block from ``handle`` into its tensor: straight into the tensor's memory when
    it is a contiguous little-endian float32 CPU tensor, else through a staging array."""
    tensor = block.tensor
    transpose = block.role == "fc" and transposed
    if (not transpose and tensor.device.type == "cpu" and tensor.dtype == torch.float32
            and tensor.is_contiguous() and sys.byteorder == "little"):
        target = tensor.detach().numpy().reshape(-1)
        _read_exact(handle, memoryview(target).cast("B"), path)
        torch.autograd.graph.increment_version(tensor)  # written behind autograd's back
        return
    values = np.empty(tensor.numel(), dtype="<f4")
    _read_exact(handle, memoryview(values).cast("B"), path)
    source = torch.from_numpy(values.astype(np.float32, copy=False))
    if transpose:
        rows, cols = tensor.shape
        source = source.view(cols, rows).t()
    tensor.copy_(source.view(tensor.shape))


def load_weights(model: WeightedModel, path: str | os.PathLike, cutoff: int | None = None) -> None:
    """Load ``path`` into ``model``; all or nothing.

    Raises :class:`WeightsError` if the file is shorter than the layers need (naming the layer
    where it runs out) or, without ``cutoff``, longer than they need, or if a float is NaN/inf.

    The sizes are checked from the file's length and the floats are checked for NaN/inf in a
    first pass, before any tensor is touched; a second pass then reads each block straight
    into its tensor (no whole-file copy), so loading costs about one read of the file.
    """
    path = str(path)
    try:
        if os.path.lexists(path):  # (a missing file: the OSError below says so)
            regular_file(path, "weights file")  # a fifo would hang the reader
    except FileRefused as exc:
        raise WeightsError(f"{path}: cannot read: {exc}") from None
    try:
        with open(path, "rb", buffering=0) as handle:
            _load_from(model, handle, path, cutoff)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _load_from(model: WeightedModel, handle: BinaryIO, path: str, cutoff: int | None) -> None:
    size = os.fstat(handle.fileno()).st_size
    header = WeightsHeader.from_bytes(_read_up_to(handle, 20), path)
    plan = _layer_floats(model, cutoff, loading=True)
    needed = header.size + 4 * sum(n for _, _, n in plan)
    if size < needed:
        offset = header.size
        for index, _, count in plan:
            if offset + 4 * count > size:
                raise WeightsError(
                    f"{path}: {size} bytes found, {needed} expected for "
                    f"{'the first ' + str(cutoff) + ' layers of ' if cutoff else ''}this cfg; "
                    f"the file runs out in {_describe(model, index)}, which needs bytes "
                    f"{offset}..{offset + 4 * count}. Nothing was loaded "
                    "(pass cutoff=N to load a backbone prefix)")
            offset += 4 * count
    if cutoff is None and size > needed:
        raise WeightsError(f"{path}: {size} bytes found, {needed} expected for this cfg "
                           f"({size - needed} bytes too many: a different cfg?). Nothing "
                           "was loaded")
    handle.seek(header.size)
    bad = _first_non_finite(handle, (needed - header.size) // 4, path)
    if bad is not None:
        raise WeightsError(f"{path}: float {bad} (byte {header.size + 4 * bad}) is not finite: "
                           "a corrupt file. Nothing was loaded")
    handle.seek(header.size)
    with torch.no_grad():
        for _, blocks, _ in plan:
            for block in blocks:
                _read_block(handle, block, header.transposed, path)
    model.header = header


def save_weights(model: WeightedModel, path: str | os.PathLike, cutoff: int | None = None) -> None:
    """Write ``model``'s weights (the first ``cutoff`` layers) with its header, atomically."""
    header = model.header
    parts = [np.frombuffer(header.to_bytes(), dtype=np.uint8)]
    with torch.no_grad():
        for _, blocks, _ in _layer_floats(model, cutoff, loading=False):
            for block in blocks:
                tensor = block.tensor.detach()
                if block.role == "fc" and header.transposed:
                    tensor = tensor.t()
                parts.append(tensor.to("cpu", torch.float32).contiguous().numpy()
                             .astype("<f4", copy=False).view(np.uint8).ravel())
    atomic_write(path, b"".join(p.tobytes() for p in parts))
