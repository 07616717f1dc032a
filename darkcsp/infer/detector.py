"""``darkcsp.Detector``: detection from Python on any backend, with ``darkcsp detect``'s numbers.

Every backend shares the same steps, taken from :mod:`darkcsp.infer`: Darknet's pre-processing
(``prepare``: stb-style decode, Darknet's bilinear resize or letterbox), Darknet's box decode
(``get_network_boxes``), NMS (``apply_nms``) and the JSON entries of ``darkcsp detect --json``
(``detections_from_rows``). Only the network forward differs (:mod:`darkcsp.infer.backends`),
so the backends can be compared one to one.

    det = Detector("yolov4-tiny.cfg", "yolov4-tiny.weights", backend="onnx")
    det.detect("dog.jpg")                    # [{"image", "class_id", "name", "prob", "box"}]
    det.detect(cv2.imread("dog.jpg"))        # a BGR uint8 array: the same detections
    det.detect_folder("images/", batch_size=8)
    for frame, dets in det.detect_video("clip.mp4"): ...
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.checkpoint import load_model
from darkcsp.data.darknet import read_names
from darkcsp.errors import DarkcspError
from darkcsp.infer.backends import Backend, ModuleBackend, make_backend, torch_threads
from darkcsp.infer.decode import detection_heads, get_network_boxes
from darkcsp.infer.nms import apply_nms
from darkcsp.infer.output import detections_from_rows
from darkcsp.infer.precision import check_precision
from darkcsp.infer.preprocess import ImageLike, ImageMeta, prepare
from darkcsp.infer.preprocess import _stb_gray  # stb_image's luma, shared with load_image
from darkcsp.network import Darknet

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jp2"})
Detections = list[dict[str, Any]]


@dataclass(frozen=True)
class Prepared:
    """One network input and what decoding it needs."""

    tensor: torch.Tensor  # (C, H, W) float32
    meta: ImageMeta
    path: str | None


def rgb_to_network_image(image: np.ndarray, channels: int) -> np.ndarray:
    """An RGB (or gray) image, uint8 or float 0..1, with the network's channels: 1-channel
    networks get stb_image's luma (what ``load_image(path, 1)`` gives for the same file)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got {arr.shape}")
    if arr.shape[2] == 1:
        return arr if channels == 1 else np.repeat(arr, 3, axis=2)
    if channels == 1:
        if arr.dtype != np.uint8:
            raise ValueError("a 1-channel network needs a uint8 colour image (stb's luma)")
        return _stb_gray(arr)[:, :, None]
    return arr


