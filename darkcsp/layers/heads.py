"""Detection heads: ``[yolo]``, ``[Gaussian_yolo]``, ``[region]`` (YOLOv2), ``[detection]`` (YOLOv1).

Their forward is Darknet's CPU inference forward, activations applied in place on the layout
Darknet keeps, so the outputs compare one to one with Darknet's ``l.output``. Anchors, masks,
strides and class counts come from the cfg and the graph (never from a file name) and are kept on
the module for box decoding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from darkcsp.budget import MAX_ANCHORS
from darkcsp.config.options import Option, OptionValues
from darkcsp.config.reader import Section
from darkcsp.layers.registry import (DarknetModule, LayerType, Node, OpenCVEmitter, register,
                                     resolve_index, Shape)


NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")
IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")

YOLO_COMMON = (
    Option("classes", "int", 20, minimum=1),
    Option("num", "int", 1, minimum=1, maximum=MAX_ANCHORS),
    Option("mask", "ints", None, minimum=0),
    Option("anchors", "floats", None),
    Option("max", "int", 200),
    Option("scale_x_y", "float", 1.0),
    Option("max_delta", "float", float("inf")),
    Option("counters_per_class", "ints", None),
    Option("label_smooth_eps", "float", 0.0),
    Option("objectness_smooth", "int", 0),
    Option("iou_normalizer", "float", 0.75),
    Option("obj_normalizer", "float", 1.0),
    Option("cls_normalizer", "float", 1.0),
    Option("delta_normalizer", "float", 1.0),
    Option("iou_loss", "str", "mse"),
    Option("iou_thresh_kind", "str", "iou"),
    Option("beta_nms", "float", 0.6),
    Option("nms_kind", "str", "default"),
    Option("jitter", "float", 0.2),
    Option("resize", "float", 1.0),
    Option("focal_loss", "int", 0),
    Option("ignore_thresh", "float", 0.5),
    Option("truth_thresh", "float", 1.0),
    Option("iou_thresh", "float", 1.0),
    Option("random", "float", 0.0),
    Option("map", "str", None),
)


class YoloHead(DarknetModule):
    """``[yolo]``/``[Gaussian_yolo]`` inference transform on (B, A*(E+C), H, W).

    ``coords`` is 4 for yolo (x, y, w, h) and 8 for Gaussian yolo (mean and sigma of each).
    """

    def __init__(self, anchors: list[tuple[float, float]], classes: int, scale_x_y: float,
                 new_coords: bool, net_size: tuple[int, int], nms_kind: str, beta_nms: float,
                 gaussian: bool = False) -> None:
        super().__init__()
        self.anchors = anchors  # the masked anchors, in input pixels
        self.classes = classes
        self.scale_x_y = scale_x_y
        self.new_coords = new_coords
        self.net_size = net_size  # (width, height)
        self.nms_kind = nms_kind
        self.beta_nms = beta_nms
        self.gaussian = gaussian
        coords = 8 if gaussian else 4
        self.entries = coords + 1 + classes
        raw = torch.zeros(self.entries, dtype=torch.bool)  # entries left without logistic
        if gaussian:
            raw[[4, 6]] = True  # mu_w, mu_h
        else:
            raw[[2, 3]] = True
        self.register_buffer("raw_entries", raw.view(1, 1, -1, 1, 1), persistent=False)
        xy = torch.zeros(self.entries, dtype=torch.bool)
        xy[[0, 2] if gaussian else [0, 1]] = True
        self.register_buffer("xy_entries", xy.view(1, 1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = x.reshape(b, len(self.anchors), self.entries, h, w)
        y = t if self.new_coords else torch.where(self.raw_entries, t, torch.sigmoid(t))
        if self.scale_x_y != 1:
            s = self.scale_x_y
            y = torch.where(self.xy_entries, y * s - 0.5 * (s - 1), y)
        return y.reshape(b, -1, h, w)


def _yolo_anchors(opts: OptionValues, section: Section, warn: bool = True
                  ) -> list[tuple[float, float]]:
    mask = opts.mask if opts.mask is not None else list(range(opts.num))
    anchors = list(opts.anchors or [])
    if len(anchors) < 2 * opts.num:
        # make_yolo_layer sets all 2*num biases to 0.5 and parse_yolo overwrites only the
        # values given (cspx-p7-mish_hp.cfg: "61,45    61,45" reads as 61,4561,45: 31 values).
        if warn:
            section.warn(f"{len(anchors)} values for num={opts.num} anchors ({2 * opts.num} "
                         "needed; spaces are removed, so a missing comma joins two numbers): "
                         "Darknet uses 0.5 for the missing ones", "anchors")
        anchors += [0.5] * (2 * opts.num - len(anchors))
    beyond = [m for m in mask if m >= opts.num]
    if beyond:
        # Darknet reads every anchor listed into l.biases, so a mask past num still finds its
        # anchors when the list has them (yolov4-p-style cfgs list 20 anchors with num=16).
        if 2 * max(beyond) + 1 >= len(anchors):
            raise section.error(f"mask index {max(beyond)} needs anchor pair {max(beyond)}, "
                                f"but only {len(anchors) // 2} pairs are listed", "mask")
        if warn:
            section.warn(f"mask indices {beyond} are not below num={opts.num}; Darknet reads "
                         "their anchors from the list anyway, and so does darkcsp", "mask")
    pairs = [(anchors[2 * i], anchors[2 * i + 1]) for i in range(len(anchors) // 2)]
    return [pairs[m] for m in mask]


class _YoloBaseType(LayerType):
    detection_head = True
    gaussian = False

    def validate(self, opts: OptionValues, section: Section) -> None:
        _yolo_anchors(opts, section)
        kinds = NMS_KINDS if self.gaussian else NMS_KINDS[:3]
        if opts.nms_kind not in kinds:
            section.warn(f"nms_kind={opts.nms_kind!r} is unknown; Darknet uses default NMS",
                         "nms_kind")

    def shape(self, node: Node) -> Shape:
        opts = node.opts
        anchors = _yolo_anchors(opts, node.section, warn=False)  # validate() warned
        entries = (9 if self.gaussian else 5) + opts.classes
        expected = len(anchors) * entries
        if node.in_shape.c != expected:
            raise node.error(f"the previous layer has {node.in_shape.c} channels but "
                             f"{len(anchors)} anchors x ({entries - opts.classes} + "
                             f"{opts.classes} classes) need {expected}", "classes")
        node.info["anchors"] = anchors
        return node.in_shape

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        nms_kind = opts.nms_kind if opts.nms_kind in NMS_KINDS else "default"
        return YoloHead(node.info["anchors"], opts.classes, opts.scale_x_y,
                        bool(opts.get("new_coords", 0)), (node.net.width, node.net.height),
                        nms_kind, opts.beta_nms, self.gaussian)


@register
class YoloType(_YoloBaseType):
    name = "yolo"
    references = ("embedding_layer",)
    options = (*YOLO_COMMON,
               Option("new_coords", "int", 0),
               Option("show_details", "int", 1),
               Option("track_history_size", "int", 5), Option("sim_thresh", "float", 0.8),
               Option("dets_for_track", "int", 1), Option("dets_for_show", "int", 1),
               Option("track_ciou_norm", "float", 0.01),
               Option("embedding_layer", "int", None,
                      doc="the layer whose output holds each anchor's embedding (tracking and "
                          "[contrastive]); the [yolo] output does not depend on it"),
               Option("thresh", "float", 0.2,
                      doc="read by OpenCV only, Darknet ignores it: OpenCV zeroes class scores "
                          "<= thresh in the layer output (its default 0.2)"))

    def sources(self, opts: OptionValues, index: int, section: Section) -> list[int]:
        """The previous layer; ``embedding_layer`` is resolved as ``parse_yolo`` does (negative:
        relative) and must name an earlier layer (Darknet reads ``net.layers[id]`` unchecked)."""
        if opts.embedding_layer is not None:
            opts["embedding_layer"] = resolve_index(section, "embedding_layer",
                                                    opts.embedding_layer, index)
        return [index - 1]

    def referenced(self, opts: OptionValues) -> list[int]:
        return [] if opts.embedding_layer is None else [opts.embedding_layer]

    def shape(self, node: Node) -> Shape:
        """The input shape; with ``embedding_layer`` also Darknet's ``embedding_size = le.n /
        l.n`` (``le.n`` is the filters of a convolutional embedding layer, ``l.n`` the masked
        anchors), in ``node.info``, warned about as Darknet does when it does not divide. Only
        the detections' tracking embeddings (filled by the GPU forward only) and a
        ``[contrastive]`` layer's check use it; ``l.output`` is the same with or without it."""
        out = super().shape(node)
        index = node.opts.embedding_layer
        if index is not None:
            source = node.refs[index]
            anchors = len(node.info["anchors"])
            if source.kind.name == "convolutional":
                filters = source.opts.filters
                node.info["embedding_size"] = filters // anchors
                if filters % anchors:
                    node.section.warn(f"filters={filters} of embedding_layer {index} is not "
                                      f"divisible by the {anchors} anchors (Darknet warns too)",
                                      "embedding_layer")
            else:  # Darknet's le.n means something else for other types (route: input count)
                node.info["embedding_size"] = None
        return out

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """The keys OpenCV reads, with ``thresh=0`` (unthresholded scores) and no
        ``nms_threshold`` (no in-layer NMS); exactly ``2*num`` anchors (it asserts that count;
        Darknet pads missing ones with 0.5 and ignores extra ones). OpenCV decodes the boxes
        in the layer (rows of box centre and size relative to the input, objectness, and
        objectness x class score); the conv before it is Darknet's raw head input."""
        opts = node.opts
        mask = opts.mask if opts.mask is not None else list(range(opts.num))
        num = max(opts.num, max(mask) + 1)  # a mask past num: the anchors it reads count too
        low.emit("yolo", mask=mask, anchors=_full_anchors(opts, num), classes=opts.classes,
                 num=num,
                 scale_x_y=opts.scale_x_y, new_coords=opts.new_coords, thresh=0)


