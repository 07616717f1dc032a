"""``[contrastive]``: Darknet's supervised contrastive loss layer (AlexeyAB, ``softmax_layer.c``).

What Darknet does with it (``parse_contrastive`` / ``make_contrastive_layer`` /
``forward_contrastive_layer``, AlexeyAB @59596d78):

* **Inputs.** It reads the previous layer (``params.w/h/c/inputs``); ``yolo_layer=`` names a
  ``[yolo]`` layer (negative: relative, else absolute) whose anchors, classes and per-anchor
  ``embedding_size`` it takes over. Darknet does not check the index: ``yolo_layer`` absent or
  resolving to 0 dereferences a null layer (a crash), a later layer is still zeroed (type
  ``CONVOLUTIONAL``, "should point to the [yolo] layer"); darkcsp refuses all of these, and any
  type but ``[yolo]`` (not ``[Gaussian_yolo]``), with a :class:`~darkcsp.errors.CfgError`. The
  classifier form (no ``yolo_layer``) is unreachable in Darknet for the same reason.
* **Check.** ``embedding_size = inputs / (n * h * w)`` (C integer division, ``n`` the [yolo]'s
  masked anchors) must equal the [yolo]'s ``embedding_size = le.n / n`` (0 without
  ``embedding_layer``), else Darknet exits; a remainder only warns.
* **Output.** ``l.outputs = inputs`` but ``out_w/out_h/out_c`` stay 0; ``l.output`` is
  ``calloc``-ed and never written on the CPU: inference returns at once (``if (!state.train)
  return``) and training writes only ``l.delta``. So the output is zeros of the input's size
  (darkcsp gives it the input's shape). The GPU build's forward first copies the input into
  ``output_gpu``; darkcsp follows the CPU build, the reference of its Darknet figures.
* **Weights, FLOPs.** ``load_weights``/``save_weights`` have no branch for it: nothing in
  ``.weights``. No ``bflops``: 0 in ``Total BFLOPS``.
* **OpenCV 4.x** does not know the section (``readNetFromDarknet`` throws), so the export refuses
  it through :meth:`LayerType.opencv_lower`'s default.

Its options are read as Darknet reads them; ``classes`` is taken from the [yolo] layer, the rest
only matter to the training loss, which darkcsp does not implement (``darkcsp train`` refuses).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, Shape, register,
                                     resolve_index)


class Zeros(DarknetModule):
    """Darknet's CPU ``l.output`` of the layer: never written, so zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@register
class ContrastiveType(LayerType):
    name = "contrastive"
    trainable = False  # Darknet trains it with a contrastive loss darkcsp does not have
    references = ("yolo_layer",)
    options = (
        Option("classes", "int", 1000, minimum=1,
               doc="the classifier form only; with yolo_layer the [yolo]'s classes"),
        Option("yolo_layer", "int", 0, doc="the [yolo] layer whose anchors it follows"),
        Option("temperature", "float", 1.0),
        Option("cls_normalizer", "float", 1.0),
        Option("max_delta", "float", float("inf")),
        Option("contrastive_neg_max", "int", 3),
    )

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        """The previous layer; ``yolo_layer`` resolved as ``parse_contrastive`` does."""
        value = opts.yolo_layer
        absolute = index + value if value < 0 else value
        if absolute == 0:
            raise section.error(
                f"layer {index}: yolo_layer={value} names no [yolo] layer (Darknet takes 0 "
                "for 'none' and then dereferences a null layer: it crashes); point it at the "
                "[yolo] layer whose anchors the embeddings follow", "yolo_layer")
        opts["yolo_layer"] = resolve_index(section, "yolo_layer", value, index)
        return [index - 1]

    def referenced(self, opts: OptionValues) -> list[int]:
        return [opts.yolo_layer]

    def shape(self, node: Node) -> Shape:
        yolo = node.refs[node.opts.yolo_layer]
        if yolo.kind.name != "yolo":
            raise node.error(f"yolo_layer points to layer {yolo.index}, a "
                             f"[{yolo.section.type}]: it must be a [yolo] layer (Darknet "
                             "exits the same way)", "yolo_layer")
        inp = node.in_shape
        anchors = len(yolo.info["anchors"])
        cells = anchors * inp.h * inp.w
        embedding = inp.size // cells
        theirs = yolo.info.get("embedding_size", 0)  # 0 without embedding_layer, as Darknet
        if theirs is None:
            raise node.error(f"the [yolo] layer {yolo.index} takes its embeddings from layer "
                             f"{yolo.opts.embedding_layer}, not a [convolutional]: darkcsp "
                             "checks embedding_size against a convolution's filters only",
                             "yolo_layer")
        if embedding != theirs:
            raise node.error(
                f"embedding_size {embedding} (the previous layer's {inp.size} outputs / "
                f"({anchors} anchors x {inp.h} x {inp.w})) differs from the [yolo] layer "
                f"{yolo.index}'s embedding_size {theirs}: both should use the same "
                "[convolutional] layer (Darknet exits the same way)", "yolo_layer")
        if inp.size % cells:
            node.section.warn(f"the previous layer's {inp.c} channels are not divisible by "
                              f"the {anchors} anchors of the [yolo] layer (Darknet warns too)",
                              "yolo_layer")
        node.info.update(embedding_size=embedding, anchors=anchors,
                         classes=yolo.opts.classes)
        return inp

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return Zeros()

    def describe(self, node: Node) -> str:
        return f"yolo {node.opts.yolo_layer} emb {node.info['embedding_size']}"
