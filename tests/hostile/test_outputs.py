"""Outputs never replace inputs (issue 10, Build 2): every command resolves its outputs before
any work starts, refuses (one-line error, non-zero exit) a path that is or would overwrite one
of its inputs, needs --exist-ok to write into a non-empty folder, and gives colliding output
names unique names; a training run gets a fresh folder and a lock; checkpoint writes are
atomic. Each case hashes the inputs before and after: they must be byte-identical."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from darkcsp.cli import main
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.files import LOCK_NAME, FileRefused, RunLock
from darkcsp.network import Darknet

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = ["--size", "64", "--batch", "4", "--subdivisions", "1", "--max-batches", "2",
         "--workers", "0", "--no-progress", "--map-every", "1000", "--synthetic-train", "8",
         "--synthetic-valid", "2", "--synthetic-size", "64"]


def digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    found: dict[str, str] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def refused(argv: list[str], capsys, needle: str) -> None:
    """``darkcsp argv`` exits non-zero with one line on stderr that contains ``needle``."""
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"darkcsp {argv[0]}: ") and needle in err, err


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    """``inputs/tiny.cfg`` and ``inputs/tiny.weights`` (random weights)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    cfg = tiny_cfg(folder)
    weights = folder / "tiny.weights"
    Darknet(str(cfg)).save_weights(weights)
    return cfg, weights


def test_convert_never_writes_over_its_input(model_files, capsys):
    cfg, weights = model_files
    before = digest(cfg.parent)
    refused(["convert", str(cfg), str(weights), str(weights)], capsys, "is an input")
    refused(["convert", str(cfg), str(weights), str(cfg)], capsys, "is an input")
    link = cfg.parent / "alias.weights"
    link.symlink_to(weights)
    refused(["convert", str(cfg), str(weights), str(link)], capsys, "is an input")
    link.unlink()
    assert digest(cfg.parent) == before


def test_lower_never_writes_over_its_input(model_files, capsys):
    cfg, _ = model_files
    before = digest(cfg)
    refused(["lower", str(cfg), "-o", str(cfg)], capsys, "is an input")
    assert digest(cfg) == before


def test_an_existing_file_is_replaced_only_with_exist_ok(model_files, tmp_path, capsys):
    """An output path that names some other existing file (a user's weights given as the
    lowered cfg's path, an earlier JSON) is refused unless --exist-ok."""
    cfg, weights = model_files
    keep = tmp_path / "precious.weights"
    keep.write_bytes(weights.read_bytes())
    before = digest(keep)
    for argv in (["lower", str(cfg), "-o", str(keep)],
                 ["convert", str(cfg), str(weights), str(keep)],
                 ["export", str(cfg), str(weights), "--to", "onnx", str(keep)]):
        refused(argv, capsys, "already exists")
    assert digest(keep) == before
    image = tmp_path / "frame.png"
    image.write_bytes(b"not decoded: refused before any work")
    refused(["export", str(cfg), str(weights), "--to", "onnx", str(image), "--int8", "--calib",
             str(image), "--exist-ok"], capsys, "is an input")  # a calibration frame is an input
    assert main(["lower", str(cfg), "-o", str(keep), "--exist-ok"]) == 0
    assert keep.read_text().startswith("#") and "[net]" in keep.read_text()


@pytest.mark.parametrize("target", ["darknet", "opencv"])
def test_export_into_the_inputs_folder(model_files, capsys, target):
    cfg, weights = model_files
    before = digest(cfg.parent)
    refused(["export", str(cfg), str(weights), "--to", target, str(cfg.parent)], capsys,
            "holds this command's input")
    # --exist-ok allows the folder, but <name>.cfg / <name>.weights there are the inputs
    refused(["export", str(cfg), str(weights), "--to", target, str(cfg.parent), "--exist-ok"],
            capsys, "is an input")
    assert digest(cfg.parent) == before


def test_export_into_a_non_empty_folder_needs_exist_ok(model_files, tmp_path, capsys):
    cfg, weights = model_files
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused(["export", str(cfg), str(weights), str(out)], capsys, "not empty")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main(["export", str(cfg), str(weights), str(out), "--exist-ok"]) == 0
    assert (out / "tiny.cfg").is_file() and (out / "keep.txt").read_text() == "mine"


def test_export_onnx_to_a_folder_fails_before_the_work(model_files, tmp_path, capsys):
    cfg, weights = model_files
    refused(["export", str(cfg), str(weights), "--to", "onnx", str(tmp_path)], capsys,
            "is a directory")
    refused(["export", str(cfg), str(weights), "--to", "onnx", str(weights)], capsys,
            "is an input")


def test_synthetic_refuses_an_existing_dataset(tmp_path, capsys):
    data = tmp_path / "set"
    small = ["--train", "2", "--valid", "1", "--size", "32"]
    assert main(["synthetic", str(data), *small]) == 0
    before = digest(data)
    refused(["synthetic", str(data), *small, "--seed", "3"], capsys, "not empty")
    assert digest(data) == before
    assert main(["synthetic", str(data), *small, "--seed", "3", "--exist-ok"]) == 0


