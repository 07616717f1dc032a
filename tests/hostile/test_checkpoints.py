"""Loading is safe (issue 10, Build 1): every ``.pt`` darkcsp reads, training checkpoints
included, loads with ``weights_only=True``. A crafted pickle whose ``__reduce__`` would create a
marker file never runs, whichever command is handed it (train --resume, a bare --resume that
finds it in the run folder, convert, detect, map); foreign, truncated or hostile payloads are a
one-line WeightsError; a stored cfg is text, never a path to open."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darkcsp.checkpoint import TRAIN_FORMAT, load_pt, save_pt
from darkcsp.cli import main
from darkcsp.data.synthetic import SyntheticShapes, SyntheticSpec
from darkcsp.errors import WeightsError
from darkcsp.network import Darknet

from train_support import TINY_CFG_TEXT, tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if any code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pt(path: Path, marker: Path, fmt: str = TRAIN_FORMAT) -> Path:
    torch.save({"format": fmt, "version": 2, "model": {"w": torch.zeros(1)},
                "payload": Payload(marker)}, path)
    return path


def test_the_payload_is_real(tmp_path):
    """The crafted file does run code under a plain torch.load: the tests below mean it."""
    marker = tmp_path / "ran"
    torch.load(evil_pt(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"darkcsp {argv[0]}: "), err
    return err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    cfg = tiny_cfg(tmp_path)
    weights = tmp_path / "tiny.weights"
    Darknet(str(cfg)).save_weights(weights)
    return {"cfg": cfg, "weights": weights, "marker": tmp_path / "ran",
            "evil": evil_pt(tmp_path / "evil.pt", tmp_path / "ran", fmt="darkcsp")}


def test_resume_from_a_crafted_checkpoint_runs_nothing(files, tmp_path, capsys):
    evil = evil_pt(tmp_path / "evil_train.pt", files["marker"])
    err = one_line_error(capsys, ["train", str(files["cfg"]), "--resume", str(evil), "--out",
                                  str(tmp_path / "run"), "--no-progress"])
    assert "not a readable darkcsp training checkpoint" in err
    assert not files["marker"].exists()
    assert not (tmp_path / "run").exists()


def test_a_bare_resume_checks_the_checkpoint_it_finds(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "train" / "tiny"
    run.mkdir(parents=True)
    evil_pt(run / "last.pt", files["marker"])
    err = one_line_error(capsys, ["train", str(files["cfg"]), "--resume", "--no-progress"])
    assert str(Path("runs/train/tiny/last.pt")) in err
    assert not files["marker"].exists()


@pytest.mark.parametrize("command", ["convert", "detect", "map"])
def test_model_commands_never_run_a_crafted_pt(files, tmp_path, capsys, command):
    cfg, evil = str(files["cfg"]), str(files["evil"])
    if command == "convert":
        argv = ["convert", cfg, evil, str(tmp_path / "out.weights")]
    elif command == "detect":
        import cv2
        image = tmp_path / "x.png"
        cv2.imwrite(str(image), SyntheticShapes(SyntheticSpec(train=1, valid=0, size=64))
                    .sample("train", 0)[0])
        argv = ["detect", cfg, evil, str(image)]
    else:
        data = SyntheticShapes(SyntheticSpec(train=1, valid=1, size=64)).write(tmp_path / "s")
        argv = [command, str(data), cfg, evil, "--quiet"]
    err = one_line_error(capsys, argv)
    assert "not a readable" in err
    assert not files["marker"].exists()


# -- hostile .pt payloads -------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path: Path) -> tuple[Darknet, dict]:
    model = Darknet(TINY_CFG_TEXT)
    save_pt(model, tmp_path / "good.pt")
    return model, torch.load(tmp_path / "good.pt", weights_only=True)


def _write(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "hostile.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.complex64, torch.float64])
def test_other_dtypes_are_refused_not_cast(saved, tmp_path, dtype):
    model, payload = saved
    key = "layers.0.conv.weight"
    payload["state_dict"][key] = payload["state_dict"][key].to(dtype)
    with pytest.raises(WeightsError, match=f"dtypes differ.*{key} {dtype}"):
        load_pt(model, _write(tmp_path, payload))


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_and_meta_tensors_are_refused(saved, tmp_path, kind):
    model, payload = saved
    key = "layers.0.bn.weight"
    dense = payload["state_dict"][key]
    payload["state_dict"][key] = dense.to_sparse() if kind == "sparse" else \
        torch.empty(dense.shape, device="meta")
    with pytest.raises(WeightsError):
        load_pt(model, _write(tmp_path, payload))


@pytest.mark.parametrize("header", [[0, 2, 0, 2 ** 70], [0, 1, 0, 2 ** 32], [2 ** 40, 2, 0, 0],
                                    [0, 2, 0, -1], [0, 2, 0, 1.5], [0, 2, 0, True]])
def test_headers_that_do_not_fit_darknets_fields(saved, tmp_path, header):
    model, payload = saved
    payload["header"] = header
    with pytest.raises(WeightsError, match="header"):
        load_pt(model, _write(tmp_path, payload))


def test_a_stored_cfg_is_text_never_a_path(saved, tmp_path):
    _, payload = saved
    secret = tmp_path / "secret.cfg"
    secret.write_text(TINY_CFG_TEXT.replace("[net]", "[net]\n# SECRET-FIRST-LINE", 1))
    payload["cfg"] = str(secret)  # a path: the old loader opened it
    with pytest.raises(WeightsError, match="stored 'cfg' is not cfg text") as info:
        load_pt(None, _write(tmp_path, payload))
    assert "SECRET" not in str(info.value)


def test_a_training_checkpoint_is_not_a_model_file(tmp_path):
    torch.save({"format": TRAIN_FORMAT, "version": 2}, tmp_path / "last.pt")
    with pytest.raises(WeightsError, match="training checkpoint"):
        load_pt(Darknet(TINY_CFG_TEXT), tmp_path / "last.pt")
