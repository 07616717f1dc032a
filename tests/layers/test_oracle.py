"""darkcsp against the original Darknet's own numbers (``../shared/oracle``, see its README).

Every synthetic case is run unfused (every layer against ``out.npz``) and fused (heads, their
inputs and the last layer against ``out_fused.npz``); every ``model.weights`` must survive a
load -> save round trip byte for byte; and the real COCO yolov3-tiny must reproduce Darknet's
yolo outputs on Darknet's own input tensors. Tolerance (oracle README): per tensor
``max|a-b| / max|b| <= 1e-4`` with b = Darknet.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_data import ORACLE, YOLOV3_TINY, oracle_cases, require
from darkcsp import Darknet
from darkcsp.layers.shortcut import Shortcut

TOLERANCE = 1e-4

# The one case whose out_fused.npz shows a Darknet bug on purpose (README quirk 3); it has its
# own test below instead of the generic fused comparison.
FUSE_QUIRK_CASE = "shortcut_relu_negative_weights"

_CASES = oracle_cases()
CASES = _CASES or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no oracle cases: reference data {ORACLE} is not present"))]
FUSED_CASES = [c for c in _CASES if c != FUSE_QUIRK_CASE
               and (ORACLE / c / "out_fused.npz").is_file()] or CASES

REAL = ORACLE / "real-yolov3-tiny"
REAL_INPUTS = sorted(p.relative_to(REAL).as_posix() for p in REAL.glob("*/*.npz")) \
    if REAL.is_dir() else []


def relative_error(a: np.ndarray | torch.Tensor, b: np.ndarray) -> float:
    """``max|a-b| / max|b|`` over the flattened tensors (b = Darknet), in float64.

    Darknet's layouts are compared flat, so only the element count has to agree (a mismatch
    raises). An all-zero ``b`` has no scale: the absolute error is returned then. NaN in ``a``
    gives NaN, which fails every ``<=`` bound.
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"{x.size} values vs {y.size} expected")
    scale = float(np.abs(y).max()) if y.size else 0.0
    error = float(np.abs(x - y).max()) if y.size else 0.0
    return error / scale if scale > 0 else error


def load_case(case: str) -> tuple[Darknet, torch.Tensor]:
    """The case's model with its Darknet weights, in eval mode, and its (1,C,H,W) input."""
    folder = require(ORACLE / case)
    model = Darknet(folder / "model.cfg")
    model.load_weights(folder / "model.weights")
    model.eval()
    x = torch.from_numpy(np.load(folder / "input.npy"))[None]
    return model, x


def layer_outputs(model: Darknet, x: torch.Tensor) -> list[np.ndarray]:
    """Every layer's output for batch item 0 (detached: some layers return parameters)."""
    with torch.no_grad():
        return [out.detach()[0].numpy() for out in model.forward_layers(x)]


def darknet_key_output(model: Darknet, outputs: list[np.ndarray], key: str) -> np.ndarray:
    """darkcsp's tensor for an npz key: ``L###_type`` -> layer ###; ``L###_type_in`` -> that
    head's input; ``final`` -> the last layer."""
    if key == "final":
        return outputs[-1]
    index = int(key[1:4])
    node = model.nodes[index]
    assert key[5:].removesuffix("_in") == node.kind.name, \
        f"{key}: darkcsp layer {index} is [{node.kind.name}]"
    return outputs[node.inputs[0]] if key.endswith("_in") else outputs[index]


def compare_npz(model: Darknet, outputs: list[np.ndarray], npz_path: Path) -> dict[str, float]:
    """Relative error of every layer key (``L###...`` and ``final``) of one npz file."""
    errors: dict[str, float] = {}
    with np.load(npz_path) as expected:
        keys = [k for k in expected.files if k.startswith("L") or k == "final"]
        assert keys, f"{npz_path} has no layer outputs"
        for key in keys:
            errors[key] = relative_error(darknet_key_output(model, outputs, key), expected[key])
    return errors


def assert_within(errors: dict[str, float], what: str) -> None:
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= TOLERANCE}
    assert not bad, f"{what}: layers beyond {TOLERANCE:g} relative: {bad}"


@pytest.mark.parametrize("case", CASES)
def test_unfused_matches_darknet(case: str) -> None:
    """Every layer Darknet recorded (not fused) must match: localises a mismatch to a layer."""
    model, x = load_case(case)
    assert_within(compare_npz(model, layer_outputs(model, x), ORACLE / case / "out.npz"),
                  case)


@pytest.mark.parametrize("case", FUSED_CASES)
def test_fused_matches_darknet(case: str) -> None:
    """With BN folded into the convs (as ``darknet detector test`` runs) the heads, their
    inputs and the last layer must match Darknet's fused run."""
    model, x = load_case(case)
    model.fuse()
    assert_within(compare_npz(model, layer_outputs(model, x), ORACLE / case / "out_fused.npz"),
                  f"{case} (fused)")


