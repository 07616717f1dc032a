"""Shared pieces of the darkcsp data and train tests (no tests here): a tiny two-head detector
cfg (yolov3-tiny-like, 64x64, 3 classes) and a three-iteration ``darkcsp train`` run."""
from __future__ import annotations

from pathlib import Path


TINY_CFG_TEXT = """[net]
batch=8
subdivisions=2
width=64
height=64
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.001
burn_in=2
max_batches=20
policy=steps
steps=1000
scales=.1
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=3,4,5
anchors=6,6, 10,11, 16,16, 22,24, 32,30, 46,44
classes=3
num=6
jitter=.2
ignore_thresh=.7
truth_thresh=1
iou_loss=ciou
iou_normalizer=0.07
scale_x_y=1.05

[route]
layers=-5

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=0,1,2
anchors=6,6, 10,11, 16,16, 22,24, 32,30, 46,44
classes=3
num=6
jitter=.2
ignore_thresh=.7
truth_thresh=1
iou_loss=ciou
iou_normalizer=0.07
scale_x_y=1.05
"""


def tiny_cfg(directory: Path) -> Path:
    """Write the tiny cfg as ``directory/tiny.cfg``."""
    path = Path(directory) / "tiny.cfg"
    path.write_text(TINY_CFG_TEXT)
    return path


def train_three_iterations(cfg_text: str, directory: Path, name: str):
    """``darkcsp train`` for 3 iterations of batch 4 at 64 px on 8 synthetic images (the quick
    run's fitting of classes and anchors included); returns the run's cfg with its final
    ``.weights`` loaded, after checking they record the 12 images seen. (Use the
    ``single_thread`` fixture with it.)"""
    from darkcsp import Darknet
    from darkcsp.cli import main

    cfg = directory / f"{name}.cfg"
    cfg.write_text(cfg_text)
    out = directory / "run"
    assert main(["train", str(cfg), "--out", str(out), "--max-batches", "3", "--batch", "4",
                 "--size", "64", "--workers", "0", "--no-progress", "--synthetic-train", "8",
                 "--synthetic-valid", "2", "--synthetic-size", "64", "--map-every", "1000",
                 "--seed", "1"]) == 0
    model = Darknet(str(out / f"{name}.cfg"))
    model.load_weights(out / "backup" / f"{name}_final.weights")
    assert model.header.seen == 3 * 4
    return model
