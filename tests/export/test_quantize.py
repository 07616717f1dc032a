"""int8 ONNX export (darkcsp/export/quantize.py, ``darkcsp export --to onnx --int8``).

* the export is QDQ (QuantizeLinear/DequantizeLinear around int8 convs) with the heads, the
  convs feeding them and the first conv left float32;
* it loads and runs in ONNX Runtime and in OpenCV's ``readNetFromONNX``;
* without ``--calib`` it calibrates on the built-in synthetic shapes and says that real frames
  calibrate better.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reference_data import IMAGES, YOLOV3_TINY, require
from darkcsp.cli import main

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxruntime.quantization", reason="onnxruntime has no quantization")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real yolov3-tiny exported as int8, calibrated on the shared photos."""
    folder = require(YOLOV3_TINY)
    photos = sorted(str(p) for p in require(IMAGES).glob("*.png"))
    out = tmp_path_factory.mktemp("int8") / "yolov3-tiny-int8.onnx"
    assert main(["export", str(folder / "yolov3-tiny.cfg"), str(folder / "yolov3-tiny.weights"),
                 "--to", "onnx", str(out), "--int8", "--calib", *photos]) == 0
    return out


def test_int8_export_is_qdq_with_float_heads(int8_model: Path) -> None:
    from darkcsp.export.quantize import head_nodes, input_convs
    proto = onnx.load(str(int8_model))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    producer = {o: node for node in proto.graph.node for o in node.output}
    kept = set(head_nodes(proto)) | set(input_convs(proto))
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    for conv in convs:  # a quantized conv reads a dequantized int8 weight
        weight = producer.get(conv.input[1])
        quantized = weight is not None and weight.op_type == "DequantizeLinear"
        assert quantized == (conv.name not in kept), conv.name
    assert sum(conv.name in kept for conv in convs) == 3  # 2 head convs + the first conv


def test_int8_export_runs_in_onnxruntime_and_opencv(int8_model: Path) -> None:
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    session = ort.InferenceSession(str(int8_model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {"images": x})
    assert [o.shape for o in outputs] == [(1, 255, 13, 13), (1, 255, 26, 26)]
    net = cv2.dnn.readNetFromONNX(str(int8_model))  # OpenCV 4.14 reads QDQ graphs
    net.setInput(x)
    found = net.forward(names)
    for ours, theirs in zip(outputs, found):
        assert theirs.shape == ours.shape
        # OpenCV runs the same quantized graph its own way: close, not equal
        assert float(np.abs(theirs - ours).mean()) < 0.05


def test_int8_export_defaults_to_synthetic_calibration(tmp_path: Path, capsys) -> None:
    folder = require(YOLOV3_TINY)
    out = tmp_path / "syn.onnx"
    assert main(["export", str(folder / "yolov3-tiny.cfg"), str(folder / "yolov3-tiny.weights"),
                 "--to", "onnx", str(out), "--int8"]) == 0
    err = capsys.readouterr().err
    assert "synthetic" in err and "real frames" in err
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_int8_flags_are_refused_where_they_do_not_apply(tmp_path: Path) -> None:
    folder = require(YOLOV3_TINY)
    cfg, weights = str(folder / "yolov3-tiny.cfg"), str(folder / "yolov3-tiny.weights")
    assert main(["export", cfg, weights, "--to", "opencv", str(tmp_path / "o"), "--int8"]) != 0
    assert main(["export", cfg, weights, "--to", "onnx", str(tmp_path / "a.onnx"),
                 "--calib", cfg]) != 0
