"""Detect objects in images exactly as ``darknet detector test`` does.

Loads the network (BN folded into the convolutions, as Darknet does before inference), stretches
each image to the network size with Darknet's bilinear resize (or letterboxes it with
--letterbox or ``[net] letter_box=1``), decodes the boxes of every [yolo]/[Gaussian_yolo]/[region]
layer, runs Darknet's per-class NMS (kind from the last detection layer) and prints the
detections in Darknet's order ("name: 45%" with the box in pixels). --json writes one entry per
detection and class above the threshold; --save-dir writes the images with the boxes drawn.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from darkcsp.errors import DarkcspError
from darkcsp.infer.decode import detection_heads, get_network_boxes
from darkcsp.infer.nms import apply_nms
from darkcsp.infer.preprocess import ImageLike, ImageMeta, load_image, prepare

F32 = np.float32


# -- the shared detection function --------------------------------------------------------------

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


def darknet_order(rows: np.ndarray, thresh: float, names: Sequence[str] | None = None
                  ) -> list[tuple[int, list[int]]]:
    """What ``draw_detections_v3`` prints: (row, classes) pairs, rows sorted by the box's left
    edge, classes = the best class (highest probability > thresh whose name does not start with
    ``dont_show``) then every other class > thresh in class order (Darknet does not filter
    ``dont_show`` there)."""
    t = F32(thresh)
    selected: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        probs = row[5:]
        best, best_prob = -1, t
        for j in np.flatnonzero(probs > t):
            if names is not None and j < len(names) and names[j].startswith("dont_show"):
                continue
            if probs[j] > best_prob:
                best, best_prob = int(j), probs[j]
        if best >= 0:
            selected.append((i, best))
    lefts = [F32(rows[i, 0]) - F32(rows[i, 2]) / F32(2) for i, _ in selected]
    ordered = [selected[k] for k in sorted(range(len(selected)), key=lambda k: lefts[k])]
    result = []
    for i, best in ordered:
        others = [int(j) for j in np.flatnonzero(rows[i, 5:] > t) if j != best]
        result.append((i, [best, *others]))
    return result


def _class_name(names: Sequence[str] | None, class_id: int) -> str:
    return names[class_id] if names is not None and class_id < len(names) else str(class_id)


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


def detections_from_rows(rows: np.ndarray, img_w: int, img_h: int, thresh: float,
             names: Sequence[str] | None, path: str | None = None) -> list[dict[str, Any]]:
    """Rows after NMS -> :func:`detect_image`'s entries, in Darknet's printing order."""
    entries = []
    for i, classes in darknet_order(rows, thresh, names):
        x, y, w, h = (float(v) for v in rows[i, :4])
        box = [(x - w / 2) * img_w, (y - h / 2) * img_h, (x + w / 2) * img_w,
               (y + h / 2) * img_h]
        for class_id in classes:
            entries.append({"image": path, "class_id": class_id,
                            "name": _class_name(names, class_id),
                            "prob": float(rows[i, 5 + class_id]), "box": list(box)})
    return entries


# -- drawing ------------------------------------------------------------------------------------

_COLORS = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _darknet_color(channel: int, x: int, maximum: int) -> float:
    """Darknet's ``get_color``: a hue ramp over the classes."""
    ratio = float(F32(x) / F32(maximum) * F32(5))
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio -= i
    return (1 - ratio) * _COLORS[i][channel] + ratio * _COLORS[j][channel]


