"""The CSPNet dialect: macro sections that lower to plain Darknet sections.

``[csp]`` (one Cross Stage Partial stage), ``[partial_transition]`` (a hand-written transition +
concat), ``[efm]`` (Exact Fusion Model neck level), ``[maxout]`` (channel max-out) and ``[prn]``
(partial residual). ``[sam]`` without ``from`` lowers here too (see attention.py). Each type's
options are declared once, here; its lowering emits primitives through :class:`darkcsp.lower.
Lowering`, which also records named taps (``7:transition``) for references into the macro.
docs/dialect.md documents every option and the sections each one lowers to.
"""
from __future__ import annotations

import math

from darkcsp.budget import MAX_BLOCKS
from darkcsp.config.options import Option, OptionValues, parse_options
from darkcsp.config.reader import Section
from darkcsp.layers.activations import ACTIVATIONS, activation_option
from darkcsp.layers.registry import LayerType, register

CONV_STYLE = (activation_option("leaky"), Option("batch_normalize", "int", 1))


def emit_conv(low, filters: int, size: int, opts: OptionValues, stride: int = 1,
              groups: int = 1, activation: str | None = None) -> int:
    """A Darknet conv with explicit pad and activation (OpenCV's defaults differ)."""
    return low.emit("convolutional", batch_normalize=opts.batch_normalize, filters=filters,
                    size=size, stride=stride, pad=1, groups=groups if groups > 1 else None,
                    activation=activation or opts.activation)


def emit_route(low, *indices: int, groups: int = 1, group_id: int = 0) -> int:
    return low.emit("route", layers=[low.relative(i) for i in indices],
                    groups=groups if groups > 1 else None,
                    group_id=group_id if groups > 1 else None)


def emit_maxout(low, out_channels: int) -> int:
    return low.emit("maxpool", maxpool_depth=1, out_channels=out_channels, size=1, stride=1)


class MacroType(LayerType):
    """A dialect section: parsed with its options, then lowered; never built directly."""

    macro = True
    reference_options: tuple[str, ...] = ()  # lowered by Lowering.resolve, not parsed as ints

    def parse_macro(self, section: Section) -> OptionValues:
        values = parse_options(section, self.options, extra_known=self.reference_options)
        self.validate(values, section)
        return values


@register
class MaxoutType(MacroType):
    """``[maxout]``: channel max-out with Darknet's interleaved grouping."""

    name = "maxout"
    options = (Option("out_channels", "int", None, minimum=1),
               Option("k", "int", None, minimum=1, doc="group size: out_channels = C / k"))

    def lower(self, section: Section, low) -> bool:
        opts = self.parse_macro(section)
        channels = low.shape(low.previous).c
        if (opts.out_channels is None) == (opts.k is None):
            raise section.error("give exactly one of out_channels and k", "out_channels")
        if opts.k is not None:
            if channels % opts.k:
                raise section.error(f"{channels} input channels are not divisible by "
                                    f"k={opts.k}", "k")
            out = channels // opts.k
        else:
            out = opts.out_channels
            if out > channels:
                raise section.error(f"out_channels={out} exceeds the {channels} input channels",
                                    "out_channels")
        emit_maxout(low, out)
        return True


