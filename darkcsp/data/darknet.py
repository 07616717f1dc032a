"""Darknet's text data files, one definition per rule: the ``.data`` file, image lists,
``.names``, the images->labels path rule and label rows, plus :class:`DataReport` (what was
skipped). Training, ``darkcsp map``, ``darkcsp anchors``, ``darkcsp valid`` and detection all
read their data files through this module, so the same files give the same rows everywhere.

The rules, from Darknet's ``option_list.c`` / ``utils.c`` / ``data.c``:

* ``.data`` (``read_data_cfg``): each line has ``' '``, ``\\t``, ``\\r``, ``\\n`` removed
  everywhere (``strip``), so ``names = my names.txt`` names ``mynames.txt``; a line that then
  starts with ``#`` or ``;`` is a comment (there are no end-of-line comments); ``key=value`` is
  split at the first ``=``. ``option_insert`` appends to a list and ``option_find`` walks it
  from the front, so the FIRST line with a key wins. Darknet skips ``key=`` (empty value) with a
  message, as here (a warning); a line without ``=`` is an error here (Darknet would insert a
  key without a value that hides later lines with that key).
* lists and ``.names`` (``get_paths``/``get_labels``): one entry per line; darkcsp also drops
  blank lines and the whitespace around an entry.
* labels (``replace_image_to_label``): a few COCO/VOC folder swaps, the whitespace trim (spaces
  and tabs only), then the image extension (at the end only) becomes ``.txt``.
* label rows: ``class x y w h`` relative to the image. Darknet's ``fill_truth_detection``
  rejects a class id outside ``0..classes-1`` and a box with x or y outside (0, 1]; it clips w
  or h above 1 to 1. darkcsp applies that once, when the file is read, and also skips rows
  Darknet would misread (fewer than five numbers, a class id that is not an integer, a value
  that is NaN/inf, w or h <= 0); every skipped row is counted, and each file is reported once
  per kind with the line of its first such row.

Every text file may start with a UTF-8 byte order mark. ``.data`` and ``.names`` must be UTF-8;
lists are decoded as the file system does (undecodable bytes survive into the paths).
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from darkcsp.budget import MAX_CLASSES
from darkcsp.errors import DarkcspError
from darkcsp.files import regular_file

LOG = logging.getLogger("darkcsp.train")

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
_STRIP = str.maketrans("", "", " \t\r\n")  # Darknet's strip()
_INT = re.compile(r"[+-]?[0-9]+")
_BOM = b"\xef\xbb\xbf"
_LOGGED_FILES = 10  # files logged per kind of problem; the rest are counted


class DataError(DarkcspError, ValueError):
    """A data file (``.data``, list, ``.names``, label file, COCO JSON, data.yaml) that cannot
    be used at all."""


DatasetError = DataError  # the name the evaluation commands used


# --------------------------------------------------------------------------------------------
# what was skipped
# --------------------------------------------------------------------------------------------

@dataclass
class DataReport:
    """Problems found in the data: counts per kind (only kinds that occurred), each file
    logged once per kind (``file:line`` of its first such row where there is one)."""

    counts: Counter = field(default_factory=Counter)
    files: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, detail: str = "", line: int | None = None,
            count: int = 1) -> None:
        """Count ``count`` problems of ``kind`` in ``name``; log the first time ``name`` shows
        this kind (the first few files of a kind; the others are counted only)."""
        if count <= 0:
            return
        self.counts[kind] += count
        seen = self.files.setdefault(kind, set())
        if name in seen:
            return
        seen.add(name)
        if len(seen) <= _LOGGED_FILES:
            where = name if line is None else f"{name}:{line}"
            LOG.warning("%s: %s%s", where, kind.replace("_", " "),
                        f" ({detail})" if detail else "")
        if len(seen) == _LOGGED_FILES + 1:
            LOG.warning("more files with: %s (counted, not listed)", kind.replace("_", " "))

    @property
    def bad_images(self) -> int:
        return len(self.files.get("bad_image", ()))

    @property
    def bad_labels(self) -> int:
        return sum(n for k, n in self.counts.items() if k != "bad_image" and k != "missing_label")

    def summary(self) -> str:
        parts = [f"{kind.replace('_', ' ')}: {n}" for kind, n in sorted(self.counts.items())
                 if n > 0]
        return ", ".join(parts) if parts else "no data problems"


# --------------------------------------------------------------------------------------------
# text files
# --------------------------------------------------------------------------------------------

def read_text(path: str | os.PathLike, what: str, paths: bool = False) -> str:
    """A whole text file (a leading UTF-8 BOM dropped): strict UTF-8, or, for files of paths,
    decoded as the file system does."""
    try:
        data = regular_file(path, what).read_bytes()
    except OSError as exc:
        raise DataError(f"{what} {os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8", "surrogateescape" if paths else "strict")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {os.fspath(path)}: not UTF-8 text (byte {exc.start})") from None


def read_data_cfg(path: str | os.PathLike) -> dict[str, str]:
    """``key=value`` lines of a ``.data`` file by Darknet's rules (see the module notes): all
    whitespace removed, ``#``/``;`` comment lines, the FIRST line with a key wins."""
    text = read_text(path, ".data file")
    options: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.translate(_STRIP)
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"{os.fspath(path)}:{number}: expected key=value, got "
                            f"{raw.strip()!r}")
        if not value:
            LOG.warning("%s:%d: %s= has no value; the line is ignored (as Darknet)",
                        os.fspath(path), number, key)
            continue
        options.setdefault(key, value)
    return options


