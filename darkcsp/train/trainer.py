"""The training loop: a cfg's own ``[net]`` schedule and detection-head losses, Darknet-style.

Why it looks like this:

* one optimizer step per Darknet iteration: ``subdivisions`` mini-batches of
  ``batch / subdivisions`` images, gradients accumulated (``no_sync`` under DDP), the loss
  divided by the batch so the step is Darknet's ``lr / batch`` on summed gradients;
* everything random (which image, augmentation, multi-scale size) is a pure function of
  ``(seed, rank, position in the image stream)``, and the stream position is
  ``iteration * batch``: a run resumed from ``last.pt`` sees the same images, rates and
  ``seen`` as an uninterrupted one (and, on a deterministic CPU, the same weights);
* files are written atomically by rank 0 only: ``last.pt``/``best.pt`` (model, optimizer,
  EMA, iteration, seen, history), ``backup/<name>_last.weights`` (``_best``, ``_final``,
  ``_ema``) with ``seen = iteration * batch`` in the header as Darknet writes it, and
  ``chart.png`` (loss and mAP over iterations), and ``<name>.cfg``, the cfg as trained (the
  one that goes with those ``.weights``);
* Ctrl-C saves ``last.pt`` and the ``_last.weights`` before leaving;
* CUDA gets AMP (fp16 autocast + GradScaler) and channels_last; a CPU gets channels_last and,
  with ``--precision auto`` (the default) on a CPU with native bf16 (AVX512-BF16, AMX), bf16
  autocast (``fp32`` or ``bf16`` forces either; on CUDA ``fp32`` is ``--no-amp`` and ``bf16``
  is bf16 autocast without a scaler). The weights, the optimizer and the loss stay fp32 (the
  head inputs are cast to float before the loss), so checkpoints and ``.weights`` are fp32;
* ``torchrun`` (``WORLD_SIZE`` > 1) gives DistributedDataParallel with gloo on CPU or nccl on
  CUDA, a DistributedSampler per rank and optional SyncBatchNorm. Each rank trains on a full
  ``batch`` per iteration, as each GPU does in Darknet's multi-GPU mode; gradients are
  averaged (Darknet averages weights every few iterations instead).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.checkpoint import TRAIN_FORMAT, check_state
from darkcsp.data.datasets import DataReport, DataSpec, open_data
from darkcsp.data.synthetic import SyntheticSpec
from darkcsp.errors import DarkcspError, WeightsError
from darkcsp.files import (FileRefused, RunLock, atomic_write, atomic_write_with, new_run_dir,
                           output_dir, output_file)
from darkcsp.network import Darknet
from darkcsp.train.augment import AugmentParams, multiscale_size
from darkcsp.train.classifier import (AccuracyEvaluator, ClassifierDataset, SoftmaxLoss,
                                    collate_classes, open_classifier_data)
from darkcsp.train.ema import DarknetEMA
from darkcsp.train.loss import DETECTION_HEADS, DetectionSpec, YoloLoss
from darkcsp.train.metrics import Evaluator, MapEvaluator
from darkcsp.train.model import (HeadInputs, cpu_has_native_bf16, darknet_init,
                                 resolve_device, resolve_precision)
from darkcsp.train.runstate import (RUNS_ROOT, TRAIN_VERSION, config_to_plain, data_spec,
                                    holds_run, latest_checkpoint, plain_data,
                                    read_train_checkpoint, restore_config)
from darkcsp.train.schedule import darknet_rate, make_optimizer, set_rate
from darkcsp.train.settings import cfg_sections, class_count, schedule_warnings, set_classes
from darkcsp.train.stream import StreamBatchSampler, TrainDataset, collate, default_workers

LOG = logging.getLogger("darkcsp.train")


@dataclass
class TrainConfig:
    """Everything a run needs; ``None`` means "from the cfg" (or Darknet's rule)."""

    cfg: str
    data: str | None = None
    valid: str | None = None
    weights: str | None = None
    cutoff: int | None = None
    clear: bool = False
    max_batches: int | None = None
    batch: int | None = None
    subdivisions: int | None = None
    size: int | None = None
    burn_in: int | None = None  # -1: min(cfg burn_in, max_batches // 10)
    out: str | None = None
    device: str | None = None
    resume: str | bool = False
    workers: int | None = None  # None: see default_workers()
    seed: int = 0
    map_every: int | None = None
    save_every: int = 100
    map_images: int | None = None
    sync_bn: bool = False
    time_limit: float | None = None  # minutes
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    progress: bool = True
    amp: bool | None = None  # None: on with CUDA
    precision: str = "auto"  # auto|fp32|bf16: see darkcsp.train.model.resolve_precision
    anchors: str | None = None  # "auto": k-means (calc_anchors) on the training labels
    classes: str | int | None = None  # "auto": the data's class count, in every head
    learning_rate: float | None = None  # override [net] learning_rate
    overrides: tuple[str, ...] = ()  # "section.key=value": set key in every [section]
    exist_ok: bool = False  # --out may already hold files (a run's files are then replaced)
    max_memory: MaxMemory = AUTO  # the model's budget at batch 1 (darkcsp.budget)


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reached."""

    iteration: int
    seen: int
    loss: float
    avg_loss: float
    best_map: float
    last_map: float
    images_per_second: float  # images this run trained on / wall-clock seconds of its loop
    out: Path
    report: DataReport
    stopped: str = "done"
    data_wait_fraction: float = 0.0  # share of that wall time spent waiting for the next batch
    wall_seconds: float = 0.0  # wall-clock seconds of the training loop


class _TimedIterator:
    """An iterator that adds the seconds each ``next`` waits to ``waited``."""

    def __init__(self, source: Iterator) -> None:
        self.source, self.waited = source, 0.0

    def __iter__(self) -> "_TimedIterator":
        return self

    def __next__(self):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return next(self.source)
        finally:
            self.waited += time.perf_counter() - t0


class _PlainWeights:
    """An evaluator run with the conv kernels in the plain (NCHW) format that ``darkcsp map``
    loads them in, so that the periodic mAP is exactly its figure (channels_last kernels round
    differently); channels_last again after. The Parameters stay the same objects, so the
    optimizer's and the EMA's references hold."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def __call__(self, model: nn.Module, device: torch.device) -> float:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        for module in convs:
            module.to(memory_format=torch.contiguous_format)
        try:
            return self.evaluator(model, device)
        finally:
            for module in convs:
                module.to(memory_format=torch.channels_last)


# -- the trainer ------------------------------------------------------------------------------

class Trainer:
    """``Trainer(config).run()``; see the module docstring."""

    def __init__(self, config: TrainConfig, evaluator: Evaluator | None = None) -> None:
        self.config = config
        self.custom_evaluator = evaluator
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0

    # ---------------------------------------------------------------------------------------
    def _setup(self) -> None:
        c = self.config
        self.device = resolve_device(c.device, self.local_rank)
        self.distributed = self.world > 1
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
        self.cuda = self.device.type == "cuda"
        self.amp = self.cuda if c.amp is None else (c.amp and self.cuda)

        self.checkpoint: dict | None = None
        self.lock: RunLock | None = None
        self._created_out = False
        self.name = Path(c.cfg).stem
        self.resume_path: Path | None = None
        if c.resume:  # the same run: its settings and data come from the checkpoint
            if isinstance(c.resume, (str, os.PathLike)):
                path = Path(c.resume)
            elif c.out:
                path = Path(c.out) / "last.pt"
            else:
                path = latest_checkpoint(self.name)
            if not path.exists():
                raise DarkcspError(f"--resume: no checkpoint at {path}")
            if not path.is_file():
                raise DarkcspError(f"--resume: {path} is not a regular file")
            self.checkpoint = read_train_checkpoint(path)
            self.resume_path = path
            c = self.config = restore_config(c, self.checkpoint, str(path))
            self.name = self.checkpoint["settings"]["name"]
        self._set_precision()
        self._claim_out()
        try:
            self._setup_run()
        except BaseException:
            self._release_out(failed=True)
            raise

    def _set_precision(self) -> None:
        """The autocast dtype (None: fp32) and memory format of the forward passes."""
        self.precision = resolve_precision(self.config.precision, self.device)
        if self.cuda and self.precision != "amp":
            self.amp = False  # --precision fp32 or bf16: no fp16 AMP, no GradScaler
        if self.amp:
            self.autocast_dtype: torch.dtype | None = torch.float16
        elif self.precision == "bf16":
            self.autocast_dtype = torch.bfloat16
            if self.device.type == "cpu" and not cpu_has_native_bf16() and self.is_main:
                LOG.warning("--precision bf16: this CPU has no native bf16 (AVX512-BF16 or "
                            "AMX); it is emulated and slower than fp32")
        else:
            self.autocast_dtype = None
        self.channels_last = self.device.type in ("cuda", "cpu")  # the input batches
        self.channels_last_weights = self.channels_last  # conv kernels (see _setup_run)

    def _claim_out(self) -> None:
        """Resolve, check and lock the run folder before anything is written (rank 0; the
        other ranks receive its path): a new run never lands on another run's files or on an
        input, and two live runs never share a folder."""
        c = self.config
        out: Path | None = None
        if self.is_main:
            inputs = [p for p in (c.cfg, c.weights, c.data, c.valid) if p]
            continuing = self.resume_path is not None and (
                not c.out or Path(c.out).resolve() == self.resume_path.parent.resolve())
            for _ in range(100):
                if c.out:
                    out = Path(c.out)
                elif self.resume_path is not None:
                    out = self.resume_path.parent
                else:
                    out = new_run_dir(RUNS_ROOT, self.name)
                if not continuing:
                    if out.is_dir() and holds_run(out) and not c.exist_ok:
                        raise FileRefused(f"--out {os.fspath(out)!r} holds a training run "
                                          "(last.pt, best.pt or backup/): resume it with "
                                          "--resume, choose another --out, or pass --exist-ok "
                                          "to replace its files")
                    output_dir(out, inputs, exist_ok=c.exist_ok,
                               what="--out folder" if c.out else "run folder")
                for name in ("last.pt", "best.pt", "chart.png"):
                    output_file(out / name, inputs)
                for kind in ("last", "best", "final", "ema"):
                    output_file(out / "backup" / f"{self.name}_{kind}.weights", inputs)
                created = not out.exists()
                try:
                    self.lock = RunLock(out).acquire()
                except FileRefused:
                    if c.out or self.resume_path is not None:
                        raise
                    continue  # a numbered folder another run just took: the next one
                self._created_out = created
                break
            else:
                raise FileRefused(f"no free run folder under {RUNS_ROOT}")
        if self.distributed:
            box = [os.fspath(out) if self.is_main else None]
            dist.broadcast_object_list(box, src=0)
            out = Path(box[0])
        assert out is not None
        self.out = out
        self.backup = self.out / "backup"
        if self.is_main:
            self.backup.mkdir(parents=True, exist_ok=True)

    def _release_out(self, failed: bool = False) -> None:
        """Unlock the run folder; after a failed setup, remove the folders it made if empty."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if failed and self._created_out and self.is_main:
            for folder in (self.backup, self.out):
                try:
                    folder.rmdir()
                except OSError:
                    break

    def _setup_run(self) -> None:
        c = self.config
        batch, subdivisions, size = c.batch, c.subdivisions, c.size
        self.seed = c.seed
        self.synthetic = c.synthetic
        torch.manual_seed(self.seed)
        self._early_data = None
        if self.checkpoint is None:
            sections = cfg_sections(c.cfg, c.overrides, batch=batch,
                                    subdivisions=subdivisions, width=size, height=size,
                                    max_batches=c.max_batches,
                                    burn_in=c.burn_in if c.burn_in != -1 else None,
                                    learning_rate=c.learning_rate)
            if c.burn_in == -1:  # a short run: at most a tenth of it warms up
                from darkcsp.config.net import parse_net
                probe_net = parse_net(sections[0])
                sections[0].set("burn_in", min(probe_net.burn_in,
                                               probe_net.max_batches // 10))
            if c.classes is not None and str(c.classes).strip().lower() != "cfg":
                classes = str(c.classes).strip().lower()
                count = len(self._open_early().names) if classes == "auto" else \
                    class_count(classes)
                set_classes(sections, count)
            if c.anchors and c.anchors.strip().lower() != "cfg":
                self._set_anchors(sections, c.anchors)
        else:  # the checkpoint's cfg already carries the run's batch, size, max_batches;
            # it is text, never a path to open
            from darkcsp.config.reader import parse_cfg
            sections = parse_cfg(self.checkpoint["cfg_text"], f"{self.resume_path} (cfg_text)")
            if c.max_batches is not None:
                sections[0].set("max_batches", c.max_batches)
        self.model = Darknet(sections, max_memory=c.max_memory)
        net = self.model.net
        if net.max_batches <= 0:
            raise DarkcspError("max_batches is 0: set it in [net] or pass --max-batches")
        self.mini = max(1, net.batch // net.subdivisions)
        self.subdivisions = net.subdivisions
        self.batch = self.mini * self.subdivisions
        self.settings = {"batch": self.batch, "subdivisions": self.subdivisions,
                         "size": int(net.width) if net.width == net.height else size,
                         "seed": self.seed, "max_batches": int(net.max_batches),
                         "learning_rate": float(net.learning_rate),
                         "burn_in": int(net.burn_in), "name": self.name}
        self.cfg_text = self.model.cfg_text

        for node in self.model.nodes:  # a layer without its loss would silently stay untrained
            if not node.kind.trainable:
                raise DarkcspError(f"layer {node.index}: [{node.kind.name}] has no training loss "
                                   "in darkcsp (its inference is supported)")
        self.detector = any(isinstance(self.model.layers[i], DETECTION_HEADS)
                            for i in self.model.output_indices)
        if self.detector:
            self.loss_fn = YoloLoss(self.model)
            last_spec = self.loss_fn.specs[-1]
            self.params = AugmentParams.from_cfg(net, self.model.nodes[last_spec.index].opts)
            if isinstance(last_spec, DetectionSpec):  # its random= picks boxes, not sizes
                self.params = dataclasses.replace(self.params, random=0.0)
        else:
            self.loss_fn = SoftmaxLoss(self.model)
            self.params = AugmentParams.from_cfg(net, None)
        self.metric = "mAP@0.5" if self.detector else "top-1"
        if self.is_main:
            for warning in schedule_warnings(net, self.detector):
                LOG.warning("%s", warning)

        self.seen = 0
        if self.checkpoint is None:
            darknet_init(self.model, self.seed)
            if c.weights:
                self.model.load_weights(c.weights, c.cutoff)
                if not c.clear:  # Darknet resumes the schedule from the header's seen
                    self.seen = int(self.model.header.seen)
        self.model.to(self.device)
        if c.sync_bn and self.distributed:
            if self.cuda:
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif self.is_main:
                LOG.warning("--sync-bn needs CUDA; plain BatchNorm is used")
        if self.channels_last_weights:  # conv kernels only: the [yolo] heads keep 5-d buffers
            for module in self.model.modules():
                if isinstance(module, nn.Conv2d):
                    module.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, net)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = DarknetEMA(self.model, float(net.ema_alpha), int(net.max_batches))
        self.iteration = self.seen // self.batch
        self.history: dict[str, list] = {"iteration": [], "loss": [], "avg_loss": [],
                                         "lr": [], "seconds": [], "map": []}
        self.best_map = -1.0
        self.last_map = -1.0
        self.avg_loss = -1.0
        if self.checkpoint is not None:
            self._load_checkpoint_state()
            if self.ema.shadow is not None:
                self.ema.shadow = [s.to(self.device) for s in self.ema.shadow]
            self.iteration = int(self.checkpoint["iteration"])
            self.seen = int(self.checkpoint["seen"])
            self.history = self.checkpoint["history"]
            self.best_map = float(self.checkpoint["best_map"])
            self.last_map = float(self.checkpoint.get("last_map", -1.0))
            self.avg_loss = float(self.checkpoint["avg_loss"])

        heads = HeadInputs(self.model, self.loss_fn.head_indices)
        if self.distributed:
            heads = nn.parallel.DistributedDataParallel(
                heads, device_ids=[self.device.index] if self.cuda else None)
        self.forward = heads

        # data
        self.evaluator: Evaluator | None = self.custom_evaluator
        if not self.detector:
            if c.data is None:
                raise DarkcspError("a classifier cfg needs --data (an image folder or a "
                                   "classifier .data with labels=)")
            train, valid, names, report = open_classifier_data(c.data)
            if c.valid:
                valid = open_classifier_data(c.valid)[0]
            self.data = DataSpec(train, valid, names, None, report)
            if len(train) == 0:
                raise DarkcspError(f"{c.data}: no training images")
            if self.evaluator is None and valid is not None and len(valid):
                self.evaluator = AccuracyEvaluator(valid, c.map_images)
        else:
            cfg_classes = min(s.classes for s in self.loss_fn.specs)
            early = self._early_data  # opened for an "auto"; its labels were checked against
            if early is not None and len(early.names) <= cfg_classes:  # the same class ids
                self.data = early
            else:
                self.data = open_data(c.data, classes=None, valid=c.valid,
                                      synthetic=self.synthetic, max_classes=cfg_classes)
        self.report = self.data.report
        classes = min(s.classes for s in self.loss_fn.specs) if self.detector else \
            self.model.nodes[-1].in_shapes[0].size // self.model.nodes[-1].opts.groups
        self.classes = classes
        self.settings["classes"] = classes
        if len(self.data.names) > classes and self.is_main:
            LOG.warning("the data has %d classes but the cfg has %d; labels with a larger class "
                        "id are skipped", len(self.data.names), classes)
        yolov1 = any(isinstance(spec, DetectionSpec) for spec in self.loss_fn.specs) \
            if self.detector else False
        if yolov1 and self.evaluator is None and self.is_main:
            LOG.warning("no mAP during training: darkcsp does not decode [detection] (YOLOv1) "
                        "boxes")
        if self.detector and not yolov1 and self.evaluator is None \
                and self.data.valid is not None and len(self.data.valid):
            self.evaluator = MapEvaluator(self.data.valid, len(self.data.names),
                                          max_images=c.map_images)
        self.map_every = c.map_every or max(100, 4 * len(self.data.train) // self.batch)
        if self.evaluator is not None and self.channels_last_weights:
            self.evaluator = _PlainWeights(self.evaluator)

    def _load_checkpoint_state(self) -> None:
        """Model, optimizer, AMP scaler and EMA from the checkpoint, all checked first: a
        checkpoint that does not fit the run is a WeightsError, nothing half-loaded."""
        ckpt, path = self.checkpoint, str(self.resume_path)
        check_state(self.model, ckpt["model"], path)
        shadow = ckpt.get("ema", {}).get("shadow")
        if shadow is not None and (len(shadow) != len(self.ema.params) or any(
                s.shape != p.shape or s.dtype != p.dtype
                for s, p in zip(shadow, self.ema.params))):
            raise WeightsError(f"{path}: the EMA state does not fit the model")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt.get("scaler", {}))
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise WeightsError(f"{path}: the optimizer state does not fit the run: "
                               f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        self.ema.load_state_dict(ckpt.get("ema", {}))

    def _open_early(self) -> DataSpec:
        """The training data, opened before the model for ``--classes auto`` or ``--anchors
        auto`` (once; a synthetic set is then reused for training)."""
        if self._early_data is None:
            self._early_data = open_data(self.config.data, classes=None,
                                         valid=self.config.valid, synthetic=self.synthetic)
        return self._early_data

    def _set_anchors(self, sections: list, anchors: str) -> None:
        """Replace every [yolo]/[Gaussian_yolo]/[region] section's anchors: ``auto`` runs
        Darknet's ``calc_anchors`` k-means (seeded) on the training labels at the network size,
        with the head's ``num`` clusters; otherwise ``anchors`` is a list ``w,h, w,h, ...`` in
        input pixels. A [region] takes them in grid cells (pixels x grid / input size) and
        keeps its ``num`` (its conv's filters follow it)."""
        from darkcsp.config.net import parse_net
        yolo_heads = [s for s in sections[1:] if s.type in ("yolo", "Gaussian_yolo")]
        regions = [s for s in sections[1:] if s.type == "region"]
        heads = yolo_heads + regions
        if not heads:
            raise DarkcspError("--anchors: the cfg has no [yolo], [Gaussian_yolo] or [region] "
                               "layer")
        net = parse_net(sections[0])
        if anchors.strip().lower() == "auto":
            from darkcsp.evaluate.anchors import calc_anchors
            data = self._open_early()
            wh = [data.train.labels(i)[:, 3:5] for i in range(len(data.train))]
            boxes = np.concatenate(wh) if wh else np.zeros((0, 2), np.float32)
            num = int(heads[0].get("num") or 1)
            result = calc_anchors(boxes, num, int(net.width), int(net.height), seed=self.seed)
            values = [round(float(v), 1) for v in result.anchors.reshape(-1)]
            if self.is_main:
                LOG.info("anchors (calc_anchors on %d boxes, avg IoU %.3f): %s", len(boxes),
                         result.avg_iou, ", ".join(f"{values[i]:g},{values[i + 1]:g}"
                                                   for i in range(0, len(values), 2)))
        else:
            try:
                values = [float(v) for v in anchors.replace(" ", "").split(",") if v]
            except ValueError:
                raise DarkcspError(f"--anchors {anchors!r}: 'auto' or numbers w,h,...") from None
            if not values or len(values) % 2:
                raise DarkcspError(f"--anchors {anchors!r}: needs w,h pairs")
        for head in yolo_heads:
            head.set("anchors", values)
            head.set("num", len(values) // 2)
        if regions:
            from darkcsp.lower import build_graph
            grids = [(node.in_shape.w, node.in_shape.h) for node in build_graph(sections).nodes
                     if node.section.type == "region"]
            for head, (gw, gh) in zip(regions, grids):
                num = int(head.get("num") or 1)
                if len(values) != 2 * num:
                    raise DarkcspError(f"--anchors: [region] num={num} needs {num} w,h pairs "
                                       f"(got {len(values) // 2})")
                head.set("anchors", [round(v * (gw / net.width if k % 2 == 0 else
                                                 gh / net.height), 6)
                                     for k, v in enumerate(values)])

    def _loader(self) -> Iterator:
        net = self.model.net
        if self.detector:
            dataset: Dataset = TrainDataset(self.data.train, self.params, self.seed, self.rank)
            collate_fn: Callable = collate
        else:
            dataset = ClassifierDataset(self.data.train, net, self.seed, self.rank,
                                        self.classes)
            collate_fn = collate_classes

        def size_of(iteration: int) -> tuple[int, int]:
            if not self.detector:
                return int(net.width), int(net.height)
            return multiscale_size(iteration, int(net.max_batches), int(net.width),
                                   int(net.height), self.params.random, self.params.resize_step,
                                   self.seed)

        sampler = StreamBatchSampler(len(dataset), self.mini, self.batch, self.iteration,
                                     self.seed, self.world, self.rank, size_of)
        workers = self.config.workers
        if workers is None:
            workers = default_workers(self.device)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                            collate_fn=collate_fn, pin_memory=self.cuda,
                            persistent_workers=False)
        return iter(loader)

    # ---------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._setup()
        try:
            return self._run()
        finally:
            self._release_out()

    def _run(self) -> TrainResult:
        net = self.model.net
        c = self.config
        if self.is_main:
            LOG.info("training %s: %d x %d, batch %d (%d x %d), max_batches %d, from iteration "
                     "%d, on %s%s, %s%s", self.name, net.width, net.height, self.batch,
                     self.subdivisions, self.mini, net.max_batches, self.iteration,
                     self.device, f" x {self.world} ranks" if self.distributed else "",
                     {torch.float16: "fp16 AMP", torch.bfloat16: "bf16 autocast"}.get(
                         self.autocast_dtype, "fp32"),  # type: ignore[arg-type]
                     ", channels_last" if self.channels_last else "")
            if c.overrides and self.checkpoint is None:
                LOG.info("cfg settings changed: %s", ", ".join(c.overrides))
            self._save_cfg()
        loader = _TimedIterator(self._loader())
        self.model.train()
        start_time = time.time()
        # the honest rate: images over the loop's wall clock (evaluation and saving included),
        # not over summed step times; and the share of it spent waiting for the loader
        loop_start = time.perf_counter()
        first_iteration = self.iteration
        wall = 0.0
        loss_value = float("nan")
        stopped = "done"
        bar = None
        if self.is_main and c.progress:
            from tqdm import tqdm
            bar = tqdm(total=int(net.max_batches), initial=self.iteration, unit="it",
                       dynamic_ncols=True, file=sys.stderr)
        try:
            while self.iteration < net.max_batches:
                t0 = time.time()
                loss_value = self._step(loader)
                dt = max(time.time() - t0, 1e-9)
                if self.avg_loss < 0 or self.avg_loss != self.avg_loss:
                    self.avg_loss = loss_value
                self.avg_loss = self.avg_loss * 0.9 + loss_value * 0.1
                lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get(
                    "lr_scale", 1.0)
                for key, value in (("iteration", self.iteration), ("loss", loss_value),
                                   ("avg_loss", self.avg_loss), ("lr", lr), ("seconds", dt)):
                    self.history[key].append(value)
                if bar is not None:
                    wall = time.perf_counter() - loop_start
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", avg=f"{self.avg_loss:.3f}",
                                    lr=f"{lr:.2e}",
                                    ips=f"{self._images_since(first_iteration) / wall:.1f}",
                                    wait=f"{loader.waited / wall:.0%}",
                                    map=f"{self.last_map:.3f}" if self.last_map >= 0 else "-")
                last = self.iteration >= net.max_batches
                evaluated = self.evaluator is not None and (
                    self.iteration % self.map_every == 0 or last)
                if evaluated:
                    self._evaluate()
                if self.is_main and (self.iteration % c.save_every == 0 or last):
                    self._save_last()
                if c.time_limit is not None and self._out_of_time(start_time):
                    stopped = "time limit"
                    if self.evaluator is not None and not evaluated:
                        self._evaluate()
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            if self.is_main:
                LOG.warning("interrupted at iteration %d: saving %s", self.iteration,
                            self.out / "last.pt")
                self._save_last()
                self._chart()
            raise
        finally:
            wall = max(time.perf_counter() - loop_start, 1e-9)
            if bar is not None:
                bar.close()
        if self.is_main:
            self._save_last()
            self._save_weights(self.backup / f"{self.name}_final.weights")
            self._chart()
            if self.report.counts:
                LOG.warning("data problems (skipped): %s", self.report.summary())
        if self.distributed:
            dist.barrier()
        return TrainResult(self.iteration, self.seen, loss_value, self.avg_loss,
                           self.best_map, self.last_map, self._images_since(first_iteration) / wall,
                           self.out, self.report, stopped,
                           data_wait_fraction=min(loader.waited / wall, 1.0), wall_seconds=wall)

    def _images_since(self, first_iteration: int) -> int:
        """Images trained on (all ranks) since ``first_iteration``."""
        return (self.iteration - first_iteration) * self.batch * self.world

    def _out_of_time(self, start: float) -> bool:
        over = (time.time() - start) / 60 >= self.config.time_limit
        if self.distributed:
            flag = torch.tensor([1.0 if over else 0.0], device=self.device)
            dist.broadcast(flag, 0)
            over = bool(flag.item())
        return over

    def _step(self, loader: Iterator) -> float:
        """One Darknet iteration: ``subdivisions`` forward/backward passes, one update."""
        total = 0.0
        for s in range(self.subdivisions):
            images, truth, bad = next(loader)
            for name in bad:
                self.report.add("bad_image", name, "cannot be decoded; replaced by another "
                                "image")
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            h, w = images.shape[-2:]
            sync = (self.distributed and s < self.subdivisions - 1)
            context = self.forward.no_sync() if sync else contextlib.nullcontext()
            with context:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                    enabled=self.autocast_dtype is not None):
                    inputs = self.forward(images)
                inputs = [z.float() for z in inputs]  # the loss in fp32
                # Darknet's seen at this forward: it adds the mini-batch before each one
                result = self.loss_fn(inputs, truth, int(w), int(h),
                                      seen=self.seen + (s + 1) * self.mini)
                self.scaler.scale(result.surrogate / self.batch).backward()
            total += result.total
        self.iteration += 1
        self.seen += self.batch
        set_rate(self.optimizer, darknet_rate(self.model.net, self.iteration, self.seed))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.iteration)
        return total / self.batch

    def _evaluate(self) -> None:
        if not self.is_main:
            return
        value = float(self.evaluator(self.model, self.device))
        self.last_map = value
        self.history["map"].append((self.iteration, value))
        LOG.info("iteration %d: %s = %.4f (best %.4f)", self.iteration, self.metric, value,
                 max(self.best_map, value))
        if value >= self.best_map:
            self.best_map = value
            self._save_checkpoint(self.out / "best.pt")
            self._save_weights(self.backup / f"{self.name}_best.weights")
        self._chart()

    # -- files ------------------------------------------------------------------------------
    def _save_weights(self, path: Path) -> None:
        self.model.header = dataclasses.replace(self.model.header,
                                                seen=self.iteration * self.batch)
        self.model.save_weights(path)

    def _save_last(self) -> None:
        self._save_checkpoint(self.out / "last.pt")
        self._save_weights(self.backup / f"{self.name}_last.weights")
        if self.ema.initialized:
            with self.ema.swapped():
                self._save_weights(self.backup / f"{self.name}_ema.weights")

    def _save_cfg(self) -> None:
        """OUT/<name>.cfg: the cfg as trained (sizes, anchors and --set values in place,
        dialect lowered), the one that goes with the backup .weights."""
        path = self.out / f"{self.name}.cfg"
        if path.resolve() == Path(self.config.cfg).resolve():
            LOG.warning("not writing %s over the cfg being trained", path)
            return
        atomic_write(path, self.cfg_text.encode("utf-8"))

    def _save_checkpoint(self, path: Path) -> None:
        """Tensors and plain types only (see :mod:`darkcsp.train.runstate`), so that it loads
        with ``weights_only=True``; written atomically (temporary file, fsync, rename)."""
        state = {"format": TRAIN_FORMAT, "version": TRAIN_VERSION,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict(),
                 "iteration": int(self.iteration), "seen": int(self.seen),
                 "history": plain_data(self.history),
                 "best_map": float(self.best_map), "last_map": float(self.last_map),
                 "avg_loss": float(self.avg_loss), "settings": dict(self.settings),
                 "run": config_to_plain(self.config), "data": data_spec(self.config),
                 "cfg_text": self.cfg_text, "cfg": os.path.abspath(self.config.cfg),
                 "data_report": {str(k): int(v) for k, v in self.report.counts.items()}}
        atomic_write_with(path, lambda handle: torch.save(state, handle))

    def _chart(self) -> None:
        """chart.png: per-iteration loss, its Darknet-style running average, and mAP."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.history["iteration"]:
            return
        fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
        ax.plot(self.history["iteration"], self.history["loss"], color="#9bb7d4", lw=0.8,
                label="loss")
        ax.plot(self.history["iteration"], self.history["avg_loss"], color="#1f4e8c", lw=1.6,
                label="avg loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss per image")
        if all(v > 0 for v in self.history["loss"] if math.isfinite(v)):
            ax.set_yscale("log")  # the first iterations are orders of magnitude higher
        ax.grid(alpha=0.3)
        if self.history["map"]:
            ax2 = ax.twinx()
            its, maps = zip(*self.history["map"])
            ax2.plot(its, [100 * m for m in maps], "o-", color="#c0392b",
                     label=f"{self.metric} %")
            ax2.set_ylim(0, 100)
            ax2.set_ylabel(f"{self.metric} (%)")
            ax2.legend(loc="upper right")
        ax.legend(loc="upper left")
        ax.set_title(f"{self.name}: iteration {self.iteration}, seen {self.seen}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(fig)
        atomic_write(self.out / "chart.png", buffer.getvalue())
