"""Training's periodic mAP@0.5: ``darkcsp map``'s own code on the validation split.

:class:`~darkcsp.train.trainer.Trainer` takes any ``callable(model, device) -> float``
(:data:`Evaluator`). The detector's default, :class:`MapEvaluator`, runs
:func:`darkcsp.evaluate.run.evaluate_source`: the per-image path of :func:`darkcsp.evaluate`
(Darknet's pre-processing, ``get_network_boxes``, NMS, ``DarknetMap``), so the mAP a run reports
is the one ``darkcsp map`` gives for the same weights and images.
"""
from __future__ import annotations

from typing import Callable

import torch

from darkcsp.evaluate.darknet_map import DarknetMapResult
from darkcsp.evaluate.run import evaluate_source

Evaluator = Callable[[torch.nn.Module, torch.device], float]


class MapEvaluator:
    """mAP@0.5 (Darknet's, ``-points 0``) of a model on a
    :class:`~darkcsp.data.datasets.DetectionSource`, the mean over ``classes`` (the data's
    class count; ``darkcsp map`` requires it to equal the cfg's) on its first ``max_images``
    images. The model is evaluated in eval mode, as it is (not BN-folded), then put back."""

    def __init__(self, source, classes: int | None = None, max_images: int | None = None
                 ) -> None:
        self.source, self.classes, self.max_images = source, classes, max_images
        self.last_result: DarknetMapResult | None = None

    def __call__(self, model: torch.nn.Module, device: torch.device) -> float:
        was_training = model.training
        model.eval()
        try:
            self.last_result = evaluate_source(model, self.source, classes=self.classes,
                                               limit=self.max_images)
        finally:
            model.train(was_training)
        return float(self.last_result.map)


__all__ = ["Evaluator", "MapEvaluator"]