def _full_anchors(opts: OptionValues, num: int) -> list[float]:
    """The ``2*num`` anchor values Darknet uses (missing ones 0.5, extra ones dropped)."""
    anchors = list(opts.anchors or [])
    return (anchors + [0.5] * (2 * num - len(anchors)))[:2 * num]


@register
class GaussianYoloType(_YoloBaseType):
    name = "Gaussian_yolo"
    gaussian = True
    options = (*YOLO_COMMON, Option("uc_normalizer", "float", 1.0),
               Option("yolo_point", "str", "center",
                      choices=("center", "left_top", "right_bottom")))


class RegionHead(DarknetModule):
    """YOLOv2 region on the CPU layout: (B, H*W, num, coords+1+classes); logistic on the
    objectness (entry 4), softmax over the classes when ``softmax=1``."""

    def __init__(self, anchors: list[tuple[float, float]], classes: int, coords: int,
                 softmax: bool) -> None:
        super().__init__()
        self.anchors = anchors  # in grid cells
        self.classes, self.coords, self.softmax = classes, coords, softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        entries = self.coords + 1 + self.classes
        t = x.reshape(b, len(self.anchors) * entries, h * w).transpose(1, 2)
        t = t.reshape(b, h * w, len(self.anchors), entries)
        obj = torch.sigmoid(t[..., 4:5])
        classes = t[..., 5:]
        if self.softmax:
            classes = F.softmax(classes, dim=-1)
        return torch.cat([t[..., :4], obj, classes], dim=-1)


