"""Classifier training (a cfg whose last layer is ``[softmax]``): data, augmentation, loss and
top-1 accuracy, as ``darknet classifier train`` does it.

Why separate from the detector path: classifiers read class names from the image path,
augment by a random scaled/rotated crop, and their ``[softmax]`` layer's delta is
``truth - softmax`` (cross-entropy on the logits), with ``[net] label_smooth_eps`` giving
``1 - eps`` for the true class and ``eps / (classes - 1)`` for the others.

Data: an image folder (``root/<class>/*.jpg``, classes in sorted order; ``root/train`` and
``root/val`` when both exist) or a Darknet classifier ``.data`` (``train=``, ``valid=``,
``labels=``): an image's class is the one label contained in its path; an image with none or
several is reported once, counted and skipped.

Simplified: the crop follows ``random_augment_image`` (aspect from ``rand_scale(aspect)``,
shorter side scaled to ``rand_int(min_crop, max_crop)``, rotation ``U(-angle, angle)``,
random shift) but samples with ``cv2.warpAffine``; colour uses the detector's uint8 HSV
shift; mixup/cutmix/mosaic for classifiers, blur and the softmax tree are not implemented;
validation resizes the whole image (Darknet's ``classifier valid`` resizes then crops).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from darkcsp.config.options import OptionValues
from darkcsp.data.darknet import (DataError, DataReport, read_data_cfg, read_list, read_names,
                                  resolve)
from darkcsp.data.datasets import IMAGE_EXTS, read_image
from darkcsp.layers.connected import Softmax
from darkcsp.train.augment import DarknetRandom, hsv_adjust, match_channels, to_tensor
from darkcsp.train.loss import LossResult


class ClassSource:
    """Images with one class each."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], names: Sequence[str],
                 report: DataReport) -> None:
        self.paths, self.targets, self.names, self.report = list(paths), list(targets), \
            list(names), report
        self.classes = len(self.names)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray | None:
        return read_image(self.paths[index])

    def target(self, index: int) -> int:
        return self.targets[index]

    def name(self, index: int) -> str:
        return self.paths[index]


def _folder(root: Path, names: list[str] | None, report: DataReport) -> ClassSource:
    names = names or sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, targets = [], []
    for k, name in enumerate(names):
        folder = root / name
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTS:
                    paths.append(str(f))
                    targets.append(k)
    return ClassSource(paths, targets, names, report)


def _by_label(paths: list[str], labels: list[str], report: DataReport) -> ClassSource:
    keep, targets = [], []
    for path in paths:
        hits = [k for k, label in enumerate(labels) if label in path]
        if len(hits) != 1:
            report.add("bad_class_label", path, f"{len(hits)} labels found in the path")
            continue
        keep.append(path)
        targets.append(hits[0])
    return ClassSource(keep, targets, labels, report)


def open_classifier_data(path: str | os.PathLike) -> tuple[ClassSource, ClassSource | None,
                                                          list[str], DataReport]:
    """(train, valid or None, class names, report) from an image folder or a classifier .data."""
    report = DataReport()
    p = Path(path)
    if p.is_dir():
        train_dir, val_dir = p / "train", p / "val"
        if train_dir.is_dir() and val_dir.is_dir():
            train = _folder(train_dir, None, report)
            return train, _folder(val_dir, train.names, report), train.names, report
        train = _folder(p, None, report)
        return train, None, train.names, report
    options = read_data_cfg(p)
    if "labels" not in options or "train" not in options:
        raise DataError(f"{path}: a classifier .data needs train= and labels=")
    labels = read_names(resolve(options["labels"], p))
    train = _by_label(read_list(resolve(options["train"], p), p), labels, report)
    valid = _by_label(read_list(resolve(options["valid"], p), p), labels, report) \
        if options.get("valid") else None
    return train, valid, labels, report


def augment_classifier(img: np.ndarray, w: int, h: int, net: OptionValues,
                       rng: DarknetRandom) -> np.ndarray:
    """A random scaled, rotated, shifted (w, h) crop, flipped and colour-shifted (uint8)."""
    ih, iw = img.shape[:2]
    aspect = rng.rand_scale(float(net.aspect))
    r = rng.rand_int(int(net.min_crop), int(net.max_crop))
    shorter = min(ih, iw * aspect)
    scale = r / shorter
    angle = rng.uniform(-float(net.angle), float(net.angle))
    dx = max((iw * scale / aspect - w) / 2, 0.0)
    dy = max((ih * scale - h) / 2, 0.0)
    dx, dy = rng.uniform(-dx, dx), rng.uniform(-dy, dy)
    # map the output centre (+shift) to the image centre, scaling x by scale/aspect
    sx, sy = scale / aspect, scale
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    m = np.array([[sx * cos, -sy * sin, 0.0], [sx * sin, sy * cos, 0.0]])
    centre_in = np.array([iw / 2, ih / 2])
    m[:, 2] = np.array([w / 2 + dx, h / 2 + dy]) - m[:, :2] @ centre_in
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if out.ndim == 2:
        out = out[..., None]
    if int(net.flip) and rng.coin():
        out = np.ascontiguousarray(out[:, ::-1])
    dhue = rng.uniform(-float(net.hue), float(net.hue))
    return hsv_adjust(out, dhue, rng.rand_scale(float(net.saturation)),
                      rng.rand_scale(float(net.exposure)))


