"""``--target opencv``: a Darknet graph as sections OpenCV 4.x's Darknet importer computes exactly.

The importer (``cv2.dnn.readNetFromDarknet``; OpenCV 5 removed it) silently misreads a good part
of what Darknet computes: ``maxpool_depth``, weighted and multi-``from`` shortcuts, grouped
multi-input routes, different defaults for ``[maxpool]`` and ``[upsample]``, BN eps 1e-6, and it
rejects ``[batchnorm]``, ``[activation]``, ``[local_avgpool]`` outright (its cfg reader stops on
a section type it does not know).

Why two passes: the dialect lowers to Darknet primitives first (that cfg *is* the model and its
``.weights``); this second pass then rewrites each primitive for OpenCV, so the dialect macros never
need to know about OpenCV and a plain Darknet cfg gets the same treatment. Each layer type says
what OpenCV does with it in its own ``opencv_lower(node, low)`` (next to its Darknet semantics,
one place per layer type), through the :class:`OpenCVLowering` here: either the section passed
through in canonical form (canonical name, every option whose defaults differ written out, keys
OpenCV would misread dropped) or a rewrite into sections it does compute, exact up to float
rounding. A type without the hook is rejected, never exported silently wrong.

Weights: every emitted section that carries weights records a *fill*, ``(source module, exported
module) -> None``: a copy of the Darknet layer's tensors, or fixed weights computed from the
source module (selector/difference convs for Maxout, normalised shortcut weights, folded BN).
:func:`opencv_weight_floats` replays the importer's own channel bookkeeping to check that it
reads exactly the floats darkcsp writes (OpenCV itself never checks the file length).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.config.reader import Section
from darkcsp.errors import CfgError
from darkcsp.export.darknet import graph_cfg_text
from darkcsp.files import atomic_write
from darkcsp.graph import Graph, GraphBuilder
from darkcsp.layers.activations import OPENCV_ACTIVATIONS
from darkcsp.layers.conv import BN_EPS, Conv
from darkcsp.layers.registry import NETWORK_INPUT, Node, Shape
from darkcsp.lower import Lowering, load_graph
from darkcsp.network import Darknet
from darkcsp.weights import WeightsHeader

OPENCV_BN_EPS = 1e-6  # the importer's BatchNorm layers; Darknet uses BN_EPS = 1e-5
# Written onto every rolling variance in an OpenCV .weights, so that OpenCV computes
# sqrt(var + 1e-5) like Darknet.
VARIANCE_SHIFT = BN_EPS - OPENCV_BN_EPS

WeightFill = Callable[[nn.Module, nn.Module], None]  # (Darknet module, exported module)
ConvWeights = Callable[[nn.Module], "tuple[torch.Tensor, torch.Tensor]"]  # -> (weight, bias)


def copy_state(source: nn.Module, target: nn.Module) -> None:
    """The exported layer takes the Darknet layer's tensors as they are (also those a
    ``share_index`` conv borrows: they are registered on it, so its state holds them)."""
    target.load_state_dict(source.state_dict())


def canonical_net(section: Section) -> Section:
    """``[net]`` under the one spelling OpenCV accepts (``[network]`` is an unknown layer there)."""
    return Section("net", section.line, section.source, dict(section.entries))


@dataclass
class OpenCVPlan:
    """The OpenCV form of a graph and where each exported layer's weights come from."""

    graph: Graph
    outputs: list[int]  # Darknet layer -> the exported layer holding its output
    origins: list[int]  # exported layer -> the Darknet layer it was lowered from
    fills: dict[int, WeightFill]  # exported layer -> how its weights are made


