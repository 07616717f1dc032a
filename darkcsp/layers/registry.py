"""The layer registry: one :class:`LayerType` per cfg section type.

A layer type keeps everything about one kind of section in one place: its options (names,
types, Darknet defaults), which earlier layers it reads, its shape rule, its FLOPs as Darknet
counts them, and the PyTorch module that computes it. The module in turn lists its tensors in
Darknet's ``.weights`` stream order (:meth:`DarknetModule.weight_blocks`), so loading and saving
are the same list read forwards and written forwards. Dialect sections add a lowering to
primitive sections; primitives add their OpenCV form (``opencv_lower``, see
:mod:`darkcsp.export.opencv`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from darkcsp.config.options import Option, OptionValues, parse_options
from darkcsp.config.reader import Section
from darkcsp.errors import CfgError

NETWORK_INPUT = -1  # index used for "the network's input" in a node's input list


@dataclass(frozen=True)
class Shape:
    """A layer output's channels, height and width (batch excluded)."""

    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w

    def __str__(self) -> str:
        return f"{self.w} x {self.h} x {self.c}"


@dataclass(frozen=True)
class NetInfo:
    """What every layer may need to know about the network as a whole."""

    width: int
    height: int
    channels: int


@dataclass
class Node:
    """One built layer: its section, typed options, inputs (absolute indices) and shapes."""

    index: int
    section: Section
    kind: "LayerType"
    opts: OptionValues
    inputs: list[int]
    in_shapes: list[Shape]
    net: NetInfo
    out_shape: Shape = Shape(0, 0, 0)
    info: dict[str, Any] = field(default_factory=dict)  # derived values the shape rule computed
    # earlier layers consulted (not read) while building: LayerType.referenced, by index
    refs: dict[int, "Node"] = field(default_factory=dict, repr=False, compare=False)

    @property
    def in_shape(self) -> Shape:
        return self.in_shapes[0]

    def error(self, message: str, key: str | None = None) -> CfgError:
        return CfgError(f"layer {self.index}: {message}", source=self.section.source,
                        line=self.section.line_of(key), section=self.section.type, key=key)


@dataclass(frozen=True)
class WeightBlock:
    """One contiguous float32 block of a layer's ``.weights`` stream.

    ``role`` lets the loader honour Darknet's per-layer switches: ``"bn"`` blocks are skipped by
    ``dontloadscales``; ``"fc"`` blocks are transposed when the header asks for it.
    """

    tensor: torch.Tensor
    role: str = "param"


class DarknetModule(nn.Module):
    """Base of every layer module: ``forward(*inputs)`` and its weights in stream order."""

    def weight_blocks(self) -> list[WeightBlock]:
        return []


WeightFill = Callable[[nn.Module, nn.Module], None]  # (Darknet module, exported module)
ConvWeights = Callable[[nn.Module], "tuple[torch.Tensor, torch.Tensor]"]  # -> (weight, bias)


class OpenCVEmitter(Protocol):
    """What a layer type's :meth:`LayerType.opencv_lower` may use to write its OpenCV 4.x form.

    The layers own *what* OpenCV computes for them; the exporter
    (:class:`darkcsp.export.opencv.OpenCVLowering`) implements this protocol and owns the
    bookkeeping, so no layer imports the exporter."""

    @property
    def node(self) -> Node: ...

    def input(self, k: int = 0) -> int: ...

    def shape(self, index: int) -> Shape: ...

    def ref(self, index: int) -> int: ...

    def cannot(self, what: str, key: str | None = None) -> CfgError: ...

    def activation(self, key: str = "activation") -> str: ...

    def emit(self, type_name: str, fill: WeightFill | None = None, **options: object) -> int: ...

    def route(self, *indices: int, groups: int = 1, group_id: int = 0) -> int: ...

    def shortcut(self, previous: int, other: int, activation: str = "linear") -> int: ...

    def conv(self, source: int, filters: int, weights: ConvWeights, size: int = 1,
             stride: int = 1, groups: int = 1, activation: str = "linear") -> int: ...

    def channel_conv(self, source: int, scale: Callable[[nn.Module], torch.Tensor],
                     shift: Callable[[nn.Module], torch.Tensor] | None = None,
                     activation: str = "linear") -> int: ...

    def materialize(self, index: int) -> int: ...

    @staticmethod
    def copy(source: nn.Module, target: nn.Module) -> None: ...