def test_detect_save_dir_never_overwrites_an_image(model_files, tmp_path, capsys):
    cfg, weights = model_files
    shapes = SyntheticShapes(SyntheticSpec(train=2, valid=0, size=64, classes=3))
    import cv2
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, index in ((a, 0), (b, 1)):
        folder.mkdir()
        cv2.imwrite(str(folder / "x.jpg"), shapes.sample("train", index)[0])
    before = digest(a, b)
    # into the image's own folder: the photo stays, the drawing gets a new name
    assert main(["detect", str(cfg), str(weights), str(a / "x.jpg"), "--save-dir", str(a)]) == 0
    assert digest(a / "x.jpg") == {k: v for k, v in before.items() if k == str(a / "x.jpg")}
    assert sorted(p.name for p in a.iterdir()) == ["x.jpg", "x_2.jpg"]
    # two inputs with one name: two outputs
    out = tmp_path / "out"
    assert main(["detect", str(cfg), str(weights), str(a / "x.jpg"), str(b / "x.jpg"),
                 "--save-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg", "x_2.jpg"]
    assert digest(b) == {k: v for k, v in before.items() if k.startswith(str(b))}
    capsys.readouterr()


def test_detect_outputs_fail_before_the_work(model_files, tmp_path, capsys):
    cfg, weights = model_files
    image = tmp_path / "x.png"
    import cv2
    cv2.imwrite(str(image), SyntheticShapes(SyntheticSpec(train=1, valid=0, size=64))
                .sample("train", 0)[0])
    before = digest(tmp_path)
    refused(["detect", str(cfg), str(weights), str(image), "--json", str(tmp_path)], capsys,
            "is a directory")
    refused(["detect", str(cfg), str(weights), str(image), "--json", str(image)], capsys,
            "is an input")
    refused(["detect", str(cfg), str(weights), str(image), "--save-dir", str(image)], capsys,
            "is a file")
    assert digest(tmp_path) == before


def test_map_outputs_fail_before_the_work(model_files, tmp_path, capsys):
    cfg, weights = model_files
    data = SyntheticShapes(SyntheticSpec(train=1, valid=1, size=64)).write(tmp_path / "set")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "pr_all.png").write_bytes(b"an earlier run's plot")
    before = digest(tmp_path)
    base = ["map", str(data), str(cfg), str(weights), "--quiet"]
    refused(base + ["--metrics-json", str(tmp_path)], capsys, "is a directory")
    refused(base + ["--json", str(data)], capsys, "is an input")
    refused(base + ["--json", str(tmp_path / "m.json"), "--metrics-json",
                    str(tmp_path / "m.json")], capsys, "same file")
    refused(base + ["--plots", str(weights)], capsys, "is a file")
    refused(base + ["--plots", str(data.parent)], capsys, "holds this command's input")
    refused(base + ["--plots", str(tmp_path / "plots")], capsys, "not empty")
    assert digest(tmp_path) == before


# -- train ------------------------------------------------------------------------------------

def test_train_runs_get_numbered_folders_and_out_is_never_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(tmp_path)
    assert main(["train", str(cfg), *TRAIN]) == 0
    assert main(["train", str(cfg), *TRAIN]) == 0
    runs = tmp_path / "runs" / "train"
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny2"]
    for run in runs.iterdir():
        assert (run / "last.pt").is_file() and not (run / LOCK_NAME).exists()
    before = digest(runs / "tiny")
    refused(["train", str(cfg), *TRAIN, "--out", str(runs / "tiny")], capsys,
            "holds a training run")
    assert digest(runs / "tiny") == before
    assert main(["train", str(cfg), *TRAIN, "--out", str(runs / "tiny"), "--exist-ok"]) == 0
    # the cfg's own folder holds an input: refused, and with --exist-ok the cfg stays as it was
    own = digest(cfg)
    refused(["train", str(cfg), *TRAIN, "--out", str(tmp_path)], capsys, "input")
    assert digest(cfg) == own


def test_run_lock_refuses_a_live_run_and_takes_over_a_stale_one(tmp_path):
    folder = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder.mkdir()
        (folder / LOCK_NAME).write_text(f"{sleeper.pid}\n")
        with pytest.raises(FileRefused, match=f"in use by another darkcsp run \\(pid "
                                              f"{sleeper.pid}\\)"):
            RunLock(folder).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = RunLock(folder).acquire()  # its process is gone: a stale lock is taken over
    assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    lock.release()
    assert not (folder / LOCK_NAME).exists()


def test_an_interrupted_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from darkcsp.train.trainer import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(cfg=str(tiny_cfg(tmp_path)), out=str(tmp_path / "run"),
                                  batch=4, subdivisions=1, size=64, max_batches=1,
                                  progress=False, workers=0, map_every=1000,
                                  synthetic=SyntheticSpec(train=4, valid=1, size=64)))
    trainer.run()
    out = tmp_path / "run"
    before = digest(out)
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(out / "last.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert digest(out) == before  # the old last.pt is whole, and nothing else appeared
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
