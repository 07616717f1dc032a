"""Darknet's image pre-processing, reproduced to the float32 bit where possible.

``darknet detector test`` (CPU build without OpenCV) reads an image with stb_image, scales it to
0..1, then either stretches it to the network size with its own bilinear ``resize_image`` or
letterboxes it (``letterbox_image``: aspect kept, grey 0.5 border). A network is only as exact as
its input, so the arithmetic below follows ``image.c`` operation by operation in float32 (no
``cv2.resize``, no ``F.interpolate``: both use other sample positions and roundings).

Decoding uses OpenCV's codecs; for PNG/BMP/PGM that is the same 8-bit data stb_image returns.
JPEG decoders differ in chroma upsampling and IDCT, so a JPEG can differ from Darknet's by a
few grey levels in some pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np
import torch

from darkcsp.images import ImageError, check_image_file, check_pixels

ImageLike = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class ImageMeta:
    """What box decoding needs to know about how the network input was made."""

    orig_w: int
    orig_h: int
    net_w: int
    net_h: int
    letterbox: bool
    path: str | None = None


def _stb_gray(rgb: np.ndarray) -> np.ndarray:
    """stb_image's RGB -> luma: ``(77 r + 150 g + 29 b) >> 8`` on 8-bit values."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((77 * r + 150 * g + 29 * b) >> 8).astype(np.uint8)


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Read ``path`` as Darknet's ``load_image_stb(path, channels)`` does.

    Returns float32 (H, W, channels) in 0..1 (RGB for 3 channels). Grayscale is replicated to
    RGB and an alpha channel is dropped, not composited (stb_image's conversions); 16-bit files
    keep their high byte, as stb_image does. EXIF orientation is ignored, like stb_image.
    Darknet substitutes a 10x10 black image for an unreadable file; we raise instead, since a
    silent black image hides the mistake.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    name = os.fspath(path)
    check_image_file(name)  # a regular file whose header is within the pixel limit
    try:
        raw = np.fromfile(name, dtype=np.uint8)  # also handles non-ASCII paths, unlike imread
    except OSError as exc:
        raise ImageError(f"cannot read image {name!r}: {exc.strerror or exc}") from exc
    try:
        data = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    except cv2.error as exc:
        raise ImageError(f"cannot decode image {name!r}: "
                         f"{str(exc).strip().splitlines()[-1]}") from None
    if data is not None:
        check_pixels(data.shape[1], data.shape[0], name)  # formats without a header reader
    if data is None:
        raise ImageError(f"cannot decode image {name!r}: not an image format OpenCV can read "
                         "(or the file is damaged)")
    if data.dtype == np.uint16:
        data = (data >> 8).astype(np.uint8)
    elif data.dtype != np.uint8:
        raise ImageError(f"image {name!r} has {data.dtype} samples; only 8- and 16-bit images "
                         "are supported (as in Darknet's stb_image)")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.shape[2] >= 3:
        data = data[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
        if channels == 1:
            data = _stb_gray(data)[:, :, None]
    else:
        data = data[:, :, :1]  # gray(+alpha) -> gray
        if channels == 3:
            data = np.repeat(data, 3, axis=2)
    return _to_float(data)


# ``(float)byte / 255.`` for every byte: Darknet divides in double, then stores a float.
_BYTE_TO_FLOAT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def _to_float(data: np.ndarray) -> np.ndarray:
    """``(float)byte / 255.`` per sample, as float32 directly (a table lookup: the same values
    as dividing in double, without a float64 copy of the image)."""
    return _BYTE_TO_FLOAT[data]


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """An (H, W[, C]) array as float32 (H, W, C) in 0..1 (uint8 is scaled like Darknet)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return _to_float(arr)
    return arr.astype(np.float32, copy=False)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index and fraction per output position, in Darknet's float32 arithmetic.

    ``scale = (float)(n_in - 1) / (n_out - 1)``, ``s = i * scale``, ``ix = (int)s``,
    ``dx = s - ix``. (Darknet divides by zero for ``n_out == 1``; we use scale 0 there.)
    """
    if n_out > 1:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    else:
        scale = np.float32(0)
    s = np.arange(n_out, dtype=np.float32) * np.float32(scale)
    ix = s.astype(np.int64)  # truncation, s >= 0
    dx = (s - ix.astype(np.float32)).astype(np.float32)
    return ix, dx


def darknet_resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image``: separable bilinear, align-corners geometry.

    Horizontal pass first (``(1-dx)*p[ix] + dx*p[ix+1]``; the last column copies the edge
    pixel), then the vertical pass (``(1-dy)*q[iy]`` plus ``dy*q[iy+1]`` except on the last
    row, which therefore keeps only ``(1-dy)*q[iy]`` even when float rounding leaves ``dy``
    non-zero). ``img`` is float32 (H, W, C); returns float32 (h, w, C).
    """
    src = _as_float_image(img)
    in_h, in_w = src.shape[:2]
    if w < 1 or h < 1:
        raise ValueError(f"resize to {w}x{h}: sizes must be positive")
    if (in_w, in_h) == (w, h):
        return src.copy()
    one = np.float32(1)

    ix, dx = _axis_weights(in_w, w)
    part = np.empty((in_h, w, src.shape[2]), dtype=np.float32)
    if in_w > 1 and w > 1:
        cols = slice(0, w - 1)
        a = src[:, ix[cols], :]
        b = src[:, ix[cols] + 1, :]
        fx = dx[cols][None, :, None]
        part[:, cols, :] = (one - fx) * a + fx * b
        part[:, w - 1, :] = src[:, in_w - 1, :]
    else:
        part[:] = src[:, in_w - 1: in_w, :]

    iy, dy = _axis_weights(in_h, h)
    fy = dy[:, None, None]
    out = (one - fy) * part[iy, :, :]
    if in_h > 1 and h > 1:
        rows = slice(0, h - 1)
        out[rows] = out[rows] + fy[rows] * part[iy[rows] + 1, :, :]
    return out.astype(np.float32, copy=False)


def letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """Darknet's letterbox size (``letterbox_image`` and ``correct_yolo_boxes``): integer maths,
    the side with the smaller float ratio fills the network."""
    if np.float32(net_w) / np.float32(img_w) < np.float32(net_h) / np.float32(img_h):
        return net_w, (img_h * net_w) // img_w
    return (img_w * net_h) // img_h, net_h


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``letterbox_image``: resize keeping the aspect ratio, paste centred (integer
    offsets) on a canvas filled with 0.5. float32 (H, W, C) -> float32 (h, w, C)."""
    src = _as_float_image(img)
    new_w, new_h = letterbox_size(src.shape[1], src.shape[0], w, h)
    resized = darknet_resize(src, new_w, new_h)
    canvas = np.full((h, w, src.shape[2]), 0.5, dtype=np.float32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    canvas[dy:dy + new_h, dx:dx + new_w, :] = resized
    return canvas


_letterbox = letterbox  # ``prepare`` has a parameter of the same name


def prepare(image: ImageLike, net_w: int, net_h: int, letterbox: bool,
            channels: int = 3) -> tuple[torch.Tensor, ImageMeta]:
    """The network input for ``image`` (a path or an (H, W, C) array, RGB, float 0..1 or
    uint8) as ``darknet detector test`` makes it: float32 (C, net_h, net_w), plus what box
    decoding needs (original size, letterbox flag)."""
    path: str | None = None
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        img = load_image(path, channels)
    else:
        img = _as_float_image(image)
        if img.shape[2] != channels:
            raise ValueError(f"the image has {img.shape[2]} channels, the network takes "
                             f"{channels}")
    orig_h, orig_w = img.shape[:2]
    sized = (_letterbox(img, net_w, net_h) if letterbox
             else darknet_resize(img, net_w, net_h))
    tensor = torch.from_numpy(np.ascontiguousarray(sized.transpose(2, 0, 1)))
    return tensor, ImageMeta(orig_w, orig_h, net_w, net_h, bool(letterbox), path)


__all__ = ["ImageError", "ImageMeta", "load_image", "darknet_resize", "letterbox",
           "letterbox_size", "prepare"]