class OpenCVLowering:
    """What a layer type's ``opencv_lower`` uses: where the Darknet layers' outputs went, and
    emitters for sections OpenCV reads the way Darknet does."""

    copy = staticmethod(copy_state)

    def __init__(self, source: Graph, builder: GraphBuilder | None = None) -> None:
        net = canonical_net(source.sections[0])
        if builder is None:
            builder = GraphBuilder(net)
        else:
            builder.sections[0] = net
        self.source = source
        self.builder = builder
        self.lowering = Lowering(builder)
        self.origins: list[int] = []
        self.fills: dict[int, WeightFill] = {}
        self._node: Node | None = None
        self._input_copy: int | None = None

    # -- where things are -------------------------------------------------------------------
    @property
    def node(self) -> Node:
        """The Darknet layer being lowered."""
        assert self._node is not None, "no layer is being lowered"
        return self._node

    @property
    def next_index(self) -> int:
        return self.lowering.next_index

    def output(self, index: int) -> int:
        """Exported index of Darknet layer ``index``'s output (NETWORK_INPUT stays)."""
        return NETWORK_INPUT if index == NETWORK_INPUT else self.lowering.outputs[index]

    def input(self, k: int = 0) -> int:
        """Exported index of the current layer's ``k``-th input."""
        return self.output(self.node.inputs[k])

    def shape(self, index: int) -> Shape:
        return self.builder.shape_of(index)

    def ref(self, index: int) -> int:
        """``index`` as a relative reference in the section about to be emitted."""
        if index == NETWORK_INPUT:
            raise self.node.error("internal: a reference to the network input cannot be written")
        return self.lowering.relative(index)

    # -- checks -------------------------------------------------------------------------------
    def cannot(self, what: str, key: str | None = None) -> CfgError:
        """The error for something OpenCV 4.x's Darknet importer does not compute exactly."""
        return self.node.error(f"OpenCV 4.x cannot compute {what} exactly; this cfg has no "
                               "--target opencv form", key)

    def activation(self, key: str = "activation") -> str:
        """The layer's activation, if the importer has it (else :meth:`cannot`)."""
        name = self.node.opts[key]
        if name not in OPENCV_ACTIVATIONS:
            raise self.cannot(f"activation={name} (it has only "
                              f"{', '.join(sorted(OPENCV_ACTIVATIONS))})", key)
        return name

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, type_name: str, fill: WeightFill | None = None, **options: object) -> int:
        """One section (options written in the order given); its exported index."""
        index = self.lowering.emit(type_name, **options)
        self.origins.append(self.node.index)
        if fill is not None:
            self.fills[index] = fill
        return index

    def after(self, index: int) -> None:
        """Make ``index`` the previous layer of the next section (an identity ``[route]`` to it
        when it is not)."""
        if index != self.next_index - 1:
            self.emit("route", layers=[self.ref(index)])

    def route(self, *indices: int, groups: int = 1, group_id: int = 0) -> int:
        return self.emit("route", layers=[self.ref(i) for i in indices],
                         groups=groups if groups > 1 else None,
                         group_id=group_id if groups > 1 else None)

    def shortcut(self, previous: int, other: int, activation: str = "linear") -> int:
        """``activation(previous + other)`` with Darknet's (and OpenCV's) channel-prefix rule:
        the output has ``previous``'s channels."""
        self.after(previous)
        return self.emit("shortcut", **{"from": [self.ref(other)]}, activation=activation)

    def conv(self, source: int, filters: int, weights: ConvWeights, size: int = 1,
             stride: int = 1, groups: int = 1, activation: str = "linear") -> int:
        """A conv without BN whose weight and bias ``weights(darknet module)`` computes at
        export (fixed, or derived from the Darknet layer's own parameters)."""
        self.after(source)

        def fill(module: nn.Module, target: nn.Module) -> None:
            weight, bias = weights(module)
            conv = target.conv
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise RuntimeError(f"internal: fixed conv weights {tuple(weight.shape)}/"
                                   f"{tuple(bias.shape)} for {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)

        return self.emit("convolutional", fill=fill, batch_normalize=0, filters=filters,
                         size=size, stride=stride, pad=0, padding=0, groups=groups,
                         activation=activation)

    def channel_conv(self, source: int, scale: Callable[[nn.Module], torch.Tensor],
                     shift: Callable[[nn.Module], torch.Tensor] | None = None,
                     activation: str = "linear") -> int:
        """A depthwise 1x1 conv: ``activation(x * scale[c] + shift[c])`` per channel."""
        channels = self.shape(source).c

        def weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            bias = torch.zeros(channels) if shift is None else shift(module)
            return scale(module).reshape(channels, 1, 1, 1), bias.reshape(channels)

        return self.conv(source, channels, weights, groups=channels, activation=activation)

    def materialize(self, index: int) -> int:
        """``index`` as a layer later sections can name: the network input (which a cfg cannot
        reference) becomes an identity depthwise conv, emitted first."""
        if index != NETWORK_INPUT:
            return index
        if self._input_copy is None:
            if self.next_index:
                raise self.node.error("internal: the network input is no longer the previous "
                                      "layer")
            channels = self.shape(NETWORK_INPUT).c
            self._input_copy = self.channel_conv(NETWORK_INPUT,
                                                 lambda _: torch.ones(channels))
        return self._input_copy

    # -- driving ------------------------------------------------------------------------------
    def lower(self) -> OpenCVPlan:
        for node in self.source.nodes:
            self._node = node
            self.lowering.section = node.section  # emitted sections keep its file:line
            start = self.next_index
            node.kind.opencv_lower(node, self)
            if self.next_index == start:
                raise node.error("internal: no OpenCV form was emitted")
            self.lowering.outputs.append(self.next_index - 1)
        graph = self.builder.graph()
        check_opencv_reader(graph)
        return OpenCVPlan(graph, list(self.lowering.outputs), self.origins, self.fills)


def lower_for_opencv(source: Graph, builder: GraphBuilder | None = None) -> OpenCVPlan:
    """Pass 2 of ``--target opencv``: ``source`` (a Darknet-lowered graph) rewritten for OpenCV,
    fed into ``builder`` (a new one by default) so darkcsp type-checks every emitted section."""
    return OpenCVLowering(source, builder).lower()


def darkcsp_weight_floats(node: Node) -> int:
    """Floats darkcsp writes for an exported layer (only conv and connected carry weights)."""
    opts = node.opts
    kind = node.kind.name
    per_output = 4 if opts.get("batch_normalize") else 1
    if kind == "convolutional":
        return opts.filters * (node.in_shape.c // opts.groups * opts.size ** 2 + per_output)
    if kind == "connected":
        return opts.output * (node.in_shape.size + per_output)
    return 0


def opencv_weight_floats(graph: Graph) -> list[int]:
    """Floats the importer reads for each exported layer, replaying its bookkeeping
    (``ReadDarknetFromCfgStream`` then ``ReadDarknetFromWeightsStream``): channels per layer,
    and for ``[connected]`` the C*H*W of its own running shape, which only conv, pooling,
    reorg and upsample update (so a ``[connected]`` after a ``[route]`` from another size reads
    the wrong count)."""
    c, h, w = graph.input_shape.c, graph.input_shape.h, graph.input_shape.w
    channels: list[int] = []
    for i, node in enumerate(graph.nodes):
        opts, kind = node.opts, node.kind.name
        if kind == "convolutional":
            pad = opts.size // 2 if opts.pad else opts.padding
            c = opts.filters
            h = (h - opts.size + 2 * pad) // opts.stride + 1
            w = (w - opts.size + 2 * pad) // opts.stride + 1
        elif kind == "connected":
            if i and h > 1:
                channels[i - 1] = c * h * w
            c, h, w = opts.output, 1, 1
        elif kind == "maxpool":
            h = (h - opts.size + opts.padding) // opts.stride + 1
            w = (w - opts.size + opts.padding) // opts.stride + 1
        elif kind == "avgpool":
            h = w = 1
        elif kind == "route":
            c = sum(channels[j] for j in node.inputs) // opts.groups
        elif kind == "reorg":
            c, h, w = c * opts.stride ** 2, h // opts.stride, w // opts.stride
        elif kind == "upsample":
            h, w = h * opts.stride, w * opts.stride
        channels.append(c)
    floats = []
    previous = graph.input_shape.c
    for i, node in enumerate(graph.nodes):
        opts, kind = node.opts, node.kind.name
        per_output = 4 if opts.get("batch_normalize") else 1
        if kind == "convolutional":
            floats.append(opts.filters * (previous // opts.groups * opts.size ** 2 + per_output))
        elif kind == "connected":
            inputs = graph.input_shape.size if i == 0 else previous
            floats.append(opts.output * (inputs + per_output))
        else:
            floats.append(0)
        previous = channels[i]
    return floats


def check_opencv_reader(graph: Graph) -> None:
    """Every exported layer's weights must be read by OpenCV as darkcsp writes them."""
    for node, theirs in zip(graph.nodes, opencv_weight_floats(graph)):
        ours = darkcsp_weight_floats(node)
        if ours != theirs:
            raise node.error(f"OpenCV's importer would read {theirs} floats for this layer where "
                             f"darkcsp writes {ours} (its channel/size bookkeeping differs here, "
                             "e.g. a [connected] after a [route] from another map size)")


def opencv_cfg_text(cfg: str | Path) -> str:
    """The cfg OpenCV 4.x computes exactly, for a (dialect) cfg (``darkcsp lower --target
    opencv``): the Darknet lowering first, then each primitive's OpenCV form."""
    return graph_cfg_text(lower_for_opencv(load_graph(str(cfg))).graph, cfg, "opencv")


def export_opencv(cfg: str | Path, weights: str | Path | None, out_dir: str | Path,
                  max_memory: MaxMemory = AUTO) -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` for OpenCV 4.x into ``out_dir``.

    Both passes run on the model itself: the Darknet lowering with its weights loaded, then the
    OpenCV form, whose weights are filled from it (:func:`opencv_model`).
    """
    model = Darknet(str(cfg), max_memory=max_memory)
    if weights is not None:
        model.load_weights(str(weights))
    plan = lower_for_opencv(model.layer_graph)
    exported = opencv_model(model, plan)
    data = opencv_weights_bytes(exported)
    expected = exported.header.size + 4 * sum(opencv_weight_floats(plan.graph))
    if len(data) != expected:  # OpenCV never checks the length: a mismatch would load garbage
        raise RuntimeError(f"internal: {len(data)} weight bytes written, OpenCV reads "
                           f"{expected}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(cfg).stem
    cfg_path, weights_path = out / f"{name}.cfg", out / f"{name}.weights"
    text = graph_cfg_text(plan.graph, cfg, "opencv")
    atomic_write(cfg_path, text.encode("utf-8"))
    atomic_write(weights_path, data)
    return cfg_path, weights_path


def opencv_model(model: Darknet, plan: OpenCVPlan) -> Darknet:
    """The OpenCV form of ``model`` as a darkcsp model (Darknet semantics, BN eps 1e-5), each
    layer's weights made by its fill from the Darknet layer it was lowered from. It computes
    what ``model`` computes (up to float rounding), which is what OpenCV must reproduce."""
    exported = Darknet(plan.graph.sections)
    with torch.no_grad():
        for index, module in enumerate(exported.layers):
            fill = plan.fills.get(index)
            if (fill is None) == bool(module.weight_blocks()):
                state = "has no weight source" if fill is None else "carries no weights"
                raise RuntimeError(f"internal: exported layer {index} "
                                   f"[{exported.nodes[index].section.type}] {state}")
            if fill is not None:
                fill(model.layers[plan.origins[index]], module)
    exported.header = WeightsHeader(0, 2, 5, model.header.seen)  # the header OpenCV reads
    return exported.eval()


def opencv_weights_bytes(model: Darknet) -> bytes:
    """``model``'s ``.weights`` with every conv BN variance raised by :data:`VARIANCE_SHIFT`,
    so OpenCV's sqrt(var + 1e-6) is Darknet's sqrt(var + 1e-5)."""
    parts = [model.header.to_bytes()]
    with torch.no_grad():
        for index, blocks in model.weight_blocks():
            module = model.layers[index]
            variance = (module.bn.running_var if isinstance(module, Conv) and
                        module.bn is not None else None)
            for block in blocks:
                tensor = block.tensor.detach().to("cpu", torch.float32)
                if block.tensor is variance:
                    tensor = tensor + VARIANCE_SHIFT
                parts.append(tensor.contiguous().numpy().astype("<f4", copy=False).tobytes())
    return b"".join(parts)