@register
class RegionType(LayerType):
    name = "region"
    detection_head = True
    options = (
        Option("coords", "int", 4, minimum=4, maximum=4), Option("classes", "int", 20, minimum=1),
        Option("num", "int", 1, minimum=1, maximum=MAX_ANCHORS), Option("max", "int", 200),
        Option("log", "int", 0), Option("sqrt", "int", 0), Option("softmax", "int", 0),
        Option("focal_loss", "int", 0), Option("jitter", "float", 0.2),
        Option("resize", "float", 1.0), Option("rescore", "int", 0),
        Option("thresh", "float", 0.5), Option("classfix", "int", 0),
        Option("absolute", "int", 0), Option("random", "float", 0.0),
        Option("coord_scale", "float", 1.0), Option("object_scale", "float", 1.0),
        Option("noobject_scale", "float", 1.0), Option("mask_scale", "float", 1.0),
        Option("class_scale", "float", 1.0), Option("bias_match", "int", 0),
        Option("tree", "str", None), Option("map", "str", None), Option("anchors", "floats", None),
    )

    def shape(self, node: Node) -> Shape:
        opts = node.opts
        anchors = opts.anchors or []
        if len(anchors) < 2 * opts.num:
            raise node.error(f"num={opts.num} needs {2 * opts.num} anchor values, got "
                             f"{len(anchors)}", "anchors")
        expected = opts.num * (opts.coords + 1 + opts.classes)
        if node.in_shape.c != expected:
            raise node.error(f"the previous layer has {node.in_shape.c} channels, "
                             f"num x (coords + 1 + classes) = {expected}", "classes")
        return node.in_shape

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        opts = node.opts
        anchors = [(opts.anchors[2 * i], opts.anchors[2 * i + 1]) for i in range(opts.num)]
        return RegionHead(anchors, opts.classes, opts.coords, bool(opts.softmax))

    def opencv_lower(self, node: Node, low: OpenCVEmitter) -> None:
        """OpenCV's Region layer decodes the boxes (output ``detection_out``) with
        ``thresh=0`` written here, but always runs its own NMS (0.4) and zeroes the scores it
        suppresses; no cfg key turns that off."""
        opts, inp = node.opts, node.in_shape
        if not opts.softmax:
            raise low.cannot("[region] softmax=0 (its Region layer needs softmax=1)", "softmax")
        if inp.h != inp.w:
            raise low.cannot(f"[region] on a {inp.w}x{inp.h} grid (it divides box widths by "
                             "the grid height and heights by the width)")
        low.emit("region", anchors=_full_anchors(opts, opts.num), classes=opts.classes,
                 coords=opts.coords, num=opts.num, softmax=1, thresh=0)


