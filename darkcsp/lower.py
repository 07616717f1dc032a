"""Dialect sections -> Darknet primitive sections.

The dialect's macro sections (``[csp]``, ``[partial_transition]``, ``[efm]``, ``[maxout]``,
``[prn]``, ``[sam]`` without ``from``) each emit a run of primitive sections. Indices in a dialect
cfg count dialect sections (a macro is one layer to its neighbours, its output being its last
emitted section); a reference may also name a macro's internal output by a tap,
``layers=-1,7:transition``. Every reference is remapped to the lowered numbering; relative
references stay relative. Lowering runs inside the graph builder, so a macro can size itself
from the shapes of what precedes it. A cfg without dialect sections passes through unchanged.

:func:`build_graph` / :func:`load_graph` are the pipeline's front half: sections -> lowered
primitive sections -> typed :class:`~darkcsp.graph.Graph`. Rewriting the primitives for OpenCV is
an export concern (:mod:`darkcsp.export.opencv`), not a lowering.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

from darkcsp.config.reader import Section, read_cfg
from darkcsp.errors import CfgError
from darkcsp.graph import Graph, GraphBuilder
from darkcsp.layers.registry import NETWORK_INPUT, Shape, layer_type

CfgLike = Union[str, os.PathLike, Sequence[Section]]


class Lowering:
    """What a macro's :meth:`LayerType.lower` uses to emit primitive sections."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.builder = builder
        self.outputs: list[int] = []  # dialect index -> lowered index of its output
        self.taps: list[dict[str, int]] = []  # dialect index -> named internal outputs
        self.dialect_index = 0
        self.section: Section | None = None  # the dialect section being lowered

    # -- where things are -------------------------------------------------------------------
    @property
    def next_index(self) -> int:
        return len(self.builder.nodes)

    @property
    def previous(self) -> int:
        """Lowered index of the previous dialect layer's output (-1: the network input)."""
        return self.outputs[-1] if self.outputs else NETWORK_INPUT

    def shape(self, index: int) -> Shape:
        return self.builder.shape_of(index)

    def resolve(self, section: Section, key: str, item: str) -> int:
        """Lowered absolute index of one dialect reference (``-2``, ``7``, ``7:transition``)."""
        number, _, tap = item.partition(":")
        try:
            value = int(number)
        except ValueError:
            raise section.error(f"{item!r} is not a layer index", key) from None
        here = self.dialect_index
        target = here + value if value < 0 else value
        if not 0 <= target < here:
            raise section.error(f"layer {here}: index {value} points to layer {target}, outside "
                                f"the earlier layers 0..{here - 1}", key)
        if not tap:
            return self.outputs[target]
        taps = self.taps[target]
        if tap not in taps:
            what = (f"layer {target} is a single layer" if not taps else
                    f"layer {target} is a macro; name one of its outputs "
                    f"({', '.join(sorted(taps))}) or the whole macro")
            raise section.error(f"{item!r} points into the middle of a layer: {what}", key)
        return taps[tap]

    def resolve_list(self, section: Section, key: str) -> list[int]:
        text = section.get(key)
        if text is None:
            raise section.error("required option is missing", key)
        return [self.resolve(section, key, item) for item in text.split(",") if item]

    def relative(self, index: int) -> int:
        """``index`` as a reference written in the section about to be emitted."""
        return NETWORK_INPUT if index == NETWORK_INPUT else index - self.next_index

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, type_name: str, **options: Any) -> int:
        """Add one primitive section (located at the dialect section's line); its index."""
        origin = self.section
        assert origin is not None
        section = Section(type_name, origin.line, origin.source)
        for key, value in options.items():
            if value is not None:
                section.set(key, value)
        self.builder.add(section)
        return self.next_index - 1

    def emit_section(self, section: Section) -> int:
        self.builder.add(section)
        return self.next_index - 1

    def tap(self, name: str, index: int) -> None:
        self.taps[-1][name] = index


def _copy_with_references(section: Section, lowering: Lowering) -> Section:
    """A primitive section with its layer references moved to the lowered numbering."""
    kind = layer_type(section)
    copy = section.copy()
    for key in kind.references:
        text = section.get(key)
        if text is None:
            continue
        items = [item for item in text.split(",") if item]
        values = []
        for item in items:
            target = lowering.resolve(section, key, item)
            values.append(lowering.relative(target) if item.startswith("-") else target)
        copy.set(key, values, section.line_of(key))
    return copy


def lower_into(builder: GraphBuilder, sections: Sequence[Section]) -> None:
    """Feed the primitive form of ``sections`` (all after ``[net]``) into ``builder``."""
    lowering = Lowering(builder)
    for index, section in enumerate(sections):
        lowering.dialect_index = index
        lowering.section = section
        lowering.taps.append({})
        kind = layer_type(section)
        start = lowering.next_index
        if not kind.lower(section, lowering):
            if kind.macro:
                raise section.error("this dialect section produced no layers")
            lowering.emit_section(_copy_with_references(section, lowering))
        if lowering.next_index == start:
            raise section.error("this dialect section produced no layers")
        lowering.outputs.append(lowering.next_index - 1)


def build_graph(sections: Sequence[Section]) -> Graph:
    """Lower dialect sections, type-check every section, resolve its inputs and compute every
    layer's shape."""
    if not sections:
        raise CfgError("empty cfg")
    builder = GraphBuilder(sections[0])
    lower_into(builder, sections[1:])
    return builder.graph()


def load_graph(cfg: CfgLike) -> Graph:
    """The graph of a cfg path, cfg text or section list."""
    sections = list(cfg) if not isinstance(cfg, (str, os.PathLike)) else read_cfg(cfg)
    return build_graph(sections)
