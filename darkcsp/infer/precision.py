"""Reduced-precision inference, opt-in: which precisions a backend runs, native bf16 on this CPU,
int8 calibration frames made by darkcsp's own pre-processing, and the cache of int8 models.

* ``fp32``: every backend (the default);
* ``bf16``: the torch backend on a CPU with native bf16 (AVX512-BF16 or AMX), weights and
  input in bf16 through the fused oneDNN convs, outputs back to float32 before decoding;
* ``int8``: the onnx backend on ONNX Runtime's static (QDQ) quantization
  (:func:`darkcsp.export.quantize.quantize_onnx`), quantized once and cached under a hash of
  the cfg, the weights and the calibration images.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from darkcsp.errors import DarkcspError
from darkcsp.export.quantize import quantize_onnx
from darkcsp.infer.preprocess import _stb_gray, load_image, prepare
from darkcsp.network import Darknet

PRECISIONS = ("fp32", "bf16", "int8")
CALIBRATION_FRAMES = 20
QUANT_VERSION = "qdq-u8s8-perchannel-minmax-avg-heads-first-fp32-views-v2"  # part of the cache key
DEFAULT_CALIBRATION_WARNING = ("int8 calibration on darkcsp's built-in synthetic shapes: "
                               "real frames from your data calibrate better (pass calibration "
                               "images)")


def check_precision(precision: str, backend: str) -> str:
    """``precision`` if ``backend`` runs it, else a clear error."""
    if precision not in PRECISIONS:
        raise DarkcspError(f"unknown precision {precision!r}; expected one of "
                           f"{', '.join(PRECISIONS)}")
    allowed = {"fp32": None, "bf16": ("torch",), "int8": ("onnx",)}[precision]
    if allowed is not None and backend not in allowed:
        raise DarkcspError(f"precision {precision} runs on the {allowed[0]} backend, not "
                           f"{backend!r}")
    return precision


CPUINFO = "/proc/cpuinfo"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): the ``avx512_bf16`` or
    ``amx_bf16`` flag in ``/proc/cpuinfo``; where that file is missing (not Linux), oneDNN's own
    check (which also says yes on AVX-512 CPUs that only emulate bf16, hence second). The one
    test behind ``Detector(precision="bf16")`` and training's ``--precision auto``."""
    if os.path.isfile(CPUINFO):
        try:
            with open(CPUINFO, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("flags"):
                        return bool(set(line.partition(":")[2].split())
                                    & {"avx512_bf16", "amx_bf16"})
        except OSError:
            pass
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def require_native_bf16() -> None:
    if not cpu_has_native_bf16():
        raise DarkcspError("precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); "
                           "this one has neither: use fp32 (or int8 on the onnx backend)")


def synthetic_images(count: int = CALIBRATION_FRAMES, size: int = 416) -> list[np.ndarray]:
    """The default calibration set: ``count`` of darkcsp's built-in synthetic shapes images
    (uint8 RGB), deterministic."""
    from darkcsp.data.synthetic import make_image
    return [make_image(seed=11, split=2, index=i, size=size)[0] for i in range(count)]


def _views(images: Sequence[str | os.PathLike | np.ndarray], count: int, channels: int
           ) -> list[str | os.PathLike | np.ndarray]:
    """``images`` as given when there are ``count`` or more; else each image, then each one
    mirrored, then its top-left and bottom-right 2/3 crops, until ``count`` frames (fewer
    than ~20 frames calibrate int8 visibly worse: 5 photos kept 24 of 38 yolov3-tiny
    detections, their 20 views 34)."""
    if len(images) >= count:
        return list(images)[:count]
    loaded = [load_image(os.fspath(i), channels) if isinstance(i, (str, os.PathLike)) else
              np.asarray(i) for i in images]
    views: list[str | os.PathLike | np.ndarray] = list(images)
    makers = (lambda a: a[:, ::-1],
              lambda a: a[:2 * a.shape[0] // 3, :2 * a.shape[1] // 3],
              lambda a: a[a.shape[0] // 3:, a.shape[1] // 3:])
    for make in makers:
        for image in loaded:
            if len(views) >= count:
                return views
            views.append(np.ascontiguousarray(make(image)))
    return views


def calibration_frames(model: Darknet, images: Sequence[str | os.PathLike | np.ndarray] | None
                       = None, count: int = CALIBRATION_FRAMES,
                       letterbox: bool | None = None) -> list[np.ndarray]:
    """Network inputs (1, C, H, W) for int8 calibration, made by darkcsp's pre-processing
    (:func:`darkcsp.infer.preprocess.prepare`, as :meth:`Detector.prepare`): ``count`` frames
    from ``images`` (paths or RGB arrays; mirrored and cropped views are added when there are
    fewer), or, when None, the synthetic default set (with a warning that real frames
    calibrate better)."""
    net = model.net
    channels = int(net.channels)
    if images is None or len(images) == 0:
        warnings.warn(DEFAULT_CALIBRATION_WARNING, stacklevel=2)
        images = synthetic_images(count)
    box = bool(net.letter_box) if letterbox is None else bool(letterbox)
    frames = []
    for image in _views(list(images), count, channels):
        if isinstance(image, np.ndarray) and channels == 1 and image.ndim == 3 \
                and image.shape[2] == 3:
            image = _stb_gray(image)[:, :, None]
        tensor, _ = prepare(image, int(net.width), int(net.height), box, channels)
        frames.append(tensor.numpy()[None])
    return frames


def default_cache_dir() -> Path:
    """``$DARKCSP_CACHE``, else ``$XDG_CACHE_HOME/darkcsp``, else ``~/.cache/darkcsp``."""
    if os.environ.get("DARKCSP_CACHE"):
        return Path(os.environ["DARKCSP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "darkcsp"


def _hash_file(digest: "hashlib._Hash", path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def int8_key(model: Darknet, cfg: str | os.PathLike | None, weights: str | os.PathLike | None,
             calibration: Sequence[str | os.PathLike] | None, count: int,
             letterbox: bool | None) -> str:
    """The cache key: cfg and weights file contents (or, for a model without files, its
    parameters), the calibration images' contents, and the quantization settings."""
    digest = hashlib.sha256(f"{QUANT_VERSION}|{count}|{letterbox}".encode())
    if cfg is not None and weights is not None:
        for path in (cfg, weights):
            digest.update(b"|file|")
            _hash_file(digest, path)
    else:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy()
                          .tobytes())
    if calibration:
        for path in list(calibration)[:count]:
            digest.update(b"|calib|")
            _hash_file(digest, path)
    else:
        digest.update(b"|synthetic|")
    return digest.hexdigest()[:32]


def cached_int8(model: Darknet, cfg: str | os.PathLike | None = None,
                weights: str | os.PathLike | None = None,
                calibration: Sequence[str | os.PathLike] | None = None,
                cache_dir: str | os.PathLike | None = None, count: int = CALIBRATION_FRAMES,
                letterbox: bool | None = None) -> Path:
    """The int8 ONNX of ``model``: from the cache when this cfg + weights + calibration was
    quantized before, else quantized now and written there (atomically)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "int8"
    path = folder / f"{int8_key(model, cfg, weights, calibration, count, letterbox)}.onnx"
    if path.is_file():
        return path
    frames = calibration_frames(model, list(calibration) if calibration else None, count,
                                letterbox)
    return quantize_onnx(model, path, frames)


__all__ = ["PRECISIONS", "check_precision", "cpu_has_native_bf16", "require_native_bf16",
           "calibration_frames", "synthetic_images", "cached_int8", "int8_key",
           "default_cache_dir"]
