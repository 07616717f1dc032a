"""Inference backends behind one interface, so pre-processing, box decoding and NMS are darkcsp's
own (:mod:`darkcsp.infer`) whatever runs the network.

``backend.forward(batch)`` takes the network input, float32 ``(N, C, H, W)`` (numpy or torch),
and returns one float32 numpy array per detection head in ``model.output_indices`` order, in
darkcsp's (= Darknet's ``l.output``) layout: exactly what ``model(x)`` returns. ``backend.model``
is the :class:`~darkcsp.network.Darknet` the decoder reads anchors, classes and sizes from.

* :class:`TorchBackend`: the darkcsp module itself (BN folded, ``inference_mode``; on the CPU
  channels_last and every conv as one fused oneDNN conv+bias+activation; optionally
  ``torch.compile``).
* :class:`OpenCVBackend`: OpenCV 4.x ``readNetFromDarknet`` on the ``export --to opencv`` cfg +
  weights. OpenCV's ``[yolo]``/``[region]`` outputs are already decoded and thresholded
  (``thresh`` 0.2 by default, relative to the blob), so they are not used: each head is
  implemented as ``permute_<i>`` followed by ``yolo_<i>`` / ``detection_out``, and the
  ``permute`` output is the raw conv output (N, H, W, C). It is transposed back and darkcsp's own
  head module applies the activations, so decoding is identical to the other backends. OpenCV
  5.x has no Darknet importer: there it runs the raw-head ONNX export (``readNetFromONNX``).
* :class:`OnnxBackend`: onnxruntime on the raw-head ONNX export.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from darkcsp.checkpoint import convert
from darkcsp.errors import DarkcspError
from darkcsp.export.onnx import INPUT_NAME, export_onnx, output_names
from darkcsp.export.opencv import export_opencv
from darkcsp.infer.decode import detection_heads
from darkcsp.infer.precision import cached_int8, check_precision, require_native_bf16
from darkcsp.layers.conv import Conv
from darkcsp.layers.heads import RegionHead, YoloHead
from darkcsp.layers.registry import NETWORK_INPUT
from darkcsp.network import Darknet

BACKENDS = ("torch", "opencv", "onnx")
ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(batch: ArrayLike) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``count`` (None: unchanged) for the block, then restored.

    The pre-processing and the OpenCV backend's heads are a few small torch operations; next
    to an OpenCV or ONNX Runtime forward, torch's idle threads still spin on the cores that
    engine's own threads use (yolov3-tiny on 2 cores, photo to detections on ONNX Runtime:
    22.0 -> 17.4 ms with one).
    torch's thread count is per process: a torch computation in another Python thread during
    this block would run on one thread."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Backend(ABC):
    """One way of running the network; see the module docstring for the contract."""

    name: str = ""
    # whether the forward runs on torch's own CPU threads; the other engines keep their own
    # pools, and torch's threads waking for the pre-processing only compete with them
    runs_on_torch_threads: bool = False

    def __init__(self, model: Darknet) -> None:
        self.model = model

    @abstractmethod
    def forward(self, batch: ArrayLike) -> list[np.ndarray]:
        """The head outputs for ``batch`` (N, C, H, W), darkcsp's layout, float32 numpy."""

    def __call__(self, batch: ArrayLike) -> list[np.ndarray]:
        return self.forward(batch)


# darkcsp activation -> oneDNN post-op of ``mkldnn._convolution_pointwise`` (exact ones only)
MKLDNN_ACTIVATIONS: dict[str, tuple[str, list[float]]] = {
    "linear": ("none", []), "leaky": ("leaky_relu", [0.1]), "relu": ("relu", [])}


def mkldnn_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"))


class MkldnnConv(torch.nn.Module):
    """A BN-folded darkcsp ``Conv`` as one oneDNN primitive: convolution, bias and a leaky /
    relu / linear activation fused, weights pre-packed for the cfg's input size (what
    ``torch.compile`` with freezing emits, without the compile). Other activations run after
    the fused conv. About 10% faster than eager channels_last on yolov4-tiny (CPU)."""

    def __init__(self, conv: Conv, input_size: Sequence[int],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        c = conv.conv
        self.padding, self.stride = list(c.padding), list(c.stride)
        self.dilation, self.groups = list(c.dilation), c.groups
        weight = c.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(
            weight, self.padding, self.stride, self.dilation, self.groups, list(input_size))
        self.bias = c.bias.detach().to(dtype) if c.bias is not None else None
        self.attr, self.scalars = MKLDNN_ACTIVATIONS.get(conv.activation, ("none", []))
        self.act = None if conv.activation in MKLDNN_ACTIVATIONS else conv.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, "")
        return y if self.act is None else self.act(y)


