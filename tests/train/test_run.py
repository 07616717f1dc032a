"""End-to-end training on the embedded dataset: the loss falls, Ctrl-C saves, a resumed run
equals an uninterrupted one, the files are Darknet's, and a 2-process DDP run works."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from darkcsp import Darknet
from darkcsp.data.synthetic import SyntheticSpec
from darkcsp.train.trainer import TrainConfig, Trainer

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[2]
SMALL = SyntheticSpec(train=48, valid=8, size=96, classes=3, seed=1)


def config(tmp_path: Path, out: str, **overrides) -> TrainConfig:
    values = dict(cfg=str(tiny_cfg(tmp_path)), out=str(tmp_path / out), batch=8, subdivisions=2,
                  size=64, progress=False, synthetic=SMALL, seed=5, save_every=100)
    values.update(overrides)
    return TrainConfig(**values)


def test_loss_falls_on_the_embedded_dataset(tmp_path):
    trainer = Trainer(config(tmp_path, "fall", max_batches=12, map_every=12))
    result = trainer.run()
    losses = trainer.history["loss"]
    assert len(losses) == 12
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.5 * first, losses  # a real decrease, not noise
    assert 0 <= result.last_map <= 1 and result.best_map == result.last_map
    out = Path(result.out)
    for name in ("last.pt", "best.pt", "chart.png", "backup/tiny_last.weights",
                 "backup/tiny_best.weights", "backup/tiny_final.weights"):
        assert (out / name).is_file(), name
    fresh = Darknet(str(tiny_cfg(tmp_path)))
    fresh.load_weights(out / "backup" / "tiny_final.weights")
    assert fresh.header.seen == 12 * 8  # iteration * batch, as Darknet writes it
    state = trainer.model.state_dict()
    for key, value in fresh.state_dict().items():
        if "num_batches_tracked" not in key:
            assert torch.equal(value, state[key]), key
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 12 and ckpt["seen"] == 96 and "optimizer" in ckpt


class InterruptAt:
    """An evaluator that raises KeyboardInterrupt (as Ctrl-C would) at one iteration."""

    def __init__(self, trainer_box: list, iteration: int | None) -> None:
        self.box, self.iteration = trainer_box, iteration

    def __call__(self, model, device) -> float:
        if self.box and self.box[0].iteration == self.iteration:
            raise KeyboardInterrupt
        return 0.5


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path):
    box: list = []
    straight = Trainer(config(tmp_path, "straight", max_batches=6, map_every=3),
                       evaluator=InterruptAt(box, None))
    box.append(straight)
    straight.run()

    box2: list = []
    broken = Trainer(config(tmp_path, "broken", max_batches=6, map_every=3),
                     evaluator=InterruptAt(box2, 3))
    box2.append(broken)
    with pytest.raises(KeyboardInterrupt):
        broken.run()
    saved = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)
    assert saved["iteration"] == 3 and saved["seen"] == 24
    assert (tmp_path / "broken" / "backup" / "tiny_last.weights").is_file()

    resumed = Trainer(config(tmp_path, "broken", max_batches=6, map_every=3, resume=True),
                      evaluator=InterruptAt([], None))
    result = resumed.run()
    assert result.iteration == 6 and result.seen == straight.seen == 48
    assert resumed.history["lr"] == straight.history["lr"]
    assert resumed.history["iteration"] == list(range(1, 7))
    # the CPU is deterministic here, so the weights are bit-identical
    assert resumed.history["loss"] == straight.history["loss"]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_process_ddp_on_cpu(tmp_path):
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "darkcsp.cli.train", str(cfg), "--out", str(out), "--max-batches", "3",
           "--batch", "4", "--subdivisions", "2", "--size", "64", "--workers", "0",
           "--no-progress", "--synthetic-train", "16", "--synthetic-valid", "4",
           "--synthetic-size", "64", "--map-every", "3", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("iterations 3, seen 12") == 1  # rank 0 only reports
    weights = out / "backup" / "tiny_final.weights"
    fresh = Darknet(str(cfg))
    fresh.load_weights(weights)
    assert fresh.header.seen == 12
    ckpt = torch.load(out / "last.pt", weights_only=True)
    for key, value in fresh.state_dict().items():
        if "num_batches_tracked" not in key:
            torch.testing.assert_close(value, ckpt["model"][key], msg=key)


def test_classifier_cfg_trains_with_softmax_cross_entropy(tmp_path):
    """A [softmax] classifier on an image folder (root/train/<class>, root/val/<class>)."""
    import cv2
    from darkcsp.data.synthetic import SyntheticShapes

    shapes = SyntheticShapes(SyntheticSpec(train=24, valid=6, size=48, classes=3,
                                           max_objects=1))
    for split, folder in (("train", "train"), ("valid", "val")):
        for i in range(shapes.count(split)):
            img, labels = shapes.sample(split, i)
            target = tmp_path / "data" / folder / shapes.names[int(labels[0, 0])]
            target.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target / f"{i}.png"), img[..., ::-1])
    cfg = tmp_path / "cls.cfg"
    cfg.write_text("[net]\nbatch=6\nsubdivisions=1\nwidth=32\nheight=32\nchannels=3\n"
                   "learning_rate=0.05\nmax_batches=6\nlabel_smooth_eps=0.1\nangle=5\n"
                   "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
                   "activation=leaky\n[maxpool]\nsize=2\nstride=2\n"
                   "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n[avgpool]\n"
                   "[softmax]\n")
    trainer = Trainer(TrainConfig(cfg=str(cfg), data=str(tmp_path / "data"),
                                  out=str(tmp_path / "run"), progress=False, map_every=6))
    result = trainer.run()
    assert trainer.metric == "top-1" and result.iteration == 6
    assert 0 <= result.last_map <= 1 and all(v > 0 for v in trainer.history["loss"])
    fresh = Darknet(str(cfg))
    fresh.load_weights(tmp_path / "run" / "backup" / "cls_final.weights")
    assert fresh.header.seen == 36


def test_cli_registration_and_darknet_order():
    from darkcsp.cli import COMMANDS, _darknet_order
    from darkcsp.cli.train import add_arguments, config_from_args
    import argparse

    assert COMMANDS["train"][0] == "darkcsp.cli.train"
    argv = _darknet_order(["detector", "train", "obj.data", "y.cfg", "y.weights", "--clear"])
    assert argv == ["train", "y.cfg", "--data", "obj.data", "--weights", "y.weights", "--clear"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    full = config_from_args(parser.parse_args(argv[1:]))
    assert full.max_batches is None and full.data == "obj.data" and full.clear
    assert full.overrides == () and full.learning_rate is None and full.anchors is None


def test_quick_synthetic_run_defaults(tmp_path):
    """No --data: the quick CPU run's settings, each replaceable by the user's own."""
    from darkcsp.cli.train import add_arguments, config_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = str(REPO / "cfg" / "yolov3-tiny.cfg")
    quick = config_from_args(parser.parse_args([cfg]))
    assert (quick.max_batches, quick.batch, quick.subdivisions, quick.size, quick.burn_in,
            quick.learning_rate, quick.anchors, quick.classes) == (800, 8, 1, 128, -1, 0.002,
                                                                   "auto", "auto")
    assert quick.overrides == ("net.adam=1", "net.mosaic=0", "yolo.random=0",
                               "net.steps=640,720", "net.scales=.1,.1")
    mine = config_from_args(parser.parse_args([cfg, "--set", "net.adam=0", "--lr", "0.01",
                                               "--anchors", "cfg", "--max-batches", "50",
                                               "--classes", "7"]))
    assert (mine.learning_rate, mine.anchors, mine.max_batches, mine.classes) == (0.01, "cfg",
                                                                                 50, "7")
    assert mine.overrides == ("net.mosaic=0", "yolo.random=0", "net.steps=40,45",
                              "net.scales=.1,.1", "net.adam=0")
    tuned = config_from_args(parser.parse_args([cfg, "--weights", "w.weights"]))
    assert tuned.classes is None and tuned.anchors == "auto"  # the weights fix the heads
    classifier = tmp_path / "cls.cfg"
    classifier.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\n"
                          "filters=4\nsize=3\nactivation=leaky\n[avgpool]\n[softmax]\n")
    plain = config_from_args(parser.parse_args([str(classifier)]))  # needs --data anyway
    assert plain.max_batches is None and plain.overrides == () and plain.anchors is None


def test_set_overrides_reach_the_model(tmp_path):
    trainer = Trainer(config(tmp_path, "set", max_batches=1, map_every=10 ** 9,
                             overrides=("net.adam=1", "yolo.ignore_thresh=0.5",
                                        "net.learning_rate=0.0005")))
    trainer.run()
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert all(spec.ignore_thresh == 0.5 for spec in trainer.loss_fn.specs)
    assert trainer.model.net.learning_rate == pytest.approx(0.0005)
    assert "ignore_thresh=0.5" in trainer.cfg_text


@pytest.mark.parametrize("item, message", [
    ("net.adam", "expected SECTION.KEY=VALUE"),
    ("adam=1", "expected SECTION.KEY=VALUE"),
    ("net.=1", "expected SECTION.KEY=VALUE"),
    ("region.classes=3", "the cfg has no [region] section"),
])
def test_set_rejects_bad_items(tmp_path, item, message):
    from darkcsp.errors import DarkcspError

    with pytest.raises(DarkcspError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Trainer(config(tmp_path, "bad", max_batches=1, overrides=(item,))).run()


def test_set_value_errors_name_the_option(tmp_path):
    from darkcsp.errors import CfgError

    with pytest.raises(CfgError, match="ignore_thresh"):
        Trainer(config(tmp_path, "badvalue", max_batches=1,
                       overrides=("yolo.ignore_thresh=lots",))).run()


def test_default_workers_leave_cpu_cores_to_torch(monkeypatch):
    from darkcsp.train.stream import default_workers

    for cores, cpu, cuda in ((2, 0, 2), (4, 2, 4), (16, 4, 4), (1, 0, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        assert default_workers(torch.device("cpu")) == cpu
        assert default_workers(torch.device("cuda")) == cuda


def test_training_map_is_darkcsp_evaluate(tmp_path, monkeypatch):
    """The periodic mAP of a run is darkcsp.evaluate's (= ``darkcsp map``'s) on the same images
    and weights, through the same per-image function (MapEvaluation.add)."""
    import darkcsp
    from darkcsp.data.synthetic import SyntheticShapes
    from darkcsp.evaluate.run import MapEvaluation

    data = SyntheticShapes(SMALL).write(tmp_path / "syn")  # 96 px images: resized to 64
    trainer = Trainer(config(tmp_path, "agree", data=str(data), max_batches=6, map_every=100))
    trainer._setup()  # untrained: many random candidates, a few hit by chance
    calls = []
    add = MapEvaluation.add
    monkeypatch.setattr(MapEvaluation, "add", lambda self, *a: calls.append(1) or add(self, *a))
    during_training = trainer.evaluator(trainer.model, trainer.device)
    assert during_training > 0 and len(calls) == SMALL.valid
    cfg, weights = tmp_path / "trained.cfg", tmp_path / "trained.weights"
    cfg.write_text(trainer.cfg_text)
    trainer.model.save_weights(weights)
    found = darkcsp.evaluate(data, cfg, weights, progress=False)
    assert len(calls) == 2 * SMALL.valid
    assert found.map == pytest.approx(during_training, abs=1e-9)
    assert found.metrics["mAP"] == found.map and found.images == SMALL.valid


def test_anchors_auto_and_learning_rate_override(tmp_path):
    from darkcsp.evaluate.anchors import calc_anchors
    from darkcsp.layers.heads import YoloHead
    from darkcsp.data.synthetic import SyntheticShapes

    trainer = Trainer(config(tmp_path, "anchors", max_batches=1, anchors="auto",
                             learning_rate=0.02, map_every=10 ** 9))
    trainer.run()
    assert trainer.model.net.learning_rate == pytest.approx(0.02)
    shapes = SyntheticShapes(SMALL)
    boxes = torch.cat([torch.from_numpy(shapes.sample("train", i)[1][:, 3:5])
                       for i in range(SMALL.train)]).numpy()
    heads = [m for m in trainer.model.layers if isinstance(m, YoloHead)]
    assert heads
    num = len(heads[0].anchors)
    expected = calc_anchors(boxes, trainer.model.nodes[
        trainer.loss_fn.specs[0].index].opts.num, 64, 64, seed=5).anchors
    used = [tuple(a) for a in expected.round(1).tolist()]
    for head in heads:  # the masked anchors come from the k-means set
        assert len(head.anchors) == num
        for anchor in head.anchors:
            assert tuple(round(float(v), 1) for v in anchor) in used
    assert "anchors=" in trainer.cfg_text
    written = Darknet(str(tmp_path / "anchors" / "tiny.cfg"))  # the cfg as trained, on disk
    assert [list(h.anchors) for h in written.layers if isinstance(h, YoloHead)] == \
        [list(h.anchors) for h in heads]
    written.load_weights(tmp_path / "anchors" / "backup" / "tiny_final.weights")


def test_anchors_list_and_cli_options(tmp_path):
    from darkcsp.cli.train import add_arguments, config_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["x.cfg", "--data", "x.data", "--anchors", "auto", "--lr", "0.01",
                              "--threads", "2"])
    c = config_from_args(args)
    assert c.anchors == "auto" and c.learning_rate == 0.01 and args.threads == 2
    trainer = Trainer(config(tmp_path, "list", max_batches=1, map_every=10 ** 9,
                             anchors="5,6, 7,8, 9,10, 11,12, 13,14, 15,16"))
    trainer.run()
    heads = [m for m in trainer.model.layers if m.__class__.__name__ == "YoloHead"]
    flat = {tuple(float(v) for v in a) for h in heads for a in h.anchors}
    assert flat <= {(5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)}


def test_heads_without_a_loss_are_refused_not_skipped(tmp_path):
    """A layer without a loss would silently stay untrained: refuse the cfg instead (AlexeyAB's
    [contrastive], and YOLO9000's [region] tree=; [detection], [Gaussian_yolo] and [region]
    train, see test_loss_detection/_gaussian/_region.py)."""
    from darkcsp.errors import DarkcspError

    cfg = tmp_path / "contrastive.cfg"
    cfg.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n"
                   "[convolutional]\nfilters=12\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
                   "[convolutional]\nfilters=18\nsize=1\nstride=1\nactivation=linear\n"
                   "[yolo]\nmask=0,1,2\nanchors=10,13, 16,30, 33,23\nclasses=1\nnum=3\n"
                   "embedding_layer=-2\n[route]\nlayers=-3\n[contrastive]\nyolo_layer=-2\n")
    Darknet(str(cfg))  # builds (inference is supported)
    with pytest.raises(DarkcspError, match=r"layer \d+: \[contrastive\] has no training loss"):
        Trainer(config(tmp_path, "contrastive", cfg=str(cfg), max_batches=1)).run()
    tree = tmp_path / "tree.cfg"
    tree.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n[maxpool]\nsize=32\nstride=32\n"
                    "[convolutional]\nfilters=7\nsize=1\nstride=1\nactivation=linear\n"
                    "[region]\nanchors=1,1\nclasses=2\ncoords=4\nnum=1\nsoftmax=1\n"
                    "tree=data/9k.tree\n")
    with pytest.raises(DarkcspError, match="tree="):
        Trainer(config(tmp_path, "tree", cfg=str(tree), max_batches=1)).run()


def test_classes_auto_fits_every_head_to_the_data(tmp_path):
    spec = SyntheticSpec(train=16, valid=4, size=96, classes=2, seed=1)
    trainer = Trainer(config(tmp_path, "classes", max_batches=1, map_every=10 ** 9,
                             classes="auto", synthetic=spec))
    trainer.run()
    assert [s.classes for s in trainer.loss_fn.specs] == [2, 2]
    for s in trainer.loss_fn.specs:  # the conv feeding each head: 3 anchors x (2 + 5)
        assert trainer.model.nodes[s.index].in_shape.c == 21
    written = Darknet(str(tmp_path / "classes" / "tiny.cfg"))
    written.load_weights(tmp_path / "classes" / "backup" / "tiny_final.weights")
    fixed = Trainer(config(tmp_path, "classes5", max_batches=1, map_every=10 ** 9, classes=5))
    fixed._setup()
    assert [s.classes for s in fixed.loss_fn.specs] == [5, 5]


def test_set_classes_follows_darknets_recipe():
    from darkcsp.config.reader import read_cfg
    from darkcsp.errors import CfgError
    from darkcsp.train.settings import set_classes

    conv = "[convolutional]\nfilters=255\nsize=1\nactivation=linear\n"
    text = ("[net]\nwidth=64\nheight=64\nchannels=3\n" + conv + "[yolo]\nmask=0,1,2\n"
            "num=6\nclasses=80\n" + conv + "[Gaussian_yolo]\nmask=3,4,5\nnum=6\nclasses=80\n"
            + conv + "[yolo]\nnum=5\nclasses=80\n")
    sections = read_cfg(text)
    set_classes(sections, 3)
    assert [(s.type, s.get("filters") or s.get("classes")) for s in sections[1:]] == [
        ("convolutional", "24"), ("yolo", "3"), ("convolutional", "36"),
        ("Gaussian_yolo", "3"), ("convolutional", "40"), ("yolo", "3")]
    routed = read_cfg("[net]\nwidth=64\nheight=64\nchannels=3\n" + conv +
                      "[route]\nlayers=-1\n[yolo]\nclasses=80\n")
    with pytest.raises(CfgError, match=r"\[yolo\] classes: --classes"):
        set_classes(routed, 3)


@pytest.mark.slow
def test_quick_run_learns_the_synthetic_set(tmp_path):
    """The plain ``darkcsp train cfg/csppeleenet-efm.cfg`` (no --data) learns: held-out
    mAP@0.5 0.87 measured (about 4 minutes on 2 cores); the bound leaves room for other CPUs."""
    from darkcsp.cli.train import main

    torch.set_num_threads(2)  # the autouse fixture puts the test's own count back afterwards
    out = tmp_path / "quick"
    assert main([str(REPO / "cfg" / "csppeleenet-efm.cfg"), "--out", str(out),
                 "--no-progress"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 800 and ckpt["best_map"] > 0.6, ckpt["history"]["map"]
    assert (out / "csppeleenet-efm.cfg").is_file()


def test_the_printed_evaluate_command_reproduces_the_runs_map(tmp_path, capsys):
    """After a synthetic run, ``darkcsp train`` prints how to evaluate it; those two commands
    (``darkcsp synthetic`` + ``darkcsp map``) give the mAP the run reported."""
    import json
    import shlex

    from darkcsp.cli import main

    out = tmp_path / "run"
    assert main(["train", str(tiny_cfg(tmp_path)), "--out", str(out), "--max-batches", "6",
                 "--size", "64", "--workers", "0", "--no-progress", "--synthetic-train", "16",
                 "--synthetic-valid", "6", "--synthetic-size", "64", "--map-every", "6",
                 "--seed", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    # where the run's files are (the README's first command promises it), each one real
    assert f"run folder: {out}" in printed
    shown = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip().split("  ")[0]
             for ln in printed if ln.startswith("  ")}
    assert Path(shown["chart"]) == out / "chart.png" and Path(shown["chart"]).is_file()
    assert Path(shown["weights"]).parent == out / "backup" and Path(shown["weights"]).is_file()
    assert Path(shown["cfg"]) == out / "tiny.cfg" and Path(shown["cfg"]).is_file()
    line = [ln for ln in printed if ln.startswith("evaluate: ")]
    assert len(line) == 1
    write, evaluate = line[0][len("evaluate: "):].replace("DIR", str(tmp_path / "syn")).split(
        " && ")
    assert main(shlex.split(write)[1:]) == 0
    metrics = tmp_path / "metrics.json"
    assert main(shlex.split(evaluate)[1:] + ["--metrics-json", str(metrics)]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["last_map"] > 0  # early, but some candidates hit: a comparison that can fail
    assert json.loads(metrics.read_text())["mAP"] == pytest.approx(ckpt["last_map"], abs=1e-6)


def test_train_config_is_what_the_command_builds(tmp_path):
    """darkcsp.train's keywords build the TrainConfig ``darkcsp train`` builds from the same
    flags (the CLI calls train_config): quick defaults, --set merging, --weights, real data."""
    import argparse

    from darkcsp.cli.train import add_arguments, config_from_args
    from darkcsp.train.run import train_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = str(REPO / "cfg" / "yolov3-tiny.cfg")
    cases = [
        ([cfg], {}),
        ([cfg, "--set", "net.adam=0", "--lr", "0.01", "--max-batches", "50", "--no-amp",
          "--no-progress", "--synthetic-size", "96"],
         dict(settings=["net.adam=0"], learning_rate=0.01, max_batches=50, amp=False,
              progress=False, synthetic_size=96)),
        ([cfg, "--weights", "w.weights", "--seed", "3"], dict(weights="w.weights", seed=3)),
        ([cfg, "--data", "x.data", "--batch", "16", "--out", "o", "--exist-ok"],
         dict(data="x.data", batch=16, out="o", exist_ok=True)),
    ]
    for argv, keywords in cases:
        data = keywords.pop("data", None)
        assert train_config(cfg, data, **keywords) == config_from_args(parser.parse_args(argv)), \
            argv
    assert train_config(cfg).max_batches == 800  # the quick run: not vacuous
    with pytest.raises(TypeError):
        train_config(cfg, max_batch=5)  # a misspelt setting is an error, not ignored


def test_darkcsp_train_runs_like_the_command(tmp_path):
    import darkcsp
    from darkcsp.train.trainer import TrainResult

    result = darkcsp.train(str(tiny_cfg(tmp_path)), out=str(tmp_path / "api"), max_batches=2,
                           batch=4, subdivisions=1, size=64, workers=0, progress=False,
                           synthetic_train=8, synthetic_valid=4, synthetic_size=64,
                           map_every=2, anchors="cfg")
    assert isinstance(result, TrainResult) and result.iteration == 2 and result.seen == 8
    assert 0 <= result.last_map <= 1 and (Path(result.out) / "last.pt").is_file()
    ready = config(tmp_path, "ready", max_batches=1, map_every=10 ** 9)
    assert darkcsp.train(ready).iteration == 1
    with pytest.raises(TypeError, match="no data or settings"):
        darkcsp.train(ready, max_batches=3)
