"""``--resume`` is the same run (issue 10, Build 3): data, cfg text, classes, anchors, size and
every setting come from the checkpoint; a flag that contradicts it is an error unless it may
change (--max-batches, --device, --workers...); the checkpoint holds only tensors and plain
types, loads with ``weights_only=True``, and a hostile one is a WeightsError."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from darkcsp.checkpoint import TRAIN_FORMAT
from darkcsp.cli import main
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.errors import DarkcspError, WeightsError
from darkcsp.files import LOCK_NAME
from darkcsp.train.trainer import TrainConfig, Trainer

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

FLAGS = ["--size", "64", "--batch", "4", "--subdivisions", "1", "--workers", "0",
         "--no-progress", "--map-every", "1000", "--seed", "3"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> dict[str, Path]:
    """A 2-iteration run on a .data file (8 training images), as a user would start it."""
    root = tmp_path_factory.mktemp("base")
    data = SyntheticShapes(SyntheticSpec(train=8, valid=2, size=64, classes=3, seed=4)).write(
        root / "my")
    cfg = tiny_cfg(root)
    out = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(cfg), "--data", str(data), "--out", str(out),
                     "--max-batches", "2", *FLAGS]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"cfg": cfg, "data": data, "out": out}


@pytest.fixture
def run(base_run, tmp_path) -> dict[str, Path]:
    """A private copy of the base run folder."""
    out = tmp_path / "run"
    shutil.copytree(base_run["out"], out)
    return {**base_run, "out": out}


def test_the_checkpoint_is_plain_data_with_the_data_spec(run):
    ckpt = torch.load(run["out"] / "last.pt", weights_only=True)  # no pickled objects
    assert ckpt["format"] == TRAIN_FORMAT and ckpt["version"] == 2
    assert ckpt["data"] == {"kind": "file", "path": os.path.abspath(run["data"]),
                            "valid": None}
    assert ckpt["run"]["data"] == os.path.abspath(run["data"])
    assert ckpt["run"]["seed"] == 3 and ckpt["settings"]["batch"] == 4
    assert ckpt["settings"]["name"] == "tiny" and ckpt["iteration"] == 2


def test_resume_continues_on_the_runs_own_data(run, capsys):
    """The reported bug: resumed without --data, the run went on with the synthetic shapes."""
    trainer = Trainer(TrainConfig(cfg=str(run["cfg"]), out=str(run["out"]), resume=True,
                                  max_batches=3, progress=False, workers=0))
    result = trainer.run()
    assert trainer.config.data == os.path.abspath(run["data"])
    assert len(trainer.data.train) == 8  # the .data file's images, not 1024 synthetic ones
    assert (trainer.config.seed, trainer.batch, int(trainer.model.net.width)) == (3, 4, 64)
    assert result.iteration == 3 and result.seen == 12
    ckpt = torch.load(run["out"] / "last.pt", weights_only=True)
    assert ckpt["data"]["path"] == os.path.abspath(run["data"])
    # the CLI, bare --resume with --out, the same way; it prints no synthetic-set hint
    assert main(["train", str(run["cfg"]), "--resume", "--out", str(run["out"]),
                 "--max-batches", "4", "--no-progress", "--workers", "0"]) == 0
    assert "darkcsp synthetic" not in capsys.readouterr().out
    assert torch.load(run["out"] / "last.pt", weights_only=True)["iteration"] == 4


def test_flags_that_contradict_the_checkpoint_are_errors(run, tmp_path, capsys):
    other = SyntheticShapes(SyntheticSpec(train=2, valid=1, size=64)).write(tmp_path / "other")
    before = (run["out"] / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", str(run["cfg"]), "--resume", "--out", str(run["out"]), "--data",
                 str(other), "--seed", "7", "--batch", "2", "--size", "128", "--set",
                 "net.adam=1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for needle in ("--data", "--seed 7 (checkpoint: 3)", "--batch 2", "--size 128", "--set"):
        assert needle in err, err
    assert (run["out"] / "last.pt").read_bytes() == before
    # the same values again are no contradiction, nor are the ones that may change
    assert main(["train", str(run["cfg"]), "--resume", "--out", str(run["out"]), "--data",
                 str(run["data"]), "--seed", "3", "--batch", "4", "--max-batches", "3",
                 "--device", "cpu", "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    wrong = tmp_path / "other.cfg"
    wrong.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n")
    with pytest.raises(DarkcspError, match="the checkpoint is a run of"):
        Trainer(TrainConfig(cfg=str(wrong), out=str(run["out"]), resume=True,
                            progress=False)).run()


@pytest.mark.parametrize("damage", ["seen", "iteration", "int-weights", "half-weights",
                                    "truncated", "model-pt", "no-data-spec"])
def test_hostile_training_checkpoints_are_weights_errors(run, damage):
    path = run["out"] / "last.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        ckpt = torch.load(path, weights_only=True)
        if damage == "seen":
            ckpt["seen"] = 2 ** 70
        elif damage == "iteration":
            ckpt["iteration"] = -1
        elif damage in ("int-weights", "half-weights"):
            key = "layers.0.conv.weight"
            ckpt["model"][key] = ckpt["model"][key].to(
                torch.int32 if damage == "int-weights" else torch.float16)
        elif damage == "model-pt":
            ckpt = {"format": "darkcsp", "version": 1}
        else:
            del ckpt["data"]
        torch.save(ckpt, path)
    with pytest.raises(WeightsError):
        Trainer(TrainConfig(cfg=str(run["cfg"]), out=str(run["out"]), resume=True,
                            progress=False)).run()


def test_a_live_run_holds_its_folder(run):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run["out"] / LOCK_NAME).write_text(f"{sleeper.pid}\n")
        with pytest.raises(DarkcspError, match="in use by another darkcsp run"):
            Trainer(TrainConfig(cfg=str(run["cfg"]), out=str(run["out"]), resume=True,
                                progress=False)).run()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the process is gone: its lock is stale and the resumed run takes the folder over
    result = Trainer(TrainConfig(cfg=str(run["cfg"]), out=str(run["out"]), resume=True,
                                 max_batches=3, progress=False, workers=0)).run()
    assert result.iteration == 3 and not (run["out"] / LOCK_NAME).exists()


def test_bare_resume_finds_the_newest_run_folder(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs" / "train"
    runs.mkdir(parents=True)
    shutil.copytree(run["out"], runs / "tiny")
    shutil.copytree(run["out"], runs / "tiny2")
    os.utime(runs / "tiny" / "last.pt", (1, 1))  # tiny2 is the newest
    trainer = Trainer(TrainConfig(cfg=str(run["cfg"]), resume=True, max_batches=3,
                                  progress=False, workers=0))
    trainer.run()
    assert trainer.out.resolve() == runs / "tiny2"
    assert torch.load(runs / "tiny2" / "last.pt", weights_only=True)["iteration"] == 3
    assert torch.load(runs / "tiny" / "last.pt", weights_only=True)["iteration"] == 2
