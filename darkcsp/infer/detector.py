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

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from darkcsp.errors import DarkcspError
from darkcsp.network import Darknet
from darkcsp.infer.decode import detection_heads, get_network_boxes
from darkcsp.data.darknet import read_names
from darkcsp.infer.output import detections_from_rows
from darkcsp.infer.nms import apply_nms
from darkcsp.infer.preprocess import ImageLike, ImageMeta, load_image, prepare
from darkcsp.infer.preprocess import _stb_gray  # stb_image's luma, shared with load_image
from darkcsp.infer.backends import Backend, make_backend

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jp2"})
Detections = list[dict[str, Any]]


@dataclass(frozen=True)
class Prepared:
    """One network input and what decoding it needs."""

    tensor: torch.Tensor  # (C, H, W) float32
    meta: ImageMeta
    path: str | None


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
        return arr if channels == 1 else np.repeat(arr, 3, axis=2)
    rgb = arr[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    if channels == 1:
        if rgb.dtype != np.uint8:
            raise ValueError("a 1-channel network needs a uint8 colour image (stb's luma)")
        return _stb_gray(rgb)[:, :, None]
    return np.ascontiguousarray(rgb)


def prepare_input(image: ImageLike, net_w: int, net_h: int, letterbox: bool, channels: int
                  ) -> Prepared:
    """``prepare`` for a path (read like Darknet) or a BGR array (as ``cv2.imread`` gives)."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        tensor, meta = prepare(load_image(path, channels), net_w, net_h, letterbox, channels)
        return Prepared(tensor, meta, path)
    tensor, meta = prepare(bgr_to_network_image(image, channels), net_w, net_h, letterbox,
                           channels)
    return Prepared(tensor, meta, None)


def rows_for(model: Darknet, outputs: Sequence[np.ndarray], index: int, meta: ImageMeta,
             thresh: float, nms: float) -> np.ndarray:
    """Image ``index`` of a batch of head outputs -> Darknet's rows after NMS."""
    rows = get_network_boxes(model, [o[index:index + 1] for o in outputs], meta.orig_w,
                             meta.orig_h, thresh, meta.letterbox)
    return apply_nms(model, rows, nms)


def backend_rows(backend: Backend, image: ImageLike, thresh: float = 0.25, nms: float = 0.45,
                 letterbox: bool | None = None) -> tuple[np.ndarray, int, int]:
    """:func:`darkcsp.infer.detect_rows` on ``backend`` (``image``: a path or an RGB array,
    as ``detect_rows`` takes it)."""
    model = backend.model
    if letterbox is None:
        letterbox = bool(model.net.letter_box)
    tensor, meta = prepare(image, int(model.net.width), int(model.net.height), letterbox,
                           int(model.net.channels))
    outputs = backend.forward(tensor[None])
    return rows_for(model, outputs, 0, meta, thresh, nms), meta.orig_w, meta.orig_h


def _placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live, so the input follows them."""
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _as_input(model: torch.nn.Module, image: ImageLike, letterbox: bool
              ) -> tuple[torch.Tensor, ImageMeta]:
    channels = int(model.net.channels)
    if channels not in (1, 3):
        raise DarkcspError(f"[net] channels={channels}: only 1- and 3-channel images can be "
                           "detected on")
    return prepare(image, int(model.net.width), int(model.net.height), letterbox, channels)


def detect_rows(model: torch.nn.Module, image: ImageLike, thresh: float = 0.25,
                nms: float = 0.45, letterbox: bool | None = None
                ) -> tuple[np.ndarray, int, int]:
    """Darknet's detection rows for one image after NMS (suppressed probabilities zeroed, no
    row removed), and the image's width and height.

    ``letterbox=None`` uses the cfg's ``[net] letter_box``.
    """
    if letterbox is None:
        letterbox = bool(model.net.letter_box)
    detection_heads(model)  # fail early, before reading the image, on a classifier cfg
    tensor, meta = _as_input(model, image, letterbox)
    with torch.inference_mode():
        device, dtype = _placement(model)
        outputs = model(tensor[None].to(device=device, dtype=dtype))
    rows = get_network_boxes(model, outputs, meta.orig_w, meta.orig_h, thresh, letterbox)
    return apply_nms(model, rows, nms), meta.orig_w, meta.orig_h


def detect_image(model: torch.nn.Module, image: ImageLike, thresh: float = 0.25,
                 nms: float = 0.45, letterbox: bool | None = None,
                 names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Detections of one image (a path, or an (H, W, C) RGB array, float 0..1 or uint8), as
    ``darknet detector test`` prints them: one dict per detection AND class above ``thresh``:
    ``{"image", "class_id", "name", "prob", "box": [x1, y1, x2, y2]}``, the box in pixels of
    the original image, not clipped (``x1 = (x - w/2) * W``, before Darknet's rounding).

    ``model`` should be fused and in eval mode (as ``darknet detector test`` runs it);
    ``letterbox=None`` follows ``[net] letter_box``.
    """
    rows, img_w, img_h = detect_rows(model, image, thresh, nms, letterbox)
    path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
    return detections_from_rows(rows, img_w, img_h, thresh, names, path)


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
    """A Darknet detector on one backend, returning ``darkcsp detect --json``'s entries.

    ``backend``: ``"torch"`` (darkcsp's module, fused, channels_last on the CPU), ``"opencv"``
    (OpenCV 4.x ``readNetFromDarknet``) or ``"onnx"`` (onnxruntime). ``letterbox=None`` follows
    ``[net] letter_box``; ``names``: a list, a ``.names`` path, or None for class numbers
    (as ``darkcsp detect``). ``backend_options`` go to the backend
    (see :func:`darkcsp.infer.backends.make_backend`).
    """

    def __init__(self, cfg: str | os.PathLike, weights: str | os.PathLike,
                 backend: str = "torch", device: str | torch.device | None = None,
                 letterbox: bool | None = None, thresh: float = 0.25, nms: float = 0.45,
                 names: Sequence[str] | str | os.PathLike | None = None,
                 **backend_options: Any) -> None:
        self.model = Darknet(os.fspath(cfg))
        self.model.load_weights(os.fspath(weights))
        self.model.fuse().eval()
        heads = detection_heads(self.model)  # fail early on a classifier cfg
        channels = int(self.model.net.channels)
        if channels not in (1, 3):
            raise DarkcspError(f"[net] channels={channels}: only 1- and 3-channel images can "
                               "be detected on")
        self.backend = make_backend(backend, self.model, cfg, weights, device,
                                    **backend_options)
        self.letterbox = bool(self.model.net.letter_box) if letterbox is None else letterbox
        self.thresh, self.nms = thresh, nms
        if isinstance(names, (str, os.PathLike)):
            names = read_names(names)
        classes = heads[-1][1].classes
        if names is not None and len(names) < classes:
            raise DarkcspError(f"{len(names)} names for {classes} classes")
        self.names: list[str] | None = list(names) if names is not None else None

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network input."""
        return int(self.model.net.width), int(self.model.net.height)

    def prepare(self, image: ImageLike) -> Prepared:
        w, h = self.input_size
        return prepare_input(image, w, h, self.letterbox, int(self.model.net.channels))

    def _run(self, batch: torch.Tensor, items: Sequence[Prepared]) -> list[Detections]:
        outputs = self.backend.forward(batch)
        results = []
        for i, item in enumerate(items):
            rows = rows_for(self.model, outputs, i, item.meta, self.thresh, self.nms)
            results.append(detections_from_rows(rows, item.meta.orig_w, item.meta.orig_h,
                                                self.thresh, self.names, item.path))
        return results

    def detect(self, image: ImageLike) -> Detections:
        """Detections of one image: a path, or a BGR/gray array as ``cv2.imread`` returns."""
        item = self.prepare(image)
        return self._run(item.tensor[None], [item])[0]

    def detect_batch(self, images: Iterable[ImageLike]) -> list[Detections]:
        """One forward for several images (paths or BGR arrays); a list per image."""
        items = [self.prepare(image) for image in images]
        if not items:
            return []
        return self._run(torch.stack([item.tensor for item in items]), items)

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
                pending.append((index, self.prepare(frame)))
                if len(pending) >= batch_size:
                    yield from self._flush(pending)
                    pending = []
            yield from self._flush(pending)
        finally:
            capture.release()

    def _flush(self, pending: list[tuple[int, Prepared]]) -> Iterator[tuple[int, Detections]]:
        if not pending:
            return
        items = [item for _, item in pending]
        found = self._run(torch.stack([item.tensor for item in items]), items)
        yield from zip([i for i, _ in pending], found)


__all__ = ["Detector", "backend_rows", "bgr_to_network_image", "prepare_input", "image_files",
           "ImageFiles", "Prepared"]