def test_fused_shortcut_relu_quirk_is_not_copied() -> None:
    """README quirk 3: Darknet's fuse_conv_batchnorm pre-normalises relu-weighted shortcut
    weights with max(w, 0.001) instead of relu(w), so its *fused* output of this case (weights
    1.25, -0.5, 0.0005) is wrong. darkcsp's fuse() keeps the real semantics, so:

    * darkcsp fused must match the UNFUSED Darknet output (out.npz), the true semantics;
    * it must differ from out_fused.npz by about the documented 1e-3 (so the quirk is really
      in the fixture and we are not silently matching a bug);
    * recomputing the shortcut with Darknet's quirky max(w, 0.001) weights from darkcsp's
      own inputs must reproduce out_fused.npz, proving the difference is exactly the quirk.
    """
    case = FUSE_QUIRK_CASE
    model, x = load_case(case)
    model.fuse()
    outputs = layer_outputs(model, x)
    index = 3
    shortcut = model.layers[index]
    assert isinstance(shortcut, Shortcut) and shortcut.normalization == "relu"
    with np.load(ORACLE / case / "out.npz") as unfused, \
            np.load(ORACLE / case / "out_fused.npz") as fused:
        true_semantics, quirky = unfused["L003_shortcut"], fused["L003_shortcut"]
    assert relative_error(outputs[index], true_semantics) <= TOLERANCE
    quirk_gap = relative_error(outputs[index], quirky)
    assert 1e-4 < quirk_gap < 1e-2, f"expected the ~1e-3 quirk difference, got {quirk_gap:.2e}"

    raw = shortcut.weight.detach().double().numpy().ravel()  # per_feature: one weight per input
    np.testing.assert_allclose(raw, [1.25, -0.5, 0.0005], rtol=1e-6)
    clamped = np.maximum(raw, 0.001)  # Darknet's lrelu() in fuse_conv_batchnorm
    weights = clamped / (clamped.sum() + 1e-4)
    node = model.nodes[index]
    inputs = [outputs[i].astype(np.float64) for i in node.inputs]  # prev, then from= layers
    assert all(t.shape == inputs[0].shape for t in inputs)  # no PRN channel prefixes here
    reproduced = sum(w * t for w, t in zip(weights, inputs))  # activation=linear
    assert relative_error(reproduced, quirky) <= TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_weights_round_trip(case: str, tmp_path: Path) -> None:
    """Darknet's load -> save reproduces every fixture file byte for byte; so must darkcsp."""
    folder = require(ORACLE / case)
    model = Darknet(folder / "model.cfg")
    model.load_weights(folder / "model.weights")
    out = tmp_path / "saved.weights"
    model.save_weights(out)
    assert out.read_bytes() == (folder / "model.weights").read_bytes()


@pytest.fixture(scope="module")
def yolov3_tiny() -> Darknet:
    """The real COCO yolov3-tiny with its weights, unfused (built once for the module)."""
    cfg = require(YOLOV3_TINY / "yolov3-tiny.cfg")
    model = Darknet(cfg)
    model.load_weights(require(YOLOV3_TINY / "yolov3-tiny.weights"))
    return model.eval()


@pytest.fixture(scope="module")
def yolov3_tiny_fused(yolov3_tiny: Darknet) -> Darknet:
    """The same model fused, as ``darknet detector test`` runs it."""
    return copy.deepcopy(yolov3_tiny).fuse().eval()


@pytest.mark.parametrize("npz", REAL_INPUTS or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"reference data {REAL} is not present"))])
def test_real_yolov3_tiny(npz: str, yolov3_tiny_fused: Darknet) -> None:
    """Fed Darknet's exact input tensor (resize or letterbox), the fused real network must give
    Darknet's yolo outputs: a network check separated from preprocessing."""
    model = yolov3_tiny_fused
    assert model.output_indices == [16, 23]
    with np.load(REAL / npz) as data:
        x = torch.from_numpy(data["input"])[None]
        with torch.no_grad():
            heads = model(x)
        errors = {key: relative_error(out[0], data[key])
                  for key, out in zip(("L016_yolo", "L023_yolo"), heads)}
    assert_within(errors, npz)


def test_real_yolov3_tiny_weights_round_trip(yolov3_tiny: Darknet, tmp_path: Path) -> None:
    """The real weights file is written back byte for byte (header, seen count and all)."""
    out = tmp_path / "yolov3-tiny.weights"
    yolov3_tiny.save_weights(out)
    assert out.read_bytes() == (YOLOV3_TINY / "yolov3-tiny.weights").read_bytes()