class ClassifierDataset(torch.utils.data.Dataset):
    """Sample keys (index, w, h, position) -> (image tensor, smoothed one-hot, bad names)."""

    def __init__(self, source: ClassSource, net: OptionValues, seed: int, rank: int,
                 classes: int) -> None:
        self.source, self.net, self.seed, self.rank = source, net, seed, rank
        self.classes = classes  # the softmax width (the data may name fewer classes)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int, int]):
        index, w, h, position = key
        rng = DarknetRandom([self.seed, self.rank, position])
        bad: list[str] = []
        for attempt in range(16):
            j = (index + attempt * 7919) % len(self.source)
            img = self.source.image(j)
            if img is not None:
                break
            bad.append(self.source.name(j))
        else:
            raise DataError(f"16 images in a row could not be read (last: {bad[-1]})")
        img = match_channels(img, int(self.net.channels))
        crop = augment_classifier(img, w, h, self.net, rng)
        eps = float(self.net.label_smooth_eps)
        k = self.classes
        truth = np.full(k, eps / (k - 1) if k > 1 else 0.0, dtype=np.float32)
        truth[self.source.target(j)] = 1 - eps
        return to_tensor(crop), truth, bad


def collate_classes(items) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images = torch.stack([it[0] for it in items])
    truth = torch.from_numpy(np.stack([it[1] for it in items]))
    return images, truth, [name for it in items for name in it[2]]


class SoftmaxLoss:
    """Darknet's ``[softmax]`` cost: delta = truth - softmax(z / temperature) on the softmax
    input z; the reported value is ``-log p`` summed over the true (non-zero) entries."""

    def __init__(self, model) -> None:
        index = len(model.layers) - 1
        layer = model.layers[index]
        if not isinstance(layer, Softmax):
            raise DataError(f"darkcsp train handles [yolo] detectors and [softmax] classifiers; "
                            f"this cfg has no [yolo] and ends in "
                            f"[{model.nodes[index].section.type}]")
        self.layer, self.index = layer, index

    @property
    def head_indices(self) -> list[int]:
        return [self.index]

    def __call__(self, inputs: list[torch.Tensor], truth: torch.Tensor, net_w: int,
                 net_h: int, seen: int = 0) -> LossResult:
        """``seen`` (Darknet's image count) is not used by the softmax cost."""
        z = inputs[0]
        with torch.no_grad():
            p = self.layer(z.detach().float()).reshape(z.shape[0], -1)
            t = truth.to(p.device).reshape(p.shape)
            delta = t - p
            value = float(torch.where(t > 0, -torch.log(p.clamp_min(1e-30)),
                                      torch.zeros_like(p)).sum())
        surrogate = -(delta.view(z.shape) * z.float()).sum()
        return LossResult(surrogate, cls=value, count=int(z.shape[0]))


class AccuracyEvaluator:
    """Top-1 accuracy on a :class:`ClassSource` (whole image resized to the input)."""

    def __init__(self, source: ClassSource, max_images: int | None = None,
                 batch_size: int = 16) -> None:
        self.source, self.batch_size = source, batch_size
        self.count = len(source) if max_images is None else min(max_images, len(source))

    @torch.no_grad()
    def __call__(self, model, device: torch.device) -> float:
        net = model.net
        was_training = model.training
        model.eval()
        correct = total = 0
        try:
            for start in range(0, self.count, self.batch_size):
                xs, ys = [], []
                for i in range(start, min(start + self.batch_size, self.count)):
                    img = self.source.image(i)
                    if img is None:
                        continue
                    img = cv2.resize(match_channels(img, int(net.channels)),
                                     (int(net.width), int(net.height)),
                                     interpolation=cv2.INTER_LINEAR)
                    xs.append(to_tensor(img if img.ndim == 3 else img[..., None]))
                    ys.append(self.source.target(i))
                if not xs:
                    continue
                out = model(torch.stack(xs).to(device))[0].reshape(len(xs), -1)
                correct += int((out.argmax(1).cpu() == torch.tensor(ys)).sum())
                total += len(xs)
        finally:
            model.train(was_training)
        return correct / max(total, 1)
