"""Detection data sources: Darknet ``.data`` files, COCO JSON, YOLO ``data.yaml``, the embedded
synthetic set.

Why one small interface (:class:`DetectionSource`): the loader, the augmentations and the mAP
helper only need "how many images, load image i, the labels of image i, a name for image i".
Label files are read and checked once, up front, so that a bad row is reported once (with its
file name), skipped and counted, never discovered mid-epoch. Images are decoded lazily; one that
cannot be decoded is reported once, replaced by another image and counted (see
:class:`DataReport`).

Label rows are ``class x y w h`` relative to the image. A row is skipped (and counted) when it
is malformed, its class id is outside ``0..classes-1``, or its box is outside the image the
way Darknet's ``fill_truth_detection`` rejects it (x or y not in (0, 1], w or h <= 0);
w or h above 1 is clipped to 1 as Darknet does (also counted).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np
import yaml

from darkcsp.errors import DarkcspError
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec

LOG = logging.getLogger("darkcsp.train")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


class DataError(DarkcspError):
    """A data file (``.data``, list, JSON, YAML) cannot be used at all."""


@dataclass
class DataReport:
    """Problems found in the data: counts per kind, each file reported (logged) once."""

    counts: Counter = field(default_factory=Counter)
    files: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, detail: str = "") -> None:
        """Count one problem of ``kind`` in ``name``; log it the first time ``name`` shows
        this kind."""
        self.counts[kind] += 1
        seen = self.files.setdefault(kind, set())
        if name not in seen:
            seen.add(name)
            LOG.warning("%s: %s%s", name, kind.replace("_", " "), f" ({detail})" if detail else "")

    @property
    def bad_images(self) -> int:
        return len(self.files.get("bad_image", ()))

    @property
    def bad_labels(self) -> int:
        return sum(n for k, n in self.counts.items() if k != "bad_image" and k != "missing_label")

    def summary(self) -> str:
        if not self.counts:
            return "no data problems"
        return ", ".join(f"{kind.replace('_', ' ')}: {n}"
                         for kind, n in sorted(self.counts.items()))


class DetectionSource(Protocol):
    """What the training loader needs from a dataset."""

    names: list[str]

    def __len__(self) -> int: ...

    def image(self, index: int) -> np.ndarray | None:
        """uint8 RGB (H, W, 3) or None if it cannot be decoded."""

    def labels(self, index: int) -> np.ndarray:
        """(k, 5) float32 rows class, x, y, w, h (checked, relative to the image)."""

    def name(self, index: int) -> str:
        """A file name (or synthetic id) for reports."""


def read_image(path: str) -> np.ndarray | None:
    """uint8 RGB image, or None if OpenCV cannot decode it (missing, truncated, not an image)."""
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None or data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_labels(rows: np.ndarray, classes: int, name: str, report: DataReport) -> np.ndarray:
    """Keep the rows Darknet would train on; count and report the others."""
    if rows.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    rows = rows.astype(np.float32).reshape(-1, 5)
    keep = np.ones(len(rows), dtype=bool)
    cls = rows[:, 0]
    bad_class = (cls < 0) | (cls >= classes) | (cls != np.floor(cls))
    for c in np.unique(cls[bad_class]):
        report.add("bad_class_id", name, f"class id {c:g} is not in 0..{classes - 1}")
    report.counts["bad_class_id"] += max(int(bad_class.sum()) - len(np.unique(cls[bad_class])), 0)
    keep &= ~bad_class
    x, y, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    finite = np.isfinite(rows).all(axis=1)
    out = ~finite | (x <= 0) | (x > 1) | (y <= 0) | (y > 1) | (w <= 0) | (h <= 0)
    out &= keep
    if out.any():
        first = rows[np.argmax(out)]
        report.add("label_out_of_range", name,
                   f"{int(out.sum())} box(es), e.g. x={first[1]:g} y={first[2]:g} "
                   f"w={first[3]:g} h={first[4]:g}")
        report.counts["label_out_of_range"] += int(out.sum()) - 1
    keep &= ~out
    big = keep & ((w > 1) | (h > 1))
    if big.any():
        report.add("label_clipped", name, f"{int(big.sum())} box(es) wider or taller than the "
                   "image, clipped to 1")
        rows[big, 3] = np.minimum(rows[big, 3], 1)
        rows[big, 4] = np.minimum(rows[big, 4], 1)
    return rows[keep]


def read_label_file(path: str, classes: int, report: DataReport) -> np.ndarray:
    """Rows of a YOLO/Darknet label file, checked (a missing file means no objects, as in
    Darknet, and is counted)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        report.add("missing_label", path)
        return np.zeros((0, 5), dtype=np.float32)
    except OSError as exc:
        report.add("missing_label", path, exc.strerror or str(exc))
        return np.zeros((0, 5), dtype=np.float32)
    rows = []
    bad = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts[:5]]
        except ValueError:
            values = []
        if len(values) != 5:
            bad += 1
            continue
        rows.append(values)
    if bad:
        report.add("malformed_label_line", path, f"{bad} line(s) are not 'class x y w h'")
        report.counts["malformed_label_line"] += bad - 1
    return check_labels(np.asarray(rows, dtype=np.float32).reshape(-1, 5), classes, path, report)


