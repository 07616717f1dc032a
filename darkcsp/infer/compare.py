"""``darkcsp compare``: one input through darkcsp and other engines, and where they part.

The same input (Darknet's pre-processing of an image through :func:`prepare_input`, or a seeded
uniform 0..1 tensor) runs through darkcsp (``torch``, the reference: the unfused model's
:meth:`~darkcsp.network.Darknet.forward_layers`, Darknet's own numbers) and each engine asked
for. Per engine, :class:`EngineReport`:

* ``max_rel``: ``max|a-b| / max|b|`` over the final outputs (the detection heads in darkcsp's
  layout, ``b`` = darkcsp), the worst output;
* ``first_divergent_layer`` / ``layer_type``: the first Darknet layer whose output leaves
  darkcsp's by more than ``tolerance`` (a different shape or NaN counts), null when none;
* ``detections``: how many of darkcsp's detections (thresh 0.25, Darknet's NMS 0.45, kind
  from the last head) the engine's outputs reproduce through the same decode and NMS: same
  class, IoU >= 0.5, each engine detection used once;
* ``cause``: what explains the divergence, where it can tell (OpenCV's BN eps, a cfg key the
  OpenCV importer reads differently);
* ``error``: why the engine could not run (the report's other fields are then null).

Engines (:data:`ENGINES`):

* ``opencv``: OpenCV 4.x ``readNetFromDarknet`` on the cfg and weights as given (a ``.pt`` is
  converted to ``.weights`` first). Every OpenCV layer is requested (asking for a subset makes
  OpenCV 4.14 return garbage for some); the importer names them ``<kind>_<i>`` for Darknet
  layer ``i`` and activations ``<act>_<i+1>``: the last one of each index is that layer's
  output. ``[yolo]`` outputs are OpenCV's decoded boxes, compared with darkcsp's output decoded
  the same way; ``[region]`` (OpenCV runs NMS inside it) is compared through its input only.
  Final outputs: OpenCV's ``permute_<i>`` (the head's raw input) through darkcsp's head module,
  so detections differ only by what the network computed. Winograd is off (OpenCV's own
  ~1e-5-per-layer approximation, not a reading of the cfg).
* ``opencv-export``: the same on ``export --to opencv`` (:func:`lower_for_opencv`'s
  ``OpenCVPlan.outputs`` maps each Darknet layer to the exported layer holding its output).
* ``onnx``: onnxruntime on :func:`export_onnx`; every node's output is exposed and the last one
  under ``/model/layers.<i>/`` whose size matches darkcsp's layer ``i`` is that layer's output
  (layers without a node of their own, such as a one-input route, are not compared).
* ``darknet``: the user's ``libdarknet.so`` (AlexeyAB's API: ``load_network_custom``,
  ``network_predict_ptr``, ``free_network_ptr``) through ctypes, on the plain Darknet lowering.
  Layer ``i``'s output is the network's output with the cfg cut after layer ``i`` (Darknet's
  weight reader stops at the last layer of the cfg); layers are scanned up to the first one
  that diverges. Nothing is downloaded or built.
"""
from __future__ import annotations

import copy
import ctypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.checkpoint import convert, load_model
from darkcsp.config.writer import format_cfg
from darkcsp.errors import DarkcspError
from darkcsp.export.darknet import export_darknet
from darkcsp.export.onnx import INPUT_NAME, export_onnx, output_names
from darkcsp.export.opencv import OPENCV_BN_EPS, lower_for_opencv
from darkcsp.graph import Graph
from darkcsp.infer.backends import opencv_files
from darkcsp.infer.decode import detection_heads, get_network_boxes
from darkcsp.infer.detector import prepare_input
from darkcsp.infer.nms import apply_nms, box_iou
from darkcsp.layers.conv import Conv
from darkcsp.layers.heads import RegionHead, YoloHead
from darkcsp.network import Darknet

ENGINES = ("torch", "opencv", "opencv-export", "onnx", "darknet")
DEFAULT_ENGINES = ("torch", "opencv", "opencv-export", "onnx")
DEFAULT_TOLERANCE = 1e-4
DETECTION_THRESH = 0.25  # darknet detector test's default
NMS_THRESH = 0.45
MATCH_IOU = 0.5
OPENCV_YOLO_THRESH = 0.2  # OpenCV's [yolo] zeroes scores <= thresh (default 0.2)
THRESH_AMBIGUITY = 1e-5  # a score this close to OpenCV's thresh may be zeroed on one side only
# OpenCV names a layer's activation <act>_{i+1}: its counter is already incremented.
OPENCV_ACTIVATIONS = frozenset({"leaky", "relu", "logistic", "tanh", "swish", "mish"})


