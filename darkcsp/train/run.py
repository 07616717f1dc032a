"""``darkcsp.train(cfg, data=None, **settings)``: the Python form of ``darkcsp train``.

:func:`train_config` turns ``darkcsp train``'s options, as keyword arguments named like the
command's flags (``--max-batches`` -> ``max_batches``, ``--set`` -> ``settings``), into a
:class:`~darkcsp.train.trainer.TrainConfig`, with the same quick defaults when there is no
``data``: ``darkcsp train`` itself calls it. :func:`train` runs that config.

The quick run (no ``data``, a detector cfg, not a resume) replaces the cfg's COCO schedule,
unless given explicitly: 800 iterations of batch 8 at 128 x 128, Adam at learning_rate 0.002,
burn_in <= max_batches/10, steps at 80 % and 90 % of max_batches (as Darknet advises for custom
training), no mosaic, no multi-scale, and the heads' classes and anchors fitted to the
synthetic labels (the classes only without ``weights``, which fix the heads' shapes).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.data.synthetic import SyntheticSpec
from darkcsp.train.metrics import Evaluator
from darkcsp.train.trainer import TrainConfig, Trainer, TrainResult

QUICK = {"max_batches": 800, "batch": 8, "subdivisions": 1, "size": 128,
         "learning_rate": 0.002, "anchors": "auto", "classes": "auto"}
QUICK_SETTINGS = ("net.adam=1", "net.mosaic=0")
HEADS = ("yolo", "Gaussian_yolo", "region")  # whose multi-scale ``random`` the quick run
# turns off


def head_types(cfg: str | os.PathLike) -> list[str]:
    """The detection-head section types in ``cfg`` whose quick defaults apply (a classifier
    cfg gets none: it needs data anyway)."""
    from darkcsp.config.reader import read_cfg
    present = {section.type for section in read_cfg(os.fspath(cfg))[1:]}
    return [head for head in HEADS if head in present]


def train_config(cfg: str | os.PathLike, data: str | os.PathLike | None = None, *,
                 valid: str | None = None, weights: str | None = None,
                 cutoff: int | None = None, clear: bool = False,
                 max_batches: int | None = None, batch: int | None = None,
                 subdivisions: int | None = None, size: int | None = None,
                 burn_in: int | None = None, learning_rate: float | None = None,
                 anchors: str | None = None, classes: str | int | None = None,
                 settings: Sequence[str] = (), device: str | None = None,
                 resume: str | bool = False, out: str | None = None, exist_ok: bool = False,
                 workers: int | None = None, seed: int = 0, map_every: int | None = None,
                 map_images: int | None = None, save_every: int = 100,
                 time_limit: float | None = None, sync_bn: bool = False,
                 amp: bool | None = None, precision: str = "auto",
                 progress: bool = True, synthetic_train: int = 1024,
                 synthetic_valid: int = 128, synthetic_classes: int = 3,
                 synthetic_size: int = 256, max_memory: MaxMemory = AUTO) -> TrainConfig:
    """The :class:`TrainConfig` ``darkcsp train`` builds from the same options (see
    ``darkcsp train --help``): ``settings`` are ``--set SECTION.KEY=VALUE`` items, ``amp=False``
    is ``--no-amp``, ``precision`` ``--precision`` (``"auto"``, ``"fp32"`` or ``"bf16"``),
    ``progress=False`` ``--no-progress``; ``None`` means "from the cfg"."""
    values: dict[str, Any] = {"max_batches": max_batches, "batch": batch,
                              "subdivisions": subdivisions, "size": size,
                              "learning_rate": learning_rate, "anchors": anchors,
                              "classes": classes}
    settings = list(settings)
    heads = head_types(cfg) if data is None and not resume else []
    if heads:
        for key, default in QUICK.items():
            if values[key] is None and not (key == "classes" and weights):
                values[key] = default  # the weights fix the heads' shapes: their classes stay
        if burn_in is None:
            burn_in = -1  # marker: min(cfg burn_in, max_batches // 10)
        end = int(values["max_batches"])  # Darknet's advice: steps at 80 % and 90 %
        quick = list(QUICK_SETTINGS) + [f"{head}.random=0" for head in heads] + [
            f"net.steps={max(1, int(end * 0.8))},{max(2, int(end * 0.9))}", "net.scales=.1,.1"]
        given = {item.partition("=")[0].strip() for item in settings}
        settings = [item for item in quick if item.partition("=")[0] not in given] + settings
    return TrainConfig(
        cfg=os.fspath(cfg), data=None if data is None else os.fspath(data), valid=valid,
        weights=weights, cutoff=cutoff, clear=clear, max_batches=values["max_batches"],
        batch=values["batch"], subdivisions=values["subdivisions"], size=values["size"],
        burn_in=burn_in, out=out, device=device, resume=resume, workers=workers, seed=seed,
        map_every=map_every, save_every=save_every, map_images=map_images, sync_bn=sync_bn,
        time_limit=time_limit,
        synthetic=SyntheticSpec(train=synthetic_train, valid=synthetic_valid,
                                size=synthetic_size, classes=synthetic_classes, seed=seed),
        progress=progress, amp=amp, precision=precision, anchors=values["anchors"], classes=values["classes"],
        learning_rate=values["learning_rate"], overrides=tuple(settings),
        exist_ok=bool(exist_ok), max_memory=max_memory)


def train(cfg: str | os.PathLike | TrainConfig, data: str | os.PathLike | None = None, *,
          evaluator: Evaluator | None = None, **settings: Any) -> TrainResult:
    """Train ``cfg`` on ``data`` (a Darknet ``.data``, COCO ``.json`` or YOLO ``.yaml``; None:
    the built-in synthetic set with the quick-run defaults) as ``darkcsp train`` does;
    ``settings`` are :func:`train_config`'s keywords (``max_batches=100, size=320,
    settings=["net.adam=1"], out="runs/x"``, ...). ``cfg`` may also be a ready
    :class:`TrainConfig` (then nothing else but ``evaluator``). ``evaluator``: a
    ``callable(model, device) -> float`` replacing the periodic mAP. Returns the
    :class:`TrainResult` (best/last mAP, loss, iterations, output folder)."""
    if isinstance(cfg, TrainConfig):
        if data is not None or settings:
            raise TypeError("train(TrainConfig) takes no data or settings: they are in the "
                            "config")
        config = cfg
    else:
        config = train_config(cfg, data, **settings)
    return Trainer(config, evaluator).run()


__all__ = ["QUICK", "QUICK_SETTINGS", "HEADS", "head_types", "train_config", "train"]
