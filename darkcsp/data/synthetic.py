"""An embedded detection dataset: coloured shapes on random textured backgrounds.

Why: ``darkcsp train CFG`` must be runnable (and testable) with nothing but the repository, so
the library carries its own tiny, learnable, deterministic dataset. Every image is a pure
function of ``(seed, split, index)``: nothing is downloaded or written unless :meth:`write` is
called, and two runs with the same seed see byte-identical pixels and labels.

Labels are YOLO/Darknet style rows ``class x_center y_center width height`` relative to the
image (0..1), boxes tight around the drawn shape.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


SHAPES = ("circle", "square", "triangle", "cross", "diamond")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: counts, image size, number of shape classes (1..5) and the seed."""

    train: int = 1024  # ~200 MB cached at 256 px; enough variety for mAP@0.5 ~0.7 in 4 min
    valid: int = 128
    size: int = 256
    classes: int = 3
    seed: int = 0
    max_objects: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(SHAPES):
            raise ValueError(f"classes must be 1..{len(SHAPES)}, got {self.classes}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32, got {self.size}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random texture: gradient, stripes, checker or blotches, plus pixel noise."""
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # stripes
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(3, 12)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    elif kind == 2:  # checker
        cells = int(rng.integers(3, 10))
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
        t = 0.25 + 0.5 * t
    else:  # blotches: low-resolution noise upsampled
        low = rng.uniform(0, 1, (int(rng.integers(3, 8)),) * 2).astype(np.float32)
        t = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t, 0, 1)
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0, rng.uniform(2, 14), img.shape).astype(np.float32)
    return img


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour (HSV with high S and V), so shapes stand out from most textures."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(170, 256), rng.integers(170, 256)]]],
                   dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, w: float, h: float,
          colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[float, float, float,
                                                                           float]:
    """Draw one filled shape; returns its tight box (x0, y0, x1, y1) in pixels."""
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if shape == "circle":
        cv2.ellipse(img, (int(round(cx)), int(round(cy))), (int(round(w / 2)), int(round(h / 2))),
                    0, 0, 360, colour, -1, cv2.LINE_AA)
        rx, ry = int(round(w / 2)), int(round(h / 2))
        return cx - rx, cy - ry, cx + rx + 1, cy + ry + 1
    if shape == "square":
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif shape == "triangle":
        direction = int(rng.integers(4))
        tri = [[(x0, y1), (x1, y1), (cx, y0)], [(x0, y0), (x1, y0), (cx, y1)],
               [(x0, y0), (x0, y1), (x1, cy)], [(x1, y0), (x1, y1), (x0, cy)]][direction]
        pts = np.array(tri)
    elif shape == "diamond":
        pts = np.array([[cx, y0], [x1, cy], [cx, y1], [x0, cy]])
    else:  # cross: two bars
        tw, th = w / 3, h / 3
        pts = np.array([[cx - tw / 2, y0], [cx + tw / 2, y0], [cx + tw / 2, cy - th / 2],
                        [x1, cy - th / 2], [x1, cy + th / 2], [cx + tw / 2, cy + th / 2],
                        [cx + tw / 2, y1], [cx - tw / 2, y1], [cx - tw / 2, cy + th / 2],
                        [x0, cy + th / 2], [x0, cy - th / 2], [cx - tw / 2, cy - th / 2]])
    ipts = np.round(pts).astype(np.int32)
    cv2.fillPoly(img, [ipts], colour, cv2.LINE_AA)
    return (float(ipts[:, 0].min()), float(ipts[:, 1].min()), float(ipts[:, 0].max()) + 1,
            float(ipts[:, 1].max()) + 1)