@dataclass
class EngineReport:
    """One engine against darkcsp (see the module docstring); :meth:`as_dict` is its JSON."""

    max_rel: float | None = None
    first_divergent_layer: int | None = None
    layer_type: str | None = None
    detections: dict[str, int] | None = None
    cause: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_rel": self.max_rel,
                               "first_divergent_layer": self.first_divergent_layer,
                               "layer_type": self.layer_type, "detections": self.detections,
                               "cause": self.cause}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Reference:
    """darkcsp's run: the model (unfused, eval), the input, every layer's output (batch item
    0), the final outputs (batch dimension kept) and the detections."""

    model: Darknet
    x: torch.Tensor
    layers: list[np.ndarray]
    finals: list[np.ndarray]
    orig_size: tuple[int, int]
    letterbox: bool
    detections: list[tuple[int, np.ndarray]] = field(default_factory=list)


@dataclass
class EngineRun:
    """What an engine gave: its final outputs (darkcsp's layout, ``model.output_indices``
    order) and its per-layer errors against darkcsp, in layer order."""

    finals: list[np.ndarray]
    layer_errors: dict[int, float]
    cause: str | None = None


class EngineUnavailable(DarkcspError):
    """The engine could not load or run the model; the message says why."""


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """``max|a-b| / max|b|`` in float64 (``b`` = darkcsp; the absolute error when ``b`` is all
    zero); inf when the element counts differ; NaN propagates."""
    a = np.asarray(got, dtype=np.float64).ravel()
    b = np.asarray(expected, dtype=np.float64).ravel()
    if a.size != b.size:
        return float("inf")
    if b.size == 0:
        return 0.0
    scale = float(np.abs(b).max())
    error = float(np.abs(a - b).max())
    return error / scale if scale > 0 else error


def _exceeds(error: float, tolerance: float) -> bool:
    return not error <= tolerance  # NaN exceeds


# ---------------------------------------------------------------------------- reference


def seeded_input(model: Darknet, seed: int = 0) -> torch.Tensor:
    """A (1, C, H, W) uniform 0..1 input at the cfg size, the same for the same seed."""
    net = model.net
    shape = (1, int(net.channels), int(net.height), int(net.width))
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def detections_of(model: Darknet, finals: Sequence[np.ndarray], orig_size: tuple[int, int],
                  letterbox: bool) -> list[tuple[int, np.ndarray]]:
    """(class, box x/y/w/h relative to the image) of every detection and class above
    :data:`DETECTION_THRESH` after Darknet's NMS."""
    rows = get_network_boxes(model, [np.asarray(f)[:1] for f in finals], orig_size[0],
                             orig_size[1], DETECTION_THRESH, letterbox)
    rows = apply_nms(model, rows, NMS_THRESH)
    found = []
    for row in rows:
        for k in np.flatnonzero(row[5:] > DETECTION_THRESH):
            found.append((int(k), np.asarray(row[:4], dtype=np.float32)))
    return found


def match_detections(reference: list[tuple[int, np.ndarray]],
                     engine: list[tuple[int, np.ndarray]]) -> int:
    """How many ``reference`` detections have an engine detection of the same class with IoU
    >= :data:`MATCH_IOU` (each engine detection matched at most once, best IoU first)."""
    if not reference or not engine:
        return 0
    classes = np.array([k for k, _ in engine])
    boxes = np.stack([box for _, box in engine])
    free = np.ones(len(engine), dtype=bool)
    matched = 0
    for k, box in reference:
        iou = np.where(free & (classes == k), box_iou(box[None], boxes), -1.0)
        best = int(np.argmax(iou))
        if iou[best] >= MATCH_IOU:
            free[best] = False
            matched += 1
    return matched


