"""Every CLI number is validated before any work starts (issue 10, Build 6).

Why: ``detect --thresh -1`` printed 202,800 boxes, ``map --iou-thresh -1`` reported 23 % for a
0.2 % model, ``--save-every 0`` and ``--device bogus`` were tracebacks after minutes of work.
Each value is now checked by an argparse type from darkcsp.cli.arguments: a bad one is
argparse's one-line error with exit 2, at parse time.
"""
from __future__ import annotations

import argparse

import pytest
import torch

from darkcsp import budget
from darkcsp.cli import arguments, build_parser

from limited import darkcsp, run_many

DETECT = ["detect", "a.cfg", "a.weights", "a.jpg"]
MAP = ["map", "a.data", "a.cfg", "a.weights"]
TRAIN = ["train", "a.cfg"]
CONVERT = ["convert", "a.cfg", "a.weights", "b.pt"]
ANCHORS = ["anchors", "a.data", "--width", "416", "--height", "416"]
VALID = ["valid", "a.data", "a.cfg", "a.weights"]
SYNTHETIC = ["synthetic", "out"]

REFUSED = [
    DETECT + ["--thresh", "-1"], DETECT + ["--thresh", "nan"], DETECT + ["--thresh", "1.5"],
    DETECT + ["--nms", "2"], DETECT + ["--nms", "inf"], DETECT + ["--max-memory", "lots"],
    MAP + ["--iou-thresh", "-1"], MAP + ["--iou-thresh", "nan"], MAP + ["--thresh", "-0.1"],
    MAP + ["--det-thresh", "2"], MAP + ["--nms", "-1"], MAP + ["--limit", "-1"],
    MAP + ["--limit", "0"], MAP + ["--points", "7"],
    TRAIN + ["--cutoff", "-3"], TRAIN + ["--save-every", "0"], TRAIN + ["--workers", "-1"],
    TRAIN + ["--threads", "-1"], TRAIN + ["--threads", "0"], TRAIN + ["--max-batches", "0"],
    TRAIN + ["--batch", "0"], TRAIN + ["--subdivisions", "-2"], TRAIN + ["--size", "0"],
    TRAIN + ["--burn-in", "-1"], TRAIN + ["--lr", "0"], TRAIN + ["--lr", "nan"],
    TRAIN + ["--device", "bogus"], TRAIN + ["--device", "tpu:0"], TRAIN + ["--seed", "-1"],
    TRAIN + ["--map-every", "0"], TRAIN + ["--map-images", "0"], TRAIN + ["--time-limit", "-5"],
    TRAIN + ["--synthetic-train", "0"], TRAIN + ["--synthetic-classes", "6"],
    TRAIN + ["--synthetic-size", "8"], TRAIN + ["--max-memory", "0"],
    CONVERT + ["--cutoff", "-3"], CONVERT + ["--cutoff", "1.5"],
    ANCHORS + ["--num", "0"], ANCHORS + ["--num", "2000000000"],
    ["anchors", "a.data", "--height", "416", "--width", "-416"],
    VALID + ["--top", "0"], VALID + ["--limit", "-1"],
    SYNTHETIC + ["--train", "0"], SYNTHETIC + ["--valid", "-1"],
    SYNTHETIC + ["--valid", "99999999999999999999"],
    TRAIN + ["--synthetic-train", "1000001"], TRAIN + ["--max-batches", "2147483648"],
    SYNTHETIC + ["--classes", "0"],
    SYNTHETIC + ["--size", "0"], SYNTHETIC + ["--seed", "-3"],
]
if not torch.cuda.is_available():
    REFUSED += [TRAIN + ["--device", "0"], TRAIN + ["--device", "cuda:0"]]

ACCEPTED = [
    (DETECT + ["--thresh", "0", "--nms", "1"], {"thresh": 0.0, "nms": 1.0}),
    (MAP + ["--iou-thresh", "0.75", "--limit", "5", "--points", "101"],
     {"iou_thresh": 0.75, "limit": 5, "points": 101}),
    (TRAIN + ["--workers", "0", "--threads", "2", "--device", "cpu", "--lr", "0.001",
              "--max-memory", "8G"],
     {"workers": 0, "threads": 2, "device": "cpu", "learning_rate": 0.001,
      "max_memory": 8 << 30}),
    (CONVERT + ["--cutoff", "10", "--max-memory", "none"], {"cutoff": 10, "max_memory": None}),
    (ANCHORS + ["--num", "9"], {"num": 9, "width": 416}),
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda argv: " ".join(argv[:1] + argv[-2:]))
def test_bad_number_is_an_argparse_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and argv[-2] in errors[0], err


@pytest.mark.parametrize("argv, expected", ACCEPTED, ids=lambda a: a[0] if isinstance(a, list)
                         else "")
def test_good_numbers_parse(argv, expected):
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


def test_max_memory_defaults_to_auto_and_is_passed_on():
    assert build_parser().parse_args(CONVERT).max_memory == budget.AUTO
    assert build_parser().parse_args(CONVERT + ["--max-memory", "8G"]).max_memory == 8 << 30
    assert build_parser().parse_args(CONVERT + ["--max-memory", "none"]).max_memory is None


@pytest.mark.parametrize("text", ["nan", "-0.001", "1.0001", "inf", "x", ""])
def test_probability_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.probability(text)


def test_device_without_cuda():
    assert arguments.device("cpu") == "cpu" and arguments.device("auto") == "auto"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in ("0", "cuda", "cuda:1"):
        with pytest.raises(argparse.ArgumentTypeError, match="CUDA is not available"):
            arguments.device(name)


def test_every_numeric_flag_has_a_checked_type():
    """No ``type=int`` / ``type=float`` left in any command: each number has a range."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    loose = [f"{name} {action.option_strings or action.dest}"
             for name, command in sub.choices.items() for action in command._actions
             if action.type in (int, float) and not action.choices]
    assert not loose, loose


def test_cli_exits_2_with_one_line(tmp_path):
    results = run_many({"thresh": darkcsp(*DETECT, "--thresh", "nan"),
                        "device": darkcsp(*TRAIN, "--device", "bogus")}, tmp_path)
    for result in results.values():
        assert result.rc == 2 and "Traceback" not in result.stderr, result.describe()
        assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
    assert not any(tmp_path.iterdir())  # nothing was started
