"""int8 ONNX: ONNX Runtime static quantization of darkcsp's raw-head ONNX export.

QDQ format, uint8 activations, int8 per-channel weights; the detection heads and the convs
that feed them stay float32 (their outputs are box offsets and logits, where one int8 step is
a visible error), and so does the first conv (it reads the image; little compute, and on
yolov3-tiny it alone moved detections near the threshold). Calibration is by ONNX Runtime's
MinMax, averaged over the frames (``CalibMovingAverage``), over frames the caller has already
made with darkcsp's own pre-processing (:func:`darkcsp.infer.precision.calibration_frames`:
this module sits below ``infer/`` and takes network inputs, not images).

The export writes each ``[maxpool]`` as one ``MaxPool`` with its own pads and each
``[upsample]`` as one ``Resize`` (:mod:`darkcsp.export.onnx`), so calibration never sees the
-inf padding that made every scale infinite.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from darkcsp.errors import DarkcspError
from darkcsp.export.onnx import INPUT_NAME, export_onnx
from darkcsp.files import atomic_write
from darkcsp.network import Darknet

if TYPE_CHECKING:
    import onnx


def head_nodes(proto: "onnx.ModelProto") -> list[str]:
    """The names of the nodes from each graph output back to (and including) the last
    ``Conv`` before it: the head's activations and the conv that feeds the head."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    found: list[str] = []
    seen: set[int] = set()
    for output in proto.graph.output:
        stack = [output.name]
        while stack:
            node = producer.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            found.append(node.name)
            if node.op_type != "Conv":  # stop at the conv feeding the head
                stack.extend(i for i in node.input if i in producer)
    return found


def input_convs(proto: "onnx.ModelProto") -> list[str]:
    """The names of the ``Conv`` nodes that read the graph input (the image)."""
    inputs = {i.name for i in proto.graph.input}
    return [node.name for node in proto.graph.node
            if node.op_type == "Conv" and node.input and node.input[0] in inputs]


def _name_nodes(proto: "onnx.ModelProto") -> None:
    """Give every unnamed node a unique name (``nodes_to_exclude`` matches by name)."""
    taken = {node.name for node in proto.graph.node if node.name}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _no_preprocess_hint(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's "consider pre-processing" hint (a no-op for this export)."""
    return "pre-processing" not in record.getMessage()


class _Frames:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of (1, C, H, W) frames."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self.frames = list(frames)
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.frames):
            return None
        frame = self.frames[self.index]
        self.index += 1
        return {INPUT_NAME: frame}

    def rewind(self) -> None:
        self.index = 0


def _as_frames(frames: Iterable[np.ndarray], shape: tuple[int, int, int]) -> list[np.ndarray]:
    out = []
    for frame in frames:
        arr = np.ascontiguousarray(np.asarray(frame, dtype=np.float32))
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise DarkcspError(f"calibration frame of shape {arr.shape}: expected (1, "
                               f"{', '.join(map(str, shape))}) network inputs")
        out.extend(arr[i:i + 1] for i in range(arr.shape[0]))
    if not out:
        raise DarkcspError("int8 quantization needs at least one calibration frame")
    return out


def quantize_onnx(model: Darknet, path: str | os.PathLike, frames: Iterable[np.ndarray],
                  keep_fp32: bool = True) -> Path:
    """Write ``model`` as int8 (QDQ) ONNX to ``path``, calibrated on ``frames``: network
    inputs (C, H, W) or (N, C, H, W), float32, as darkcsp's pre-processing makes them
    (about 20 of them). ``keep_fp32``: the heads, the convs feeding them and the first conv
    stay float32. The file is written atomically; ``model`` is not modified."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    net = model.net
    calibration = _as_frames(frames, (int(net.channels), int(net.height), int(net.width)))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".darkcsp-int8-") as tmp:
        # BN is already folded and shapes static: ONNX Runtime's pre-processing step changes
        # nothing here (same detections), so the export is quantized as it is
        prepared = export_onnx(model, Path(tmp) / "fp32.onnx")
        proto = onnx.load(str(prepared))
        _name_nodes(proto)
        onnx.save(proto, str(prepared))
        exclude = head_nodes(proto) + input_convs(proto) if keep_fp32 else []
        quantized = Path(tmp) / "int8.onnx"
        root = logging.getLogger()
        root.addFilter(_no_preprocess_hint)
        try:
            quantize_static(str(prepared), str(quantized), _Frames(calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=exclude,
                            extra_options={"CalibMovingAverage": True})
        finally:
            root.removeFilter(_no_preprocess_hint)
        atomic_write(out, quantized.read_bytes())
    return out


__all__ = ["quantize_onnx", "head_nodes", "input_convs"]
