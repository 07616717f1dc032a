"""ONNX export of a :class:`~darkcsp.network.Darknet` model: the route to OpenCV 5.x (which has no
Darknet importer), onnxruntime and every other ONNX runtime.

Two graph flavours, both with BN folded, a dynamic batch axis, the input named ``images`` and one
output per detection head named ``<type>_<layer index>`` (``yolo_30``, ``region_31``):

* **raw heads** (default): each head's output in darkcsp's (= Darknet's ``l.output``) layout,
  activations applied, so darkcsp's decode + NMS run on it unchanged;
* **decoded** (``decoded=True``, ``[yolo]`` heads only): OpenCV's ``[yolo]`` output layout,
  ``(N, H*W*A, 5+C)``, rows ``(y*W + x)*A + a``, columns ``cx, cy, w, h`` relative to the
  network input, objectness, ``objectness * class_k`` (not thresholded). The graph uses only
  elementwise ops: ``exp`` is written as ``sigmoid(t) / sigmoid(-t)`` because some OpenCV
  builds cannot create an ``Exp`` layer (opencv#23144).

The legacy TorchScript exporter (``dynamo=False``) is used: it gives a flat graph of standard
ops. Shape arithmetic the tracer records is then folded (:func:`fold_static_shapes`), because
OpenCV's ONNX importer wants paddings and reshape targets as constants; with that, OpenCV 4.14's
``readNetFromONNX`` runs every zoo detector, raw and decoded, at batch 1 and 2.

A ``[maxpool]`` is one ``MaxPool`` with Darknet's asymmetric ``pads`` (no -inf Pad, no Slice, so
ONNX Runtime's static quantization can calibrate it) and an ``[upsample]`` one nearest ``Resize``:
the layers' own export forms (``_OnnxMaxPool``, ``_OnnxNearest``), chosen while exporting.
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import YoloHead
from darkcsp.network import Darknet

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "images"
MIN_OPSET = 13


def output_names(model: Darknet) -> list[str]:
    """``<layer type>_<index>`` for every output of ``model`` (its detection heads, or the last
    layer of a classifier); OpenCV's Darknet importer names its layers the same way."""
    return [f"{model.nodes[i].kind.name}_{i}" for i in model.output_indices]


def _exp(t: torch.Tensor) -> torch.Tensor:
    """``exp(t)`` as ``sigmoid(t) / sigmoid(-t)``: mathematically exact, ~1e-7 relative in
    float32, and free of the ``Exp`` op some OpenCV ONNX importers cannot create."""
    return torch.sigmoid(t) / torch.sigmoid(-t)