def image_to_label_path(path: str) -> str:
    """Darknet's ``replace_image_to_label``: a few COCO/VOC folder swaps, then the image
    extension becomes ``.txt`` (labels otherwise live beside the images)."""
    out = path
    for orig, rep in (("/images/train2017/", "/labels/train2017/"),
                      ("/images/val2017/", "/labels/val2017/"),
                      ("/JPEGImages/", "/labels/"),
                      ("\\images\\train2017\\", "\\labels\\train2017\\"),
                      ("\\images\\val2017\\", "\\labels\\val2017\\"),
                      ("\\images\\train2014\\", "\\labels\\train2014\\"),
                      ("\\images\\val2014\\", "\\labels\\val2014\\"),
                      ("/images/train2014/", "/labels/train2014/"),
                      ("/images/val2014/", "/labels/val2014/"),
                      ("\\JPEGImages\\", "\\labels\\")):
        out = out.replace(orig, rep, 1)
    out = out.strip()
    for ext in (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm",
                ".PPM", ".tiff", ".TIFF"):
        if out.endswith(ext):
            out = out[:-len(ext)] + ".txt"
    return out


def yolo_label_path(path: str) -> str:
    """The YOLOv5/8 ``data.yaml`` rule: the last ``/images/`` becomes ``/labels/``, the
    extension ``.txt``."""
    sep_images, sep_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sep_images in path:
        head, tail = path.rsplit(sep_images, 1)
        path = head + sep_labels + tail
    return os.path.splitext(path)[0] + ".txt"


class FileSource:
    """Images on disk with their labels (read and checked once at construction)."""

    def __init__(self, images: Sequence[str], names: Sequence[str], classes: int,
                 label_rows: Callable[[int, DataReport], np.ndarray],
                 report: DataReport | None = None) -> None:
        self.paths = list(images)
        self.names = list(names)
        self.classes = classes
        self.report = report if report is not None else DataReport()
        self._labels = [label_rows(i, self.report) for i in range(len(self.paths))]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray | None:
        return read_image(self.paths[index])

    def labels(self, index: int) -> np.ndarray:
        return self._labels[index]

    def name(self, index: int) -> str:
        return self.paths[index]


class SyntheticSource:
    """One split of the embedded :class:`SyntheticShapes` set."""

    def __init__(self, shapes: SyntheticShapes, split: str) -> None:
        self.shapes, self.split = shapes, split
        self.names = list(shapes.names)
        self.classes = len(self.names)
        self.report = DataReport()

    def __len__(self) -> int:
        return self.shapes.count(self.split)

    def image(self, index: int) -> np.ndarray | None:
        return self.shapes.sample(self.split, index)[0]

    def labels(self, index: int) -> np.ndarray:
        return self.shapes.sample(self.split, index)[1]

    def name(self, index: int) -> str:
        return f"synthetic:{self.split}:{index}"


@dataclass
class DataSpec:
    """A training set, an optional validation set, class names and Darknet's backup folder."""

    train: DetectionSource
    valid: DetectionSource | None
    names: list[str]
    backup: str | None = None
    report: DataReport = field(default_factory=DataReport)


