"""The Darknet dataset files the evaluation commands read: ``.data``, image lists, ``.names``,
YOLO label files.

A thin adapter, kept inside :mod:`darkcsp.evaluate` so that the metrics do not depend on the
training code; its rules are Darknet's (``read_data_cfg``, ``get_paths``,
``replace_image_to_label``, ``read_boxes``), so the same files give the same ground truth.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkcsp.errors import DarkcspError

# replace_image_to_label: directory swaps (first occurrence each, in this order) ...
_LABEL_DIRS: tuple[tuple[str, str], ...] = (
    ("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"), ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)
# ... then the image extension (only at the end of the path) becomes .txt
_IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp",
                                      ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF")


class DatasetError(DarkcspError, ValueError):
    """A ``.data`` file, list or label file that cannot be used."""


def read_data_cfg(path: str | os.PathLike) -> dict[str, str]:
    """``key=value`` lines of a ``.data`` file, as Darknet's ``read_data_cfg``: all whitespace is
    removed from a line, ``#``/``;`` lines are comments, and the FIRST occurrence of a key
    wins."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not value:
            raise DatasetError(f"{path}:{number}: expected key=value, got {raw.strip()!r}")
        options.setdefault(key, value)
    return options


def resolve(path: str, data_file: str | os.PathLike) -> Path:
    """``path`` as Darknet opens it (relative to the working directory); when it is not there,
    relative to the ``.data`` file's folder or the folder above it (a convenience: Darknet
    users run from the darknet root, where ``data/`` lives)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    base = Path(data_file).resolve().parent
    for folder in (base, base.parent):
        if (folder / candidate).exists():
            return folder / candidate
    return candidate


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty lines (``\\r`` stripped) of a list or ``.names`` file."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


def read_names(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (Darknet's ``get_labels``; trailing blank lines ignored)."""
    return read_lines(path)


def label_path(image_path: str) -> str:
    """Darknet's ``replace_image_to_label``: ``.../images/val2017/x.jpg`` ->
    ``.../labels/val2017/x.txt``, ``JPEGImages`` -> ``labels``, else the same folder."""
    out = image_path
    for old, new in _LABEL_DIRS:
        out = out.replace(old, new, 1)
    out = out.strip(" \t")
    for ext in _IMAGE_EXTENSIONS:
        if out.endswith(ext):
            out = out[: -len(ext)] + ".txt"
    return out


@dataclass
class Labels:
    """One label file: class ids (M,) and centre boxes (M, 4), relative to the image."""

    classes: np.ndarray
    boxes: np.ndarray
    missing: bool = False


def read_labels(path: str | os.PathLike) -> Labels:
    """A YOLO label file as Darknet's ``read_boxes`` reads it: groups of ``id x y w h`` until the
    first group that does not parse; a missing file means no objects (Darknet says so and goes
    on)."""
    try:
        tokens = Path(path).read_text(encoding="utf-8", errors="replace").split()
    except FileNotFoundError:
        return Labels(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), missing=True)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    classes: list[int] = []
    boxes: list[list[float]] = []
    for start in range(0, len(tokens) - 4, 5):
        group = tokens[start:start + 5]
        try:
            cls = int(group[0])
            box = [float(v) for v in group[1:]]
        except ValueError:
            break
        classes.append(cls)
        boxes.append(box)
    return Labels(np.asarray(classes, dtype=np.int64),
                  np.asarray(boxes, dtype=np.float32).reshape(-1, 4))


def image_id(path: str) -> int:
    """Darknet's COCO image id: ``atoi`` of the file name up to its first dot."""
    stem = os.path.basename(path.replace("\\", "/")).split(".", 1)[0]
    digits = ""
    for ch in stem.lstrip(" \t"):
        if ch.isdigit() or (not digits and ch in "+-"):
            digits += ch
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0
