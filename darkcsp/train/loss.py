"""The detection-head training losses exactly as Darknet computes them: ``[yolo]``
(``forward_yolo_layer``), ``[Gaussian_yolo]`` (``forward_gaussian_yolo_layer``), ``[region]``
(YOLOv2, ``forward_region_layer``, the CPU build) and ``[detection]`` (YOLOv1,
``forward_detection_layer``).

Darknet does not differentiate a loss: each ``[yolo]`` layer writes a *delta* (the negative
gradient with respect to its input, i.e. the raw conv output) and back-propagates it. Each head's
module computes the same delta tensor, vectorised, and :class:`YoloLoss` returns a surrogate
``-(delta * input).sum()`` whose autograd gradient is exactly ``-delta``. So training follows
Darknet's gradients, including its hand-written IoU-loss derivatives (``dx_box_iou``), which
are *not* the true gradients of 1 - IoU (e.g. dw is not halved and x, y, obj and class deltas
are applied to the logits directly, which makes them logistic/BCE gradients).

One head per module; this one dispatches to them (:class:`YoloLoss`), sums their reported values
(:class:`LossResult`) and re-exports their public names:

* ``loss_yolo.py``: ``[yolo]`` and ``[Gaussian_yolo]`` (:func:`yolo_delta`,
  :func:`gaussian_box_delta`, :class:`YoloSpec`, :class:`GaussianSpec`);
* ``loss_region.py``: ``[region]`` (:func:`region_delta`, :class:`RegionSpec`);
* ``loss_detection.py``: ``[detection]`` (:func:`detection_delta`, :class:`DetectionSpec`);
* ``loss_boxes.py``: Darknet's box IoU kinds and ``dx_box_iou``, shared by the heads;
* ``loss_common.py``: :class:`HeadLoss` and the assignment rules the heads share.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from darkcsp.errors import DarkcspError
from darkcsp.layers.heads import DetectionHead, RegionHead, YoloHead
from darkcsp.train.loss_boxes import IOU_KINDS, box_iou, box_iou_kind, dx_box_iou, iou_kind_name
from darkcsp.train.loss_common import HeadLoss
from darkcsp.train.loss_detection import DETECTION_RANDOM_SEEN, DetectionSpec, detection_delta
from darkcsp.train.loss_region import REGION_WARMUP_SEEN, RegionSpec, region_delta
from darkcsp.train.loss_yolo import (YOLO_POINTS, GaussianSpec, YoloSpec, activate,
                                     gaussian_box_delta, yolo_delta)

__all__ = ["YoloLoss", "LossResult", "HeadLoss", "DETECTION_HEADS", "YoloSpec", "GaussianSpec",
           "YOLO_POINTS", "activate", "yolo_delta", "gaussian_box_delta", "RegionSpec",
           "REGION_WARMUP_SEEN", "region_delta", "DetectionSpec", "DETECTION_RANDOM_SEEN",
           "detection_delta", "IOU_KINDS", "iou_kind_name", "box_iou", "box_iou_kind",
           "dx_box_iou"]


@dataclass
class LossResult:
    """The surrogate to back-propagate and the reported values (sums over the batch)."""

    surrogate: Tensor
    box: float = 0.0
    obj: float = 0.0
    cls: float = 0.0
    count: int = 0
    iou_sum: float = 0.0
    heads: list[HeadLoss] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.box + self.obj + self.cls


DETECTION_HEADS = (YoloHead, RegionHead, DetectionHead)  # the head modules with a loss here


class YoloLoss:
    """All detection heads of a model (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``,
    ``[detection]``):
    ``loss(head_inputs, truth, net_w, net_h, seen=...)``."""

    def __init__(self, model) -> None:
        self.specs: list[YoloSpec | RegionSpec | DetectionSpec] = []
        for index in model.output_indices:
            head, node = model.layers[index], model.nodes[index]
            if isinstance(head, DetectionHead):
                self.specs.append(DetectionSpec.from_node(node, head))
            elif isinstance(head, YoloHead):
                kind = GaussianSpec if head.gaussian else YoloSpec
                self.specs.append(kind.from_node(node, head))
            elif isinstance(head, RegionHead):
                self.specs.append(RegionSpec.from_node(node, head))
        if not self.specs:
            raise DarkcspError("the cfg has no [yolo], [Gaussian_yolo], [region] or [detection] "
                               "layer: darkcsp train handles those detectors (and softmax "
                               "classifiers)")

    @property
    def head_indices(self) -> list[int]:
        return [s.index for s in self.specs]

    def __call__(self, head_inputs: list[Tensor], truth: Tensor, net_w: int,
                 net_h: int, seen: int = 0) -> LossResult:
        """``seen``: Darknet's image count at this forward, this mini-batch included (only
        ``[region]``'s prior warm-up reads it)."""
        surrogate = head_inputs[0].new_zeros((), dtype=torch.float32)
        result = LossResult(surrogate)
        for spec, z in zip(self.specs, head_inputs):
            if isinstance(spec, RegionSpec):
                head = region_delta(spec, z, truth, net_w, net_h, seen)
            elif isinstance(spec, DetectionSpec):
                head = detection_delta(spec, z, truth, net_w, net_h, seen)
            else:
                head = yolo_delta(spec, z, truth, net_w, net_h)
            result.heads.append(head)
            surrogate = surrogate - (head.delta * z.float()).sum() * spec.delta_normalizer
            result.box += head.box
            result.obj += head.obj
            result.cls += head.cls
            result.count += head.count
            result.iou_sum += head.iou_sum
        result.surrogate = surrogate
        return result
