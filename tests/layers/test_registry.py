"""The registry sweep: every registered section type (aliases included) is built, run forwards
and backwards, round-tripped through ``.weights``, lowered to plain Darknet cfg and to OpenCV's
form, as timm sweeps its model registry.

Each type needs an entry in :data:`CASES` (a tiny cfg using it); a type without one fails, so a new
layer cannot be registered without being swept. A type OpenCV 4.x cannot compute is listed in
:data:`OPENCV_REFUSES` with the reason its refusal gives; every other type's export is run by
OpenCV (when ``cv2`` 4.x is importable) and compared with darkcsp within 1e-4.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from darkcsp import CfgError, Darknet
from darkcsp.export import cfg_text_for
from darkcsp.export.opencv import lower_for_opencv
from darkcsp.layers import registered_types
from opencv_support import export_and_compare, opencv_available, randomize

NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"
YOLO_ANCHORS = "anchors=10,14,23,27,37,58\n"


def conv(filters: int, size: int = 1, stride: int = 1, activation: str = "leaky",
         bn: int = 1) -> str:
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation={activation}\n\n")


# Section type -> tiny cfg bodies (after [net]) using it, with the net's (width, height).
# Aliases reuse their type's entry under the alias name.
CASES: dict[str, list[tuple[str, tuple[int, int]]]] = {
    "convolutional": [(conv(4, 3) + conv(3, 3, 2, "mish", bn=0), (16, 16))],
    "route": [(conv(4, 3) + conv(6, 3) + "[route]\nlayers=-1,-2\n\n"
               "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", (16, 16))],
    "empty": [(conv(4, 3) + "[empty]\n", (16, 16))],
    "connected": [(conv(4, 3, 2) + "[connected]\noutput=6\nbatch_normalize=1\nactivation=leaky\n"
                   "\n[connected]\noutput=3\nactivation=linear\n", (8, 8))],
    "softmax": [(conv(4, 3, 2) + "[connected]\noutput=5\nactivation=linear\n\n[softmax]\n",
                 (8, 8))],
    "dropout": [(conv(4, 3) + "[dropout]\nprobability=0.5\n", (16, 16))],
    "cost": [(conv(4, 3, 2) + "[connected]\noutput=5\nactivation=linear\n\n[softmax]\n\n[cost]\n",
              (8, 8))],
    "batchnorm": [(conv(4, 3, bn=0, activation="linear") + "[batchnorm]\n", (16, 16))],
    "activation": [(conv(4, 3, bn=0, activation="linear") + "[activation]\nactivation=mish\n",
                    (16, 16))],
    "crop": [(conv(4, 3) + "[crop]\ncrop_height=8\ncrop_width=6\n", (16, 16))],
    "maxpool": [(conv(4, 3) + "[maxpool]\nsize=2\nstride=2\n\n[maxpool]\nsize=3\nstride=1\n",
                 (16, 16))],
    "local_avgpool": [(conv(4, 3) + "[local_avgpool]\nsize=2\nstride=2\n", (16, 16))],
    "avgpool": [(conv(4, 3) + "[avgpool]\n", (16, 16))],
    "upsample": [(conv(4, 3) + "[upsample]\nstride=2\n", (8, 8))],
    "reorg3d": [(conv(4, 3) + "[reorg3d]\nstride=2\n", (16, 16))],
    "reorg": [(conv(4, 3) + "[reorg]\nstride=2\n", (16, 16))],
    "shortcut": [(conv(4, 3) + conv(4, 3) + "[shortcut]\nfrom=-2\nactivation=linear\n\n"
                  "[shortcut]\nfrom=-3\nweights_type=per_channel\n"
                  "weights_normalization=softmax\nactivation=leaky\n", (16, 16))],
    "sam": [(conv(4, 3) + conv(4, 3) + "[sam]\nfrom=-2\n", (16, 16)),
            (conv(6, 3) + "[sam]\n\n" + conv(4, 3), (16, 16))],  # without from: the dialect's
    "scale_channels": [(conv(4, 3) + "[avgpool]\n\n" + conv(4, activation="logistic")
                        + "[scale_channels]\nfrom=-3\n", (16, 16))],
    "implicit": [(conv(4, 3) + "[implicit]\nfilters=4\n\n[scale_channels]\nfrom=-2\n",
                  (16, 16))],  # YOLOR's implicit_mul
    "local": [("[local]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n", (8, 8))],
    "crnn": [("[crnn]\nsize=3\npad=1\noutput=4\nhidden=4\nactivation=leaky\n"
              "batch_normalize=1\n", (8, 8))],
    "yolo": [(conv(18, bn=0, activation="linear") + "[yolo]\nmask=0,1,2\n" + YOLO_ANCHORS
              + "classes=1\nnum=3\n", (16, 16))],
    "Gaussian_yolo": [(conv(30, bn=0, activation="linear") + "[Gaussian_yolo]\nmask=0,1,2\n"
                       + YOLO_ANCHORS + "classes=1\nnum=3\n", (16, 16))],
    "contrastive": [(conv(12, 3) + conv(18, bn=0, activation="linear") + "[yolo]\nmask=0,1,2\n"
                     + YOLO_ANCHORS + "classes=1\nnum=3\nembedding_layer=-2\n\n[route]\n"
                     "layers=-3\n\n[contrastive]\nyolo_layer=-2\n", (16, 16))],
    "region": [(conv(14, bn=0, activation="linear") + "[region]\nanchors=1,1,2,2\nclasses=2\n"
                "num=2\nsoftmax=1\n", (16, 16))],
    "detection": [(conv(4, 3, 2) + "[connected]\noutput=28\nactivation=linear\n\n[detection]\n"
                   "classes=2\ncoords=4\nnum=1\nside=2\nsoftmax=1\n", (8, 8))],
    # dialect macros: swept through their lowering
    "maxout": [(conv(12, 3) + "[maxout]\nk=3\n", (16, 16)),
               (conv(12, 3) + "[maxout]\nout_channels=4\n", (16, 16))],
    "prn": [(conv(8, 3) + conv(16, 3) + conv(12) + "[prn]\nfrom=-2\nactivation=leaky\n",
             (16, 16))],
    "partial_transition": [(conv(8, 3) + conv(8, 3) + "[partial_transition]\nroute=-2\n"
                            "filters=6\nfusion=first\npool=max\n", (16, 16))],
    "csp": [(conv(16, 3) + "[csp]\nfilters=16\ndownsample=1\nsplit_mode=conv\nblock=res\n"
             "blocks=1\ngroups=2\nbottleneck=8\npool=avg\n", (16, 16))],
    "efm": [(conv(8, 3) + conv(16, 3, 2) + conv(32, 3, 2) + "[route]\nlayers=1\n\n[efm]\n"
             "layers=0,1,2\nfilters=12\nmaxout=4\nsam=1\n", (16, 16))],
}

# Types OpenCV 4.x's Darknet importer does not compute (exactly): the export refuses them with
# this reason. Every other type must export and, with cv2 4.x importable, match darkcsp.
OPENCV_REFUSES = {
    "crop": "a [crop] layer",
    "reorg3d": "a [reorg3d] layer",
    "implicit": "a [implicit] layer",
    "local": "a [local] layer",
    "crnn": "a [crnn] layer",
    "Gaussian_yolo": "a [Gaussian_yolo] layer",
    "contrastive": "a [contrastive] layer",
    "detection": "a [detection] layer",
}

TYPES = registered_types()
NO_OPENCV = opencv_available()


def cases_of(name: str) -> list[tuple[str, tuple[int, int]]]:
    """``name``'s entry; an alias uses its type's entry with the alias as the section name."""
    canonical = TYPES[name].name
    if canonical not in CASES:
        pytest.fail(f"[{name}] is registered but has no entry in CASES (tests/layers/"
                    "test_registry.py): add a tiny cfg using it")
    return [(body.replace(f"[{canonical}]\n", f"[{name}]\n"), size)
            for body, size in CASES[canonical]]


def random_model(text: str, seed: int = 0) -> Darknet:
    """``randomize``'s weights, with every batch-norm variance kept positive (a [crnn]'s
    sub-layer BN blocks carry no "bn" role, so ``randomize`` treats them as biases)."""
    model = randomize(Darknet(text), seed)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for module in model.modules():
            variance = getattr(module, "running_var", None)
            if isinstance(variance, torch.Tensor):
                variance.copy_(0.5 + torch.rand(variance.shape, generator=generator))
    return model


def test_every_entry_names_a_registered_type() -> None:
    assert set(CASES) <= {kind.name for kind in TYPES.values()}
    assert set(OPENCV_REFUSES) <= set(CASES)


@pytest.mark.parametrize("name", sorted(TYPES, key=str.lower))
def test_layer_type(name: str, tmp_path: Path, single_thread: None) -> None:
    kind = TYPES[name]
    for variant, (body, (w, h)) in enumerate(cases_of(name)):
        folder = tmp_path / str(variant)
        folder.mkdir()
        text = NET.format(w=w, h=h) + body
        assert f"[{name}]" in text
        cfg = folder / "model.cfg"
        cfg.write_text(text)

        # build: a primitive is in the graph, a dialect macro has lowered away
        model = Darknet(text)
        kinds = [node.kind for node in model.nodes]
        if kind.macro:
            assert all(not k.macro for k in kinds) and name not in {
                node.section.type for node in model.nodes}
        elif name == "sam" and "from" not in body:
            assert [k.name for k in kinds[-3:-1]] == ["convolutional", "sam"]
        else:
            assert kind in kinds

        # forward and backward in training mode (batch 2, so batch norm has statistics)
        model.train()
        x = torch.rand((2, 3, h, w), generator=torch.Generator().manual_seed(variant),
                       requires_grad=True)
        outputs = model(x)
        assert outputs and all(o.shape[0] == 2 and torch.isfinite(o).all() for o in outputs)
        sum(o.sum() for o in outputs).backward()
        for parameter_name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{parameter_name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{parameter_name}: non-finite grad"

        # .weights round trip: identical state in a fresh model, identical bytes on re-save
        model = random_model(text, variant)
        model.save_weights(folder / "a.weights")
        fresh = Darknet(text)
        fresh.load_weights(folder / "a.weights")
        ours, theirs = model.state_dict(), fresh.state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key
        fresh.save_weights(folder / "b.weights")
        assert (folder / "a.weights").read_bytes() == (folder / "b.weights").read_bytes()

        # Darknet lowering: plain cfg text that re-parses to the same layers, reads the same
        # .weights and computes the same outputs
        lowered = Darknet(cfg_text_for(cfg, "darknet"))
        assert [n.kind.name for n in lowered.nodes] == [n.kind.name for n in model.nodes]
        assert [n.out_shape for n in lowered.nodes] == [n.out_shape for n in model.nodes]
        assert all(not n.kind.macro for n in lowered.nodes)
        lowered.load_weights(folder / "a.weights")
        lowered.eval()
        with torch.no_grad():
            for a, b in zip(model.eval().forward_layers(x), lowered.forward_layers(x)):
                assert torch.equal(a, b)

        # OpenCV lowering: refused with the listed reason, or exported and compared
        reason = OPENCV_REFUSES.get(kind.name)
        if reason is not None:
            with pytest.raises(CfgError, match=re.escape("OpenCV 4.x cannot compute " + reason)):
                lower_for_opencv(model.layer_graph)
            continue
        plan = lower_for_opencv(model.layer_graph)
        assert len(plan.outputs) == len(model.nodes)
        if NO_OPENCV is None:
            errors = export_and_compare(text, folder, size=(w, h), seed=variant)
            assert errors and max(errors.values()) <= 1e-4 and not math.isnan(
                max(errors.values()))
