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
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from darkcsp.checkpoint import load_model
from darkcsp.data.darknet import read_names
from darkcsp.errors import DarkcspError
from darkcsp.infer.decode import detection_heads
from darkcsp.infer.detector import backend_rows, detect_rows
from darkcsp.infer.output import detections_from_rows, draw_detections, format_entry
from darkcsp.infer.preprocess import load_image


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


def _save_path(save_dir: Path, image: str) -> Path:
    name = Path(image).name
    ext = Path(name).suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        name += ".png"
    return save_dir / name


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    model = load_model(args.cfg, args.weights)
    backend = None
    if args.backend != "torch":
        from darkcsp.infer.backends import make_backend
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