class DetectionHead(DarknetModule):
    """YOLOv1: the flat input, with a softmax over each cell's classes when ``softmax=1``."""

    def __init__(self, side: int, classes: int, softmax: bool) -> None:
        super().__init__()
        self.side, self.classes, self.softmax = side, classes, softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.softmax:
            return x
        flat = x.flatten(1)
        cells = self.side * self.side * self.classes
        probs = F.softmax(flat[:, :cells].reshape(-1, self.side * self.side, self.classes), -1)
        return torch.cat([probs.flatten(1), flat[:, cells:]], dim=1).reshape(x.shape)


@register
class DetectionType(LayerType):
    name = "detection"
    detection_head = True
    options = (
        Option("coords", "int", 1), Option("classes", "int", 1, minimum=1),
        Option("rescore", "int", 0), Option("num", "int", 1, minimum=1, maximum=MAX_ANCHORS),
        Option("side", "int", 7, minimum=1), Option("softmax", "int", 0),
        Option("sqrt", "int", 0), Option("max", "int", 200),
        Option("coord_scale", "float", 1.0), Option("forced", "int", 0),
        Option("object_scale", "float", 1.0), Option("noobject_scale", "float", 1.0),
        Option("class_scale", "float", 1.0), Option("jitter", "float", 0.2),
        Option("resize", "float", 1.0), Option("random", "float", 0.0), Option("reorg", "int", 0),
    )

    def shape(self, node: Node) -> Shape:
        opts = node.opts
        expected = opts.side * opts.side * ((1 + opts.coords) * opts.num + opts.classes)
        if node.in_shape.size != expected:
            raise node.error(f"the previous layer has {node.in_shape.size} outputs, side^2 x "
                             f"((1 + coords) x num + classes) = {expected}", "side")
        return node.in_shape

    def module(self, node: Node, built: Sequence[nn.Module]) -> DarknetModule:
        return DetectionHead(node.opts.side, node.opts.classes, bool(node.opts.softmax))
