"""A training run on disk: its folder, its lock, and its checkpoint as plain data.

Why it looks like this:

* a checkpoint is untrusted input like any ``.pt``: it is read with ``weights_only=True``
  (:func:`darkcsp.checkpoint.read_payload`) and so holds only tensors and plain types. The run's
  settings (:class:`~darkcsp.train.trainer.TrainConfig`) and its data spec are stored as plain
  dicts, lists and strings, and turned back into objects on load;
* ``--resume`` is the same run: data, cfg text, classes, anchors, size and every setting come
  from the checkpoint. A setting given again must agree with it; only what does not change
  the run's result may differ (:data:`MAY_CHANGE`: ``--max-batches``, ``--device``,
  ``--workers``, ``--time-limit``, progress and AMP flags...). A value equal to the option's
  default cannot be told from "not given" and is simply replaced by the checkpoint's;
* ``--precision`` (bf16 autocast or fp32) may change on resume: it changes the arithmetic's
  rounding, not what is trained (weights, optimizer and loss stay fp32), so a bf16 run goes on
  in fp32 on a machine without bf16. Not given (``auto``), the checkpoint's value stands
  (:data:`KEPT_UNLESS_GIVEN`);
* a new run gets a new numbered folder (``runs/train/NAME``, ``NAME2``...); ``--out`` must
  not hold files unless ``--exist-ok``; outputs never replace the run's inputs.

Checkpoint keys (``format = "darkcsp-train"``, ``version = 2``): ``model`` (state_dict),
``optimizer``, ``scaler``, ``ema`` (``{"shadow": [tensors] | None}``), ``iteration``, ``seen``,
``history`` (lists of numbers; ``map`` a list of ``[iteration, value]``), ``best_map``,
``last_map``, ``avg_loss``, ``settings`` (effective batch, subdivisions, size, seed,
max_batches, name), ``run`` (every TrainConfig field, plain), ``data`` (the data spec:
``{"kind": "synthetic", "synthetic": {...}}`` or ``{"kind": "file", "path", "valid"}``),
``cfg_text`` (the cfg as trained), ``cfg`` (its path) and ``data_report`` (problem counts).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch

from darkcsp.checkpoint import TRAIN_FORMAT, read_payload
from darkcsp.errors import DarkcspError, WeightsError

TRAIN_VERSION = 2
RUNS_ROOT = Path("runs") / "train"
# Settings that may differ on --resume: they change where or how fast, not what is trained
# (max_batches only extends or shortens the schedule the cfg text already holds).
MAY_CHANGE = frozenset({"max_batches", "device", "workers", "progress", "time_limit", "amp",
                        "out", "resume", "sync_bn", "exist_ok", "threads", "max_memory",
                        "precision"})
# May-change settings that a resume takes from the checkpoint when not given (the default)
KEPT_UNLESS_GIVEN = frozenset({"precision"})
PATH_FIELDS = ("data", "valid", "weights")
_INT64 = 2 ** 63
HISTORY_KEYS = ("iteration", "loss", "avg_loss", "lr", "seconds", "map")
RUN_FILES = ("last.pt", "best.pt")


def plain_data(value: Any) -> Any:
    """``value`` as tensors-free plain data: dataclasses -> dicts, tuples/paths/numpy scalars
    -> lists/str/numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


def config_to_plain(config: Any) -> dict[str, Any]:
    """A TrainConfig as plain data, the paths it reads made absolute (a resume may start in
    another working folder)."""
    plain = plain_data(config)
    for key in PATH_FIELDS + ("cfg",):
        if isinstance(plain.get(key), str):
            plain[key] = _absolute(plain[key])
    return plain


def data_spec(config: Any) -> dict[str, Any]:
    """What the run trains on, as stored in the checkpoint."""
    if config.data is None:
        return {"kind": "synthetic", "synthetic": plain_data(config.synthetic),
                "valid": _absolute(config.valid)}
    return {"kind": "file", "path": _absolute(config.data), "valid": _absolute(config.valid)}


def describe_data(spec: dict[str, Any]) -> str:
    if spec.get("kind") == "synthetic":
        return "the built-in synthetic set"
    return str(spec.get("path"))


# -- reading a checkpoint ----------------------------------------------------------------------

def _is_int(value: Any, low: int = 0, high: int = _INT64) -> bool:
    return type(value) is int and low <= value < high


