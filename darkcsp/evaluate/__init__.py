"""Evaluation: Darknet's ``detector map`` numbers, COCO metrics, PR plots and anchor k-means.

Every metric here takes detections and ground truth as plain numpy arrays per image, so it works
on any detector's output, not only on darkcsp models. :func:`darkcsp.evaluate.run.evaluate`
runs a model over a ``.data`` file's images (``darkcsp map``); the package itself is callable
as that function: ``darkcsp.evaluate(data, cfg, weights, ...)``.
"""
from __future__ import annotations

from darkcsp.callable_package import callable_package
from darkcsp.evaluate.anchors import AnchorResult, calc_anchors
from darkcsp.evaluate.darknet_map import (DarknetMap, DarknetMapResult, ImageDetections,
                                          ImageTruth, darknet_map)

__all__ = ["AnchorResult", "DarknetMap", "DarknetMapResult", "ImageDetections", "ImageTruth",
           "calc_anchors", "darknet_map", "evaluate", "EvaluationResult"]

# run.py needs torch and darkcsp.infer: imported on first use, not with the metrics
__getattr__ = callable_package(__name__, "darkcsp.evaluate.run", "evaluate",
                               ("evaluate", "EvaluationResult"))
