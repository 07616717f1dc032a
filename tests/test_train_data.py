"""Training data: Darknet's label-path rule, .data/COCO/YAML sources, bad files skipped and
counted, and augmentation geometry (boxes follow the pixels)."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from darkcsp.train.augment import (AugmentParams, DarknetRandom, augment_one, mosaic,
                                   multiscale_size, training_sample)
from darkcsp.train.datasets import (DataReport, check_labels, image_to_label_path, open_data,
                                    read_label_file)
from darkcsp.train.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.train.trainer import TrainConfig, Trainer

from test_train_helpers import single_thread, tiny_cfg  # noqa: F401  (autouse fixture)


def test_image_to_label_path_is_darknets_rule():
    assert image_to_label_path("/d/coco/images/train2017/a.jpg") == "/d/coco/labels/train2017/a.txt"
    assert image_to_label_path("/voc/VOC2007/JPEGImages/1.JPEG") == "/voc/VOC2007/labels/1.txt"
    # a plain /images/ folder is NOT swapped (commented out in Darknet): labels sit beside
    assert image_to_label_path("data/obj/images/x.png") == "data/obj/images/x.txt"
    assert image_to_label_path("x.jpg.png") == "x.jpg.txt"


def test_label_checks_count_and_report_once(tmp_path, caplog):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n7 0.4 0.4 0.1 0.1\n"
                    "1 1.5 0.5 0.1 0.1\nfoo bar\n2 0.5 0.5 1.2 0.3\n")
    report = DataReport()
    with caplog.at_level(logging.WARNING, logger="darkcsp.train"):
        rows = read_label_file(str(path), 3, report)
    assert rows[:, 0].tolist() == [0, 2]
    assert rows[1, 3] == 1.0  # clipped
    assert report.counts["bad_class_id"] == 2
    assert report.counts["label_out_of_range"] == 1
    assert report.counts["malformed_label_line"] == 1
    assert report.counts["label_clipped"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("bad class id" in m for m in messages) == 1  # once per file
    assert all(str(path) in m for m in messages)
    assert len(check_labels(np.zeros((0, 5)), 3, "x", report)) == 0


def _darknet_set(tmp_path):
    shapes = SyntheticShapes(SyntheticSpec(train=8, valid=4, size=96, classes=3, seed=3))
    data = shapes.write(tmp_path / "set")
    images = sorted((tmp_path / "set" / "images").glob("train_*.png"))
    images[2].write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")  # corrupt image
    images[3].with_suffix(".txt").write_text("9 0.5 0.5 0.2 0.2\n0 -0.2 0.5 0.1 0.1\n")
    images[4].with_suffix(".txt").unlink()  # no label file: a background image
    return data, images


def test_bad_image_and_labels_are_skipped_during_training(tmp_path, caplog):
    data, images = _darknet_set(tmp_path)
    config = TrainConfig(cfg=str(tiny_cfg(tmp_path)), data=str(data), out=str(tmp_path / "run"),
                         max_batches=2, batch=8, subdivisions=2, size=64, progress=False,
                         map_every=2, workers=2)  # names of bad images come from the workers
    with caplog.at_level(logging.WARNING, logger="darkcsp.train"):
        result = Trainer(config).run()
    assert result.iteration == 2 and result.stopped == "done"
    counts = result.report.counts
    assert result.report.bad_images == 1 and counts["bad_image"] >= 1
    assert counts["bad_class_id"] == 1 and counts["label_out_of_range"] == 1
    assert counts["missing_label"] == 1
    text = caplog.text
    assert text.count(f"{images[2]}: bad image") == 1  # reported once with its name
    assert str(images[3].with_suffix(".txt")) in text
    assert (tmp_path / "run" / "backup" / "tiny_final.weights").is_file()


def test_coco_json_and_yolo_yaml(tmp_path):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((50, 100, 3), np.uint8))
    doc = {"images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 50}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
           "annotations": [{"image_id": 7, "bbox": [10, 5, 20, 10], "category_id": 3},
                           {"image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 1,
                            "iscrowd": 1}]}
    (root / "train.json").write_text(json.dumps(doc))
    spec = open_data(str(root / "train.json"))
    assert spec.names == ["dog", "cat"]
    assert spec.train.labels(0).tolist() == [pytest.approx([1, 0.2, 0.2, 0.2, 0.2])]
    assert spec.train.image(0).shape == (50, 100, 3)

    yroot = tmp_path / "y"
    for split in ("train", "val"):
        (yroot / "images" / split).mkdir(parents=True)
        (yroot / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(yroot / "images" / split / "b.jpg"), np.zeros((32, 32, 3), np.uint8))
        (yroot / "labels" / split / "b.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    (yroot / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                     "names: {0: a, 1: b}\n")
    spec = open_data(str(yroot / "data.yaml"))
    assert spec.names == ["a", "b"] and len(spec.train) == 1 and len(spec.valid) == 1
    assert spec.valid.labels(0).tolist() == [pytest.approx([1, 0.5, 0.5, 0.25, 0.25])]


def _box_image(h: int = 160, w: int = 200):
    img = np.zeros((h, w, 3), np.uint8)
    labels = []
    for x0, y0, x1, y1 in ((20, 30, 80, 90), (120, 60, 180, 140)):
        img[y0:y1, x0:x1] = 255
        labels.append([0, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return img, np.asarray(labels, np.float32)


def _white_fraction(image: np.ndarray, truth: np.ndarray) -> list[float]:
    h, w = image.shape[:2]
    out = []
    for x, y, bw, bh, _ in truth:
        x0, x1 = int(round((x - bw / 2) * w)), int(round((x + bw / 2) * w))
        y0, y1 = int(round((y - bh / 2) * h)), int(round((y + bh / 2) * h))
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            out.append(float((image[y0 + 1:y1 - 1, x0 + 1:x1 - 1] > 127).mean()))
    return out


@pytest.mark.parametrize("letter_box", [False, True])
def test_jitter_flip_letterbox_boxes_follow_pixels(letter_box):
    img, labels = _box_image()
    p = AugmentParams(jitter=0.3, flip=True, letter_box=letter_box)
    fractions = []
    for seed in range(20):
        aug = augment_one(img, labels, 96, 64, p, DarknetRandom(seed))
        assert aug.image.shape == (64, 96, 3)
        assert ((aug.truth[:, :4] > 0) & (aug.truth[:, :4] <= 1)).all()
        fractions += _white_fraction(aug.image, aug.truth)
    assert len(fractions) > 20 and min(fractions) > 0.8


def test_mosaic_boxes_follow_pixels():
    img, labels = _box_image()
    p = AugmentParams(jitter=0.2, flip=True, mosaic=True, mosaic_bound=True)
    fractions = []
    for seed in range(20):
        rng = DarknetRandom(seed)
        cut_x, cut_y = rng.rand_int(19, 76), rng.rand_int(12, 51)
        parts = [augment_one(img, labels, 96, 64, p, rng, mosaic_part=k) for k in range(4)]
        image, truth = mosaic(parts, 96, 64, cut_x, cut_y, p)
        fractions += _white_fraction(image, truth)
    assert len(fractions) > 20 and min(fractions) > 0.75


def test_hsv_and_training_sample_are_deterministic():
    img, labels = _box_image()
    p = AugmentParams(jitter=0.2, hue=0.1, saturation=1.5, exposure=1.5, mosaic=True)

    def load(i):
        return img, labels, f"img{i}"
    a = training_sample(load, 0, 5, 64, 64, p, [1, 0, 17])
    b = training_sample(load, 0, 5, 64, 64, p, [1, 0, 17])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == []
    assert a[0].shape == (3, 64, 64) and 0 <= float(a[0].min()) and float(a[0].max()) <= 1


def test_multiscale_sizes_follow_darknets_formula():
    sizes = {multiscale_size(it, 10000, 416, 416, 1.0, 32, seed=0) for it in range(0, 2000, 10)}
    assert multiscale_size(0, 10000, 416, 416, 1.0, 32, 0) == (608, 608)  # first: the largest
    assert multiscale_size(9950, 10000, 416, 416, 1.0, 32, 0) == (608, 608)  # last 100 too
    assert all(w == h and w % 32 == 0 and 288 <= w <= 608 for w, h in sizes)
    assert len(sizes) > 4
    assert multiscale_size(5, 10000, 416, 416, 0.0, 32, 0) == (416, 416)
    assert multiscale_size(13, 100, 416, 416, 1.0, 32, 0) == multiscale_size(19, 100, 416, 416,
                                                                              1.0, 32, 0)


def test_map_helper_follows_darknet_rules():
    from darkcsp.train.metrics import average_precision, mean_average_precision, nms_sort

    truth = [np.array([[0, 0.3, 0.3, 0.2, 0.2], [1, 0.7, 0.7, 0.2, 0.2]])]
    perfect = (np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]),
               np.array([[0.9, 0.0], [0.0, 0.8]]))
    value, ap = mean_average_precision([perfect], truth, classes=2)
    assert value == 1.0 and ap.tolist() == [1.0, 1.0]
    # class 0: a false positive ranked first, then the hit: precision 0 then 1/2 at recall 1
    boxes = np.array([[0.8, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]])
    probs = np.array([[0.9], [0.5]])
    value, _ = mean_average_precision([(boxes, probs)], [truth[0][:1]], classes=1)
    assert value == pytest.approx(0.5)
    # a third class without truth counts as 0 in the mean (Darknet's mAP)
    assert mean_average_precision([perfect], truth, classes=3)[0] == pytest.approx(2 / 3)
    assert average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == \
        pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # NMS zeroes the lower-scored overlapping box of the same class only
    b = np.array([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]])
    p = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])
    assert nms_sort(b, p, 0.45).tolist() == [[0.9, 0.0], [0.0, 0.0], [0.0, 0.7]]


def test_class_ids_beyond_the_cfg_are_bad_labels(tmp_path):
    """A .data with classes=3 trained by a 2-class cfg: class 2 rows are reported too."""
    shapes = SyntheticShapes(SyntheticSpec(train=6, valid=2, size=64, classes=3, seed=4))
    data = shapes.write(tmp_path / "set")
    spec = open_data(str(data), max_classes=2)
    kept = np.concatenate([spec.train.labels(i) for i in range(len(spec.train))])
    expected = sum(int((shapes.sample("train", i)[1][:, 0] == 2).sum()) for i in range(6))
    assert expected > 0 and (kept[:, 0] < 2).all()
    assert spec.report.counts["bad_class_id"] >= expected