def _fuse_mkldnn(model: Darknet, dtype: torch.dtype = torch.float32,
                 float32_layers: frozenset[int] = frozenset()) -> int:
    """Replace every plain BN-folded conv of ``model`` by :class:`MkldnnConv` (weights in
    ``dtype``, float32 for the ``float32_layers``); the count."""
    replaced = 0
    for node, module in zip(model.nodes, model.layers):
        if (type(module) is Conv and module.bn is None and not module.shared
                and not module.binary):
            shape = node.in_shape
            model.layers[node.index] = MkldnnConv(
                module, (1, shape.c, shape.h, shape.w),
                torch.float32 if node.index in float32_layers else dtype)
            replaced += 1
    return replaced


class CastTo(torch.nn.Module):
    """``module`` with its inputs cast to ``in_dtype`` and its output to ``out_dtype``: where
    a reduced-precision network meets its float32 layers, input and heads."""

    def __init__(self, module: torch.nn.Module, in_dtype: torch.dtype,
                 out_dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.in_dtype, self.out_dtype = module, in_dtype, out_dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*(x.to(self.in_dtype) for x in inputs)).to(self.out_dtype)


def float32_layers(model: Darknet) -> frozenset[int]:
    """The layers a reduced-precision network keeps in float32, as the int8 export does: the
    convs that read the image (8-bit pixels have more precision than bf16 keeps) and the
    convs that feed a detection head (box sizes go through ``exp``, and probabilities near
    the threshold must fall on the same side)."""
    heads = {index for index in model.output_indices
             if isinstance(model.layers[index], (YoloHead, RegionHead))}
    keep = set()
    for node in model.nodes:
        if type(model.layers[node.index]) is not Conv:
            continue
        reads_image = NETWORK_INPUT in node.inputs
        feeds_head = any(node.index in model.nodes[h].inputs for h in heads)
        if reads_image or feeds_head:
            keep.add(node.index)
    return frozenset(keep)