class LayerType:
    """Base class of a registered section type. Subclasses override what differs."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    detection_head: ClassVar[bool] = False
    summary_name: ClassVar[str | None] = None  # name in Darknet's layer table, default ``name``
    macro: ClassVar[bool] = False  # a dialect section that always lowers to primitives
    trainable: ClassVar[bool] = True  # False: darkcsp has no training loss for it (refused)
    references: ClassVar[tuple[str, ...]] = ()  # keys holding layer indices (remapped on lowering)

    def parse(self, section: Section) -> OptionValues:
        values = parse_options(section, self.options)
        self.validate(values, section)
        return values

    def validate(self, opts: OptionValues, section: Section) -> None:
        """Cross-option checks that do not need shapes."""

    def lower(self, section: Section, lowering: Any) -> bool:
        """Emit primitive sections for ``section`` through ``lowering`` (a
        :class:`darkcsp.lower.Lowering`) and return True, or return False to be copied as is
        (with its ``references`` remapped). Dialect sections override this."""
        return False

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """Emit this built (primitive) layer in a form OpenCV 4.x's Darknet importer computes
        exactly, through ``low`` (a :class:`darkcsp.export.opencv.OpenCVLowering`): the section in
        canonical form, or a rewrite into sections it does compute. The default rejects the
        layer, so a type nobody checked against the importer is never exported silently wrong."""
        raise low.cannot(f"a [{node.section.type}] layer")

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        """Absolute indices of the layers this one reads; the previous layer by default."""
        return [index - 1]

    def referenced(self, opts: OptionValues) -> list[int]:
        """Absolute indices (resolved by ``sources``) of earlier layers whose options and
        derived values this layer's shape rule consults without reading their output, as
        Darknet's parser looks at ``params.net.layers[i]`` (``[yolo] embedding_layer``,
        ``[contrastive] yolo_layer``); they arrive as ``node.refs``."""
        return []

    def shape(self, node: Node) -> Shape:
        """The output shape; raise ``node.error(...)`` when the inputs do not fit."""
        return node.in_shape

    def flops(self, node: Node) -> float:
        """Darknet's BFLOPs term for this layer (in FLOPs, not billions)."""
        return 0.0

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        raise NotImplementedError(f"[{self.name}] has no PyTorch module")

    def describe(self, node: Node) -> str:
        """The filters / size column of Darknet's layer table."""
        return ""


_REGISTRY: dict[str, LayerType] = {}


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator: make ``cls`` the layer type of its section name and aliases."""
    instance = cls()
    for name in (cls.name, *cls.aliases):
        if name in _REGISTRY:
            raise RuntimeError(f"section type [{name}] registered twice")
        _REGISTRY[name] = instance
    return cls


def layer_type(section: Section) -> LayerType:
    try:
        return _REGISTRY[section.type]
    except KeyError:
        raise section.error("unknown section type") from None


def registered_types() -> dict[str, LayerType]:
    return dict(_REGISTRY)


def resolve_index(section: Section, key: str, value: int, index: int) -> int:
    """Darknet's layer reference: negative = relative to ``index``, else absolute; it must name
    an earlier layer."""
    absolute = index + value if value < 0 else value
    if not 0 <= absolute < index:
        raise section.error(f"layer {index}: index {value} points to layer {absolute}, "
                            f"outside the earlier layers 0..{index - 1}", key)
    return absolute


def resolve_indices(section: Section, key: str, values: Sequence[int], index: int) -> list[int]:
    return [resolve_index(section, key, value, index) for value in values]
