"""One definition per Darknet data-file rule (darkcsp/data/darknet.py), pinned against
expectations worked out by hand from Darknet's source rules (option_list.c ``read_data_cfg`` /
``option_find``, utils.c ``strip``/``trim``/``fgetl``, data.c ``replace_image_to_label`` /
``fill_truth_detection``), and the same rows seen by ``train``, ``map`` and ``anchors``."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from darkcsp.data import darknet, datasets
from darkcsp.data.darknet import (DataError, DataReport, DatasetError, label_path, read_data_cfg,
                                  read_labels, read_lines, read_list, read_names)
from darkcsp.data.datasets import load_boxes, open_data, yolo_label_path
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.errors import DarkcspError

from train_support import tiny_cfg

BOM = b"\xef\xbb\xbf"


REPO = Path(__file__).resolve().parents[2]


def _synthetic(tmp_path, classes=3):
    shapes = SyntheticShapes(SyntheticSpec(train=4, valid=3, size=64, classes=classes, seed=2))
    return shapes.write(tmp_path / "set")


# --------------------------------------------------------------------------------------------
# one home
# --------------------------------------------------------------------------------------------

def test_every_data_name_has_one_definition():
    assert DatasetError is DataError and issubclass(DataError, DarkcspError)
    assert datasets.DataError is DataError and datasets.DataReport is DataReport
    assert datasets.image_to_label_path is label_path
    assert datasets.read_darknet_data is read_data_cfg
    assert datasets.check_labels is darknet.check_labels
    assert datasets.read_label_file is darknet.read_label_file
    assert datasets.read_list is read_list
    from darkcsp.cli import anchors
    assert not hasattr(anchors, "read_labels") and anchors.load_boxes is load_boxes


# --------------------------------------------------------------------------------------------
# .data
# --------------------------------------------------------------------------------------------

def test_data_file_first_key_wins_and_all_whitespace_goes(tmp_path):
    """option_insert appends, option_find walks from the front: the first classes= wins.
    strip() removes every space/tab/CR, so "my names.txt" is "mynames.txt"; only a line that
    starts with # or ; is a comment ("a=1#x" keeps "#x")."""
    data = tmp_path / "a.data"
    data.write_bytes(BOM + b"classes = 2\r\n ; note\r\n\t# c\r\nnames = my names.txt\r\n"
                     b"classes=3\r\nbackup = b#k\r\nvalid=\r\n")
    assert read_data_cfg(data) == {"classes": "2", "names": "mynames.txt", "backup": "b#k"}


def test_training_reads_the_first_key_too(tmp_path):
    data = _synthetic(tmp_path)
    text = data.read_text()
    data.write_text(text + "classes = 1\ntrain = /nonexistent.txt\n")  # later lines lose
    spec = open_data(str(data))
    assert spec.names == ["circle", "square", "triangle"] and len(spec.train) == 4
    assert spec.train.classes == 3


def test_data_line_without_equals_is_an_error_with_its_line(tmp_path):
    data = tmp_path / "a.data"
    data.write_text("classes=2\nthis is not a data file\n")
    with pytest.raises(DataError, match=re.escape(f"{data}:2: expected key=value")):
        read_data_cfg(data)


@pytest.mark.parametrize("value, message", [("abc", "classes='abc' is not an integer"),
                                            ("0", "classes=0: needs at least 1 class"),
                                            ("-2", "classes=-2: needs at least 1 class"),
                                            ("2.5", "classes='2.5' is not an integer"),
                                            ("2000000000", "more than the 100000 classes"),
                                            ("9" * 5000, "is not an integer")])
def test_bad_classes_is_one_error_naming_file_and_key(tmp_path, value, message):
    data = _synthetic(tmp_path)
    data.write_text(data.read_text().replace("classes = 3", f"classes = {value}"))
    with pytest.raises(DataError) as info:
        open_data(str(data))
    assert str(data) in str(info.value) and message in str(info.value)


