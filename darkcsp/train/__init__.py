"""``darkcsp train``: train a Darknet cfg with its own ``[net]`` schedule and ``[yolo]`` (or
``[softmax]``) losses, Darknet's numbers reproduced (see each module's docstring for what is
exact and what is simplified)."""
from __future__ import annotations

from darkcsp.train.loss import YoloLoss, yolo_delta
from darkcsp.train.schedule import darknet_rate, make_optimizer
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.train.trainer import TrainConfig, Trainer, TrainResult, train

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train", "YoloLoss", "yolo_delta",
           "darknet_rate", "make_optimizer", "SyntheticShapes", "SyntheticSpec"]
