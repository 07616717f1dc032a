"""The ``darkcsp`` command line: ``summary`` and ``convert``.

Why: these are what a user runs first on a real model; the summary's last two lines are a
stable interface for scripts, and a ``.weights -> .pt -> .weights`` trip must lose nothing.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from reference_data import REPO, YOLOV3_TINY, require
from darkcsp.cli import main
from darkcsp.checkpoint import load_pt
from darkcsp.errors import CfgWarning
from darkcsp.lower import load_graph
from darkcsp.network import Darknet
from darkcsp.summary import format_summary

TINY_CFG = YOLOV3_TINY / "yolov3-tiny.cfg"
TINY_WEIGHTS = YOLOV3_TINY / "yolov3-tiny.weights"
TINY_BYTES = 35_434_956  # reference §9.2
TINY_PARAMETERS = (TINY_BYTES - 20) // 4

SMALL_CFG = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=8
size=1
activation=linear
"""


def test_summary_of_yolov3_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = require(TINY_CFG)
    assert main(["summary", str(cfg)]) == 0
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    assert lines[-2:] == ["Total BFLOPS 5.571", f"Total parameters {TINY_PARAMETERS}"]
    rows = lines[1:-2]
    assert len(rows) == 24
    assert rows[0].split() == ["0", "conv", "16", "3", "x", "3/", "1", "416", "x", "416", "x",
                               "3", "->", "416", "x", "416", "x", "16", "0.150", "BF"]
    assert rows[1].split()[:2] == ["1", "max"]
    assert rows[16].split()[:2] == ["16", "yolo"]
    assert rows[20].split()[:4] == ["20", "route", "19", "8"]
    assert rows[19].split()[:3] == ["19", "upsample", "2x"]
    assert "13 x  13 x1024" in rows[12]


def test_summary_of_a_graph_matches_the_model() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        model = Darknet(SMALL_CFG)
        text = format_summary(load_graph(SMALL_CFG))
    assert text == format_summary(model)
    parameters = sum(t.numel() for _, blocks in model.weight_blocks() for t in
                     (b.tensor for b in blocks))
    assert text.splitlines()[-1] == f"Total parameters {parameters}"
    assert parameters == 4 * 4 + 4 * 3 * 9 + 8 + 8 * 4


def test_summary_of_a_bad_cfg_exits_2_naming_the_place(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(SMALL_CFG.replace("filters=8", "filters=eight"))
    assert main(["summary", str(cfg)]) == 2
    assert f"{cfg}:18 [convolutional] filters: expected an integer" in capsys.readouterr().err


def test_convert_round_trip_is_byte_identical(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg, weights = require(TINY_CFG), require(TINY_WEIGHTS)
    pt, back = tmp_path / "tiny.pt", tmp_path / "tiny.weights"
    assert main(["convert", str(cfg), str(weights), str(pt)]) == 0
    payload = torch.load(pt, weights_only=True)
    assert payload["format"] == "darkcsp" and payload["version"] == 1
    assert payload["header"] == list(struct.unpack("<iiiQ", weights.read_bytes()[:20]))
    assert "[yolo]" in payload["cfg"]
    assert main(["convert", str(cfg), str(pt), str(back)]) == 0
    assert back.read_bytes() == weights.read_bytes()
    resaved = tmp_path / "resaved.weights"
    assert main(["convert", str(cfg), str(weights), str(resaved)]) == 0
    assert resaved.read_bytes() == weights.read_bytes()
    model = load_pt(None, pt)  # the checkpoint carries its cfg
    assert model.header.seen == payload["header"][3]
    capsys.readouterr()


def test_convert_cutoff_and_bad_arguments(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        model = Darknet(cfg)
    model.save_weights(tmp_path / "full.weights")
    assert main(["convert", str(cfg), str(tmp_path / "full.weights"),
                 str(tmp_path / "part.weights"), "--cutoff", "1"]) == 0
    assert (tmp_path / "part.weights").stat().st_size == 20 + 4 * (4 * 4 + 4 * 3 * 9)
    assert main(["convert", str(cfg), str(tmp_path / "full.weights"),
                 str(tmp_path / "out.onnx")]) == 2
    assert main(["convert", str(cfg), str(tmp_path / "part.weights"),
                 str(tmp_path / "out.pt")]) == 2
    assert main(["convert", str(cfg), str(tmp_path / "full.weights"),
                 str(tmp_path / "no_such_dir" / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "no_such_dir/out.pt: cannot write: No such file or directory" in err
    assert "unknown extension '.onnx'" in err
    assert "bytes found" in err and "runs out in layer 2 [convolutional]" in err
    assert not (tmp_path / "out.pt").exists()


def test_python_dash_m_darkcsp_summary() -> None:
    cfg = require(TINY_CFG)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "darkcsp", "summary", str(cfg)],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["Total BFLOPS 5.571",
                                               f"Total parameters {TINY_PARAMETERS}"]