def reference_run(cfg: str | os.PathLike, weights: str | os.PathLike,
                  image: str | os.PathLike | None = None, seed: int = 0,
                  max_memory: MaxMemory = AUTO) -> Reference:
    """darkcsp's run of ``cfg`` + ``weights`` on ``image`` (or :func:`seeded_input`)."""
    model = load_model(cfg, weights, fuse=False, max_memory=max_memory)
    net = model.net
    w, h, channels = int(net.width), int(net.height), int(net.channels)
    letterbox = bool(net.letter_box)
    if image is not None:
        prepared = prepare_input(image, w, h, letterbox, channels)
        x = prepared.tensor[None]
        orig = (prepared.meta.orig_w, prepared.meta.orig_h)
    else:
        x, orig, letterbox = seeded_input(model, seed), (w, h), False
    with torch.inference_mode():
        outputs = model.forward_layers(x)
    layers = [o[0].numpy() for o in outputs]
    finals = [outputs[i].numpy() for i in model.output_indices]
    ref = Reference(model, x, layers, finals, orig, letterbox)
    ref.detections = _detections_or_none(ref, finals) or []
    return ref


def _detections_or_none(ref: Reference, finals: Sequence[np.ndarray]
                        ) -> list[tuple[int, np.ndarray]] | None:
    """The detections of ``finals``, or None when the model has no detection head."""
    try:
        detection_heads(ref.model)
    except DarkcspError:
        return None
    return detections_of(ref.model, finals, ref.orig_size, ref.letterbox)


# ---------------------------------------------------------------------------- OpenCV


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise EngineUnavailable("opencv-python is not installed") from None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        raise EngineUnavailable(f"OpenCV {cv2.__version__} has no Darknet importer (removed "
                                "in 5.x)")
    return cv2


def _cv_message(exc: Exception) -> str:
    """The useful line of a cv2.error (its last non-empty line, without the C++ frame)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text.split(") ", 1)[-1] if text.startswith("(") else text


def opencv_layer_index(name: str) -> int | None:
    """The layer index an OpenCV importer layer name belongs to (``conv_i``, ``bn_i``,
    ``<act>_{i+1}``, ...); None for other names."""
    prefix, sep, number = name.rpartition("_")
    if not sep or not number.isdigit():
        return None
    return int(number) - 1 if prefix in OPENCV_ACTIVATIONS else int(number)


def opencv_layer_names(names: Sequence[str]) -> dict[int, str]:
    """Layer index -> the LAST OpenCV layer (in network order) belonging to it."""
    mapping: dict[int, str] = {}
    for name in names:
        index = opencv_layer_index(name)
        if index is not None:
            mapping[index] = name
    return mapping


def decode_yolo_as_opencv(out: np.ndarray, head: YoloHead, net_w: int, net_h: int,
                          thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """darkcsp's ``[yolo]`` output (A*(5+C), H, W) decoded as OpenCV's yolo layer does: rows
    (y, x, anchor) with cx, cy, w, h (relative to the input), obj, obj*class (zero when <=
    ``thresh``); and the mask of scores too close to ``thresh`` to decide."""
    anchors = np.asarray(head.anchors, dtype=np.float64)
    count, (_, h, w) = len(anchors), out.shape
    t = out.astype(np.float64).reshape(count, -1, h, w).transpose(2, 3, 0, 1)
    t = t.reshape(h * w * count, -1)
    gy, gx, ga = (g.ravel() for g in np.meshgrid(np.arange(h), np.arange(w), np.arange(count),
                                                   indexing="ij"))
    size = t[:, 2:4] ** 2 * 4 if head.new_coords else np.exp(t[:, 2:4])
    scores = t[:, 4:5] * t[:, 5:]
    ambiguous = np.abs(scores - thresh) <= THRESH_AMBIGUITY
    decoded = np.column_stack([(gx + t[:, 0]) / w, (gy + t[:, 1]) / h,
                               size * anchors[ga] / [net_w, net_h], t[:, 4],
                               np.where(scores > thresh, scores, 0.0)])
    return decoded, ambiguous


def opencv_layer_error(model: Darknet, index: int, got: np.ndarray, expected: np.ndarray,
                       yolo_thresh: str | None = None) -> float | None:
    """OpenCV's output of Darknet layer ``index`` against darkcsp's (None: not comparable,
    an OpenCV ``[region]`` runs its own NMS); ``yolo_thresh``: the ``thresh`` key of the
    ``[yolo]`` section OpenCV read."""
    node, module = model.nodes[index], model.layers[index]
    if isinstance(module, RegionHead):
        return None
    if isinstance(module, YoloHead) and node.kind.name == "yolo":
        thresh = float(yolo_thresh or OPENCV_YOLO_THRESH)
        decoded, ambiguous = decode_yolo_as_opencv(expected, module, int(model.net.width),
                                                   int(model.net.height), thresh)
        values = np.asarray(got, dtype=np.float64)
        if values.size != decoded.size:
            return float("inf")
        values = values.reshape(decoded.shape).copy()
        values[:, 5:][ambiguous] = decoded[:, 5:][ambiguous] = 0.0
        # x/y, w/h, objectness and scores live on different scales: bound each group
        return max(relative_error(values[:, cols], decoded[:, cols])
                   for cols in (slice(0, 2), slice(2, 4), slice(4, 5), slice(5, None)))
    return relative_error(got, expected)


def _opencv_finals(ref: Reference, results: dict[str, np.ndarray], names: dict[int, str],
                   where: Callable[[int], int]) -> list[np.ndarray]:
    """The final outputs in darkcsp's layout: a head's raw input (``permute_<j>``, NHWC)
    through darkcsp's head module, any other output as OpenCV gives it."""
    finals = []
    for index in ref.model.output_indices:
        module, j = ref.model.layers[index], where(index)
        permute = results.get(f"permute_{j}")
        if isinstance(module, (YoloHead, RegionHead)) and permute is not None:
            x = torch.from_numpy(np.ascontiguousarray(permute.transpose(0, 3, 1, 2)))
            with torch.inference_mode():
                finals.append(module(x).numpy())
        elif j in names:
            finals.append(np.asarray(results[names[j]]))
        else:
            raise EngineUnavailable(f"OpenCV's network has no output for layer {index}")
    return finals


