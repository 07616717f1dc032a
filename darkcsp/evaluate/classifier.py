"""Darknet's ``classifier valid`` rules (``validate_classifier_single``): the resize, crop, class
lookup and top-k that ``darkcsp valid`` applies to each image."""
from __future__ import annotations

import numpy as np

from darkcsp.infer.preprocess import darknet_resize


def trunc_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def resize_min(img: np.ndarray, size: int) -> np.ndarray:
    """Darknet's ``resize_min``: the shorter side becomes ``size`` (integer maths)."""
    h, w = img.shape[:2]
    if w < h:
        new_w, new_h = size, (h * size) // w
    else:
        new_w, new_h = (w * size) // h, size
    if (new_w, new_h) == (w, h):
        return img
    return darknet_resize(img, new_w, new_h)


def crop_image(img: np.ndarray, dx: int, dy: int, w: int, h: int) -> np.ndarray:
    """Darknet's ``crop_image``: coordinates clamped into the image (edge pixels repeat)."""
    rows = np.clip(np.arange(h) + dy, 0, img.shape[0] - 1)
    cols = np.clip(np.arange(w) + dx, 0, img.shape[1] - 1)
    return img[rows][:, cols]


def top_k(pred: np.ndarray, k: int) -> np.ndarray:
    """Darknet's ``top_k``: the k largest, ties in favour of the lower index."""
    return np.argsort(-np.asarray(pred, dtype=np.float32), kind="stable")[:k]


def class_of(path: str, labels: list[str]) -> int:
    """The first label that is a substring of ``path`` (-1 when none is)."""
    for index, label in enumerate(labels):
        if label in path:
            return index
    return -1
