"""Detection data sources: Darknet ``.data`` files, COCO JSON, YOLO ``data.yaml``, the embedded
synthetic set.

Why one small interface (:class:`DetectionSource`): the loader, the augmentations and the mAP
helper only need "how many images, load image i, the labels of image i, a name for image i".
Label files are read and checked once, up front, by :mod:`darkcsp.data.darknet` (the one home
of Darknet's data-file rules), so that a bad row is reported once (with its file:line),
skipped and counted, never discovered mid-epoch. Images are decoded lazily; one that
cannot be decoded is reported once, replaced by another image and counted (see
:class:`DataReport`).

Label rows follow :func:`darkcsp.data.darknet.check_labels` for every source (Darknet files,
COCO JSON, data.yaml). A COCO JSON or data.yaml that is not of its format's shape is one
:class:`DataError` naming the file and the key.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np
import yaml

from darkcsp.budget import MAX_CLASSES
from darkcsp.data.darknet import (DataError, DataReport, DatasetError, Labels, check_labels,
                                  data_classes, label_path, read_data_cfg, read_label_file,
                                  read_labels, read_list, read_names, read_text, resolve)
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.images import ImageError, check_image_file

LOG = logging.getLogger("darkcsp.train")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

# the Darknet rules live in darknet.py; these names stay importable from here
image_to_label_path = label_path
read_darknet_data = read_data_cfg
__all__ = ["DataError", "DatasetError", "DataReport", "Labels", "check_labels", "read_labels",
           "read_label_file", "image_to_label_path", "label_path", "read_darknet_data",
           "read_data_cfg", "read_list", "read_names", "resolve", "IMAGE_EXTS", "read_image",
           "yolo_label_path", "DetectionSource", "FileSource", "SyntheticSource", "DataSpec",
           "open_darknet_data", "open_coco_json", "open_yolo_yaml", "synthetic_data",
           "open_data", "load_boxes"]


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
    try:
        check_image_file(path)  # a regular file within the pixel limit (header read first)
    except ImageError:
        return None
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None or data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


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
                 report: DataReport | None = None, progress: bool = False) -> None:
        from tqdm import tqdm

        self.paths = list(images)
        self.names = list(names)
        self.classes = classes
        self.report = report if report is not None else DataReport()
        self._labels = [label_rows(i, self.report)
                        for i in tqdm(range(len(self.paths)), desc="labels", unit="img",
                                      disable=not progress, file=sys.stderr)]

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


def _names(options: dict[str, str], data_file: str | os.PathLike,
           classes: int | None) -> list[str]:
    """The class names of a ``.data`` file, ``classes`` long when that is known: ``names=``
    (read with :func:`read_names`), padded with numbers or cut to ``classes``. Darknet's
    ``detector train`` never reads ``names=``, so a missing names file only costs the names."""
    names: list[str] = []
    if "names" in options:
        names_path = resolve(options["names"], data_file)
        if names_path.exists():
            names = read_names(names_path)
        elif classes is not None:
            LOG.warning("%s: names=%s not found; the classes are numbered",
                        os.fspath(data_file), options["names"])
        else:
            raise DataError(f"{os.fspath(data_file)}: names={options['names']}: no such file, "
                            "and no classes= to size the class list")
    elif classes is None:
        raise DataError(f"{os.fspath(data_file)}: no names= and no classes= to size the class "
                        "list")
    if classes is None:
        if not names:
            raise DataError(f"{os.fspath(data_file)}: names={options['names']} lists no names "
                            "and there is no classes=")
        return names
    return (names + [str(i) for i in range(len(names), classes)])[:classes]


def _limit(n: int, max_classes: int | None) -> int:
    """Class ids are checked against the data's classes and, if fewer, the cfg's."""
    return n if max_classes is None else min(n, max_classes)


def _label_rows(images: Sequence[str], rule: Callable[[str], str],
                classes: int) -> Callable[[int, DataReport], np.ndarray]:
    return lambda i, rep: read_label_file(rule(images[i]), classes, rep)


def open_darknet_data(path: str | os.PathLike, classes: int | None = None,
                      max_classes: int | None = None, valid: bool = True,
                      progress: bool = False) -> DataSpec:
    """``train=``, ``valid=`` (unless ``valid`` is False), ``names=``, ``classes=``,
    ``backup=`` of a ``.data`` file; labels found by Darknet's images->labels path rule.
    ``classes`` is used when the file has no ``classes=`` line."""
    options = read_data_cfg(path)
    if "train" not in options:
        raise DataError(f"{os.fspath(path)}: no train= line")
    n = data_classes(options, path, classes)
    names = _names(options, path, n)
    n = len(names) if n is None else n
    check = _limit(n, max_classes)
    report = DataReport()

    def source(key: str) -> FileSource:
        images = read_list(resolve(options[key], path), path)
        return FileSource(images, names, n, _label_rows(images, label_path, check), report,
                          progress)

    train = source("train")
    valid_set = source("valid") if valid and options.get("valid") else None
    return DataSpec(train, valid_set, names, options.get("backup"), report)


def load_boxes(data_file: str | os.PathLike, quiet: bool = True
               ) -> tuple[np.ndarray, np.ndarray, int, DataReport]:
    """What ``darkcsp anchors`` clusters: the relative (w, h) and class ids of the rows of the
    ``train=`` list that training would use (bad rows skipped and reported as in training),
    the number of classes and the report."""
    spec = open_darknet_data(data_file, valid=False, progress=not quiet)
    rows = [spec.train.labels(i) for i in range(len(spec.train))]
    table = np.concatenate(rows) if rows else np.zeros((0, 5), np.float32)
    return (table[:, 3:5].copy(), table[:, 0].astype(np.int64), spec.train.classes,
            spec.report)


def _coco_error(path: Path, key: str, why: str) -> DataError:
    return DataError(f"COCO JSON {path}: {key}: {why}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def open_coco_json(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   report: DataReport | None = None,
                   max_classes: int | None = None) -> FileSource:
    """A COCO ``instances_*.json``: boxes [x, y, w, h] in pixels become relative YOLO rows;
    categories are numbered in increasing id order; ``iscrowd`` boxes are left out. A document
    that is not COCO's shape is an error naming the file and the key."""
    path = Path(path)
    try:
        doc = json.loads(read_text(path, "COCO JSON"))
    except json.JSONDecodeError as exc:
        raise DataError(f"COCO JSON {path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _coco_error(path, "(top level)", f"expected an object with images, annotations "
                          f"and categories, got a {type(doc).__name__}")
    fields = {}
    for key in ("images", "annotations", "categories"):
        fields[key] = doc.get(key, [])
        if not isinstance(fields[key], list) or \
                not all(isinstance(item, dict) for item in fields[key]):
            raise _coco_error(path, key, "expected a list of objects")
    for k, cat in enumerate(fields["categories"]):
        if not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise _coco_error(path, f"categories[{k}].id", f"expected an integer, got "
                              f"{cat.get('id')!r}")
    cats = sorted(fields["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    images = fields["images"]
    report = report if report is not None else DataReport()
    roots = [Path(image_root)] if image_root else [path.parent, path.parent / "images",
                                                   path.parent.parent / "images"]
    paths, sizes, index_of = [], [], {}
    for k, img in enumerate(images):
        file_name, image_key = img.get("file_name"), img.get("id")
        if not isinstance(file_name, str) or not file_name:
            raise _coco_error(path, f"images[{k}].file_name", f"expected a file name, got "
                              f"{file_name!r}")
        if not isinstance(image_key, (int, str)) or isinstance(image_key, bool):
            raise _coco_error(path, f"images[{k}].id", f"expected an id, got {image_key!r}")
        width, height = img.get("width", 0), img.get("height", 0)
        if not _number(width) or not _number(height):
            raise _coco_error(path, f"images[{k}].width/height", f"expected numbers, got "
                              f"{width!r}, {height!r}")
        found = next((str(r / file_name) for r in roots if (r / file_name).exists()),
                     str(roots[0] / file_name))
        paths.append(found)
        sizes.append((float(width), float(height)))
        index_of[image_key] = k
    by_image: list[list[list[float]]] = [[] for _ in images]
    for j, ann in enumerate(fields["annotations"]):
        image_key = ann.get("image_id")
        if ann.get("iscrowd", 0) or not isinstance(image_key, (int, str)) or \
                image_key not in index_of:
            continue
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise _coco_error(path, f"annotations[{j}].bbox", f"expected [x, y, w, h] in "
                              f"pixels, got {box!r}")
        k = index_of[image_key]
        iw, ih = sizes[k]
        x, y, w, h = (float(v) for v in box)
        category = ann.get("category_id")
        cls = cat_index.get(category, -1) if isinstance(category, int) else -1
        if iw <= 0 or ih <= 0:
            report.add("label_out_of_range", paths[k], "the image has no width/height in the "
                       "JSON")
            continue
        by_image[k].append([cls, (x + w / 2) / iw, (y + h / 2) / ih, w / iw, h / ih])
    rows = [np.asarray(r, dtype=np.float64).reshape(-1, 5) for r in by_image]
    check = _limit(len(names), max_classes)
    return FileSource(paths, names, len(names),
                      lambda i, rep: check_labels(rows[i], check, paths[i], rep), report)


def _yaml_images(entry: object, root: Path, path: Path, key: str) -> list[str]:
    """A data.yaml ``train:``/``val:`` entry: a folder, a .txt list or a list of either."""
    entries = [entry] if isinstance(entry, str) else entry
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise DataError(f"data.yaml {path}: {key}: expected a path or a list of paths, got "
                        f"{entry!r}")
    out: list[str] = []
    for item in entries:
        p = Path(item) if os.path.isabs(item) else root / item
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        elif p.suffix == ".txt":
            out += read_list(p, None)
        elif p.exists():
            out.append(str(p))
        else:
            raise DataError(f"data.yaml {path}: {key}: {item!r}: {p} does not exist")
    return out


def _yaml_names(doc: dict, path: Path) -> list[str]:
    """``names:`` as a list, or ``{id: name}`` with integer ids (gaps are numbered)."""
    field_ = doc.get("names")
    if field_ is None:
        return []
    if isinstance(field_, list):
        return [str(n) for n in field_]
    if isinstance(field_, dict):
        bad = [k for k in field_ if not isinstance(k, int) or isinstance(k, bool) or k < 0]
        if bad:
            raise DataError(f"data.yaml {path}: names: keys must be class ids 0, 1, ..., got "
                            f"{bad[0]!r}")
        return [str(field_.get(i, i)) for i in range(max(field_) + 1)] if field_ else []
    raise DataError(f"data.yaml {path}: names: expected a list or {{id: name}}, got "
                    f"{field_!r}")


def open_yolo_yaml(path: str | os.PathLike, max_classes: int | None = None) -> DataSpec:
    """A YOLOv5/v8 ``data.yaml``: ``path`` (root), ``train``, ``val``, ``names`` (list or
    {id: name}), ``nc``; labels by the /images/ -> /labels/ rule (:func:`yolo_label_path`). A
    file that is not of that shape is an error naming the file and the key."""
    path = Path(path)
    try:
        doc = yaml.safe_load(read_text(path, "data.yaml"))
    except yaml.YAMLError as exc:
        raise DataError(f"data.yaml {path}: not YAML: {exc}") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise DataError(f"data.yaml {path}: expected a mapping (path, train, val, names, nc), "
                        f"got a {type(doc).__name__}")
    root_field = doc.get("path") or path.parent
    if not isinstance(root_field, (str, Path)):
        raise DataError(f"data.yaml {path}: path: expected a folder, got {root_field!r}")
    root = Path(root_field)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    names = _yaml_names(doc, path)
    nc = doc.get("nc", len(names))
    if not isinstance(nc, int) or isinstance(nc, bool):
        raise DataError(f"data.yaml {path}: nc: expected an integer, got {nc!r}")
    if nc <= 0:
        raise DataError(f"data.yaml {path}: nc/names: needs at least 1 class")
    if nc > MAX_CLASSES:
        raise DataError(f"data.yaml {path}: nc={nc}: more than the {MAX_CLASSES} classes "
                        "darkcsp accepts")
    classes = nc
    names = (names + [str(i) for i in range(len(names), classes)])[:classes]
    if "train" not in doc:
        raise DataError(f"data.yaml {path}: train: missing")
    report = DataReport()
    check = _limit(classes, max_classes)

    def source(entry: object, key: str) -> FileSource:
        images = _yaml_images(entry, root, path, key)
        return FileSource(images, names, classes, _label_rows(images, yolo_label_path, check),
                          report)

    valid_key = "val" if doc.get("val") else "valid"
    valid_entry = doc.get(valid_key)
    return DataSpec(source(doc["train"], "train"),
                    source(valid_entry, valid_key) if valid_entry else None, names, None,
                    report)


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
            images = read_list(valid)
            n = _limit(len(spec.names), max_classes)
            spec.valid = FileSource(images, spec.names, n, _label_rows(images, label_path, n),
                                    spec.report)
        else:
            spec.valid = open_data(valid, classes, max_classes=max_classes).train
    if len(spec.train) == 0:
        raise DataError(f"{path}: the training set has no images")
    return spec