def run_opencv_files(ref: Reference, cfg: Path, weights: Path, graph: Graph | None = None,
                     where: Callable[[int], int] = lambda i: i) -> EngineRun:
    """OpenCV's Darknet importer on ``cfg`` + ``weights``, whose layers are ``graph``'s
    (default: darkcsp's own); ``where`` maps a Darknet layer to the layer of ``cfg`` holding
    its output."""
    graph = ref.model.layer_graph if graph is None else graph
    cv2 = _cv2()
    try:
        net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    except cv2.error as exc:
        raise EngineUnavailable(f"OpenCV cannot read the cfg: {_cv_message(exc)}") from None
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    everything = list(net.getLayerNames())
    try:
        net.setInput(np.ascontiguousarray(ref.x.numpy(), dtype=np.float32))
        results = dict(zip(everything, (np.asarray(o) for o in net.forward(everything))))
    except cv2.error as exc:
        raise EngineUnavailable(f"OpenCV cannot run the cfg: {_cv_message(exc)}") from None
    names = opencv_layer_names(everything)
    errors: dict[int, float] = {}
    for node in ref.model.nodes:
        name = names.get(where(node.index))
        if name is None:
            continue
        got = results[name]  # batch item 0 (a [yolo]'s rows have no batch dimension)
        got = got[0] if got.ndim == ref.layers[node.index].ndim + 1 else got
        error = opencv_layer_error(ref.model, node.index, got, ref.layers[node.index],
                                   graph.nodes[where(node.index)].section.get("thresh"))
        if error is not None:
            errors[node.index] = error
    return EngineRun(_opencv_finals(ref, results, names, where), errors)


def _darknet_weights(cfg: str | os.PathLike, weights: str | os.PathLike, folder: Path) -> Path:
    """``weights`` as a Darknet ``.weights`` file (a ``.pt`` is converted into ``folder``)."""
    if Path(weights).suffix.lower() == ".pt":
        target = folder / f"{Path(weights).stem}.weights"
        convert(cfg, weights, target)
        return target
    return Path(weights)


def run_opencv(ref: Reference, cfg: str | os.PathLike, weights: str | os.PathLike,
               tolerance: float) -> EngineRun:
    """``opencv``: the importer on the cfg and weights as given, with the cause of the first
    divergence where it can tell."""
    with tempfile.TemporaryDirectory(prefix="darkcsp-compare-") as tmp:
        run = run_opencv_files(ref, Path(cfg), _darknet_weights(cfg, weights, Path(tmp)))
        first = first_divergent(run.layer_errors, tolerance)
        if first is not None:
            run.cause = (bn_eps_cause(ref, cfg, weights, tmp, first, tolerance)
                         or opencv_known_difference(ref.model, first))
    return run


