"""Comparing darkcsp with OpenCV 4.x's Darknet importer on an ``export --to opencv`` result,
shared by tests/export/test_opencv_export.py and the layer registry sweep
(tests/layers/test_registry.py).

Every Darknet layer's output is compared (through :attr:`OpenCVPlan.outputs`), not only the last,
at ``max|a-b| / max|b| <= TOLERANCE``. OpenCV's Winograd 3x3 path is turned off: it trades ~1e-5
relative accuracy per layer, an approximation of OpenCV's own that has nothing to do with the
export.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from darkcsp import Darknet
from darkcsp.export import export_model
from darkcsp.export.opencv import lower_for_opencv, opencv_model
from darkcsp.layers.heads import YoloHead

if TYPE_CHECKING:
    import cv2

TOLERANCE = 1e-4
# OpenCV names a layer's activation <act>_{i+1}: its counter is already incremented.
ACTIVATION_NAMES = frozenset({"leaky", "relu", "logistic", "tanh", "swish", "mish"})


def opencv_available() -> str | None:
    """None when OpenCV 4.x with its Darknet importer can be imported, else why not."""
    try:
        import cv2
    except ImportError:
        return "opencv-python is not installed"
    if not hasattr(cv2, "dnn") or int(cv2.__version__.split(".")[0]) >= 5:
        return f"OpenCV {cv2.__version__} has no Darknet importer (removed in 5.x)"
    return None


def randomize(model: Darknet, seed: int = 0) -> Darknet:
    """Random weights (seeded): BN variances (and scales, means) in 0.5..1.5, biases in
    -0.3..0.3, conv/connected weights of variance 1/fan-in (so 40 layers keep O(1) outputs
    and the yolo decode's exp stays finite)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, blocks in model.weight_blocks():
            for block in blocks:
                tensor = block.tensor
                values = torch.rand(tensor.shape, generator=generator)
                if block.role == "bn":
                    tensor.copy_(0.5 + values)
                elif tensor.dim() >= 2:
                    fan_in = tensor[0].numel()
                    tensor.copy_((values * 2 - 1) * (3 / fan_in) ** 0.5)
                else:
                    tensor.copy_((values - 0.5) * 0.6)
    return model.eval()


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """``max|a-b| / max|b|`` in float64 (inf on a size mismatch)."""
    a = np.asarray(got, dtype=np.float64).ravel()
    b = np.asarray(expected, dtype=np.float64).ravel()
    if a.size != b.size:
        return float("inf")
    scale = float(np.abs(b).max())
    error = float(np.abs(a - b).max())
    return error / scale if scale > 0 else error


def opencv_names(net: "cv2.dnn.Net") -> dict[int, str]:
    """Exported layer index -> the last OpenCV layer belonging to it (``conv_i``, ``bn_i``,
    ``<act>_{i+1}``, ``concat_i``, ...)."""
    mapping: dict[int, str] = {}
    for name in net.getLayerNames():
        prefix, _, number = name.rpartition("_")
        if number.isdigit():
            mapping[int(number) - (prefix in ACTIVATION_NAMES)] = name
    return mapping


def decode_yolo(out: np.ndarray, head: YoloHead, net_w: int, net_h: int) -> np.ndarray:
    """darkcsp's ``[yolo]`` output (A*(5+C), H, W) decoded as OpenCV's yolo layer does with
    thresh=0: rows (y, x, anchor); cx, cy, w, h, obj, obj*class."""
    anchors = np.asarray(head.anchors, dtype=np.float64)
    count, (_, h, w) = len(anchors), out.shape
    t = out.astype(np.float64).reshape(count, -1, h, w).transpose(2, 3, 0, 1)
    t = t.reshape(h * w * count, -1)
    gy, gx, ga = (g.ravel() for g in np.meshgrid(np.arange(h), np.arange(w), np.arange(count),
                                                   indexing="ij"))
    size = t[:, 2:4] ** 2 * 4 if head.new_coords else np.exp(t[:, 2:4])
    return np.column_stack([(gx + t[:, 0]) / w, (gy + t[:, 1]) / h,
                            size * anchors[ga] / [net_w, net_h], t[:, 4], t[:, 4:5] * t[:, 5:]])


def export_and_compare(cfg_text: str, tmp_path: Path, size: tuple[int, int] = (32, 32),
                       seed: int = 0, model: Darknet | None = None, twin: bool = True
                       ) -> dict[str, float]:
    """Export ``cfg_text`` with random weights (or ``model``'s) to OpenCV and compare with
    darkcsp on the original (:func:`compare_export`)."""
    source = tmp_path / "model.cfg"
    source.write_text(cfg_text)
    if model is None:
        model = randomize(Darknet(source), seed)
    model.save_weights(tmp_path / "model.weights")
    x = torch.rand((1, 3, size[1], size[0]), generator=torch.Generator().manual_seed(seed + 1))
    return compare_export(model, source, tmp_path / "model.weights", x, tmp_path / "opencv",
                          twin)


def compare_export(model: Darknet, cfg: Path, weights: Path, x: torch.Tensor, out_dir: Path,
                   twin: bool = True) -> dict[str, float]:
    """``export --to opencv`` of ``cfg`` + ``weights`` into ``out_dir``; OpenCV on the exported
    files against darkcsp's ``model`` (the original): assert every Darknet layer (decoded for
    ``[yolo]``; ``[region]``'s input only, OpenCV always runs NMS there) and every OpenCV output
    agrees within TOLERANCE; with ``twin``, so does the exported graph run by darkcsp (which
    tells a wrong rewrite from an OpenCV difference). Returns the errors by name."""
    cfg_path, weights_path = export_model(cfg, weights, out_dir, "opencv")
    plan = lower_for_opencv(model.layer_graph)
    net_h, net_w = x.shape[2:]
    with torch.inference_mode():
        expected = [o[0].numpy() for o in model.forward_layers(x)]
        twins = ([o[0].numpy() for o in opencv_model(model, plan).forward_layers(x)] if twin
                 else [])

    def error(node_index: int, got: np.ndarray) -> float:
        node = model.nodes[node_index]
        if node.kind.name == "region":
            return 0.0
        if node.kind.name != "yolo":
            return relative_error(got, expected[node_index])
        decoded = decode_yolo(expected[node_index], model.layers[node_index], net_w, net_h)
        got = np.asarray(got).reshape(decoded.shape)
        # x/y, w/h, objectness and scores live on different scales: bound each group
        return max(relative_error(got[:, cols], decoded[:, cols])
                   for cols in (slice(0, 2), slice(2, 4), slice(4, 5), slice(5, None)))

    # Every layer: all OpenCV layers are requested (asking for a subset of intermediate
    # outputs makes OpenCV 4.14 return garbage for some of them, export or not).
    import cv2  # only callers that checked opencv_available() get here

    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.enableWinograd(False)
    names = opencv_names(net)
    everything = list(net.getLayerNames())
    net.setInput(x.numpy())
    results = dict(zip(everything, net.forward(everything)))
    errors: dict[str, float] = {}
    for node in model.nodes:
        index = plan.outputs[node.index]
        name = f"{node.index}:{node.section.type}"
        errors[name] = error(node.index, results[names[index]])
        if twins and not node.kind.detection_head:
            errors[f"{name} (darkcsp twin)"] = relative_error(twins[index], expected[node.index])

    # As users run it: only the outputs, so OpenCV fuses what it can. Every dangling exported
    # layer must be a Darknet layer's output (a rewrite leaves no loose ends).
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.enableWinograd(False)
    finals = list(net.getUnconnectedOutLayersNames())
    darknet_index = {index: i for i, index in enumerate(plan.outputs)}
    owners = {name: index for index, name in names.items()}
    owners["detection_out"] = next((plan.outputs[n.index] for n in model.nodes
                                    if n.kind.name == "region"), -1)
    net.setInput(x.numpy())
    for name, got in zip(finals, net.forward(finals)):
        index = darknet_index.get(owners.get(name, -1))
        errors[f"final {name}"] = float("inf") if index is None else error(index, got)
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= TOLERANCE}
    assert not bad, f"OpenCV export differs beyond {TOLERANCE:g}: {bad}"
    return errors
