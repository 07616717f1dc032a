"""Model files: a darkcsp ``.pt`` (save/load), the one model loader for ``.weights`` or ``.pt``,
and conversion between the two formats.

``darkcsp convert CFG IN OUT`` picks the direction from the extensions: ``.weights -> .pt``,
``.pt -> .weights``, and ``.weights -> .weights`` / ``.pt -> .pt`` re-saves (with ``--cutoff N``
a ``.weights`` output keeps only the first N layers, like ``darknet partial``).

The ``.pt`` is a plain dict that ``torch.load(path, weights_only=True)`` reads without running
any pickled code::

    {"format": "darkcsp", "version": 1, "cfg": <cfg text>,
     "header": [major, minor, revision, seen], "state_dict": model.state_dict()}

It carries the cfg so a checkpoint is self-describing, and the Darknet header so a
``.weights -> .pt -> .weights`` round trip is byte-identical.

Every ``.pt`` darkcsp reads (this one and the training checkpoints, :func:`read_payload`) is
untrusted input: it is loaded with ``weights_only=True`` (no pickled code ever runs), any failure
to load is a :class:`WeightsError`, every tensor must be a plain dense CPU tensor, the stored cfg
is parsed as text (never opened as a path) and the state's dtypes must be the model's (an int,
half or complex tensor is refused, not cast).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.errors import WeightsError
from darkcsp.files import FileRefused, atomic_write_with, output_file, regular_file
from darkcsp.network import Darknet
from darkcsp.weights import WeightsHeader

PT_FORMAT = "darkcsp"
PT_VERSION = 1
TRAIN_FORMAT = "darkcsp-train"  # a training checkpoint (darkcsp.train.trainer), not a model
EXTENSIONS = (".weights", ".pt")
_MAX_LISTED = 8  # differences named in an error message before "... and N more"

# What a corrupt or foreign file makes torch.load raise (its unpickler asserts on some
# malformed records, hence AssertionError). Anything else it raises on untrusted bytes is
# turned into a WeightsError as well (see read_payload).
_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError,
                TypeError, AttributeError, IndexError, AssertionError, zipfile.BadZipFile,
                UnicodeDecodeError)
_INT32 = 2 ** 31


def read_payload(path: str | os.PathLike, what: str = "PyTorch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure a WeightsError, and
    every tensor inside checked to be a plain dense tensor (no sparse, meta or quantized
    layouts). The one reader of ``.pt`` files in darkcsp."""
    path = os.fspath(path)
    try:
        if os.path.lexists(path):  # (a missing file: the OSError below says so)
            regular_file(path, what)  # a fifo would hang torch.load
    except FileRefused as exc:
        raise WeightsError(f"{path}: cannot read: {exc}") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except MemoryError as exc:
        raise WeightsError(f"{path}: not a readable {what} (it asks for more memory than "
                           "there is)") from exc
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: every failure is the file's
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise WeightsError(f"{path}: not a readable {what} ({detail})") from exc
    _check_tensors(payload, path)
    return payload


