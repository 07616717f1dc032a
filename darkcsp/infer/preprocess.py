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

import functools
import os
import warnings
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
    """Read ``path`` as Darknet's ``load_image_stb(path, channels)`` does: float32
    (H, W, channels) in 0..1 (RGB for 3 channels), ``(float)byte / 255.`` per sample; see
    :func:`load_image_bytes`."""
    return _to_float(load_image_bytes(path, channels))


def load_image_bytes(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """The 8-bit samples Darknet's ``load_image_stb(path, channels)`` scales to 0..1.

    Returns uint8 (H, W, channels) (RGB for 3 channels). Grayscale is replicated to
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
    return data


# ``(float)byte / 255.`` for every byte: Darknet divides in double, then stores a float.
_BYTE_TO_FLOAT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def _to_float(data: np.ndarray) -> np.ndarray:
    """``(float)byte / 255.`` per sample, as float32 directly (a table lookup: the same values
    as dividing in double, without a float64 copy of the image)."""
    return _BYTE_TO_FLOAT[data]


def _as_hwc(image: np.ndarray) -> np.ndarray:
    """An (H, W[, C]) array as (H, W, C), uint8 or float32, without copying when it can."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32, copy=False)
    return arr


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


@dataclass(frozen=True)
class _AxisPlan:
    """One axis of ``resize_image``: where each output sample reads and with which weights.

    ``first``/``second``: source indices of the two taps (only the first ``blend`` outputs
    take the second tap); ``keep``/``take``: ``1 - d`` and ``d`` as float32 tensors."""

    first: torch.Tensor
    second: torch.Tensor
    keep: torch.Tensor
    take: torch.Tensor
    blend: int


@functools.lru_cache(maxsize=64)
def _axis_plan(n_in: int, n_out: int) -> _AxisPlan:
    index, frac = _axis_weights(n_in, n_out)
    blend = n_out - 1 if n_in > 1 and n_out > 1 else 0
    take = torch.from_numpy(frac)
    return _AxisPlan(torch.from_numpy(index), torch.from_numpy(index[:blend] + 1),
                     (1 - take).contiguous(), take, blend)


def _gather_float(src: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``src`` (C, H, W) gathered along ``dim`` as float32, bytes scaled like ``_to_float``
    (a float32 division by 255 is correctly rounded and equals ``(float)(b / 255.)`` for
    every byte; tests/infer/test_detect.py checks all 256)."""
    picked = src.index_select(dim, index)
    if picked.dtype == torch.uint8:
        return picked.float().div_(255)
    return picked


def resize_into(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Darknet's ``resize_image`` of ``src`` (C, H, W; uint8 bytes or float32 0..1, any
    strides) written into ``out`` (C, h, w) float32 (a view, e.g. the letterbox window of a
    batch slot); returns ``out``.

    Separable bilinear with align-corners geometry, in Darknet's order and float32 roundings:
    horizontal pass first (``(1-dx)*p[ix] + dx*p[ix+1]``; the last column copies the edge
    pixel), then the vertical pass (``(1-dy)*q[iy]`` plus ``dy*q[iy+1]`` except on the last
    row, which therefore keeps only ``(1-dy)*q[iy]`` even when float rounding leaves ``dy``
    non-zero). Each step is one elementwise torch operation (correctly rounded float32, no
    fused multiply-add), so the result is bit-identical to the C loops; bytes are converted
    only where a tap reads them.
    """
    channels, in_h, in_w = src.shape
    out_c, h, w = out.shape
    if out_c != channels:
        raise ValueError(f"resize: {channels} channels into {out_c}")
    if (in_h, in_w) == (h, w):
        out.copy_(src.float().div_(255) if src.dtype == torch.uint8 else src)
        return out
    cols = _axis_plan(in_w, w)
    part = torch.empty((channels, in_h, w), dtype=torch.float32)
    if cols.blend:
        left = _gather_float(src, 2, cols.first[:cols.blend]).mul_(cols.keep[:cols.blend])
        right = _gather_float(src, 2, cols.second).mul_(cols.take[:cols.blend])
        torch.add(left, right, out=part[:, :, :cols.blend])
    edge = _gather_float(src, 2, cols.first.new_tensor([in_w - 1]))
    part[:, :, cols.blend:] = edge
    rows = _axis_plan(in_h, h)
    torch.mul(part.index_select(1, rows.first), rows.keep[:, None], out=out)
    if rows.blend:
        lower = part.index_select(1, rows.second).mul_(rows.take[:rows.blend, None])
        out[:, :rows.blend].add_(lower)
    return out


def _chw(image: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """An (H, W, C) array as a (C, H, W) tensor (channels reversed with ``bgr``); a view of
    the array unless it has other negative strides than a reversed channel axis."""
    arr, flip = image, bgr
    if arr.strides[2] < 0:  # e.g. BGR -> RGB as ``[:, :, ::-1]``: flip in torch instead
        arr, flip = arr[:, :, ::-1], not flip
    if min(arr.strides) < 0:
        arr = np.ascontiguousarray(arr)
    if arr.flags.writeable:
        tensor = torch.from_numpy(arr).permute(2, 0, 1)
    else:  # only read here: torch's warning about writing to it does not apply
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(arr).permute(2, 0, 1)
    return tensor.flip(0) if flip and tensor.shape[0] > 1 else tensor


def darknet_resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` (:func:`resize_into`) of an (H, W, C) image, uint8 or float
    0..1; returns float32 (h, w, C)."""
    if w < 1 or h < 1:
        raise ValueError(f"resize to {w}x{h}: sizes must be positive")
    src = _chw(_as_hwc(img))
    out = torch.empty((src.shape[0], h, w), dtype=torch.float32)
    return resize_into(src, out).permute(1, 2, 0).contiguous().numpy()


def letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """Darknet's letterbox size (``letterbox_image`` and ``correct_yolo_boxes``): integer maths,
    the side with the smaller float ratio fills the network."""
    if np.float32(net_w) / np.float32(img_w) < np.float32(net_h) / np.float32(img_h):
        return net_w, (img_h * net_w) // img_w
    return (img_w * net_h) // img_h, net_h


def letterbox_into(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Darknet's ``letterbox_image`` of ``src`` (C, H, W) into ``out`` (C, h, w): resized
    keeping the aspect ratio, centred (integer offsets) on 0.5 grey; returns ``out``."""
    _, in_h, in_w = src.shape
    _, h, w = out.shape
    new_w, new_h = letterbox_size(in_w, in_h, w, h)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    out.fill_(0.5)
    resize_into(src, out[:, dy:dy + new_h, dx:dx + new_w])
    return out


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``letterbox_image`` (:func:`letterbox_into`) of an (H, W, C) image, uint8 or
    float 0..1; returns float32 (h, w, C)."""
    src = _chw(_as_hwc(img))
    out = torch.empty((src.shape[0], h, w), dtype=torch.float32)
    return letterbox_into(src, out).permute(1, 2, 0).contiguous().numpy()


def prepare(image: ImageLike, net_w: int, net_h: int, letterbox: bool,
            channels: int = 3, bgr: bool = False, out: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, ImageMeta]:
    """The network input for ``image`` (a path, or an (H, W, C) array, uint8 or float 0..1,
    RGB, or BGR as OpenCV gives it with ``bgr``) as ``darknet detector test`` makes it:
    float32 (C, net_h, net_w), written into ``out`` when given (e.g. a slot of a batch), plus
    what box decoding needs (original size, letterbox flag)."""
    path: str | None = None
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        img = load_image_bytes(path, channels)
    else:
        img = _as_hwc(image)
        if img.shape[2] != channels:
            raise ValueError(f"the image has {img.shape[2]} channels, the network takes "
                             f"{channels}")
    orig_h, orig_w = img.shape[:2]
    if out is None:
        out = torch.empty((channels, net_h, net_w), dtype=torch.float32)
    elif tuple(out.shape) != (channels, net_h, net_w) or out.dtype != torch.float32:
        raise ValueError(f"out must be float32 {(channels, net_h, net_w)}, not "
                         f"{out.dtype} {tuple(out.shape)}")
    src = _chw(img, bgr and path is None)
    (letterbox_into if letterbox else resize_into)(src, out)
    return out, ImageMeta(orig_w, orig_h, net_w, net_h, bool(letterbox), path)


__all__ = ["ImageError", "ImageMeta", "load_image", "load_image_bytes", "darknet_resize",
           "letterbox", "letterbox_size", "letterbox_into", "resize_into", "prepare"]