def data_int(options: dict[str, str], key: str, path: str | os.PathLike,
             default: int | None = None) -> int | None:
    """An integer option of a ``.data`` file (``default`` when absent); anything but an
    integer is an error naming the file and the key."""
    value = options.get(key)
    if value is None:
        return default
    if not _INT.fullmatch(value) or len(value) > 12:  # no 100,000-digit integers
        raise DataError(f"{os.fspath(path)}: {key}={value!r} is not an integer")
    return int(value)


def data_classes(options: dict[str, str], path: str | os.PathLike,
                 default: int | None = None) -> int | None:
    """``classes=`` of a ``.data`` file: an integer of at least 1, or ``default`` when absent."""
    classes = data_int(options, "classes", path, default)
    if classes is not None and classes <= 0:
        raise DataError(f"{os.fspath(path)}: classes={classes}: needs at least 1 class")
    if classes is not None and classes > MAX_CLASSES:
        raise DataError(f"{os.fspath(path)}: classes={classes}: more than the {MAX_CLASSES} "
                        "classes darkcsp accepts")
    return classes


def resolve(path: str, data_file: str | os.PathLike | None = None,
            *folders: str | os.PathLike) -> Path:
    """``path`` as Darknet opens it (relative to the working directory); when it is not there,
    relative to each of ``folders``, then the ``.data`` file's folder and the folder above it
    (a convenience: Darknet users run from the darknet root, where ``data/`` lives)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    bases = [Path(f) for f in folders]
    if data_file is not None:
        base = Path(data_file).resolve().parent
        bases += [base, base.parent]
    for folder in bases:
        if (folder / candidate).exists():
            return folder / candidate
    return candidate


def read_lines(path: str | os.PathLike, what: str = "list file") -> list[str]:
    """The entries of a list file: one per line, whitespace around them and blank lines
    dropped (file-system decoding: undecodable bytes survive into the paths)."""
    return [s for s in (line.strip() for line in read_text(path, what, True).split("\n")) if s]


def read_list(path: str | os.PathLike, data_file: str | os.PathLike | None = None) -> list[str]:
    """The image paths of a list file, each found by :func:`resolve` (also relative to the
    list's own folder)."""
    folder = Path(path).parent
    return [str(resolve(entry, data_file, folder)) for entry in read_lines(path, "image list")]


def read_names(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (Darknet's ``get_labels``), whitespace around a name and blank
    lines dropped; the file must be UTF-8."""
    return [s for s in (line.strip() for line in read_text(path, "names file").split("\n"))
            if s]


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------

def label_path(image_path: str) -> str:
    """Darknet's ``replace_image_to_label``: ``.../images/val2017/x.jpg`` ->
    ``.../labels/val2017/x.txt``, ``JPEGImages`` -> ``labels``, else the same folder (a plain
    ``images/`` folder is not swapped). Spaces and tabs around the path are trimmed."""
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

    @classmethod
    def from_rows(cls, rows: np.ndarray, missing: bool = False) -> Labels:
        rows = np.asarray(rows, np.float32).reshape(-1, 5)
        return cls(rows[:, 0].astype(np.int64), rows[:, 1:5].copy(), missing)

    @property
    def rows(self) -> np.ndarray:
        """(M, 5) float32 rows ``class x y w h``."""
        return np.concatenate([self.classes.astype(np.float32)[:, None],
                               self.boxes.astype(np.float32)], axis=1).reshape(-1, 5)


def _first(mask: np.ndarray, lines: np.ndarray | None) -> int | None:
    return int(lines[int(np.argmax(mask))]) if lines is not None and mask.any() else None


def check_labels(rows: np.ndarray, classes: int | None, name: str, report: DataReport,
                 lines: Sequence[int] | None = None) -> np.ndarray:
    """The rows Darknet would train on, as (k, 5) float32; the others are counted in
    ``report`` (``name`` and the line of the first bad row logged once per kind). ``classes``
    None: any non-negative integer class id is kept."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    if not len(rows):
        return np.zeros((0, 5), dtype=np.float32)
    at = np.asarray(lines) if lines is not None else None
    cls = rows[:, 0]
    with np.errstate(invalid="ignore"):
        bad_class = ~np.isfinite(cls) | (cls < 0) | (cls != np.floor(cls))
        if classes is not None:
            bad_class |= cls >= classes
    if bad_class.any():
        allowed = "integers >= 0" if classes is None else f"integers 0..{classes - 1}"
        report.add("bad_class_id", name, f"{int(bad_class.sum())} row(s), e.g. class id "
                   f"{cls[np.argmax(bad_class)]:g}; ids are {allowed}",
                   _first(bad_class, at), int(bad_class.sum()))
    keep = ~bad_class
    x, y, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    with np.errstate(invalid="ignore"):
        out = ~np.isfinite(rows).all(axis=1) | (x <= 0) | (x > 1) | (y <= 0) | (y > 1) | \
            (w <= 0) | (h <= 0)
    out &= keep
    if out.any():
        first = rows[np.argmax(out)]
        report.add("label_out_of_range", name,
                   f"{int(out.sum())} box(es), e.g. x={first[1]:g} y={first[2]:g} "
                   f"w={first[3]:g} h={first[4]:g}", _first(out, at), int(out.sum()))
    keep &= ~out
    big = keep & ((w > 1) | (h > 1))
    if big.any():
        report.add("label_clipped", name, f"{int(big.sum())} box(es) wider or taller than the "
                   "image, clipped to 1", _first(big, at), int(big.sum()))
        rows[big, 3] = np.minimum(rows[big, 3], 1)
        rows[big, 4] = np.minimum(rows[big, 4], 1)
    return rows[keep].astype(np.float32)


def read_labels(path: str | os.PathLike, classes: int | None = None,
                report: DataReport | None = None) -> Labels:
    """A YOLO/Darknet label file, read and checked by the rules of the module notes: one row
    ``class x y w h`` per line (further numbers on a line are ignored), bad rows skipped and
    counted in ``report``. A missing (or unreadable) file means no objects, as in Darknet, and
    is counted as ``missing_label``."""
    report = report if report is not None else DataReport()
    name = os.fspath(path)
    try:
        text = regular_file(path, "label file").read_bytes().decode("utf-8", "replace")
    except (OSError, DarkcspError) as exc:
        exists = os.path.lexists(name)
        report.add("missing_label", name, "" if not exists else
                   getattr(exc, "strerror", None) or str(exc))
        return Labels.from_rows(np.zeros((0, 5)), missing=True)
    rows: list[list[float]] = []
    lines: list[int] = []
    malformed: list[int] = []
    for number, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts[:5]]
        except ValueError:
            values = []
        if len(values) != 5:
            malformed.append(number)
            continue
        rows.append(values)
        lines.append(number)
    if malformed:
        report.add("malformed_label_line", name, f"{len(malformed)} line(s) are not "
                   "'class x y w h'", malformed[0], len(malformed))
    return Labels.from_rows(check_labels(np.asarray(rows, np.float64).reshape(-1, 5), classes,
                                         name, report, lines))


def read_label_file(path: str | os.PathLike, classes: int | None,
                    report: DataReport) -> np.ndarray:
    """:func:`read_labels` as (k, 5) float32 rows (what the training sources hold)."""
    return read_labels(path, classes, report).rows


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