def _read_names(path: str | None, classes: int | None) -> list[str]:
    if path and os.path.isfile(path):
        names = [n.strip() for n in Path(path).read_text(encoding="utf-8").splitlines()
                 if n.strip()]
        if classes is not None and len(names) < classes:
            names += [str(i) for i in range(len(names), classes)]
        return names[:classes] if classes is not None else names
    if classes is None:
        raise DataError(f"no names file ({path}) and no classes= to size the class list")
    return [str(i) for i in range(classes)]


def _resolve(path: str, *bases: Path) -> str:
    """``path`` as given if it exists (Darknet resolves against the working directory), else
    against each of ``bases``."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for base in bases:
        candidate = base / path
        if candidate.exists():
            return str(candidate)
    return path


def read_list(path: str, *bases: Path) -> list[str]:
    list_path = Path(_resolve(path, *bases))
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the image list {list_path}: {exc.strerror or exc}") from exc
    return [_resolve(line.strip(), list_path.parent, *bases) for line in lines if line.strip()]


def read_darknet_data(path: str | os.PathLike) -> dict[str, str]:
    """``key = value`` lines of a Darknet ``.data`` file (``#`` comments allowed)."""
    options: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            options[key.strip()] = value.strip()
    return options


def _limit(n: int, max_classes: int | None) -> int:
    """Class ids are checked against the data's classes and, if fewer, the cfg's."""
    return n if max_classes is None else min(n, max_classes)


def open_darknet_data(path: str | os.PathLike, classes: int | None = None,
                      max_classes: int | None = None) -> DataSpec:
    """``train=``, ``valid=``, ``names=``, ``classes=``, ``backup=`` of a ``.data`` file;
    labels found by Darknet's images->labels path rule."""
    options = read_darknet_data(path)
    base = Path(path).resolve().parent
    if "train" not in options:
        raise DataError(f"{path}: no train= line")
    n = int(options["classes"]) if "classes" in options else classes
    names = _read_names(_resolve(options["names"], base) if "names" in options else None, n)
    n = len(names) if n is None else n
    check = _limit(n, max_classes)
    report = DataReport()

    def source(list_file: str) -> FileSource:
        images = read_list(list_file, base)
        return FileSource(images, names, n,
                          lambda i, rep: read_label_file(image_to_label_path(images[i]), check,
                                                         rep), report)

    train = source(options["train"])
    valid = source(options["valid"]) if options.get("valid") else None
    return DataSpec(train, valid, names, options.get("backup"), report)


def open_coco_json(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   report: DataReport | None = None,
                   max_classes: int | None = None) -> FileSource:
    """A COCO ``instances_*.json``: boxes [x, y, w, h] in pixels become relative YOLO rows;
    categories are numbered in increasing id order; ``iscrowd`` boxes are left out."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO JSON {path}: {exc}") from exc
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    images = doc.get("images", [])
    by_image: dict[int, list[list[float]]] = {img["id"]: [] for img in images}
    report = report if report is not None else DataReport()
    roots = [Path(image_root)] if image_root else [path.parent, path.parent / "images",
                                                   path.parent.parent / "images"]
    paths, sizes = [], []
    for img in images:
        file_name = img["file_name"]
        found = next((str(r / file_name) for r in roots if (r / file_name).exists()),
                     str(roots[0] / file_name))
        paths.append(found)
        sizes.append((float(img.get("width", 0)), float(img.get("height", 0))))
    index_of = {img["id"]: k for k, img in enumerate(images)}
    for ann in doc.get("annotations", []):
        if ann.get("iscrowd", 0) or ann.get("image_id") not in by_image:
            continue
        k = index_of[ann["image_id"]]
        iw, ih = sizes[k]
        x, y, w, h = (float(v) for v in ann["bbox"])
        cls = cat_index.get(ann.get("category_id"), -1)
        if iw <= 0 or ih <= 0:
            report.add("label_out_of_range", paths[k], "the image has no width/height in the "
                       "JSON")
            continue
        by_image[ann["image_id"]].append([cls, (x + w / 2) / iw, (y + h / 2) / ih, w / iw, h / ih])
    rows = [np.asarray(by_image[img["id"]], dtype=np.float32).reshape(-1, 5) for img in images]
    check = _limit(len(names), max_classes)
    return FileSource(paths, names, len(names),
                      lambda i, rep: check_labels(rows[i], check, paths[i], rep), report)


def _yaml_images(entry: str | Sequence[str], root: Path) -> list[str]:
    """A data.yaml ``train:``/``val:`` entry: a folder, a .txt list or a list of either."""
    entries = [entry] if isinstance(entry, str) else list(entry)
    out: list[str] = []
    for item in entries:
        p = Path(item) if os.path.isabs(item) else root / item
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        elif p.suffix == ".txt":
            out += read_list(str(p), p.parent, root)
        elif p.exists():
            out.append(str(p))
        else:
            raise DataError(f"data.yaml entry {item!r}: {p} does not exist")
    return out


def open_yolo_yaml(path: str | os.PathLike, max_classes: int | None = None) -> DataSpec:
    """A YOLOv5/v8 ``data.yaml``: ``path`` (root), ``train``, ``val``, ``names`` (list or
    {id: name}), ``nc``; labels by the /images/ -> /labels/ rule."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    root = Path(doc.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    names_field = doc.get("names")
    if isinstance(names_field, dict):
        names = [str(names_field[k]) for k in sorted(names_field)]
    elif names_field:
        names = [str(n) for n in names_field]
    else:
        names = [str(i) for i in range(int(doc.get("nc", 0)))]
    classes = int(doc.get("nc", len(names)))
    names = (names + [str(i) for i in range(len(names), classes)])[:classes]
    if "train" not in doc:
        raise DataError(f"{path}: no train: entry")
    report = DataReport()

    def source(entry: str | Sequence[str]) -> FileSource:
        images = _yaml_images(entry, root)
        return FileSource(images, names, classes,
                          lambda i, rep: read_label_file(yolo_label_path(images[i]),
                                                         _limit(classes, max_classes), rep),
                          report)

    valid_entry = doc.get("val") or doc.get("valid")
    return DataSpec(source(doc["train"]), source(valid_entry) if valid_entry else None, names,
                    None, report)


def synthetic_data(spec: SyntheticSpec | None = None) -> DataSpec:
    """The embedded dataset as a :class:`DataSpec` (train and held-out valid split)."""
    shapes = SyntheticShapes(spec)
    return DataSpec(SyntheticSource(shapes, "train"), SyntheticSource(shapes, "valid"),
                    shapes.names)


def open_data(path: str | os.PathLike | None, classes: int | None = None,
              valid: str | os.PathLike | None = None,
              synthetic: SyntheticSpec | None = None,
              max_classes: int | None = None) -> DataSpec:
    """Any supported data description by its extension (``.data``, ``.json``, ``.yaml``);
    ``None`` means the embedded synthetic set. ``valid`` overrides/sets the validation set
    (same kinds, or a .txt image list). ``max_classes`` (the cfg's class count) also rejects
    class ids the network cannot predict."""
    if path is None:
        return synthetic_data(synthetic)
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        report = DataReport()
        train = open_coco_json(path, report=report, max_classes=max_classes)
        spec = DataSpec(train, None, train.names, None, report)
    elif suffix in (".yaml", ".yml"):
        spec = open_yolo_yaml(path, max_classes)
    else:
        spec = open_darknet_data(path, classes, max_classes)
    if valid is not None:
        vsuffix = Path(valid).suffix.lower()
        if vsuffix == ".json":
            spec.valid = open_coco_json(valid, report=spec.report, max_classes=max_classes)
        elif vsuffix == ".txt":
            images = read_list(str(valid))
            n = _limit(len(spec.names), max_classes)
            spec.valid = FileSource(images, spec.names, n,
                                    lambda i, rep: read_label_file(image_to_label_path(images[i]),
                                                                   n, rep), spec.report)
        else:
            spec.valid = open_data(valid, classes, max_classes=max_classes).train
    if len(spec.train) == 0:
        raise DataError(f"{path}: the training set has no images")
    return spec