def draw_detections(image_rgb: np.ndarray, entries: Sequence[dict[str, Any]],
                    classes: int) -> np.ndarray:
    """A BGR uint8 copy of ``image_rgb`` (float 0..1) with the boxes and labels drawn like
    ``draw_detections_v3``: one box per detection in its best class's colour, labelled
    "name: 0.45[, other names]", the most probable drawn last."""
    bgr = np.ascontiguousarray(
        np.clip(np.round(image_rgb[:, :, ::-1] * 255), 0, 255).astype(np.uint8))
    if bgr.shape[2] == 1:
        bgr = np.ascontiguousarray(np.repeat(bgr, 3, axis=2))
    img_h, img_w = bgr.shape[:2]
    groups: list[list[dict[str, Any]]] = []
    for entry in entries:  # entries of one detection are adjacent, best class first
        if groups and entry["box"] == groups[-1][0]["box"]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    width = max(1, int(img_h * 0.002))
    font_scale = max(0.4, img_h * 0.02 / 22)
    for group in sorted(groups, key=lambda g: g[0]["prob"]):
        best = group[0]
        offset = best["class_id"] * 123457 % classes
        color = tuple(int(round(255 * _darknet_color(c, offset, classes))) for c in (0, 1, 2))
        x1, y1, x2, y2 = best["box"]
        left, right = max(int(x1), 0), min(int(x2), img_w - 1)
        top, bot = max(int(y1), 0), min(int(y2), img_h - 1)
        cv2.rectangle(bgr, (left, top), (right, bot), color, width)
        label = f"{best['name']}: {best['prob']:.2f}"
        if len(group) > 1:
            label += ", " + ", ".join(e["name"] for e in group[1:])
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        y_text = max(top, th + base)
        cv2.rectangle(bgr, (left, y_text - th - base), (left + tw, y_text), color, -1)
        cv2.putText(bgr, label, (left, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return bgr


# -- the command --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--names", metavar="FILE",
                        help="class names, one per line, e.g. data/coco.names (default: class "
                             "numbers)")
    parser.add_argument("--thresh", type=float, default=0.25,
                        help="probability threshold (default 0.25, as Darknet)")
    parser.add_argument("--nms", type=float, default=0.45,
                        help="NMS threshold, 0 = off (default 0.45, as Darknet)")
    parser.add_argument("--letterbox", action="store_true",
                        help="letterbox instead of stretching (Darknet's -letter_box; always "
                             "on when the cfg has [net] letter_box=1)")
    parser.add_argument("--json", metavar="OUT", help="write the detections to this JSON file")
    parser.add_argument("--save-dir", metavar="DIR",
                        help="write each image with its boxes drawn here, under its own name")
    parser.add_argument("--backend", choices=("torch", "opencv", "onnx"), default="torch",
                        help="what runs the network (same pre-processing, decode and NMS): "
                             "darkcsp's module (default), OpenCV 4.x DNN or onnxruntime")


def read_names(path: str | os.PathLike) -> list[str]:
    """A Darknet .names file: one name per line, trailing whitespace (and CR) stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DarkcspError(f"cannot read names file {os.fspath(path)!r}: "
                           f"{exc.strerror or exc}") from exc
    return [line.rstrip() for line in text.splitlines()]


def _load_model(cfg: str, weights: str) -> torch.nn.Module:
    from darkcsp.graph import Darknet
    model = Darknet(cfg)
    model.load_weights(weights)
    return model.fuse().eval()


def _save_path(save_dir: Path, image: str) -> Path:
    name = Path(image).name
    ext = Path(name).suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        name += ".png"
    return save_dir / name


def _c_round(value: float) -> float:
    """C's ``round``: halves away from zero (Python's ``round`` goes to even)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def format_entry(entry: dict[str, Any]) -> str:
    """Darknet's ``-ext_output`` line for one detection and class."""
    x1, y1, x2, y2 = entry["box"]
    return (f"{entry['name']}: {entry['prob'] * 100:.0f}%\t(left_x: {_c_round(x1):4.0f}   "
            f"top_y: {_c_round(y1):4.0f}   width: {_c_round(x2 - x1):4.0f}   "
            f"height: {_c_round(y2 - y1):4.0f})")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    model = _load_model(args.cfg, args.weights)
    backend = None
    if args.backend != "torch":
        from darkcsp.deploy.backends import make_backend
        backend = make_backend(args.backend, model, args.cfg, args.weights)
    heads = detection_heads(model)
    classes = heads[-1][1].classes
    names_path = args.names
    names = read_names(names_path) if names_path else None
    if names is not None and len(names) < classes:
        raise DarkcspError(f"{os.fspath(names_path)} has {len(names)} names but the network "
                           f"has {classes} classes")
    letterbox = bool(args.letterbox or model.net.letter_box)
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    progress = tqdm(args.images, unit="image", disable=len(args.images) < 2, file=sys.stderr)
    for image in progress:
        rgb = load_image(image, 3)
        start = time.perf_counter()
        gray = int(model.net.channels) == 1
        net_image = load_image(image, 1) if gray else rgb
        if backend is None:
            rows, img_w, img_h = detect_rows(model, net_image, args.thresh, args.nms, letterbox)
        else:
            from darkcsp.deploy.detector import backend_rows
            rows, img_w, img_h = backend_rows(backend, net_image, args.thresh, args.nms,
                                              letterbox)
        elapsed = (time.perf_counter() - start) * 1000
        entries = detections_from_rows(rows, img_w, img_h, args.thresh, names, image)
        tqdm.write(f"{image}: Predicted in {elapsed:.3f} milli-seconds.")
        for entry in entries:
            tqdm.write(format_entry(entry))
        results.extend(entries)
        if save_dir is not None:
            out = _save_path(save_dir, image)
            if not cv2.imwrite(str(out), draw_detections(rgb, entries, classes)):
                raise DarkcspError(f"cannot write {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0
