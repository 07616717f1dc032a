"""Inputs darkcsp reads (issue 10, Build 4 images, 5 and 8).

Why: a fifo given as cfg, weights, checkpoint or image hung the reader for ever; a 100-byte PNG
whose header claims 60000 x 60000 pixels reached the decoder (a cv2.error traceback, or gigabytes
allocated); a 20000 x 20000 photo was copied as float64; a valid cfg saved with a UTF-8 BOM was
rejected; ``--set 'net.foo=1\\n[maxpool]'`` wrote a run cfg that no longer matched its weights.
Only regular files are read, image headers are checked before decoding, the BOM is accepted and
``--set`` values are one line. Anything that could hang or allocate runs in a child process
under a memory limit and a timeout.
"""
from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from darkcsp.config.reader import parse_cfg, read_cfg
from darkcsp.errors import DarkcspError
from darkcsp.images import ImageError, check_image_file, header_size
from darkcsp.infer.preprocess import _to_float, load_image
from darkcsp.network import Darknet
from darkcsp.train.settings import apply_overrides

from limited import assert_clean_error, python, run_cli_batch, run_many

TINY = "[net]\nwidth=16\nheight=16\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\n" \
       "pad=1\nactivation=leaky\n"
DETECTOR = TINY + "\n[convolutional]\nfilters=18\nsize=1\nactivation=linear\n\n[yolo]\n" \
    "mask=0,1,2\nanchors=2,3,4,5,6,7\nclasses=1\nnum=3\n"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width x height`` (its data is far too short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".ppm", ".pgm", ".webp", ".tif"])
def test_header_size_matches_the_decoder(ext):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if ext == ".pgm":
        image = image[:, :, 0]
    ok, data = cv2.imencode(ext, image)
    if not ok:
        pytest.skip(f"this OpenCV cannot write {ext}")
    size = header_size(bytes(data[:65536]))
    if ext == ".tif":
        assert size is None  # left to OpenCV's own limit
    else:
        assert size == (53, 37)


def test_gif_header():
    assert header_size(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\0" * 8) == (640, 480)


def test_png_claiming_60000_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(60000, 60000))
    with pytest.raises(ImageError, match=r"60000 x 60000 = 3,600,000,000 pixels"):
        check_image_file(path)
    with pytest.raises(ImageError, match="DARKCSP_MAX_IMAGE_PIXELS"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    assert check_image_file(path) == (30, 20)
    monkeypatch.setenv("DARKCSP_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(ImageError, match="600 pixels"):
        load_image(path)


def test_bytes_to_float_is_exact_without_float64():
    data = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = _to_float(data)
    assert out.dtype == np.float32
    assert np.array_equal(out, (data.astype(np.float64) / 255.0).astype(np.float32))


def test_cfg_with_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.cfg"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    sections = read_cfg(path)
    assert [s.type for s in sections] == ["net", "convolutional"]
    assert sections[0].line == 1 and sections[1].get("filters") == "4"
    assert parse_cfg("\ufeff" + TINY)[0].type == "net"
    Darknet(path)


@pytest.mark.parametrize("item", ["net.foo=1\n[maxpool]\nsize=2", "net.width=16\n7",
                                  "net.foo=[maxpool]", "net.foo=1]", "net.width=1#2",
                                  "net.width=1 6", "net.wi dth=16", "n[et.width=16",
                                  "convolutional.filters=8\r8", "net.foo=\x00"])
def test_set_values_are_one_line(item):
    sections = parse_cfg(TINY)
    with pytest.raises(DarkcspError) as info:
        apply_overrides(sections, [item])
    assert repr(item) in str(info.value)
    assert "\n" not in str(info.value)
    assert sections[0].get("foo") is None and sections[0].get("width") == "16"


def test_set_values_still_apply():
    sections = parse_cfg(TINY)
    apply_overrides(sections, ["net.width=32", "convolutional.activation=mish", " net.seed = 3 "])
    assert sections[0].get("width") == "32" and sections[0].get("seed") == "3"
    assert sections[1].get("activation") == "mish"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "tiny.cfg").write_text(TINY)
    (root / "bom.cfg").write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    Darknet(TINY).save_weights(root / "tiny.weights")
    (root / "yolo.cfg").write_text(DETECTOR)
    Darknet(DETECTOR).save_weights(root / "yolo.weights")
    (root / "big.png").write_bytes(png_claiming(60000, 60000))
    for name in ("fifo.cfg", "fifo.weights", "fifo.pt", "fifo.jpg"):
        os.mkfifo(root / name)
    readers = ("import sys\n"
               "from darkcsp.infer.preprocess import load_image\n"
               "from darkcsp.data.datasets import read_image\n"
               "assert read_image('fifo.jpg') is None\n"
               "try:\n    load_image('fifo.jpg')\n"
               "except Exception as e:\n    print(type(e).__name__, e)\n")
    jobs = {
        "cfg": ["summary", "fifo.cfg"],
        "weights": ["convert", "tiny.cfg", "fifo.weights", "out.pt"],
        "pt": ["convert", "tiny.cfg", "fifo.pt", "out.weights"],
        "image": ["detect", "yolo.cfg", "yolo.weights", "fifo.jpg"],
        "big png": ["detect", "yolo.cfg", "yolo.weights", "big.png"],
        "bom": ["summary", "bom.cfg"],
        "set": ["train", "yolo.cfg", "--set", "net.foo=1\n[maxpool]\nsize=2", "--out", "run",
                "--max-batches", "1"],
    }
    results = run_cli_batch(jobs, root, each=20)
    results.update(run_many({"readers": python(readers)}, root, timeout=30))
    return root, results


@pytest.mark.parametrize("job, needles", [
    ("cfg", ("fifo.cfg", "not a regular file")),
    ("weights", ("fifo.weights", "not a regular file")),
    ("pt", ("fifo.pt", "not a regular file")),
    ("image", ("fifo.jpg", "not a regular file")),
    ("big png", ("big.png", "60000 x 60000")),
    ("set", ("--set", "one line")),
])
def test_hostile_input_is_a_one_line_error(hostile, job, needles):
    assert_clean_error(hostile[1][job], *needles)


def test_fifo_image_in_the_readers(hostile):
    result = hostile[1]["readers"]
    assert result.rc == 0, result.describe()
    assert result.stdout.startswith("ImageError") and "not a regular file" in result.stdout


def test_bom_cfg_summary(hostile):
    result = hostile[1]["bom"]
    assert result.rc == 0, result.describe()
    assert "Total parameters 112" in result.stdout


def test_set_refused_before_any_run_folder(hostile):
    assert not (hostile[0] / "run").exists()
