"""``[contrastive]`` and ``[yolo] embedding_layer=`` as the original Darknet builds and runs them.

What the expected values rest on (AlexeyAB @59596d78, ``src/parser.c`` and
``src/softmax_layer.c``):

* ``parse_contrastive`` reads the previous layer's ``w, h, c, inputs`` and ``yolo_layer``
  (default 0; negative = relative). With 0 it keeps a null pointer and then reads its ``type``: a
  segfault (checked on a CPU build: ``BAD_CFG % "0"`` exits with signal 11). A non-[yolo] target
  exits with "should point to the [yolo] layer".
* ``make_contrastive_layer`` takes ``n`` (masked anchors) and ``classes`` from the [yolo] layer and
  sets ``embedding_size = inputs / (n*h*w)``; unless it equals the [yolo]'s ``embedding_size``
  (``le.n / n`` of the ``embedding_layer``, i.e. filters / anchors; 0 when the [yolo] has none) it
  exits. ``l.outputs = inputs``; ``out_w/h/c`` stay 0.
* ``forward_contrastive_layer`` starts with ``if (!state.train) return;`` and even in training
  writes only ``l.delta``; ``l.output`` comes from ``xcalloc``: at inference it is all zeros.
* ``load_weights``/``save_weights`` have no contrastive branch and it sets no ``bflops``: nothing
  in ``.weights``, 0 BFLOPs. ``forward_yolo_layer`` (CPU) never reads ``embedding_output``: a
  [yolo]'s output is the same with or without ``embedding_layer``.

The figures of :data:`CFG` (7 layers, ``Total BFLOPS 0.004``, 4,392 bytes; 4,472 with
``filters=13``, which Darknet warns about twice and accepts since 13/3 = 4 both ways) were
printed by that Darknet (CPU build, ``parse_network_cfg_custom(cfg, 1, 1)`` + ``save_weights``),
as were those of AlexeyAB's ``cfg/yolov4-tiny_contrastive.cfg`` (55 layers, 16.444 BFLOPs,
29,561,736 bytes), which is not in the shared corpus (that test skips without it). On that cfg,
random weights and a fixed input, darkcsp's layers 48 (the embeddings), 52 ([yolo]) and 54
([contrastive], all zeros) matched Darknet's within 1.5e-7.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from darkcsp import CfgError, CfgWarning, Darknet
from darkcsp.errors import DarkcspError
from darkcsp.export import cfg_text_for
from darkcsp.export.opencv import lower_for_opencv
from darkcsp.summary import format_summary
from darkcsp.weights import expected_size
from reference_data import CFG_CORPUS, require

CFG = """[net]
batch=4
subdivisions=1
width=96
height=96
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=12
size=1
stride=1
pad=1
activation=linear

[route]
layers=-2

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 9,12, 20,18
classes=2
num=3
embedding_layer=-3

[route]
layers=1