class DecodedYolo(nn.Module):
    """A ``[yolo]`` head's output (B, A*E, H, W) -> OpenCV-style decoded boxes (B, H*W*A, E),
    the same numbers as :func:`darkcsp.infer.decode.yolo_detections` at ``thresh=0``."""

    def __init__(self, head: YoloHead, grid: tuple[int, int], net_size: tuple[int, int]) -> None:
        super().__init__()
        if head.gaussian:
            raise DarkcspError("decoded ONNX export supports [yolo] heads, not [Gaussian_yolo]; "
                               "export raw heads instead")
        self.anchors = len(head.anchors)
        self.entries = head.entries
        self.new_coords = head.new_coords
        w, h = grid
        self.grid = (w, h)
        net_w, net_h = net_size
        # cell offsets (1, 1, W, 1, 1), (1, H, 1, 1, 1) and anchors (1, 1, 1, A, 1) divided by
        # the net size, laid out for t = (B, H, W, A, E)
        self.register_buffer("col", torch.arange(w, dtype=torch.float32).view(1, 1, w, 1, 1),
                             persistent=False)
        self.register_buffer("row", torch.arange(h, dtype=torch.float32).view(1, h, 1, 1, 1),
                             persistent=False)
        aw = torch.tensor([a[0] for a in head.anchors], dtype=torch.float64) / net_w
        ah = torch.tensor([a[1] for a in head.anchors], dtype=torch.float64) / net_h
        self.register_buffer("anchor_w", aw.float().view(1, 1, 1, -1, 1), persistent=False)
        self.register_buffer("anchor_h", ah.float().view(1, 1, 1, -1, 1), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # slices keep every rank at 5 (OpenCV's importer mishandles 0-d Gather indices)
        w, h = self.grid
        t = y.reshape(-1, self.anchors, self.entries, h, w).permute(0, 3, 4, 1, 2)
        cx = (t[..., 0:1] + self.col) / float(w)
        cy = (t[..., 1:2] + self.row) / float(h)
        tw, th = t[..., 2:3], t[..., 3:4]
        if self.new_coords:
            bw = tw * tw * 4.0 * self.anchor_w
            bh = th * th * 4.0 * self.anchor_h
        else:
            bw = _exp(tw) * self.anchor_w
            bh = _exp(th) * self.anchor_h
        obj = t[..., 4:5]
        out = torch.cat([cx, cy, bw, bh, obj, obj * t[..., 5:]], dim=-1)
        return out.reshape(-1, h * w * self.anchors, self.entries)


class ExportYolo(nn.Module):
    """:class:`YoloHead`'s forward written with slices instead of ``torch.where`` on a bool
    mask: the same float operations per entry, but no BOOL constant in the graph (OpenCV's
    ONNX importer rejects BOOL tensors) and static H, W in the reshapes."""

    def __init__(self, head: YoloHead, grid: tuple[int, int]) -> None:
        super().__init__()
        self.anchors, self.entries, self.grid = len(head.anchors), head.entries, grid
        self.new_coords, self.scale_x_y = head.new_coords, head.scale_x_y
        raw = head.raw_entries.flatten().tolist()
        xy = head.xy_entries.flatten().tolist()
        # runs of consecutive entries that get the same treatment: (start, stop, raw, xy)
        self.runs: list[tuple[int, int, bool, bool]] = []
        for e in range(self.entries):
            key = (bool(raw[e]), bool(xy[e]))
            if self.runs and self.runs[-1][2:] == key and self.runs[-1][1] == e:
                self.runs[-1] = (self.runs[-1][0], e + 1, *key)
            else:
                self.runs.append((e, e + 1, *key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, h = self.grid
        t = x.reshape(-1, self.anchors, self.entries, h, w)
        parts = []
        s = self.scale_x_y
        for start, stop, raw, xy in self.runs:
            p = t[:, :, start:stop]
            if not (raw or self.new_coords):
                p = torch.sigmoid(p)
            if xy and s != 1:
                p = p * s - 0.5 * (s - 1)
            parts.append(p)
        y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return y.reshape(-1, self.anchors * self.entries, h, w)


class ExportWrapper(nn.Module):
    """``model`` (modified: its [yolo] heads become :class:`ExportYolo`) with a tuple output
    (what the exporter wants), optionally decoded."""

    def __init__(self, model: Darknet, decoded: bool) -> None:
        super().__init__()
        self.model = model
        self.decoders = nn.ModuleList()
        net_size = (int(model.net.width), int(model.net.height))
        for index in model.output_indices:
            head = model.layers[index]
            shape = model.nodes[index].out_shape
            if isinstance(head, YoloHead):
                model.layers[index] = ExportYolo(head, (shape.w, shape.h))
            if not decoded:
                continue
            if not isinstance(head, YoloHead):
                raise DarkcspError(f"layer {index} ({model.nodes[index].kind.name}): decoded "
                                   "ONNX export supports [yolo] heads only; export raw heads "
                                   "instead")
            self.decoders.append(DecodedYolo(head, (shape.w, shape.h), net_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(x)
        if len(self.decoders):
            outputs = [decode(o) for decode, o in zip(self.decoders, outputs)]
        return tuple(outputs)


# -- static shape folding -----------------------------------------------------------------------
# The tracer records every ``x.shape`` use as Shape/Gather/... nodes. With a dynamic batch axis
# torch cannot fold them, yet only dimension 0 is dynamic: a padding or a reshape size computed
# from H, W is a constant. OpenCV's ONNX importer needs such values (Pad's pads, a
# ConstantOfShape's shape) as constants, so they are folded here.

_FOLD_LIMIT = 1 << 20  # never materialise a folded constant larger than this many elements
_NON_FOLDABLE = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                           "RandomUniformLike", "Multinomial", "Bernoulli"})


def _dims_at_batch(model: "onnx.ModelProto", batch: int) -> dict[str, list[int | None]]:
    """Every value's dimensions by ONNX shape inference with the batch axis fixed to
    ``batch``."""
    import onnx
    from onnx import helper
    # a skeleton without the weights: large initializers become inputs of the same shape (shape
    # inference needs their shapes, not their values), so nothing big is copied or serialised
    graph = model.graph
    small = [i for i in graph.initializer if math.prod(i.dims) <= 4096]
    large = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
             for i in graph.initializer if math.prod(i.dims) > 4096]
    skeleton = helper.make_graph(list(graph.node), graph.name, [*graph.input, *large],
                                 list(graph.output), small)
    fixed = helper.make_model(skeleton, opset_imports=list(model.opset_import),
                              ir_version=model.ir_version)
    for info in fixed.graph.input:
        shape = info.type.tensor_type.shape
        if shape.dim and not shape.dim[0].HasField("dim_value"):
            shape.dim[0].dim_value = batch
    graph = onnx.shape_inference.infer_shapes(fixed, data_prop=True).graph
    dims: dict[str, list[int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.tensor_type.HasField("shape"):
            dims[info.name] = [d.dim_value if d.HasField("dim_value") else None
                               for d in info.type.tensor_type.shape.dim]
    return dims


def _static_dims(model: "onnx.ModelProto") -> dict[str, list[int | None]]:
    """Each value's dimensions that do not depend on the batch size (None for those that do
    or are unknown): shape inference at batch 1 and at batch 2, compared. This also resolves
    ``x[:1]`` of a dynamic batch, which inference alone leaves unknown."""
    one, two = _dims_at_batch(model, 1), _dims_at_batch(model, 2)
    return {name: [a if a == b else None for a, b in zip(d1, two[name])]
            for name, d1 in one.items() if name in two and len(two[name]) == len(d1)}


def _partial_shape(node: "onnx.NodeProto", known: dict[str, np.ndarray],
                   partial: dict[str, list[int | None]], scalars: set[str],
                   dims: dict[str, list[int | None]]) -> list[int | None] | None:
    """A 1-D int64 value with some entries known (Shape of a partly static tensor, and Gather /
    Slice / Concat / Unsqueeze of such values with constant indices), or None when the node is
    not of that kind. A 0-d unknown value (the batch size) is ``[None]`` listed in
    ``scalars``."""
    from onnx import helper
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Shape" and node.input[0] in dims:
        shape = list(dims[node.input[0]])
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return shape[start:end]
    if node.input and node.input[0] in partial:
        source = partial[node.input[0]]
        if node.op_type == "Gather" and attrs.get("axis", 0) == 0 and node.input[1] in known:
            idx = known[node.input[1]]
            if idx.ndim == 0:  # one dimension: a scalar, known or not
                value = source[int(idx)]
                if value is not None:
                    known[node.output[0]] = np.array(value, dtype=np.int64)
                    return None
                scalars.add(node.output[0])
                return [None]
            return [source[int(i)] for i in idx.reshape(-1)]
        if (node.op_type == "Unsqueeze" and node.input[0] in scalars and len(node.input) > 1
                and node.input[1] in known and known[node.input[1]].reshape(-1).tolist() == [0]):
            return list(source)
        if node.op_type == "Slice" and all(i in known for i in node.input[1:] if i):
            starts = known[node.input[1]].reshape(-1)
            ends = known[node.input[2]].reshape(-1)
            steps = (known[node.input[4]].reshape(-1) if len(node.input) > 4 and node.input[4]
                     else [1])
            if len(starts) == 1 and len(ends) == 1:
                return source[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
    if (node.op_type == "Concat" and any(i in partial for i in node.input)
            and not any(i in scalars for i in node.input)
            and all(i in partial or (i in known and known[i].ndim == 1) for i in node.input)):
        parts: list[int | None] = []
        for i in node.input:
            parts += partial[i] if i in partial else [int(v) for v in known[i].reshape(-1)]
        return parts
    return None


def _reshape_with_minus_one(node: "onnx.NodeProto", shape: list[int | None],
                            known: dict[str, np.ndarray]) -> int:
    """A Reshape whose target has exactly one batch-dependent entry gets a constant target with
    -1 there (same result for any batch, and no shape arithmetic left for the importer)."""
    if sum(v is None for v in shape) != 1 or -1 in shape:
        return 0
    name = node.input[1] + "_static"
    known[name] = np.array([-1 if v is None else v for v in shape], dtype=np.int64)
    node.input[1] = name
    return 1


def fold_static_shapes(model: "onnx.ModelProto", max_passes: int = 8) -> "onnx.ModelProto":
    """Replace every value that depends only on constants and on the static dimensions of
    tensors by an initializer, then drop the nodes nothing uses any more. Repeated until
    nothing changes: a folded Pad or Reshape lets shape inference see further down the graph."""
    for _ in range(max_passes):
        if not _fold_once(model):
            break
    return model


def _fold_once(model: "onnx.ModelProto") -> bool:
    """One folding pass (see :func:`fold_static_shapes`), in place; False if nothing changed."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    dims = _static_dims(model)
    originals = {i.name: i for i in graph.initializer}
    # the weights are never folded: only small constants are worth reading
    known: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                                    if math.prod(i.dims) <= _FOLD_LIMIT}
    partial: dict[str, list[int | None]] = {}
    scalars: set[str] = set()
    rewritten = 0
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in _NON_FOLDABLE:
            continue
        if node.op_type == "Reshape" and node.input[1] in partial:
            rewritten += _reshape_with_minus_one(node, partial[node.input[1]], known)
            continue
        value = _partial_shape(node, known, partial, scalars, dims)
        if node.output[0] in known:
            continue
        if value is not None:
            if all(v is not None for v in value):
                known[node.output[0]] = np.array(value, dtype=np.int64)
            else:
                partial[node.output[0]] = value
            continue
        inputs = [i for i in node.input if i]
        if not inputs or not all(i in known for i in inputs):
            continue
        single = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(known[i].dtype),
                                           known[i].shape) for i in inputs],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
             for o in node.output])
        opset = [helper.make_opsetid("", model.opset_import[0].version)]
        results = ReferenceEvaluator(helper.make_model(single, opset_imports=opset)).run(
            None, {i: known[i] for i in inputs})
        if any(np.asarray(r).size > _FOLD_LIMIT for r in results):
            continue
        for name, result in zip(node.output, results):
            known[name] = np.asarray(result)

    # keep the nodes the outputs need; values that became known turn into initializers
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if not any(o in needed for o in node.output):
            continue
        if all(o in known for o in node.output if o):
            continue
        kept.append(node)
        needed.update(i for i in node.input if i)
    kept.reverse()
    if len(kept) == len(graph.node) and not rewritten:
        return False
    # initializers: drop the unused ones in place (no copy of the weights), add the folded ones
    graph_inputs = {i.name for i in graph.input}
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in needed:
            del graph.initializer[index]
    graph.initializer.extend(
        numpy_helper.from_array(np.array(known[name], order="C"), name)  # keeps 0-d values
        for name in sorted(needed)
        if name in known and name not in originals and name not in graph_inputs)
    del graph.node[:]
    graph.node.extend(kept)
    del graph.value_info[:]
    return True


def export_onnx(model: Darknet, path: str | os.PathLike, decoded: bool = False,
                opset: int = MIN_OPSET) -> Path:
    """Write ``model`` (a copy, BN folded, eval mode, float32 on the CPU) as ONNX to ``path``.

    The input is ``images`` (N, C, H, W) at the cfg size with N dynamic; outputs are named by
    :func:`output_names`. ``model`` itself is not modified.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: at least {MIN_OPSET} is needed")
    # the parsed graph is read-only here: share it instead of deep-copying every node
    memo = {id(model.layer_graph): model.layer_graph}
    work = copy.deepcopy(model, memo).to("cpu", torch.float32).eval().fuse()
    wrapper = ExportWrapper(work, decoded).eval()
    net = work.net
    dummy = torch.zeros(1, int(net.channels), int(net.height), int(net.width))
    names = output_names(work)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".darkcsp-onnx-", dir=out.parent) as tmp:
        traced = Path(tmp) / "traced.onnx"
        _trace_export(wrapper, dummy, traced, names, opset)
        import onnx
        proto = fold_static_shapes(onnx.load(str(traced)))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(traced))
        os.replace(traced, out)  # never a half-written file at ``path``
    return out


def _trace_export(wrapper: nn.Module, dummy: torch.Tensor, path: Path, names: list[str],
                  opset: int) -> None:
    """The legacy exporter, batch axis dynamic, its expected warnings silenced."""
    with warnings.catch_warnings():
        # the tracer warns about Python ints taken from shapes; they are the static H, W
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # folded below
        with torch.no_grad():
            torch.onnx.export(wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]},
                              do_constant_folding=True)


__all__ = ["export_onnx", "output_names", "DecodedYolo", "INPUT_NAME"]