def _overlap(box: tuple[float, float, float, float],
             others: list[tuple[float, float, float, float]]) -> float:
    """Largest fraction of ``box`` covered by any of ``others``."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    worst = 0.0
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            worst = max(worst, iw * ih / area, iw * ih / ((o[2] - o[0]) * (o[3] - o[1])))
    return worst


def make_image(seed: int, split: int, index: int, size: int = 256, classes: int = 3,
               max_objects: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 RGB, size x size) and its labels (k, 5): class, cx, cy, w, h (0..1)."""
    rng = np.random.default_rng([seed, split, index])
    img = _background(rng, size)
    count = int(rng.integers(1, max_objects + 1))
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[list[float]] = []
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(count * 4):  # a few tries per object to keep overlaps small
        if len(labels) == count:
            break
        cls = int(rng.integers(classes))
        side = rng.uniform(0.1, 0.45) * size
        aspect = rng.uniform(0.7, 1.4) if SHAPES[cls] != "square" else 1.0
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        w, h = min(w, size * 0.9), min(h, size * 0.9)
        cx = rng.uniform(w / 2 + 1, size - w / 2 - 1)
        cy = rng.uniform(h / 2 + 1, size - h / 2 - 1)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if _overlap(box, boxes) > 0.25:
            continue
        x0, y0, x1, y1 = _draw(canvas, SHAPES[cls], cx, cy, w, h, _colour(rng), rng)
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, float(size)), min(y1, float(size))
        boxes.append(box)
        labels.append([cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size,
                       (y1 - y0) / size])
    return canvas, np.asarray(labels, dtype=np.float32).reshape(-1, 5)


class SyntheticShapes:
    """The embedded dataset: ``split(name)`` gives the train or valid half as a list-like
    source of (image, labels) pairs, generated on demand."""

    def __init__(self, spec: SyntheticSpec | None = None, cache_bytes: int = 256 << 20) -> None:
        self.spec = spec or SyntheticSpec()
        self.names = list(SHAPES[:self.spec.classes])
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cache_left = cache_bytes  # generating costs more than a lookup; memory is bounded

    def count(self, split: str) -> int:
        return {"train": self.spec.train, "valid": self.spec.valid}[split]

    def sample(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 RGB image, labels) of ``index`` in ``split`` ("train" or "valid")."""
        n = self.count(split)
        if not 0 <= index < n:
            raise IndexError(f"{split} index {index} outside 0..{n - 1}")
        key = (split, index)
        if key in self._cache:
            return self._cache[key]
        s = self.spec
        item = make_image(s.seed, 0 if split == "train" else 1, index, s.size, s.classes,
                          s.max_objects)
        if item[0].nbytes <= self._cache_left:
            item[0].setflags(write=False)
            self._cache[key] = item
            self._cache_left -= item[0].nbytes
        return item

    def write(self, root: str | os.PathLike, ext: str = ".png", progress: bool = False) -> Path:
        """Write a Darknet layout under ``root`` (images with their .txt labels beside them,
        train.txt, valid.txt, obj.names, obj.data); returns the .data path."""
        from tqdm import tqdm

        root = Path(root)
        (root / "images").mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid"):
            paths = []
            for i in tqdm(range(self.count(split)), desc=split, unit="img", disable=not progress):
                img, labels = self.sample(split, i)
                path = root / "images" / f"{split}_{i:05d}{ext}"
                cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                with open(path.with_suffix(".txt"), "w", encoding="utf-8") as fh:
                    for row in labels:
                        fh.write(f"{int(row[0])} {row[1]:.6f} {row[2]:.6f} {row[3]:.6f} "
                                 f"{row[4]:.6f}\n")
                paths.append(str(path.resolve()))
            (root / f"{split}.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
        (root / "obj.names").write_text("\n".join(self.names) + "\n", encoding="utf-8")
        data = root / "obj.data"
        data.write_text(f"classes = {len(self.names)}\ntrain = {root.resolve() / 'train.txt'}\n"
                        f"valid = {root.resolve() / 'valid.txt'}\n"
                        f"names = {root.resolve() / 'obj.names'}\n"
                        f"backup = {root.resolve() / 'backup'}\n", encoding="utf-8")
        return data