def _check_tensors(obj: Any, path: str, where: str = "", depth: int = 0) -> None:
    """WeightsError for a tensor that is not dense, strided and on the CPU anywhere in ``obj``."""
    if depth > 64:
        raise WeightsError(f"{path}: nested too deeply to be a darkcsp checkpoint")
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_sparse or obj.is_quantized or obj.is_meta \
                or obj.device.type != "cpu":
            raise WeightsError(f"{path}: {where or 'a tensor'} is a {obj.layout} / "
                               f"{obj.device.type} tensor; a checkpoint holds dense CPU "
                               "tensors only")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_tensors(value, path, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _check_tensors(value, path, f"{where}[{index}]", depth + 1)


def save_pt(model: Darknet, path: str | os.PathLike) -> None:
    """Write ``model`` as a darkcsp ``.pt`` (cfg text, Darknet header, state_dict), atomically."""
    header = model.header
    state = {name: tensor.detach().to("cpu") for name, tensor in model.state_dict().items()}
    payload = {"format": PT_FORMAT, "version": PT_VERSION, "cfg": model.cfg_text,
               "header": [header.major, header.minor, header.revision, header.seen],
               "state_dict": state}
    # Streamed into the temporary file, so a 1 GB model is never held twice in memory.
    atomic_write_with(path, lambda handle: torch.save(payload, handle))


def _read_pt(path: str) -> dict[str, Any]:
    """The checked payload of a darkcsp ``.pt``; WeightsError for anything else."""
    payload = read_payload(path)
    if isinstance(payload, dict) and payload.get("format") == TRAIN_FORMAT:
        raise WeightsError(f"{path}: a darkcsp training checkpoint (for train --resume), not "
                           "a model file; use the run's <name>.cfg with its backup/*.weights")
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT:
        raise WeightsError(f"{path}: not a darkcsp checkpoint (no format={PT_FORMAT!r} entry)")
    if payload.get("version") != PT_VERSION:
        raise WeightsError(f"{path}: darkcsp checkpoint version {payload.get('version')!r}; "
                           f"this darkcsp reads version {PT_VERSION}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{path}: 'state_dict' is not a dict of tensors")
    header = payload.get("header")
    if not (isinstance(header, (list, tuple)) and len(header) == 4
            and all(type(v) is int and v >= 0 for v in header)):
        raise WeightsError(f"{path}: 'header' must be [major, minor, revision, seen] "
                           f"(non-negative integers), got {header!r}")
    check_header(header, path)
    if not isinstance(payload.get("cfg"), str):
        raise WeightsError(f"{path}: 'cfg' is not cfg text")
    return payload


def check_header(header: list[int] | tuple[int, ...], path: str) -> None:
    """WeightsError for a Darknet header whose numbers do not fit its binary form (int32
    major, minor, revision; ``seen`` uint64, or uint32 before version 0.2)."""
    major, minor, revision, seen = header
    if any(not 0 <= v < _INT32 for v in (major, minor, revision)):
        raise WeightsError(f"{path}: header version {major}.{minor}.{revision} does not fit "
                           "Darknet's int32 fields")
    limit = 2 ** 64 if WeightsHeader(major, minor, revision).wide_seen else 2 ** 32
    if not 0 <= seen < limit:
        raise WeightsError(f"{path}: header seen={seen} does not fit Darknet's "
                           f"{'uint64' if limit == 2 ** 64 else 'uint32'} field")


def cfg_from_text(text: str, path: str) -> Darknet:
    """The model of a cfg stored in a checkpoint: parsed as text, never opened as a path."""
    from darkcsp.config.reader import parse_cfg
    from darkcsp.errors import CfgError
    try:
        sections = parse_cfg(text, f"{path} (stored cfg)")
    except CfgError as exc:
        raise WeightsError(f"{path}: its stored 'cfg' is not cfg text ({exc})") from None
    return Darknet(sections)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def check_state(model: Darknet, state: dict[str, torch.Tensor], path: str) -> None:
    """WeightsError naming every key that is missing, unexpected or of another shape/dtype, or
    a tensor holding NaN/inf; nothing is loaded before this passes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    different = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in state and state[k].shape != own[k].shape]
    retyped = [f"{k} {state[k].dtype} vs {own[k].dtype}" for k in own
               if k in state and state[k].dtype != own[k].dtype]
    problems = []
    if retyped:
        problems.append(f"dtypes differ (file vs model; darkcsp never casts): "
                        f"{_listing(retyped)}")
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if different:
        problems.append(f"shapes differ (file vs cfg): {_listing(different)}")
    if problems:
        raise WeightsError(f"{path}: the state_dict does not fit this cfg: "
                           f"{'; '.join(problems)}. Nothing was loaded")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path}: {key} holds NaN or inf: a corrupt file. Nothing was "
                               "loaded")


def load_pt(model: Darknet | None, path: str | os.PathLike) -> Darknet:
    """Load a darkcsp ``.pt`` into ``model`` (or into a new model built from the cfg it
    carries, when ``model`` is None) and return the model; all or nothing."""
    path = str(path)
    payload = _read_pt(path)
    if model is None:
        model = cfg_from_text(payload["cfg"], path)
    state = payload["state_dict"]
    check_state(model, state, path)
    model.load_state_dict(state, strict=True)
    model.header = WeightsHeader(*payload["header"])
    return model


def _kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise WeightsError(f"{path}: unknown extension {suffix or '(none)'!r}; use .weights or "
                           ".pt")
    return suffix


def convert(cfg: str | os.PathLike, source: str | os.PathLike, target: str | os.PathLike,
            cutoff: int | None = None, max_memory: MaxMemory = AUTO) -> Darknet:
    """Read ``source`` into the model of ``cfg`` and write ``target``; the formats come from the
    extensions. Returns the model."""
    source_kind, target_kind = _kind(str(source)), _kind(str(target))
    output_file(target, [cfg, source])  # never replaces an input, checked before the work
    if cutoff is not None and (target_kind != ".weights" or cutoff < 0):
        raise WeightsError(f"{target}: cutoff={cutoff}: a cutoff is a layer count >= 0 and "
                           "applies to a .weights output only")
    model = Darknet(cfg, max_memory=max_memory)
    if source_kind == ".weights":
        model.load_weights(source)
    else:
        load_pt(model, source)
    try:
        if target_kind == ".weights":
            model.save_weights(target, cutoff)
        else:
            save_pt(model, target)
    except OSError as exc:
        raise WeightsError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    return model


def load_model(cfg: str | os.PathLike, weights: str | os.PathLike, fuse: bool = True,
               max_memory: MaxMemory = AUTO) -> Darknet:
    """The model of ``cfg`` with ``weights`` (a Darknet ``.weights`` or a darkcsp ``.pt``), in
    eval mode and, with ``fuse``, BN folded into the convs as Darknet runs inference. This is
    the one loader behind ``detect``, ``map``, ``valid`` and :class:`darkcsp.Detector`;
    ``max_memory``: see :class:`darkcsp.Darknet`."""
    model = Darknet(str(cfg), max_memory=max_memory)
    if _kind(str(weights)) == ".pt":
        load_pt(model, weights)
    else:
        model.load_weights(weights)
    if fuse:
        model.fuse()
    return model.eval()