def bn_eps_cause(ref: Reference, cfg: str | os.PathLike, weights: str | os.PathLike,
                 tmp: str, index: int, tolerance: float) -> str | None:
    """The BN eps explanation when layer ``index`` is a batch-normalized conv and darkcsp with
    OpenCV's eps (1e-6 instead of Darknet's 1e-5) reproduces OpenCV's output there."""
    module = ref.model.layers[index]
    if not (isinstance(module, Conv) and module.bn is not None):
        return None
    twin = copy.deepcopy(ref.model, {id(ref.model.layer_graph): ref.model.layer_graph})
    for layer in twin.layers:
        if isinstance(layer, Conv) and layer.bn is not None:
            layer.bn.eps = OPENCV_BN_EPS
    with torch.inference_mode():
        twin_layers = [o[0].numpy() for o in twin.forward_layers(ref.x)]
    # OpenCV against darkcsp-with-OpenCV's-eps: the layer's error must fall within tolerance
    eps_ref = Reference(twin, ref.x, twin_layers, ref.finals, ref.orig_size, ref.letterbox)
    again = run_opencv_files(eps_ref, Path(cfg), _darknet_weights(cfg, weights, Path(tmp)))
    error = again.layer_errors.get(index, float("inf"))
    if _exceeds(error, tolerance):
        return None
    return (f"BatchNorm epsilon: OpenCV uses {OPENCV_BN_EPS:g}, Darknet 1e-05; with eps "
            f"{OPENCV_BN_EPS:g} darkcsp's layer {index} matches OpenCV's to {error:.1e} "
            "(darkcsp export --to opencv compensates it)")


def opencv_known_difference(model: Darknet, index: int) -> str | None:
    """A cfg setting of layer ``index`` that OpenCV 4.x's importer reads differently from
    Darknet, if it has one."""
    node = model.nodes[index]
    section, kind = node.section, node.kind.name
    has = section.get

    def number(key: str, default: float) -> float:
        try:
            return float(has(key) or default)
        except ValueError:
            return default

    if kind == "convolutional":
        if has("activation") is None:
            return "no activation key: OpenCV reads linear, Darknet logistic"
        if number("dilation", 1) != 1:
            return "OpenCV ignores dilation"
        if has("stride_x") is not None or has("stride_y") is not None:
            return "OpenCV ignores stride_x / stride_y"
    if kind == "maxpool":
        if has("maxpool_depth") not in (None, "0"):
            return "OpenCV ignores maxpool_depth (plain 2D pooling)"
        if has("stride_x") is not None or has("stride_y") is not None:
            return "OpenCV ignores stride_x / stride_y"
        if has("size") is None or has("stride") is None:
            return ("[maxpool] defaults differ: OpenCV size=2 stride=2, Darknet stride=1, "
                    "size=stride")
    if kind == "shortcut":
        if has("weights_type") not in (None, "none"):
            return "OpenCV ignores weights_type (plain sum; the shortcut weights are not read)"
        if len(node.inputs) > 2:
            return "OpenCV adds only the first from= layer"
    if kind == "route" and len(node.inputs) > 1 and number("groups", 1) != 1:
        return "OpenCV's route groups over several inputs take the wrong channels"
    if kind == "upsample" and has("scale") is not None:
        return "OpenCV ignores upsample scale"
    if kind == "softmax":
        if has("temperature") is not None:
            return "OpenCV ignores softmax temperature"
        if has("spatial") not in (None, "0"):
            return "OpenCV normalises per pixel over channels; Darknet over all C*H*W"
    if kind == "connected" and has("batch_normalize") not in (None, "0"):
        return "OpenCV reads connected-layer BN parameters in conv order"
    return None


