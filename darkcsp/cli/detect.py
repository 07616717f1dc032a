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
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from darkcsp.cli import arguments
from darkcsp.errors import DarkcspError
from darkcsp.files import output_dir, output_file, unique_name
from darkcsp.infer.decode import detection_heads
from darkcsp.infer.detector import Detector
from darkcsp.infer.output import draw_detections, format_entry
from darkcsp.infer.preprocess import load_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights or darkcsp .pt file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--names", metavar="FILE",
                        help="class names, one per line, e.g. data/coco.names (default: class "
                             "numbers)")
    parser.add_argument("--thresh", type=arguments.probability, default=0.25,
                        help="probability threshold (default 0.25, as Darknet)")
    parser.add_argument("--nms", type=arguments.probability, default=0.45,
                        help="NMS threshold, 0 = off (default 0.45, as Darknet)")
    parser.add_argument("--letterbox", action="store_true",
                        help="letterbox instead of stretching (Darknet's -letter_box; always "
                             "on when the cfg has [net] letter_box=1)")
    parser.add_argument("--json", metavar="OUT", help="write the detections to this JSON file")
    parser.add_argument("--save-dir", metavar="DIR",
                        help="write each image with its boxes drawn here, under its own name")
    arguments.add_precision(parser)
    arguments.add_max_memory(parser)
    arguments.add_exist_ok(parser, "--json")


def _save_path(save_dir: Path, image: str, taken: set[str]) -> Path:
    """The image's own name in ``save_dir``, or ``stem_2.ext``... when that name is already
    taken (a file there, such as the input itself, or an earlier output): never a
    replaced file."""
    name = Path(image).name
    ext = Path(name).suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        name += ".png"
    return unique_name(save_dir, name, taken)


def _check_outputs(args: argparse.Namespace) -> set[str]:
    """Outputs checked before any work: --json is a file path that is no input, --save-dir
    is no file; returns the names already taken in --save-dir (never overwritten)."""
    inputs = [args.cfg, args.weights, *args.images] + ([args.names] if args.names else [])
    if args.json:
        output_file(args.json, inputs, "--json", exist_ok=args.exist_ok)
    taken: set[str] = set()
    if args.save_dir:
        folder = output_dir(args.save_dir, inputs, exist_ok=True, what="--save-dir")
        if folder.is_dir():
            taken = {entry.name for entry in folder.iterdir()}
        if args.json and Path(args.json).resolve().parent == folder.resolve():
            taken.add(Path(args.json).name)
    return taken


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    taken = _check_outputs(args)
    detector = Detector(args.cfg, args.weights, backend=arguments.backend_for(args),
                        precision=args.precision, calibration=args.calib,
                        max_memory=args.max_memory,
                        letterbox=True if args.letterbox else None, thresh=args.thresh,
                        nms=args.nms, names=args.names)
    classes = detection_heads(detector.model)[-1][1].classes
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    progress = tqdm(args.images, unit="image", disable=len(args.images) < 2, file=sys.stderr)
    for image in progress:
        start = time.perf_counter()
        entries = detector.detect(image)
        elapsed = (time.perf_counter() - start) * 1000
        tqdm.write(f"{image}: Predicted in {elapsed:.3f} milli-seconds.")
        for entry in entries:
            tqdm.write(format_entry(entry))
        results.extend(entries)
        if save_dir is not None:
            out = _save_path(save_dir, image, taken)
            drawn = draw_detections(load_image(image, 3), entries, classes)
            if not cv2.imwrite(str(out), drawn):
                raise DarkcspError(f"cannot write {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0