def test_bad_classes_in_the_cli_is_a_message_not_a_traceback(tmp_path, capsys):
    from darkcsp.cli import main
    data = _synthetic(tmp_path)
    data.write_text(data.read_text().replace("classes = 3", "classes = abc"))
    assert main(["anchors", str(data), "--num", "2", "--width", "64", "--height", "64",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{data}: classes='abc' is not an integer" in err


def test_an_image_list_of_unreadable_entries_is_a_message_not_a_traceback(tmp_path, capsys):
    """Every listed image unreadable (here: folders): a one-line error naming one of them,
    not a traceback from the middle of the first batch."""
    from darkcsp.cli import main
    data = _synthetic(tmp_path)
    listing = data.parent / "train.txt"
    folders = [data.parent / f"not_an_image_{i}.jpg" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    listing.write_text("".join(f"{f}\n" for f in folders))
    assert main(["train", str(REPO / "cfg" / "yolov3-tiny.cfg"), "--data", str(data),
                 "--out", str(tmp_path / "run"), "--max-batches", "1", "--size", "32",
                 "--batch", "2", "--subdivisions", "1", "--workers", "0", "--no-progress",
                 "--classes", "3", "--map-every", "1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("darkcsp train: ") and "could not be read" in err[-1], err


def test_non_utf8_data_and_names_are_errors_naming_the_file(tmp_path):
    data = _synthetic(tmp_path)
    names = tmp_path / "set" / "obj.names"
    names.write_bytes(b"circ\xe9\nsquare\ntriangle\n")  # Latin-1
    with pytest.raises(DataError, match=re.escape(f"names file {names}: not UTF-8")):
        open_data(str(data))
    with pytest.raises(DataError, match=re.escape(f"names file {names}: not UTF-8")):
        read_names(names)
    data.write_bytes(data.read_bytes() + b"eval=\xff\n")
    with pytest.raises(DataError, match=re.escape(f".data file {data}: not UTF-8 text (byte")):
        read_data_cfg(data)


# --------------------------------------------------------------------------------------------
# lists, names, label paths
# --------------------------------------------------------------------------------------------

def test_lists_and_names_accept_bom_crlf_blank_lines(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"")
    listing = tmp_path / "sub" / "list.txt"
    listing.write_bytes(BOM + b"a.png\r\n\r\n  /abs/b.png \r\n")
    assert read_lines(listing) == ["a.png", "/abs/b.png"]
    # an entry that is not where it is run from is found beside the list
    assert read_list(listing) == [str(tmp_path / "sub" / "a.png"), "/abs/b.png"]
    names = tmp_path / "n.names"
    names.write_bytes(BOM + b"cat \r\n\r\n dog\r\n\r\n")
    assert read_names(names) == ["cat", "dog"]


def test_names_are_the_same_for_training_and_detection(tmp_path):
    data = _synthetic(tmp_path)
    names = tmp_path / "set" / "obj.names"
    names.write_bytes(BOM + b"circle \r\nsquare\r\n\r\ntriangle\r\n")
    assert open_data(str(data)).names == read_names(names) == ["circle", "square", "triangle"]


def test_label_path_is_replace_image_to_label():
    """Folder swaps first (first occurrence each), then trim() of spaces and tabs only, then the
    extension at the very end."""
    assert label_path(" /d/coco/images/val2017/1.jpg\t") == "/d/coco/labels/val2017/1.txt"
    assert label_path("/v/JPEGImages/x.JPEG ") == "/v/labels/x.txt"
    assert label_path("data/obj/images/x.png") == "data/obj/images/x.txt"  # no plain swap
    assert label_path("x.png.jpg") == "x.png.txt"
    assert label_path("x.jpg\r") == "x.jpg\r"  # trim() leaves CR: lists drop it beforehand
    assert label_path("x.webp") == "x.webp"  # not one of Darknet's extensions
    assert yolo_label_path("/r/images/a/images/b.webp") == "/r/images/a/labels/b.txt"


# --------------------------------------------------------------------------------------------
# label rows
# --------------------------------------------------------------------------------------------

BAD_LABELS = (
    "0 0.5 0.5 0.2 0.2\n"      # 1 kept
    "1.5 0.5 0.5 0.2 0.2\n"    # 2 bad class id (not an integer)
    "3 0.5 0.5 0.2 0.2\n"      # 3 bad class id (classes=3)
    "-1 0.5 0.5 0.2 0.2\n"     # 4 bad class id
    "1 nan 0.5 0.2 0.2\n"      # 5 out of range
    "1 0.5 inf 0.2 0.2\n"      # 6 out of range
    "1 -0.1 0.5 0.2 0.2\n"     # 7 out of range
    "1 0.5 0.5 0 0.2\n"        # 8 out of range (zero width)
    "1 0.5 0.5 0.2 -0.2\n"     # 9 out of range (negative height)
    "1 0.5 0.5 0.2\n"          # 10 malformed (short)
    "1 0.5 zero 0.2 0.2\n"     # 11 malformed (not a number)
    "\n"
    "2 1.0 0.25 1.5 0.5\n"     # 13 kept, w clipped to 1
    "2 0.3 0.3 0.1 0.1 0.9\n"  # 14 kept (a sixth column is ignored)
)


def test_bad_rows_are_skipped_counted_and_reported_once_with_file_line(tmp_path, caplog):
    path = tmp_path / "a.txt"
    path.write_text(BAD_LABELS)
    report = DataReport()
    with caplog.at_level(logging.WARNING, logger="darkcsp.train"):
        got = read_labels(path, 3, report)
        again = read_labels(path, 3, report)  # a second read counts, but does not log again
    assert got.classes.tolist() == [0, 2, 2] and not got.missing
    np.testing.assert_allclose(got.boxes, [[0.5, 0.5, 0.2, 0.2], [1.0, 0.25, 1.0, 0.5],
                                           [0.3, 0.3, 0.1, 0.1]])
    assert np.array_equal(again.rows, got.rows)
    assert dict(report.counts) == {"bad_class_id": 6, "label_out_of_range": 10,
                                   "malformed_label_line": 4, "label_clipped": 2}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert [m.split(" (")[0] for m in messages] == [
        f"{path}:10: malformed label line", f"{path}:2: bad class id",
        f"{path}:5: label out of range", f"{path}:13: label clipped"]


def test_without_a_class_count_only_the_class_range_is_open(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(BAD_LABELS)
    assert read_labels(path).classes.tolist() == [0, 3, 2, 2]


def test_missing_label_file_is_no_objects_and_counted(tmp_path):
    report = DataReport()
    got = read_labels(tmp_path / "none.txt", 3, report)
    assert got.missing and got.rows.shape == (0, 5)
    assert dict(report.counts) == {"missing_label": 1}
    (tmp_path / "dir.txt").mkdir()
    assert read_labels(tmp_path / "dir.txt", 3, report).missing


def test_a_clean_dataset_reports_no_problems(tmp_path):
    """The old check counted ``bad_class_id += 0`` for every clean file, so every clean run
    printed "data problems (skipped): bad class id: 0"."""
    spec = open_data(str(_synthetic(tmp_path)))
    assert len(spec.train) == 4 and dict(spec.report.counts) == {}
    assert spec.report.summary() == "no data problems"
    report = DataReport()
    report.add("bad_class_id", "x", count=0)
    assert dict(report.counts) == {}


def test_clean_training_run_prints_no_data_problems_line(tmp_path, capsys, caplog):
    from darkcsp.cli import main
    data = _synthetic(tmp_path)
    argv = ["train", str(tiny_cfg(tmp_path)), "--data", str(data), "--out", str(tmp_path / "r"),
            "--max-batches", "1", "--batch", "2", "--subdivisions", "1", "--size", "64",
            "--workers", "0", "--no-progress", "--map-every", "1000", "--device", "cpu"]
    logger = logging.getLogger("darkcsp.train")  # the CLI sets it up for a terminal:
    saved = logger.handlers[:], logger.propagate, logger.level  # undone for the next tests
    try:
        with caplog.at_level(logging.WARNING, logger="darkcsp.train"):
            assert main(argv) == 0
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    captured = capsys.readouterr()
    assert "data problems" not in captured.out + captured.err + caplog.text
    assert "iterations 1" in captured.out


# --------------------------------------------------------------------------------------------
# the same rows in train, map and anchors
# --------------------------------------------------------------------------------------------

def _with_bad_rows(tmp_path):
    data = _synthetic(tmp_path)
    folder = tmp_path / "set" / "images"
    for split in ("train", "valid"):
        label = folder / f"{split}_00000.txt"
        label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.1\n"
                         "1 0.5 0.5 0.1\n2 0.5 0.5 2 0.3\n")
    return data


def test_anchors_cluster_the_rows_training_uses(tmp_path, capsys):
    from darkcsp.cli import main
    data = _with_bad_rows(tmp_path)
    spec = open_data(str(data))
    rows = np.concatenate([spec.train.labels(i) for i in range(len(spec.train))])
    wh, ids, classes, report = load_boxes(data)
    np.testing.assert_array_equal(wh, rows[:, 3:5])
    assert ids.tolist() == rows[:, 0].astype(int).tolist() and classes == 3
    once = {"bad_class_id": 1, "label_out_of_range": 1, "malformed_label_line": 1,
            "label_clipped": 1}
    assert dict(report.counts) == once  # the train= list only: valid= is not read
    assert dict(spec.report.counts) == {k: 2 * n for k, n in once.items()}
    assert wh.max() <= 1
    assert main(["anchors", str(data), "--num", "2", "--width", "64", "--height", "64",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f" {len(rows)} boxes," in captured.out
    assert "counters_per_class = " + ", ".join(
        str(int((rows[:, 0] == k).sum())) for k in range(3)) in captured.out
    assert "data problems (skipped): bad class id: 1" in captured.err


TINY_MAP_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
filters=24
size=1
stride=8
activation=linear

[yolo]
mask=0,1,2
anchors=8,8,16,16,24,24
classes=3
num=3
"""


def test_map_reads_the_rows_training_validates_on(tmp_path, capsys):
    """``darkcsp map`` used to stop at a bad class id with an error and to keep rows training
    skips; now its ground truth is the training loader's valid rows."""
    import torch

    from darkcsp.checkpoint import save_pt
    from darkcsp.cli import main
    from darkcsp.network import Darknet

    data = _with_bad_rows(tmp_path)
    spec = open_data(str(data))
    truths = sum(len(spec.valid.labels(i)) for i in range(len(spec.valid)))
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_MAP_CFG)
    torch.manual_seed(0)
    save_pt(Darknet(str(cfg)), tmp_path / "tiny.pt")
    metrics = tmp_path / "m.json"
    assert main(["map", str(data), str(cfg), str(tmp_path / "tiny.pt"), "--no-coco",
                 "--metrics-json", str(metrics), "--quiet"]) == 0
    m = json.loads(metrics.read_text())
    assert m["tp"] + m["fn"] == truths
    err = capsys.readouterr().err
    assert "data problems (skipped): bad class id: 1, label clipped: 1, label out of range: 1, " \
        "malformed label line: 1" in err


# --------------------------------------------------------------------------------------------
# COCO JSON and data.yaml: one clear error naming the file and the key
# --------------------------------------------------------------------------------------------

def _coco(tmp_path, mutate):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10]}],
           "categories": [{"id": 1, "name": "shape"}]}
    doc = mutate(doc)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("mutate, key", [
    (lambda d: [d], "(top level)"),
    (lambda d: (d["images"][0].pop("file_name"), d)[1], "images[0].file_name"),
    (lambda d: (d["annotations"][0].update(bbox=[1, 2, 3]), d)[1], "annotations[0].bbox"),
    (lambda d: (d["categories"][0].update(id="x"), d)[1], "categories[0].id"),
    (lambda d: dict(d, images={"a": 1}), "images"),
])
def test_bad_coco_json_is_one_error(tmp_path, mutate, key):
    path = _coco(tmp_path, mutate)
    with pytest.raises(DataError) as info:
        open_data(str(path))
    assert str(info.value).startswith(f"COCO JSON {path}: {key}: ")


def test_coco_bad_boxes_are_skipped_rows(tmp_path):
    path = _coco(tmp_path, lambda d: (d["annotations"].extend([
        {"image_id": 1, "category_id": 1, "bbox": [4, 4, -10, 0]},
        {"image_id": 1, "category_id": 99, "bbox": [4, 4, 10, 10]}]), d)[1])
    spec = open_data(str(path))
    assert len(spec.train.labels(0)) == 1
    assert dict(spec.report.counts) == {"label_out_of_range": 1, "bad_class_id": 1}


@pytest.mark.parametrize("body, key", [
    ("names: {0: a, x: b}\n", "names: keys must be class ids"),
    ("names: 5\n", "names: expected a list"),
    ("nc: abc\nnames: [a]\n", "nc: expected an integer"),
    ("names:\n", "nc/names: needs at least 1 class"),
    ("nc: 0\nnames: [a]\n", "nc/names: needs at least 1 class"),
])
def test_bad_data_yaml_is_one_error(tmp_path, body, key):
    (tmp_path / "images").mkdir()
    path = tmp_path / "data.yaml"
    path.write_text("path: .\ntrain: images\n" + body)
    with pytest.raises(DataError) as info:
        open_data(str(path))
    assert str(info.value).startswith(f"data.yaml {path}: {key}")


def test_data_yaml_names_by_id_with_a_gap(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    path = tmp_path / "data.yaml"
    path.write_bytes(BOM + b"path: .\ntrain: images\nnames: {2: c, 0: a}\n")
    assert open_data(str(path)).names == ["a", "1", "c"]