class TorchBackend(Backend):
    """darkcsp's module, BN folded, on a private copy of ``model``.

    On the CPU: channels_last (NHWC), the faster layout for oneDNN's convolutions (15-25% on
    yolov4-tiny), and ``fast=True`` (default) runs every conv as one fused oneDNN primitive
    (:class:`MkldnnConv`). ``compile=True`` adds ``torch.compile`` (slow to start).
    ``precision="bf16"`` (CPUs with native bf16 only): weights and activations in bf16, except
    the convs that read the image and those that feed a detection head
    (:func:`float32_layers`, as the int8 export keeps them); outputs float32 for decoding.
    """

    name = "torch"
    runs_on_torch_threads = True

    def __init__(self, model: Darknet, device: str | torch.device | None = None,
                 channels_last: bool | None = None, compile: bool = False,
                 fast: bool | None = None, precision: str = "fp32") -> None:
        super().__init__(model)
        self.device = torch.device(device if device is not None else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        cpu = self.device.type == "cpu"
        self.precision = check_precision(precision, "torch")
        if precision == "bf16" and cpu:
            require_native_bf16()
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # the parsed graph is read-only: share it rather than deep-copy every node
        net = copy.deepcopy(model, {id(model.layer_graph): model.layer_graph})
        net.fuse().eval().to(self.device)
        self.float32_layers = (float32_layers(net) if self.dtype != torch.float32
                               else frozenset())
        if self.dtype != torch.float32:  # the parameters only: heads keep float32 buffers
            for index, layer in enumerate(net.layers):
                if index not in self.float32_layers:
                    for param in layer.parameters():
                        param.data = param.data.to(self.dtype)
        self.channels_last = cpu if channels_last is None else channels_last
        self.memory_format = (torch.channels_last if self.channels_last
                              else torch.contiguous_format)
        if self.channels_last:  # conv weights only: the heads keep rank-5 buffers
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(
                        memory_format=torch.channels_last)
        # the fused oneDNN convs hold pre-packed (opaque) weights: not for torch.compile
        self.fast = bool(cpu and self.channels_last and mkldnn_available() and not compile
                         if fast is None else fast)
        if self.fast:
            _fuse_mkldnn(net, self.dtype, self.float32_layers)
        if self.dtype != torch.float32:  # the image stays float32; heads get float32
            for node in net.nodes:
                reads_image = NETWORK_INPUT in node.inputs
                if node.index in self.float32_layers:
                    out = self.dtype if reads_image else torch.float32
                    net.layers[node.index] = CastTo(net.layers[node.index], torch.float32, out)
                elif reads_image:
                    net.layers[node.index] = CastTo(net.layers[node.index], self.dtype,
                                                    self.dtype)
        self.net = net
        self.runner: Any = torch.compile(net) if compile else net

    def forward(self, batch: ArrayLike) -> list[np.ndarray]:
        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            outputs = self.runner(x)
        return [o.to("cpu", torch.float32).contiguous().numpy() for o in outputs]


class ModuleBackend(Backend):
    """``model`` itself, as it is (no copy, no BN folding, no layout change), on the device
    and dtype of its weights; train/eval mode is the caller's. What :func:`darkcsp.evaluate`
    (``backend="torch"``), training's mAP and :meth:`Detector.from_model` run."""

    name = "module"
    runs_on_torch_threads = True

    def placement(self) -> tuple[torch.device, torch.dtype]:
        """Where the model's weights live, so the input follows them."""
        param = next(self.model.parameters(), None)
        if param is None:
            return torch.device("cpu"), torch.float32
        return param.device, param.dtype

    def forward(self, batch: ArrayLike) -> list[np.ndarray]:
        device, dtype = self.placement()
        x = torch.as_tensor(batch).to(device=device, dtype=dtype)
        with torch.inference_mode():
            outputs = self.model(x)
        return [o.to("cpu", torch.float32).contiguous().numpy() for o in outputs]


def opencv_files(cfg: str | os.PathLike, weights: str | os.PathLike, out_dir: str | Path
                 ) -> tuple[Path, Path]:
    """cfg + weights that OpenCV 4.x computes exactly (``darkcsp export --to opencv``); a
    darkcsp ``.pt`` is converted to Darknet ``.weights`` first (in a temporary folder)."""
    if Path(weights).suffix.lower() == ".pt":
        with tempfile.TemporaryDirectory(prefix="darkcsp-pt-") as tmp:
            darknet = Path(tmp) / f"{Path(weights).stem}.weights"
            convert(cfg, weights, darknet)
            return export_opencv(cfg, darknet, out_dir)
    return export_opencv(cfg, weights, out_dir)


class OpenCVBackend(Backend):
    """OpenCV DNN, by one of two routes (``route="auto"`` picks the first one available):

    * ``"darknet"`` (OpenCV 4.x): ``readNetFromDarknet`` on the ``export --to opencv`` cfg +
      weights; the ``permute_<i>`` outputs (raw conv outputs, see the module docstring) go
      through darkcsp's head modules;
    * ``"onnx"`` (OpenCV 5.x, which has no Darknet importer; works in 4.x too):
      ``readNetFromONNX`` on the raw-head ONNX export, outputs looked up by name (the classic
      engine does not keep the graph's output order).

    ``winograd=False`` turns off OpenCV's Winograd 3x3 convolution, which trades ~1e-5 relative
    accuracy per layer for speed; ``cache_dir`` keeps the exported files (else a temporary
    directory, removed once the network is loaded).
    """

    name = "opencv"

    def __init__(self, model: Darknet, cfg: str | os.PathLike, weights: str | os.PathLike,
                 cache_dir: str | os.PathLike | None = None, winograd: bool = True,
                 threads: int | None = None, target: str = "cpu", route: str = "auto"
                 ) -> None:
        super().__init__(model)
        import cv2
        has_darknet = hasattr(cv2.dnn, "readNetFromDarknet")
        if route == "auto":
            route = "darknet" if has_darknet else "onnx"
        if route not in ("darknet", "onnx"):
            raise DarkcspError(f"unknown OpenCV route {route!r}: darknet, onnx or auto")
        if route == "darknet" and not has_darknet:
            raise DarkcspError(f"OpenCV {cv2.__version__} has no Darknet importer (removed in "
                               "5.0): use route='onnx'")
        self.route = route
        self.heads = detection_heads(model)
        with tempfile.TemporaryDirectory(prefix="darkcsp-opencv-") as tmp:
            folder = Path(cache_dir) if cache_dir is not None else Path(tmp)
            if route == "darknet":
                cfg_path, weights_path = opencv_files(cfg, weights, folder)
                self.net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
            else:
                self.net = cv2.dnn.readNetFromONNX(str(export_onnx(model,
                                                                   folder / "model.onnx")))
        if hasattr(self.net, "enableWinograd"):
            self.net.enableWinograd(winograd)
        if target == "cuda":
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        if threads is not None:
            cv2.setNumThreads(threads)
        if route == "onnx":
            self.outputs = output_names(model)
            self.head_modules: list[torch.nn.Module] = []
            return
        self.outputs = [n for n in self.net.getLayerNames() if n.startswith("permute_")]
        if len(self.outputs) != len(self.heads):
            raise DarkcspError(f"OpenCV's network has {len(self.outputs)} permute layers "
                               f"(one per [yolo]/[region] head) but darkcsp has "
                               f"{len(self.heads)} heads: cannot map the outputs")
        self.head_modules = [module.to("cpu") for _, module in self.heads]

    def forward(self, batch: ArrayLike) -> list[np.ndarray]:
        self.net.setInput(_as_numpy(batch))
        raw = self.net.forward(self.outputs)
        if not self.head_modules:  # the ONNX graph ends with darkcsp's heads already
            return [np.asarray(out, dtype=np.float32) for out in raw]
        results = []
        with torch_threads(1), torch.inference_mode():  # small: OpenCV's pool keeps the cores
            for out, head in zip(raw, self.head_modules):
                x = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))
                results.append(head(x).numpy())
        return results


