"""darkcsp.evaluate (darkcsp/evaluate/run.py): the library behind ``darkcsp map``.

* ``darkcsp.evaluate`` is both the subpackage and the function; every dotted import still works;
* it returns exactly what ``darkcsp map`` prints and writes (metrics JSON, COCO numbers);
* training's source evaluation and the file evaluation agree, and the other backends run.
"""
from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path

import pytest
import torch

import darkcsp
from darkcsp.checkpoint import save_pt
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.network import Darknet

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

SPEC = SyntheticSpec(train=1, valid=6, size=80, classes=3, seed=4)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(.data, cfg, .pt): the synthetic valid split (80 px, resized to 64) and a random-weight
    3-class tiny detector: many random candidates, a few hit."""
    cfg = tiny_cfg(tmp_path)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    save_pt(Darknet(str(cfg)), weights)
    return SyntheticShapes(SPEC).write(tmp_path / "syn"), cfg, weights


def test_evaluate_is_the_subpackage_and_the_function() -> None:
    import darkcsp.evaluate.coco
    import darkcsp.evaluate.darknet_map
    from darkcsp.evaluate import DarknetMap, EvaluationResult, evaluate
    from darkcsp.evaluate.darknet_map import DarknetMap as direct
    from darkcsp.evaluate.run import evaluate as library

    assert DarknetMap is direct and evaluate is library
    assert darkcsp.evaluate.coco.coco_metrics is not None  # dotted access through the package
    assert callable(darkcsp.evaluate) and callable(darkcsp.train)
    assert inspect.signature(darkcsp.evaluate) == inspect.signature(library)
    assert inspect.signature(darkcsp.evaluate).return_annotation in (EvaluationResult,
                                                                      "EvaluationResult")
    from darkcsp.train import TrainConfig
    from darkcsp.train.run import train
    assert darkcsp.train.TrainConfig is TrainConfig and darkcsp.train.train is train
    assert inspect.signature(darkcsp.train) == inspect.signature(train)
    with pytest.raises(AttributeError):
        darkcsp.evaluate.no_such_thing  # noqa: B018


def test_evaluate_returns_what_the_map_command_prints(dataset, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from darkcsp.cli import main

    data, cfg, weights = dataset
    metrics = tmp_path / "m.json"
    assert main(["map", str(data), str(cfg), str(weights), "--metrics-json", str(metrics),
                 "--quiet", "--points", "11"]) == 0
    printed = capsys.readouterr().out
    found = darkcsp.evaluate(data, cfg, weights, points=11, coco=True, progress=False)
    assert found.metrics == json.loads(metrics.read_text())
    assert found.result.map > 0 and found.map == found.metrics["mAP"]  # not vacuous
    assert found.names == ["circle", "square", "triangle"] and found.images == SPEC.valid
    assert f"= {found.result.map_present:.6f}" in printed  # the printed mAP line
    coco = found.coco
    assert coco is not None and found.metrics["coco"]["AP50"] == pytest.approx(coco["AP50"])
    assert f"AP50 = {coco['AP50']:.4f}" in printed
    without = darkcsp.evaluate(data, cfg, weights, points=11, progress=False)
    assert without.coco is None and "coco" not in without.metrics
    assert without.result.ap.tolist() == found.result.ap.tolist()
    limited = darkcsp.evaluate(data, cfg, weights, limit=2, progress=False)
    assert limited.images == 2 and limited.metrics["images"] == 2


def test_source_evaluation_equals_file_evaluation(dataset) -> None:
    """Training's path (in-memory uint8 images and labels) and ``darkcsp map``'s (files) give
    the same numbers for the same images and model."""
    from darkcsp.checkpoint import load_model
    from darkcsp.data.datasets import synthetic_data
    from darkcsp.evaluate.run import evaluate_source

    data, cfg, weights = dataset
    model = load_model(cfg, weights)
    in_memory = evaluate_source(model, synthetic_data(SPEC).valid)
    from_files = darkcsp.evaluate(data, cfg, weights, progress=False).result
    assert in_memory.map > 0
    assert in_memory.map == pytest.approx(from_files.map, abs=1e-9)
    assert in_memory.tp == from_files.tp and in_memory.fp == from_files.fp


def test_onnx_backend_gives_the_torch_numbers(dataset) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    data, cfg, weights = dataset
    torch_map = darkcsp.evaluate(data, cfg, weights, progress=False)
    onnx_map = darkcsp.evaluate(data, cfg, weights, backend="onnx", progress=False)
    assert onnx_map.map == pytest.approx(torch_map.map, abs=1e-3)
    with pytest.raises(darkcsp.DarkcspError, match="unknown backend"):
        darkcsp.evaluate(data, cfg, weights, backend="tensorrt", progress=False)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_map_runs_at_reduced_precision(dataset, precision: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``darkcsp map --precision int8|bf16`` (int8 on the onnx backend by default, calibrated
    on the synthetic default set and cached under $DARKCSP_CACHE)."""
    from darkcsp.cli import main
    from darkcsp.infer.precision import cpu_has_native_bf16

    if precision == "int8":
        pytest.importorskip("onnxruntime.quantization", reason="no onnxruntime quantization")
    elif not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setenv("DARKCSP_CACHE", str(tmp_path / "cache"))
    data, cfg, weights = dataset
    metrics = tmp_path / "m.json"
    expect = (pytest.warns(UserWarning, match="real frames") if precision == "int8"
              else contextlib.nullcontext())
    with expect:
        assert main(["map", str(data), str(cfg), str(weights), "--quiet", "--no-coco",
                     "--precision", precision, "--metrics-json", str(metrics)]) == 0
    assert " mAP over the " in capsys.readouterr().out
    assert 0.0 <= json.loads(metrics.read_text())["mAP"] <= 1.0
    if precision == "int8":
        assert len(list((tmp_path / "cache" / "int8").glob("*.onnx"))) == 1
    with pytest.raises(darkcsp.DarkcspError, match="backend"):
        darkcsp.evaluate(data, cfg, weights, backend="opencv", precision=precision,
                         progress=False)