def run_opencv_export(ref: Reference, cfg: str | os.PathLike, weights: str | os.PathLike
                      ) -> EngineRun:
    """``opencv-export``: the importer on ``darkcsp export --to opencv``'s files."""
    plan = lower_for_opencv(ref.model.layer_graph)
    with tempfile.TemporaryDirectory(prefix="darkcsp-compare-") as tmp:
        cfg_path, weights_path = opencv_files(cfg, weights, Path(tmp))
        return run_opencv_files(ref, cfg_path, weights_path, plan.graph,
                                lambda i: plan.outputs[i])


# ---------------------------------------------------------------------------- ONNX


def run_onnx(ref: Reference) -> EngineRun:
    """``onnx``: onnxruntime on :func:`export_onnx`, every layer's last node exposed."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineUnavailable(f"{exc.name} is not installed") from None
    finals_names = output_names(ref.model)
    with tempfile.TemporaryDirectory(prefix="darkcsp-compare-") as tmp:
        path = export_onnx(ref.model, Path(tmp) / "model.onnx")
        proto = onnx.load(str(path))
    # per layer, the outputs of its nodes in graph order (the last matching one is its output)
    candidates: dict[int, list[str]] = {}
    for node in proto.graph.node:
        parts = node.name.split("/")
        if len(parts) > 2 and parts[1] == "model" and parts[2].startswith("layers."):
            number = parts[2].removeprefix("layers.")
            if number.isdigit() and node.output and node.output[0]:
                candidates.setdefault(int(number), []).append(node.output[0])
    declared = {o.name for o in proto.graph.output}
    extra = [name for names in candidates.values() for name in names if name not in declared]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra)
    try:
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        wanted = finals_names + extra
        results = dict(zip(wanted, session.run(wanted, {INPUT_NAME: ref.x.numpy()})))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EngineUnavailable(f"onnxruntime cannot run the export: {exc}") from None
    errors: dict[int, float] = {}
    for index, names in sorted(candidates.items()):
        if index >= len(ref.layers):
            continue
        expected = ref.layers[index]
        sized = [n for n in names if np.asarray(results[n]).size == expected.size]
        if sized:
            errors[index] = relative_error(np.asarray(results[sized[-1]])[0], expected)
    return EngineRun([np.asarray(results[n]) for n in finals_names], errors)


# ---------------------------------------------------------------------------- Darknet


class DarknetLibrary:
    """A user's ``libdarknet.so`` (AlexeyAB's C API) through ctypes."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            self.lib = ctypes.CDLL(os.fspath(path))
        except OSError as exc:
            raise EngineUnavailable(f"cannot load {os.fspath(path)!r}: {exc}") from None
        try:
            self.lib.load_network_custom.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                                     ctypes.c_int, ctypes.c_int]
            self.lib.load_network_custom.restype = ctypes.c_void_p
            self.lib.network_predict_ptr.argtypes = [ctypes.c_void_p,
                                                     ctypes.POINTER(ctypes.c_float)]
            self.lib.network_predict_ptr.restype = ctypes.POINTER(ctypes.c_float)
        except AttributeError as exc:
            raise EngineUnavailable(f"{os.fspath(path)} is not AlexeyAB's libdarknet "
                                    f"(missing {exc})") from None
        self.free = getattr(self.lib, "free_network_ptr", None)
        if self.free is not None:
            self.free.argtypes = [ctypes.c_void_p]

    def output(self, cfg: Path, weights: Path, x: np.ndarray, size: int) -> np.ndarray:
        """The last layer's output (``size`` floats) of ``cfg`` + ``weights`` on ``x``."""
        net = self.lib.load_network_custom(os.fsencode(cfg), os.fsencode(weights), 0, 1)
        if not net:
            raise EngineUnavailable(f"Darknet could not load {cfg}")
        try:
            data = np.ascontiguousarray(x, dtype=np.float32).ravel()
            out = self.lib.network_predict_ptr(
                net, data.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
            return np.ctypeslib.as_array(out, shape=(size,)).copy()
        finally:
            if self.free is not None:
                self.free(net)


def run_darknet(ref: Reference, cfg: str | os.PathLike, weights: str | os.PathLike,
                library: str | os.PathLike, tolerance: float) -> EngineRun:
    """``darknet``: the user's library on the plain Darknet lowering of the cfg."""
    lib = DarknetLibrary(library)
    model = ref.model
    sections = model.layer_graph.sections  # [net], then one section per layer
    x = ref.x.numpy()
    with tempfile.TemporaryDirectory(prefix="darkcsp-compare-") as tmp:
        folder = Path(tmp)
        _, weights_path = export_darknet(cfg, _darknet_weights(cfg, weights, folder),
                                         folder / "lowered")

        def layer_output(index: int) -> np.ndarray:
            path = folder / f"upto_{index}.cfg"
            path.write_text(format_cfg(sections[:index + 2]), encoding="utf-8")
            expected = ref.layers[index]
            return lib.output(path, weights_path, x, expected.size).reshape(expected.shape)

        finals = [layer_output(i)[None] for i in model.output_indices]
        errors: dict[int, float] = {}
        for node in model.nodes:
            errors[node.index] = relative_error(layer_output(node.index),
                                                ref.layers[node.index])
            if _exceeds(errors[node.index], tolerance):
                break
    return EngineRun(finals, errors)


# ---------------------------------------------------------------------------- report


def first_divergent(errors: dict[int, float], tolerance: float) -> int | None:
    """The first layer whose error exceeds ``tolerance`` (NaN and inf included)."""
    return next((i for i in sorted(errors) if _exceeds(errors[i], tolerance)), None)


def report(ref: Reference, run: EngineRun, tolerance: float) -> EngineReport:
    """An :class:`EngineReport` of ``run`` against ``ref``."""
    if len(run.finals) != len(ref.finals):
        max_rel = float("inf")
    else:
        max_rel = max((relative_error(got, expected)
                       for got, expected in zip(run.finals, ref.finals)), default=0.0)
    first = first_divergent(run.layer_errors, tolerance)
    detections = None
    found = _detections_or_none(ref, run.finals) if np.isfinite(max_rel) else []
    if found is not None:
        detections = {"matched": match_detections(ref.detections, found),
                      "total": len(ref.detections)}
    return EngineReport(max_rel=max_rel if np.isfinite(max_rel) else None,
                        first_divergent_layer=first,
                        layer_type=None if first is None else ref.model.nodes[first].section.type,
                        detections=detections, cause=run.cause if first is not None else None)


def compare(cfg: str | os.PathLike, weights: str | os.PathLike,
            image: str | os.PathLike | None = None, engines: Sequence[str] = DEFAULT_ENGINES,
            darknet_lib: str | os.PathLike | None = None,
            tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
            max_memory: MaxMemory = AUTO) -> dict[str, EngineReport]:
    """``darkcsp compare``: each engine in ``engines`` against darkcsp on the same input (see
    the module docstring). An engine that cannot run gets a report with ``error`` set."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise DarkcspError(f"unknown engine(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(ENGINES)}")
    ref = reference_run(cfg, weights, image, seed, max_memory)
    runners: dict[str, Callable[[], EngineRun]] = {
        "torch": lambda: EngineRun(ref.finals, {i: 0.0 for i in range(len(ref.layers))}),
        "opencv": lambda: run_opencv(ref, cfg, weights, tolerance),
        "opencv-export": lambda: run_opencv_export(ref, cfg, weights),
        "onnx": lambda: run_onnx(ref),
        "darknet": lambda: _darknet(ref, cfg, weights, darknet_lib, tolerance),
    }
    reports: dict[str, EngineReport] = {}
    for engine in dict.fromkeys(engines):
        try:
            reports[engine] = report(ref, runners[engine](), tolerance)
        except EngineUnavailable as exc:
            reports[engine] = EngineReport(error=str(exc))
        except (DarkcspError, ValueError, RuntimeError) as exc:
            reports[engine] = EngineReport(error=f"{type(exc).__name__}: {exc}")
    return reports


def _darknet(ref: Reference, cfg: str | os.PathLike, weights: str | os.PathLike,
             library: str | os.PathLike | None, tolerance: float) -> EngineRun:
    if library is None:
        raise EngineUnavailable("the darknet engine needs --darknet-lib PATH (your own "
                                "libdarknet.so; nothing is downloaded)")
    return run_darknet(ref, cfg, weights, library, tolerance)


__all__ = ["ENGINES", "DEFAULT_ENGINES", "EngineReport", "EngineRun", "Reference", "compare",
           "reference_run", "report", "first_divergent", "match_detections", "run_opencv",
           "run_opencv_export", "run_onnx", "run_darknet", "opencv_known_difference",
           "relative_error", "seeded_input"]
