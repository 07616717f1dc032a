"""Training data: Darknet's label-path rule, .data/COCO/YAML sources, bad files skipped and
counted, and augmentation geometry (boxes follow the pixels)."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from darkcsp.train.augment import (AugmentParams, Augmented, DarknetRandom,
                                   add_gaussian_noise, augment_one, blur_image, mixup, mosaic,
                                   multiscale_size, training_sample)
from darkcsp.data.datasets import (DataReport, check_labels, image_to_label_path, open_data,
                                    read_label_file)
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.train.trainer import TrainConfig, Trainer

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")


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


def test_auto_classes_and_anchors_open_a_dataset_once(tmp_path, caplog):
    """--classes/--anchors auto read the labels before the model exists; training reuses that
    data, so each bad label is reported once, as without them."""
    data, images = _darknet_set(tmp_path)
    config = TrainConfig(cfg=str(tiny_cfg(tmp_path)), data=str(data), out=str(tmp_path / "run"),
                         max_batches=1, batch=4, subdivisions=1, size=64, progress=False,
                         map_every=10 ** 9, classes="auto", anchors="auto", workers=0)
    with caplog.at_level(logging.WARNING, logger="darkcsp.train"):
        result = Trainer(config).run()
    assert result.report.counts["bad_class_id"] == 1
    assert result.report.counts["label_out_of_range"] == 1
    label = str(images[3].with_suffix(".txt"))
    assert caplog.text.count(f"{label}:1: bad class id") == 1  # file:line of the first bad row
    assert caplog.text.count(f"{label}:2: label out of range") == 1


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


def test_mixup_blends_two_images_and_keeps_both_boxes():
    """Darknet's mixup=1: 0.5/0.5 blend in float, the second image's boxes appended (to max)."""
    first, second = np.zeros((32, 48, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)
    first[4:12, 4:20] = 255
    second[16:28, 30:46] = 200
    box_a = np.array([[12 / 48, 8 / 32, 16 / 48, 8 / 32, 0]], np.float32)
    box_b = np.array([[38 / 48, 22 / 32, 16 / 48, 12 / 32, 1]], np.float32)
    parts = [Augmented(img, box, 0, 0, 0, 0, False, 48, 32)
             for img, box in ((first, box_a), (second, box_b))]
    image, truth = mixup(*parts, AugmentParams())
    assert float(image[0, 8, 10]) == pytest.approx(0.5)  # 255 / 255 / 2
    assert float(image[0, 20, 40]) == pytest.approx(100 / 255)
    assert float(image[0, 30, 2]) == 0.0
    assert truth.tolist() == np.concatenate([box_a, box_b]).tolist()
    assert len(mixup(*parts, AugmentParams(max_boxes=1))[1]) == 1

    def load(i):
        return (first, np.array([[0, 0.25, 0.25, 0.3, 0.3]], np.float32), "a") if i == 0 else \
            (second, np.array([[1, 0.8, 0.7, 0.3, 0.3]], np.float32), "b")
    p = AugmentParams(jitter=0.0, flip=False, mixup=True)
    counts = [len(training_sample(load, 0, 2, 48, 32, p, [0, 0, k])[1]) for k in range(40)]
    assert set(counts) == {1, 2} and 8 <= counts.count(2) <= 32  # about half are mixed


def test_mixup_only_without_mosaic_and_cutmix():
    from darkcsp.config.net import parse_net
    from darkcsp.config.reader import read_cfg

    def params(net_text: str) -> AugmentParams:
        text = f"[net]\nwidth=32\nheight=32\nchannels=3\n{net_text}\n"
        return AugmentParams.from_cfg(parse_net(read_cfg(text)[0]), None)
    assert params("mixup=1").mixup
    assert not params("mixup=1\nmosaic=1").mixup and params("mixup=1\nmosaic=1").mosaic
    assert not params("mixup=1\ncutmix=1").mixup


def _texture(h: int = 64, w: int = 96) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_blur_background_keeps_boxes_sharp():
    img = _texture()
    truth = np.array([[0.25, 0.5, 0.25, 0.5, 0]], np.float32)  # x 12..36, y 16..48
    out = blur_image(img, truth, 1)
    blurred = cv2.GaussianBlur(img, (17, 17), 0)
    inside = np.zeros(img.shape[:2], bool)
    inside[16:48, 12:36] = True
    assert np.array_equal(out[inside], img[inside])
    assert np.array_equal(out[~inside], blurred[~inside])
    whole = blur_image(img, truth, 6)  # kernel 7 over everything
    assert np.array_equal(whole, cv2.GaussianBlur(img, (7, 7), 0))


def test_gaussian_noise_only_brightens_as_opencv_uint8_randn():
    img = np.full((64, 64, 3), 100, np.uint8)
    out = add_gaussian_noise(img, 20, DarknetRandom(0))
    diff = out.astype(np.int32) - 100
    assert diff.min() == 0 and 40 < diff.max() < 127
    assert np.mean(diff) == pytest.approx(20 / np.sqrt(2 * np.pi), rel=0.1)  # half-normal
    assert add_gaussian_noise(np.full((8, 8, 3), 250, np.uint8), 20,
                              DarknetRandom(0)).max() == 255  # saturates


def test_blur_is_capped_by_the_smallest_box():
    """blur > 1 drops to 1/8 of the smallest box side (in net pixels), as Darknet."""
    img = _texture(160, 200)
    labels = np.array([[0, 0.5, 0.5, 0.1, 0.1]], np.float32)  # 10 px at 100x100: cap 1
    p = AugmentParams(jitter=0.0, flip=False, blur=15)
    plain = augment_one(img, labels, 100, 100, AugmentParams(jitter=0.0, flip=False),
                        DarknetRandom(0))
    kinds = set()
    for seed in range(12):
        aug = augment_one(img, labels, 100, 100, p, DarknetRandom(seed))
        if np.array_equal(aug.image, plain.image):
            kinds.add("none")
        elif np.array_equal(aug.image, blur_image(plain.image, plain.truth, 1)):
            kinds.add("background or capped")
        else:
            kinds.add("other")
    assert kinds == {"none", "background or capped"}


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


def test_class_ids_beyond_the_cfg_are_bad_labels(tmp_path):
    """A .data with classes=3 trained by a 2-class cfg: class 2 rows are reported too."""
    shapes = SyntheticShapes(SyntheticSpec(train=6, valid=2, size=64, classes=3, seed=4))
    data = shapes.write(tmp_path / "set")
    spec = open_data(str(data), max_classes=2)
    kept = np.concatenate([spec.train.labels(i) for i in range(len(spec.train))])
    expected = sum(int((shapes.sample("train", i)[1][:, 0] == 2).sum()) for i in range(6))
    assert expected > 0 and (kept[:, 0] < 2).all()
    assert spec.report.counts["bad_class_id"] >= expected


def test_synthetic_command_writes_the_training_runs_set(tmp_path, capsys):
    """``darkcsp synthetic`` writes, pixel for pixel, what ``darkcsp train`` (no --data) sees."""
    from darkcsp.cli import main

    out = tmp_path / "syn"
    assert main(["synthetic", str(out), "--train", "3", "--valid", "2", "--classes", "2",
                 "--size", "64", "--seed", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "obj.data")
    spec = open_data(str(out / "obj.data"))
    assert spec.names == ["circle", "square"] and len(spec.train) == 3 and len(spec.valid) == 2
    reference = SyntheticShapes(SyntheticSpec(train=3, valid=2, size=64, classes=2, seed=4))
    for split, source in (("train", spec.train), ("valid", spec.valid)):
        for i in range(len(source)):
            image, labels = reference.sample(split, i)
            assert np.array_equal(source.image(i), image)
            np.testing.assert_allclose(source.labels(i), labels, atol=1e-6)
    with pytest.raises(SystemExit) as refused:  # argparse's one-line error, before any work
        main(["synthetic", str(out), "--classes", "9"])
    assert refused.value.code == 2
