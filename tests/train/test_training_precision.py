"""The CPU training fast path: channels_last, and bf16 autocast where the CPU has native bf16
(``--precision fp32|bf16|auto``), with fp32 weights, an fp32 loss and fp32 ``.weights``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from darkcsp.data.synthetic import SyntheticSpec
from darkcsp.errors import DarkcspError
from darkcsp.network import Darknet
from darkcsp.train import model as train_model
from darkcsp.infer import precision as precision_module
from darkcsp.train.model import cpu_has_native_bf16, resolve_precision
from darkcsp.train.trainer import TrainConfig, Trainer

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = SyntheticSpec(train=24, valid=4, size=64, classes=3, seed=1)
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(),
                                reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")


def config(tmp_path: Path, out: str, **overrides) -> TrainConfig:
    values = dict(cfg=str(tiny_cfg(tmp_path)), out=str(tmp_path / out), batch=4, subdivisions=2,
                  size=64, progress=False, synthetic=SMALL, seed=3, workers=0,
                  map_every=10 ** 9, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def watch(trainer: Trainer) -> dict[str, list]:
    """Record, during the run, the dtype and memory format a conv sees and what the loss gets."""
    seen: dict[str, list] = {"conv": [], "loss": [], "surrogate": []}
    setup_run = trainer._setup_run

    def setup_and_hook() -> None:
        setup_run()
        conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(lambda m, args, out: seen["conv"].append(
            (args[0].is_contiguous(memory_format=torch.channels_last),
             m.weight.is_contiguous(memory_format=torch.channels_last), out.dtype,
             m.weight.dtype, torch.is_autocast_enabled("cpu"))) if m.training else None)
        # (the final mAP runs in eval mode on plain fp32 kernels, as darkcsp map does)
        loss = trainer.loss_fn

        def recorded(inputs, *args, **kwargs):
            seen["loss"].append([z.dtype for z in inputs])
            result = loss(inputs, *args, **kwargs)
            seen["surrogate"].append(result.surrogate.dtype)
            return result
        trainer.loss_fn = recorded

    trainer._setup_run = setup_and_hook  # type: ignore[method-assign]
    return seen


@needs_bf16
def test_bf16_training_runs_and_its_weights_load_in_fp32(tmp_path):
    trainer = Trainer(config(tmp_path, "bf16", precision="bf16", max_batches=3))
    seen = watch(trainer)
    result = trainer.run()
    assert result.iteration == 3 and trainer.autocast_dtype == torch.bfloat16
    assert len(seen["conv"]) == 3 * 2  # every forward: channels_last input and kernel, bf16
    # arithmetic on fp32 master weights
    assert all(row == (True, True, torch.bfloat16, torch.float32, True) for row in seen["conv"])
    assert all(d == [torch.float32] * 2 for d in seen["loss"])  # the loss is fp32
    assert set(seen["surrogate"]) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)  # after the mAP too
               for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    fresh = Darknet(str(tiny_cfg(tmp_path)))
    fresh.load_weights(Path(result.out) / "backup" / "tiny_final.weights")
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    state = trainer.model.state_dict()
    for key, value in fresh.state_dict().items():
        if "num_batches_tracked" not in key:
            assert torch.equal(value, state[key]), key
    fresh.eval()
    with torch.no_grad():
        outputs = fresh(torch.rand(2, 3, 64, 64))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert outputs and all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in trainer.history["loss"])


def test_fp32_training_uses_channels_last_and_an_fp32_loss(tmp_path):
    trainer = Trainer(config(tmp_path, "fp32", precision="fp32", max_batches=1))
    seen = watch(trainer)
    trainer.run()
    assert trainer.autocast_dtype is None and seen["conv"]
    assert all(row == (True, True, torch.float32, torch.float32, False) for row in seen["conv"])
    assert all(d == [torch.float32] * 2 for d in seen["loss"])


def test_auto_is_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    if cpu_has_native_bf16():
        assert resolve_precision("auto", CPU) == "bf16"
        assert resolve_precision(None, CPU) == "bf16"
    monkeypatch.setattr(train_model, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    trainer = Trainer(config(tmp_path, "off", max_batches=1))
    trainer.run()
    assert trainer.precision == "fp32" and trainer.autocast_dtype is None
    monkeypatch.setattr(train_model, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("BF16", CPU) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "amp"  # CUDA: the AMP flag
    with pytest.raises(DarkcspError, match="--precision 'fp16'"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("flags, native", [("fpu sse avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu sse amx_bf16 amx_tile", True),
                                           ("fpu sse avx2 avx512f avx512_vnni", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(precision_module, "CPUINFO", str(info))
    assert cpu_has_native_bf16() is native


def test_precision_flag_reaches_the_config(tmp_path):
    import argparse

    from darkcsp.cli import train as cli_train
    from darkcsp.train.run import train_config

    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    cfg = str(tiny_cfg(tmp_path))
    assert cli_train.config_from_args(parser.parse_args([cfg])).precision == "auto"
    assert cli_train.config_from_args(
        parser.parse_args([cfg, "--precision", "fp32"])).precision == "fp32"
    with pytest.raises(SystemExit):
        parser.parse_args([cfg, "--precision", "fp16"])
    assert train_config(cfg, precision="bf16").precision == "bf16"


def test_resume_keeps_the_precision_unless_given(tmp_path):
    first = Trainer(config(tmp_path, "run", precision="fp32", max_batches=1))
    first.run()
    checkpoint = tmp_path / "run" / "last.pt"
    kept = Trainer(config(tmp_path, "run", resume=str(checkpoint), max_batches=2))
    kept.run()
    assert kept.config.precision == "fp32" and kept.autocast_dtype is None
    assert kept.iteration == 2
    # it may change: the arithmetic's rounding, not what is trained
    changed = Trainer(config(tmp_path, "run", resume=str(checkpoint), max_batches=3,
                             precision="bf16"))
    changed.run()
    assert changed.config.precision == "bf16" and changed.iteration == 3
