"""``darkcsp train``: train a Darknet cfg with its own ``[net]`` schedule and ``[yolo]``,
``[Gaussian_yolo]``, ``[region]``, ``[detection]`` (or ``[softmax]``) losses, Darknet's numbers reproduced (see
each module's docstring for what is exact and what is simplified).

The package is callable as :func:`darkcsp.train.run.train`: ``darkcsp.train(cfg, data=None,
**settings)``, the Python form of ``darkcsp train``."""
from __future__ import annotations

from darkcsp.callable_package import callable_package
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.train.loss import YoloLoss, yolo_delta
from darkcsp.train.run import train, train_config
from darkcsp.train.schedule import darknet_rate, make_optimizer
from darkcsp.train.trainer import TrainConfig, Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train", "train_config", "YoloLoss",
           "yolo_delta", "darknet_rate", "make_optimizer", "SyntheticShapes", "SyntheticSpec"]

__getattr__ = callable_package(__name__, "darkcsp.train.run", "train")