@register
class PrnType(MacroType):
    """``[prn]``: add ``from`` into the leading channels of the previous layer."""

    name = "prn"
    options = (Option("channels", "int", None, minimum=1), activation_option("linear"))
    reference_options = ("from",)

    def lower(self, section: Section, low) -> bool:
        opts = self.parse_macro(section)
        source, = low.resolve_list(section, "from")[:1] or [None]
        prev = low.previous
        c_prev, c_from = low.shape(prev).c, low.shape(source).c
        common = min(c_prev, c_from)
        channels = opts.channels or common
        if channels > common:
            raise section.error(f"channels={channels} exceeds min({c_prev}, {c_from})",
                                "channels")
        if channels == common:
            low.emit("shortcut", **{"from": low.relative(source)}, activation=opts.activation)
            return True
        if c_from % channels:
            raise section.error(f"channels={channels} must divide the {c_from} channels of "
                                "the added layer", "channels")
        part = emit_route(low, source, groups=c_from // channels, group_id=0)
        low.tap("part", part)
        emit_route(low, prev)
        low.emit("shortcut", **{"from": low.relative(part)}, activation=opts.activation)
        return True


@register
class PartialTransitionType(MacroType):
    """``[partial_transition]``: the transition and concat of a CSP stage, written by hand.

    fusion=last: T = 1x1 conv(previous), output = concat(T, route) (paper Fig. 3d);
    fusion=first: output = 1x1 conv(concat(previous, route)) (Fig. 3c).
    ``order=route_first`` puts ``route`` first in the concat (yolov4-tiny); ``pool`` pools the
    output 2x2/2.
    """

    name = "partial_transition"
    options = (Option("filters", "int", required=True, minimum=1),
               Option("fusion", "str", "last", choices=("first", "last")),
               Option("order", "str", "transition_first",
                      choices=("transition_first", "route_first")),
               Option("pool", "str", "none", choices=("none", "avg", "max")),
               *CONV_STYLE)
    reference_options = ("route",)

    def lower(self, section: Section, low) -> bool:
        opts = self.parse_macro(section)
        other, = low.resolve_list(section, "route")[:1]
        prev = low.previous
        if opts.fusion == "last":
            t = emit_conv(low, opts.filters, 1, opts)
            low.tap("transition", t)
            pair = (other, t) if opts.order == "route_first" else (t, other)
            low.tap("concat", emit_route(low, *pair))
        else:
            pair = (other, prev) if opts.order == "route_first" else (prev, other)
            low.tap("concat", emit_route(low, *pair))
            low.tap("transition", emit_conv(low, opts.filters, 1, opts))
        emit_pool(low, opts.pool)
        return True


def emit_pool(low, kind: str) -> None:
    if kind == "max":
        low.emit("maxpool", size=2, stride=2)
    elif kind == "avg":
        low.emit("local_avgpool", size=2, stride=2)


BLOCKS = ("res", "resnext", "dense", "pelee", "dark", "plain")


@register
class CspType(MacroType):
    """``[csp]``: one Cross Stage Partial stage (see docs/dialect.md for the layout)."""

    name = "csp"
    options = (
        Option("filters", "int", None, minimum=1,
               doc="stage width: the down-sampling conv and the transition after the concat"),
        Option("downsample", "int", 0, doc="1: start with a 3x3/2 conv (the base)"),
        Option("downsample_filters", "int", None, minimum=1,
               doc="width of the down-sampling conv (default `filters`)"),
        Option("downsample_groups", "int", 1, minimum=1),
        Option("split", "float", 0.5, minimum=0, maximum=1,
               doc="partial ratio gamma: part 1 gets gamma of the base channels"),
        Option("split_mode", "str", "conv", choices=("conv", "slice")),
        Option("part1", "str", "slice", choices=("slice", "base"),
               doc="split_mode=slice: part 1 is the first slice, or the whole base (CSP-tiny)"),
        Option("part1_filters", "int", None, minimum=1),
        Option("part2_filters", "int", None, minimum=1),
        Option("blocks", "int", 1, minimum=1, maximum=MAX_BLOCKS),
        Option("block", "str", "dark", choices=BLOCKS),
        Option("bottleneck", "int", None, minimum=1, doc="inner width of a block"),
        Option("block_filters", "int", None, minimum=1,
               doc="output width of res/resnext blocks (default: part 2's width)"),
        Option("part_activation", "str", None, choices=tuple(ACTIVATIONS),
               doc="activation of the two split convs (default `activation`)"),
        Option("growth_rate", "int", 32, minimum=1),
        Option("groups", "int", 1, minimum=1, doc="resnext cardinality"),
        Option("fusion", "str", "both", choices=("both", "first", "last")),
        Option("transition_filters", "int", None, minimum=1),
        Option("pool", "str", "none", choices=("none", "avg", "max"),
               doc="2x2/2 pooling after the concat (Pelee/DenseNet transitions)"),
        *CONV_STYLE,
    )

    def lower(self, section: Section, low) -> bool:
        opts = self.parse_macro(section)
        if opts.filters is None and (opts.downsample or opts.fusion != "last"):
            raise section.error("required with downsample=1 or fusion=both|first", "filters")
        base = low.previous
        if opts.downsample:
            base = emit_conv(low, opts.downsample_filters or opts.filters, 3, opts, stride=2,
                             groups=opts.downsample_groups)
        low.tap("base", base)
        c_base = low.shape(base).c
        if opts.split_mode == "slice":
            groups = round(1 / (1 - opts.split)) if opts.split < 1 else 0
            if groups < 2 or not math.isclose(1 / groups, 1 - opts.split) or c_base % groups:
                raise section.error(f"split={opts.split} with {c_base} base channels does not "
                                    "slice into equal route groups", "split")
            if opts.part1 == "base":
                part1 = base  # CSP-tiny (yolov4-tiny): the whole base crosses the stage
            else:
                part1 = emit_route(low, base, groups=groups, group_id=0)
            part2 = emit_route(low, base, groups=groups, group_id=groups - 1)
        else:
            c1 = opts.part1_filters or round(c_base * opts.split)
            c2 = opts.part2_filters or c_base - round(c_base * opts.split)
            for key, width in (("part1_filters", c1), ("part2_filters", c2)):
                if width < 1:
                    raise section.error(f"split={opts.split} leaves a part with no channels "
                                        f"(base has {c_base})", key if opts[key] else "split")
            part_activation = opts.part_activation or opts.activation
            part1 = emit_conv(low, c1, 1, opts, activation=part_activation)
            emit_route(low, base)
            part2 = emit_conv(low, c2, 1, opts, activation=part_activation)
        low.tap("part1", part1)
        low.tap("part2", part2)
        out = self._blocks(section, opts, low, part2)
        low.tap("block", out)
        if opts.fusion in ("both", "last"):
            width = opts.transition_filters or low.shape(out).c
            out = emit_conv(low, width, 1, opts)
            low.tap("transition", out)
        # public cfgs concatenate part 2 first; CSP-tiny puts its whole base first
        concat = (emit_route(low, part1, out) if opts.part1 == "base" and
                  opts.split_mode == "slice" else emit_route(low, out, part1))
        low.tap("concat", concat)
        emit_pool(low, opts.pool)
        if opts.fusion in ("both", "first"):
            emit_conv(low, opts.filters, 1, opts)
        return True

    def _blocks(self, section: Section, opts: OptionValues, low, x: int) -> int:
        width = low.shape(x).c
        inner = opts.bottleneck or width
        for _ in range(opts.blocks):
            start = x
            if opts.block == "dark":
                emit_conv(low, inner, 1, opts)
                emit_conv(low, width, 3, opts)
                x = low.emit("shortcut", **{"from": low.relative(start)}, activation="linear")
            elif opts.block in ("res", "resnext"):
                groups = opts.groups if opts.block == "resnext" else 1
                if inner % groups:
                    raise section.error(f"bottleneck={inner} is not divisible by "
                                        f"groups={groups}", "groups")
                emit_conv(low, inner, 1, opts)
                emit_conv(low, inner, 3, opts, groups=groups)
                emit_conv(low, opts.block_filters or width, 1, opts, activation="linear")
                x = low.emit("shortcut", **{"from": low.relative(start)},
                             activation=opts.activation)
            elif opts.block == "plain":
                x = emit_conv(low, opts.growth_rate if opts.bottleneck is None else inner, 3,
                              opts)
            elif opts.block == "dense":
                emit_conv(low, opts.bottleneck or 4 * opts.growth_rate, 1, opts)
                new = emit_conv(low, opts.growth_rate, 3, opts)
                x = emit_route(low, start, new)
            else:  # pelee: two-way dense layer (PeleeNet), each branch adds growth_rate / 2
                half = opts.growth_rate // 2
                c_in = low.shape(start).c
                inter = opts.bottleneck
                if inter is None:  # PeleeNet's rule; an explicit bottleneck is taken as is
                    inter = half * 4
                    if inter > c_in // 2:
                        inter = max(4, c_in // 8 * 4)
                emit_conv(low, inter, 1, opts)
                branch1 = emit_conv(low, half, 3, opts)
                emit_route(low, start)
                emit_conv(low, inter, 1, opts)
                emit_conv(low, half, 3, opts)
                branch2 = emit_conv(low, half, 3, opts)
                x = emit_route(low, start, branch1, branch2)
        if opts.block == "plain" and opts.blocks > 1:
            # CSP-tiny: the block's output is the concat of its convs, last first
            convs = [x - i for i in range(opts.blocks)]
            x = emit_route(low, *convs)
        return x


@register
class EfmType(MacroType):
    """``[efm]``: Exact Fusion Model for one output scale.

    Each level of ``layers=`` is compressed by Maxout (``maxout`` = group size k), brought to the
    previous layer's resolution (nearest upsample for coarser levels, 2x2/2 max-pools for finer
    ones; Maxout commutes with both, so compressing first is exact and cheaper), concatenated in
    the listed order, fused by a ``filters`` conv, optionally gated by a modified SAM.
    """

    name = "efm"
    options = (Option("filters", "int", required=True, minimum=1),
               Option("size", "int", 3, minimum=1),
               Option("maxout", "int", 4, minimum=1, doc="Maxout group size k"),
               Option("sam", "int", 0),
               *CONV_STYLE)
    reference_options = ("layers",)

    def lower(self, section: Section, low) -> bool:
        opts = self.parse_macro(section)
        levels = low.resolve_list(section, "layers")
        target = low.shape(low.previous)
        parts = []
        for level in levels:
            shape = low.shape(level)
            if shape.c % opts.maxout:
                raise section.error(f"level {level} has {shape.c} channels, not divisible by "
                                    f"maxout={opts.maxout}", "maxout")
            emit_route(low, level)
            out = emit_maxout(low, shape.c // opts.maxout)
            if shape.w < target.w:
                factor = target.w // shape.w
                if factor * shape.w != target.w or factor * shape.h != target.h:
                    raise section.error(f"level {level} ({shape.w}x{shape.h}) is not an "
                                        f"integer factor of {target.w}x{target.h}", "layers")
                out = low.emit("upsample", stride=factor)
            else:
                w, h = shape.w, shape.h
                while w > target.w:
                    out = low.emit("maxpool", size=2, stride=2)
                    w, h = (w + 1) // 2, (h + 1) // 2
                if (w, h) != (target.w, target.h):
                    raise section.error(f"level {level} ({shape.w}x{shape.h}) does not pool "
                                        f"down to {target.w}x{target.h}", "layers")
            parts.append(out)
        low.tap("concat", emit_route(low, *parts))
        fused = emit_conv(low, opts.filters, opts.size, opts)
        low.tap("fused", fused)
        if opts.sam:
            emit_conv(low, opts.filters, 1, opts, activation="logistic")
            low.emit("sam", **{"from": -2})
        return True
