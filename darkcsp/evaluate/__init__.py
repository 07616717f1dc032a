"""Evaluation: Darknet's ``detector map`` numbers, COCO metrics, PR plots and anchor k-means.

Every metric here takes detections and ground truth as plain numpy arrays per image, so it works
on any detector's output, not only on darkcsp models.
"""
from __future__ import annotations

from darkcsp.evaluate.anchors import AnchorResult, calc_anchors
from darkcsp.evaluate.darknet_map import (DarknetMap, DarknetMapResult, ImageDetections,
                                          ImageTruth, darknet_map)

__all__ = ["AnchorResult", "DarknetMap", "DarknetMapResult", "ImageDetections", "ImageTruth",
           "calc_anchors", "darknet_map"]