class OnnxBackend(Backend):
    """onnxruntime on the raw-head ONNX export (BN folded; outputs looked up by name).

    ``precision="int8"``: the statically quantized export (QDQ, u8 activations, s8
    per-channel weights, heads in float32; :func:`darkcsp.infer.precision.cached_int8`),
    calibrated on ``calibration`` (image paths; None: the synthetic default set, with a
    warning), quantized once and cached in ``cache_dir`` (default ``~/.cache/darkcsp/int8``)
    under a hash of ``cfg`` + ``weights`` + the calibration images.
    """

    name = "onnx"

    def __init__(self, model: Darknet, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None, providers: Sequence[str] | None = None,
                 precision: str = "fp32",
                 calibration: Sequence[str | os.PathLike] | None = None,
                 cfg: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                 letterbox: bool | None = None) -> None:
        super().__init__(model)
        import onnxruntime as ort
        self.precision = check_precision(precision, "onnx")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # no busy-waiting between runs: ORT's idle threads would spin on the cores the
        # pre-processing, decoding and NMS around each forward need (yolov3-tiny, 2 cores:
        # photo to detections 24.7 -> 15.5 ms)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(providers or ["CPUExecutionProvider"])
        if precision == "int8":
            path = cached_int8(model, cfg, weights, calibration, cache_dir,
                               letterbox=letterbox)
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        elif cache_dir is not None:
            path = export_onnx(model, Path(cache_dir) / "model.onnx")
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        else:
            with tempfile.TemporaryDirectory(prefix="darkcsp-onnx-") as tmp:
                path = export_onnx(model, Path(tmp) / "model.onnx")
                self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = INPUT_NAME
        self.outputs = output_names(model)

    def forward(self, batch: ArrayLike) -> list[np.ndarray]:
        return list(self.session.run(self.outputs, {self.input_name: _as_numpy(batch)}))


def make_backend(name: str, model: Darknet, cfg: str | os.PathLike | None = None,
                 weights: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, precision: str = "fp32",
                 **options: Any) -> Backend:
    """The backend ``name`` for ``model`` (weights loaded). ``opencv`` also needs the ``cfg``
    and ``weights`` files (it reads its own export of them); ``precision``: ``fp32``
    (every backend), ``bf16`` (torch, CPUs with native bf16) or ``int8`` (onnx; its cache is
    keyed by ``cfg`` + ``weights`` + ``calibration``); ``options`` go to the backend's
    constructor (``channels_last``, ``compile``, ``cache_dir``, ``winograd``, ``threads``,
    ``calibration``)."""
    if name in BACKENDS:
        check_precision(precision, name)
    if name == "torch":
        return TorchBackend(model, device, precision=precision, **options)
    if name == "opencv":
        if cfg is None or weights is None:
            raise DarkcspError("the opencv backend needs the cfg and weights files")
        if device is not None and torch.device(device).type == "cuda":
            options.setdefault("target", "cuda")
        return OpenCVBackend(model, cfg, weights, **options)
    if name == "onnx":
        if device is not None and torch.device(device).type == "cuda":
            options.setdefault("providers", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        if precision == "int8":
            options.setdefault("cfg", cfg)
            options.setdefault("weights", weights)
        return OnnxBackend(model, precision=precision, **options)
    raise DarkcspError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["torch_threads", "Backend", "ModuleBackend", "TorchBackend", "OpenCVBackend", "OnnxBackend", "make_backend",
           "opencv_files", "BACKENDS"]