[contrastive]
yolo_layer=-2
temperature=0.5
"""


def build(text: str) -> Darknet:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CFG itself warns about nothing
        return Darknet(text)


def random_weights(model: Darknet, seed: int = 0) -> Darknet:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, blocks in model.weight_blocks():
            for block in blocks:
                values = torch.rand(block.tensor.shape, generator=generator)
                block.tensor.copy_(values + 0.5 if block.role == "bn" else values - 0.5)
    return model


def test_parse_and_shapes_as_darknet() -> None:
    model = build(CFG)
    nodes = model.nodes
    assert len(nodes) == 7 and [n.kind.name for n in nodes][-3:] == ["yolo", "route",
                                                                       "contrastive"]
    yolo, contrastive = nodes[4], nodes[6]
    assert yolo.opts.embedding_layer == 1 and yolo.info["embedding_size"] == 12 // 3
    assert contrastive.opts.yolo_layer == 4 and contrastive.inputs == [5]
    assert contrastive.info == {"embedding_size": 4, "anchors": 3, "classes": 2}
    # defaults as parse_contrastive reads them
    assert (contrastive.opts.classes, contrastive.opts.temperature,
            contrastive.opts.cls_normalizer, contrastive.opts.max_delta,
            contrastive.opts.contrastive_neg_max) == (1000, 0.5, 1.0, float("inf"), 3)
    assert contrastive.out_shape == contrastive.in_shape  # l.outputs = l.inputs (12x48x48)
    assert contrastive.out_shape.size == 12 * 48 * 48
    assert model.output_indices == [4]  # it is no detection head
    assert f"{model.total_bflops():.3f}" == "0.004" and contrastive.kind.flops(contrastive) == 0
    assert expected_size(model) == 4392
    assert "contrastive yolo 4 emb 4" in format_summary(model)


def test_remainder_warns_as_darknet_and_builds() -> None:
    text = CFG.replace("filters=12", "filters=13")
    with pytest.warns(CfgWarning) as caught:
        model = Darknet(text)
    messages = [str(w.message) for w in caught]
    assert any("embedding_layer" in m and "not divisible" in m for m in messages)
    assert any("[contrastive] yolo_layer" in m and "not divisible" in m for m in messages)
    assert model.nodes[6].info["embedding_size"] == 4 and expected_size(model) == 4472


def test_forward_output_is_darknets_zeros_and_yolo_ignores_the_embeddings() -> None:
    """Hand-computed: the contrastive output is zeros of the input's size; the [yolo] output
    equals that of the same network without ``embedding_layer`` (nor [contrastive])."""
    model = random_weights(build(CFG)).eval()
    plain_text = CFG.replace("embedding_layer=-3\n", "").split("\n[route]\nlayers=1")[0]
    plain = Darknet(plain_text).eval()
    state = {k: v for k, v in model.state_dict().items()}
    plain.load_state_dict(state)
    x = torch.rand((2, 3, 96, 96), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layers = model.forward_layers(x)
        outputs = model(x)
        plain_outputs = plain(x)
    assert layers[5].abs().sum() > 0  # its input is not zero ...
    assert layers[6].shape == layers[5].shape == (2, 12, 48, 48)
    assert torch.equal(layers[6], torch.zeros_like(layers[5]))  # ... its output is
    assert len(outputs) == 1 and torch.equal(outputs[0], layers[4])
    assert torch.equal(outputs[0], plain_outputs[0])
    # the same in training mode (Darknet's training forward writes only l.delta)
    model.train()
    assert torch.equal(model.forward_layers(x)[6], torch.zeros(2, 12, 48, 48))


def test_weights_round_trip_stores_nothing_for_it(tmp_path: Path) -> None:
    model = random_weights(build(CFG), seed=3)
    assert [blocks for index, blocks in model.weight_blocks() if index == 6] in ([], [[]])
    model.save_weights(tmp_path / "a.weights")
    assert (tmp_path / "a.weights").stat().st_size == 4392
    fresh = build(CFG)
    fresh.load_weights(tmp_path / "a.weights")
    fresh.save_weights(tmp_path / "b.weights")
    assert (tmp_path / "a.weights").read_bytes() == (tmp_path / "b.weights").read_bytes()
    # the same bytes as the network without [contrastive]: it adds nothing to the stream
    head = Darknet(CFG.split("\n[route]\nlayers=1")[0])
    head.load_weights(tmp_path / "a.weights")
    head.save_weights(tmp_path / "c.weights")
    assert (tmp_path / "c.weights").read_bytes() == (tmp_path / "a.weights").read_bytes()


def test_lowering_keeps_the_references_and_opencv_refuses(tmp_path: Path) -> None:
    cfg = tmp_path / "model.cfg"
    cfg.write_text(CFG)
    lowered = build(cfg_text_for(cfg, "darknet"))
    assert lowered.nodes[6].opts.yolo_layer == 4 and lowered.nodes[4].opts.embedding_layer == 1
    with pytest.raises(CfgError, match=r"OpenCV 4\.x cannot compute a \[contrastive\] layer"):
        lower_for_opencv(build(CFG).layer_graph)


@pytest.mark.parametrize("change, message", [
    (("yolo_layer=-2", "yolo_layer=0"), r"yolo_layer=0 names no \[yolo\] layer.*crashes"),
    (("yolo_layer=-2", ""), r"yolo_layer=0 names no \[yolo\] layer"),
    (("yolo_layer=-2", "yolo_layer=-6"), r"yolo_layer=-6 names no \[yolo\] layer"),
    (("yolo_layer=-2", "yolo_layer=-1"), r"points to layer 5, a \[route\].*must be a \[yolo\]"),
    (("yolo_layer=-2", "yolo_layer=6"), r"outside the earlier layers"),
    (("yolo_layer=-2", "yolo_layer=-9"), r"outside the earlier layers"),
    (("embedding_layer=-3\n", ""), r"embedding_size 4 .* differs from the \[yolo\] layer 4's "
                                   r"embedding_size 0"),
    (("layers=1\n", "layers=0\n"), r"embedding_size 5 .* differs .* embedding_size 4"),
    (("embedding_layer=-3", "embedding_layer=-2"), r"not a \[convolutional\]"),
    (("embedding_layer=-3", "embedding_layer=4"), r"outside the earlier layers"),
])
def test_what_darknet_refuses_or_crashes_on_is_a_cfg_error(change: tuple[str, str],
                                                           message: str) -> None:
    with pytest.raises(CfgError, match=message):
        Darknet(CFG.replace(*change))


def test_gaussian_yolo_is_not_a_target() -> None:
    text = (CFG.replace("filters=21", "filters=33").replace("[yolo]", "[Gaussian_yolo]")
            .replace("embedding_layer=-3\n", ""))
    with pytest.raises(CfgError, match=r"a \[Gaussian_yolo\]: it must be a \[yolo\] layer"):
        Darknet(text)


def test_training_is_refused(tmp_path: Path) -> None:
    from darkcsp.data.synthetic import SyntheticSpec
    from darkcsp.train.trainer import TrainConfig, Trainer

    cfg = tmp_path / "contrastive.cfg"
    cfg.write_text(CFG.replace("batch=4", "batch=4\nmax_batches=1"))
    spec = SyntheticSpec(train=4, valid=2, size=96, classes=2, seed=1)
    config = TrainConfig(cfg=str(cfg), out=str(tmp_path / "out"), batch=4, subdivisions=1,
                         size=96, progress=False, synthetic=spec, seed=5, max_batches=1)
    with pytest.raises(DarkcspError, match=r"layer 6: \[contrastive\] has no training loss"):
        Trainer(config).run()


def test_alexeyab_yolov4_tiny_contrastive() -> None:
    """Darknet's figures for the public cfg (measured, see the module docstring)."""
    path = require(CFG_CORPUS / "alexeyab" / "yolov4-tiny_contrastive.cfg")
    with torch.device("meta"):
        model = Darknet(path)
    assert len(model.nodes) == 55 and f"{model.total_bflops():.3f}" == "16.444"
    assert expected_size(model) == 29_561_736
    assert model.nodes[52].info["embedding_size"] == 128 and model.nodes[54].opts.yolo_layer == 52