def read_train_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checked payload of a training checkpoint (``last.pt``/``best.pt``); WeightsError
    for anything else. No pickled code runs, whatever the file holds."""
    path = os.fspath(path)
    payload = read_payload(path, "darkcsp training checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_FORMAT:
        hint = " (a model .pt: use it with --weights after converting to .weights)" if \
            isinstance(payload, dict) and payload.get("format") == "darkcsp" else ""
        raise WeightsError(f"{path}: not a darkcsp training checkpoint (no "
                           f"format={TRAIN_FORMAT!r} entry){hint}")
    if payload.get("version") != TRAIN_VERSION:
        raise WeightsError(f"{path}: training checkpoint version {payload.get('version')!r}; "
                           f"this darkcsp resumes version {TRAIN_VERSION}")

    def bad(key: str, what: str) -> WeightsError:
        return WeightsError(f"{path}: {key!r} {what}; not a usable training checkpoint")

    model = payload.get("model")
    if not isinstance(model, dict) or not model or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise bad("model", "is not a dict of tensors")
    optimizer = payload.get("optimizer")
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        raise bad("optimizer", "is not an optimizer state")
    for entry in optimizer["state"].values():
        tensors = entry.values() if isinstance(entry, dict) else [entry]
        for value in tensors:
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                raise bad("optimizer", f"holds a {value.dtype} tensor (float expected)")
    if not isinstance(payload.get("scaler", {}), dict):
        raise bad("scaler", "is not a dict")
    ema = payload.get("ema", {})
    shadow = ema.get("shadow") if isinstance(ema, dict) else 0
    if not isinstance(ema, dict) or not (shadow is None or (isinstance(shadow, list) and all(
            isinstance(t, torch.Tensor) and t.is_floating_point() for t in shadow))):
        raise bad("ema", "is not {'shadow': None or a list of float tensors}")
    for key in ("iteration", "seen"):
        if not _is_int(payload.get(key)):
            raise bad(key, f"must be an integer 0..2**63-1, got {payload.get(key)!r}")
    for key in ("best_map", "last_map", "avg_loss"):
        if type(payload.get(key)) not in (int, float):
            raise bad(key, f"must be a number, got {payload.get(key)!r}")
    history = payload.get("history")
    if not isinstance(history, dict) or any(not isinstance(history.get(k), list)
                                            for k in HISTORY_KEYS):
        raise bad("history", f"must hold the lists {', '.join(HISTORY_KEYS)}")
    if not isinstance(payload.get("cfg_text"), str):
        raise bad("cfg_text", "is not cfg text")
    settings = payload.get("settings")
    if not isinstance(settings, dict):
        raise bad("settings", "is not a dict")
    for key in ("batch", "subdivisions", "max_batches"):
        if not _is_int(settings.get(key), 1, 2 ** 31):
            raise bad("settings", f"{key} must be a positive integer, got "
                      f"{settings.get(key)!r}")
    if not isinstance(settings.get("name"), str) or not settings["name"]:
        raise bad("settings", "has no run name")
    if not isinstance(payload.get("run"), dict) or not isinstance(payload.get("data"), dict):
        raise bad("run", "and 'data' must be dicts (the run's settings and data spec)")
    if payload["data"].get("kind") not in ("synthetic", "file"):
        raise bad("data", f"kind {payload['data'].get('kind')!r} is not synthetic or file")
    return payload


# -- restoring the run ---------------------------------------------------------------------------

def _flag(name: str) -> str:
    return {"overrides": "--set", "learning_rate": "--learning-rate"}.get(
        name, "--" + name.replace("_", "-"))


def _same_path(given: Any, stored: Any) -> bool:
    if not isinstance(given, (str, os.PathLike)) or not isinstance(stored, str):
        return False
    if _absolute(os.fspath(given)) == stored:
        return True
    try:
        return os.path.samefile(given, stored)
    except OSError:
        return False


def _equal(given: Any, stored: Any) -> bool:
    if isinstance(given, float) or isinstance(stored, float):
        try:
            return math.isclose(float(given), float(stored), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(given, (int, str)) and isinstance(stored, (int, str)) \
            and not isinstance(given, bool) and not isinstance(stored, bool):
        return str(given).strip().lower() == str(stored).strip().lower()
    return plain_data(given) == stored


def restore_config(current: Any, payload: dict[str, Any], path: str) -> Any:
    """The TrainConfig of the run ``payload`` continues: the checkpoint's settings, with only
    the :data:`MAY_CHANGE` ones taken from ``current``. A setting of ``current`` that differs
    from its default and from the checkpoint is a DarkcspError naming every such flag."""
    cls = type(current)
    stored = payload["run"]
    settings = payload["settings"]
    # values the stored run also reached in effect (e.g. --batch 8 on a run that took 8 from
    # its cfg): giving those again is no contradiction
    effective = {"batch": settings.get("batch"), "subdivisions": settings.get("subdivisions"),
                 "size": settings.get("size"), "seed": settings.get("seed"),
                 "learning_rate": settings.get("learning_rate"),
                 "burn_in": settings.get("burn_in"), "classes": settings.get("classes")}
    conflicts: list[str] = []
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = field.name
        given = getattr(current, name)
        if name in MAY_CHANGE or name not in stored:
            values[name] = given
            if name in KEPT_UNLESS_GIVEN and name in stored and \
                    field.default is not dataclasses.MISSING and given == field.default:
                values[name] = stored[name]
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        saved = stored[name]
        if name == "cfg":
            values[name] = saved
            if not _cfg_matches(given, saved, settings["name"], payload["cfg_text"]):
                conflicts.append(f"cfg {os.fspath(given)!r} (the checkpoint is a run of "
                                 f"{saved!r})")
            continue
        if name == "synthetic":
            values[name] = _synthetic(type(given), saved) if isinstance(saved, dict) else given
            if isinstance(saved, dict) and dataclasses.is_dataclass(given):
                base = type(given)()
                for sub in dataclasses.fields(given):
                    mine = getattr(given, sub.name)
                    if sub.name != "seed" and mine != getattr(base, sub.name) \
                            and sub.name in saved and not _equal(mine, saved[sub.name]):
                        conflicts.append(f"--synthetic-{sub.name.replace('_', '-')} {mine} "
                                         f"(checkpoint: {saved[sub.name]})")
            continue
        values[name] = tuple(saved) if isinstance(default, tuple) and isinstance(saved, list) \
            else saved
        if given is None or (default is not dataclasses.MISSING and _equal(given, default)
                             and type(given) is type(default)):
            continue  # not given: the checkpoint's value stands
        agrees = _same_path(given, saved) if name in PATH_FIELDS else (
            _equal(given, saved) or (name in effective and effective[name] is not None
                                     and _equal(given, effective[name])))
        if not agrees:
            shown = "none" if saved is None else saved
            if name == "overrides":
                conflicts.append(f"--set {' '.join(given)} (checkpoint: "
                                 f"{' '.join(saved) or 'none'})")
            else:
                conflicts.append(f"{_flag(name)} {given} (checkpoint: {shown})")
    if conflicts:
        raise DarkcspError(
            f"--resume {path}: a resumed run keeps its own settings, and these contradict it: "
            f"{'; '.join(conflicts)}. Drop them, or start a new run (only "
            "--max-batches, --device, --workers, --threads, --time-limit, --precision and "
            "progress/AMP flags may change)")
    return cls(**values)


def _synthetic(kind: type, saved: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    try:
        return kind(**{k: v for k, v in saved.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"the checkpoint's synthetic data spec is invalid: {exc}") from None


def _cfg_matches(given: Any, saved: str, name: str, cfg_text: str) -> bool:
    """The CFG argument of a resumed run names the run's cfg: the same file, one with the same
    name (e.g. OUT/<name>.cfg), or a file holding the trained cfg text."""
    if given is None or _same_path(given, saved) or Path(os.fspath(given)).stem == name:
        return True
    try:
        return Path(given).read_text(encoding="utf-8", errors="replace") == cfg_text
    except OSError:
        return False


# -- folders --------------------------------------------------------------------------------

def run_folders(name: str, root: Path = RUNS_ROOT) -> list[Path]:
    """``root/name``, ``root/name2``... that exist."""
    found = []
    if root.is_dir():
        for child in root.iterdir():
            tail = child.name[len(name):]
            if child.is_dir() and child.name.startswith(name) and (tail == "" or (
                    tail.isdigit() and not tail.startswith("0") and int(tail) >= 2)):
                found.append(child)
    return found


def latest_checkpoint(name: str, root: Path = RUNS_ROOT) -> Path:
    """The newest ``last.pt`` among the run folders of ``name``; it must be a valid training
    checkpoint (a file dropped there is checked like any other)."""
    candidates = [folder / "last.pt" for folder in run_folders(name, root)
                  if (folder / "last.pt").is_file()]
    if not candidates:
        raise DarkcspError(f"--resume: no {root / name}*/last.pt to resume; pass the "
                           "checkpoint (--resume PATH) or the run folder (--out)")
    latest = max(candidates, key=lambda p: p.stat().st_mtime)
    read_train_checkpoint(latest)  # a clear error now if it is not one
    return latest


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a training run's files."""
    return any((folder / name).exists() for name in RUN_FILES) or (folder / "backup").is_dir()