def bgr_to_network_image(image: np.ndarray, channels: int) -> np.ndarray:
    """An OpenCV image (BGR or gray, uint8 or float 0..1) as ``prepare`` wants it: RGB (or
    stb-style luma for 1-channel networks), the conversions ``load_image`` applies to files."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got "
                         f"{arr.shape}")
    if arr.shape[2] == 1:
        return rgb_to_network_image(arr, channels)
    # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(rgb_to_network_image(arr[:, :, 2::-1], channels))


def prepare_input(image: ImageLike, net_w: int, net_h: int, letterbox: bool, channels: int,
                  rgb: bool = False, out: torch.Tensor | None = None) -> Prepared:
    """``prepare`` for a path (read like Darknet) or an array: BGR as ``cv2.imread`` gives it,
    or with ``rgb`` an RGB array (1-channel networks get stb_image's luma of either);
    written into ``out`` (e.g. a slot of a batch) when given."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        tensor, meta = prepare(path, net_w, net_h, letterbox, channels, out=out)
        return Prepared(tensor, meta, path)
    array = np.asarray(image)
    if channels == 3 and array.ndim == 3 and array.shape[2] == 3:  # no copy: read in place
        tensor, meta = prepare(array, net_w, net_h, letterbox, channels, bgr=not rgb, out=out)
    else:
        array = (rgb_to_network_image if rgb else bgr_to_network_image)(array, channels)
        tensor, meta = prepare(array, net_w, net_h, letterbox, channels, out=out)
    return Prepared(tensor, meta, None)


def detect_rows(model: torch.nn.Module, image: ImageLike, thresh: float = 0.25,
                nms: float = 0.45, letterbox: bool | None = None
                ) -> tuple[np.ndarray, int, int]:
    """:meth:`Detector.rows` for ``model`` as it is (:meth:`Detector.from_model`): Darknet's
    detection rows for one image (a path, or an (H, W, C) RGB array, float 0..1 or uint8)
    after NMS (suppressed probabilities zeroed, no row removed), and the image's width and
    height. ``letterbox=None`` uses the cfg's ``[net] letter_box``."""
    detector = Detector.from_model(model, letterbox=letterbox, thresh=thresh, nms=nms)
    rows, meta = detector.rows(image, rgb=True)
    return rows, meta.orig_w, meta.orig_h


def detect_image(model: torch.nn.Module, image: ImageLike, thresh: float = 0.25,
                 nms: float = 0.45, letterbox: bool | None = None,
                 names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """:meth:`Detector.detect` for ``model`` as it is (:meth:`Detector.from_model`; fuse it
    and put it in eval mode first, as ``darknet detector test`` runs it), on a path or an
    (H, W, C) RGB array (float 0..1 or uint8). One dict per detection AND class above
    ``thresh``: ``{"image", "class_id", "name", "prob", "box": [x1, y1, x2, y2]}``, the box in
    pixels of the original image, not clipped (``x1 = (x - w/2) * W``, before Darknet's
    rounding). ``letterbox=None`` follows ``[net] letter_box``."""
    detector = Detector.from_model(model, letterbox=letterbox, thresh=thresh, nms=nms,
                                   names=names)
    return detector.detect(image, rgb=True)


class ImageFiles(Dataset):
    """Image files -> :class:`Prepared` (read and resized in DataLoader workers)."""

    def __init__(self, paths: Sequence[str], net_w: int, net_h: int, letterbox: bool,
                 channels: int) -> None:
        self.paths = list(paths)
        self.args = (net_w, net_h, letterbox, channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Prepared:
        return prepare_input(self.paths[index], *self.args)


def collate(items: list[Prepared]) -> tuple[torch.Tensor, list[Prepared]]:
    """Stack the tensors; keep the per-image metadata as a list."""
    return torch.stack([item.tensor for item in items]), items


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """The image files in ``folder`` (by extension), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DarkcspError(f"{os.fspath(folder)!r} is not a directory")
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(str(p) for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class Detector:
    """A Darknet detector on one backend, returning ``darkcsp detect --json``'s entries: the one
    detection pipeline (pre-processing, forward, decode, NMS, entries) behind ``darkcsp
    detect``, :func:`detect_image` and :func:`detect_rows`.

    ``weights``: Darknet ``.weights`` or a darkcsp ``.pt`` (:func:`darkcsp.checkpoint.load_model`,
    BN folded, eval mode). ``backend``: ``"torch"`` (darkcsp's module, fused, channels_last on
    the CPU), ``"opencv"`` (OpenCV 4.x ``readNetFromDarknet``) or ``"onnx"`` (onnxruntime).
    ``letterbox=None`` follows ``[net] letter_box``; ``names``: a list, a ``.names`` path, or
    None for class numbers (as ``darkcsp detect``). ``backend_options`` go to the backend
    (see :func:`darkcsp.infer.backends.make_backend`). :meth:`from_model` wraps a model already
    in memory.

    ``precision``: ``"fp32"`` (default), ``"bf16"`` (``backend="torch"`` on a CPU with native
    bf16) or ``"int8"`` (``backend="onnx"``: ONNX Runtime static quantization calibrated on
    ``calibration`` image paths, or on built-in synthetic images with a warning when None;
    quantized once and cached, keyed by cfg + weights + calibration, in ``cache_dir`` or
    ``~/.cache/darkcsp/int8``).
    """

    def __init__(self, cfg: str | os.PathLike, weights: str | os.PathLike,
                 backend: str = "torch", device: str | torch.device | None = None,
                 letterbox: bool | None = None, thresh: float = 0.25, nms: float = 0.45,
                 names: Sequence[str] | str | os.PathLike | None = None,
                 max_memory: MaxMemory = AUTO, precision: str = "fp32",
                 calibration: Sequence[str | os.PathLike] | None = None,
                 **backend_options: Any) -> None:
        check_precision(precision, backend)
        if calibration is not None and precision != "int8":
            raise DarkcspError("calibration images are for precision='int8' only")
        model = load_model(cfg, weights, max_memory=max_memory)
        listed = self._check(model, names)  # fail before building a backend
        if precision == "int8":
            backend_options.update(calibration=calibration, letterbox=letterbox)
        self._setup(model, make_backend(backend, model, cfg, weights, device,
                                        precision=precision, **backend_options),
                    letterbox, thresh, nms, listed)

    @classmethod
    def from_model(cls, model: Darknet, backend: Backend | None = None,
                   letterbox: bool | None = None, thresh: float = 0.25, nms: float = 0.45,
                   names: Sequence[str] | str | os.PathLike | None = None) -> "Detector":
        """A detector on ``model`` as it is (its device, dtype, mode, fused or not), or on
        ``backend`` (built for ``model``) when given."""
        detector = cls.__new__(cls)
        listed = detector._check(model, names)
        detector._setup(model, backend if backend is not None else ModuleBackend(model),
                        letterbox, thresh, nms, listed)
        return detector

    @staticmethod
    def _check(model: Darknet, names: Sequence[str] | str | os.PathLike | None
               ) -> list[str] | None:
        """Refuse what cannot be detected on (a classifier cfg, other than 1 or 3 channels, too
        few names); the names as a list."""
        heads = detection_heads(model)
        channels = int(model.net.channels)
        if channels not in (1, 3):
            raise DarkcspError(f"[net] channels={channels}: only 1- and 3-channel images can "
                               "be detected on")
        if names is None:
            return None
        listed = read_names(names) if isinstance(names, (str, os.PathLike)) else list(names)
        classes = heads[-1][1].classes
        if len(listed) < classes:
            where = f"{os.fspath(names)} has " if isinstance(names, (str, os.PathLike)) else ""
            raise DarkcspError(f"{where}{len(listed)} names but the network has {classes} "
                               "classes")
        return listed

    def _setup(self, model: Darknet, backend: Backend, letterbox: bool | None, thresh: float,
               nms: float, names: list[str] | None) -> None:
        self.model, self.backend = model, backend
        self.letterbox = bool(model.net.letter_box) if letterbox is None else bool(letterbox)
        self.thresh, self.nms = thresh, nms
        self.names = names

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input."""
        return int(self.model.net.width), int(self.model.net.height)

    def prepare(self, image: ImageLike, rgb: bool = False,
                out: torch.Tensor | None = None) -> Prepared:
        """The network input for a path or an array (BGR as ``cv2.imread`` gives it; with
        ``rgb``, an RGB array, uint8 or float 0..1), written into ``out`` when given."""
        with self._preprocessing_threads():
            return self._prepare(image, rgb, out)

    def _prepare(self, image: ImageLike, rgb: bool = False,
                 out: torch.Tensor | None = None) -> Prepared:
        w, h = self.input_size
        return prepare_input(image, w, h, self.letterbox, int(self.model.net.channels), rgb,
                             out)

    def _preprocessing_threads(self) -> contextlib.AbstractContextManager[None]:
        """One torch thread for the pre-processing unless the forward runs on torch's."""
        return torch_threads(None if self.backend.runs_on_torch_threads else 1)

    def _prepare_batch(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[Prepared]]:
        """Several images prepared straight into the slots of one batch tensor."""
        w, h = self.input_size
        batch = torch.empty((len(images), int(self.model.net.channels), h, w))
        with self._preprocessing_threads():
            return batch, [self._prepare(image, out=batch[i]) for i, image in enumerate(images)]

    def _rows(self, batch: torch.Tensor, items: Sequence[Prepared]) -> list[np.ndarray]:
        """Darknet's rows after NMS for each prepared image of one forward."""
        outputs = self.backend.forward(batch)
        return [apply_nms(self.model, get_network_boxes(
                    self.model, [o[i:i + 1] for o in outputs], item.meta.orig_w,
                    item.meta.orig_h, self.thresh, item.meta.letterbox), self.nms)
                for i, item in enumerate(items)]

    def _run(self, batch: torch.Tensor, items: Sequence[Prepared]) -> list[Detections]:
        return [detections_from_rows(rows, item.meta.orig_w, item.meta.orig_h, self.thresh,
                                     self.names, item.path)
                for rows, item in zip(self._rows(batch, items), items)]

    def rows(self, image: ImageLike, rgb: bool = False) -> tuple[np.ndarray, ImageMeta]:
        """Darknet's detection rows ``[x, y, w, h, obj, probs...]`` (relative to the image)
        for one image after NMS (suppressed probabilities zeroed, no row removed), and how
        the input was made (original size, letterbox)."""
        item = self.prepare(image, rgb)
        return self._rows(item.tensor[None], [item])[0], item.meta

    def detect(self, image: ImageLike, rgb: bool = False) -> Detections:
        """Detections of one image: a path, or a BGR/gray array as ``cv2.imread`` returns
        (``rgb``: an RGB array)."""
        item = self.prepare(image, rgb)
        return self._run(item.tensor[None], [item])[0]

    def detect_batch(self, images: Iterable[ImageLike]) -> list[Detections]:
        """One forward for several images (paths or BGR arrays); a list per image."""
        listed = list(images)
        if not listed:
            return []
        return self._run(*self._prepare_batch(listed))

    def detect_folder(self, folder: str | os.PathLike, batch_size: int = 8,
                      num_workers: int = 0, recursive: bool = False, progress: bool = True
                      ) -> Detections:
        """Every image in ``folder``, ``batch_size`` per forward, read by a torch DataLoader
        (``num_workers`` processes; 0 reads in this one). Returns the entries of all images,
        in file order: what ``darkcsp detect --json`` writes for the same files."""
        from tqdm import tqdm
        paths = image_files(folder, recursive)
        w, h = self.input_size
        dataset = ImageFiles(paths, w, h, self.letterbox, int(self.model.net.channels))
        loader = DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False,
                            num_workers=num_workers, collate_fn=collate)
        entries: Detections = []
        with tqdm(total=len(dataset), unit="image", disable=not progress,
                  file=sys.stderr) as bar:
            for batch, items in loader:
                for found in self._run(batch, items):
                    entries.extend(found)
                bar.update(len(items))
        return entries

    def detect_video(self, source: str | os.PathLike | int, batch_size: int = 1,
                     stride: int = 1) -> Iterator[tuple[int, Detections]]:
        """(frame index, detections) for every ``stride``-th frame of a video file (or a
        camera index), read with ``cv2.VideoCapture``; ``batch_size`` frames per forward."""
        import cv2
        capture = cv2.VideoCapture(source if isinstance(source, int) else os.fspath(source))
        if not capture.isOpened():
            raise DarkcspError(f"cannot open video {source!r}")
        try:
            index = -1
            pending: list[tuple[int, Prepared]] = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                index += 1
                if index % max(1, stride):
                    continue
                pending.append((index, frame))
                if len(pending) >= batch_size:
                    yield from self._flush(pending)
                    pending = []
            yield from self._flush(pending)
        finally:
            capture.release()

    def _flush(self, pending: list[tuple[int, np.ndarray]]
               ) -> Iterator[tuple[int, Detections]]:
        if not pending:
            return
        found = self._run(*self._prepare_batch([frame for _, frame in pending]))
        yield from zip([i for i, _ in pending], found)


__all__ = ["Detector", "detect_image", "detect_rows", "bgr_to_network_image",
           "rgb_to_network_image", "prepare_input", "image_files",
           "ImageFiles", "Prepared"]
