"""Reduced precision, opt-in (darkcsp/infer/precision.py): ``Detector(..., backend="onnx",
precision="int8", calibration=[...])`` and ``Detector(..., backend="torch", precision="bf16")``.

* on the real yolov3-tiny over 20 views of the shared photos (each photo, mirrored, and its
  top-left and bottom-right 2/3 crops), thresh 0.1: a fp32 detection is kept when the other
  precision has one of the same class with IoU >= 0.5. Both keep >= 90 % (bf16: 36 of 38 with
  the image and head convs in float32, 34 of 38 when they were bf16 too), and both keep every
  fp32 detection whose probability is over 0.15 (the ones lost are borderline: reduced
  precision moves probabilities by a few hundredths, so they cross the threshold);
* int8 is quantized once and cached under a hash of cfg + weights + calibration;
* bf16 is refused, clearly, where the CPU has no native bf16; a precision on a backend that
  does not run it is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import pytest

from reference_data import IMAGES, YOLOV3_TINY, require
from darkcsp import DarkcspError, Detector
from darkcsp.infer import precision as precision_module

pytest.importorskip("onnxruntime.quantization", reason="onnxruntime has no quantization")
pytestmark = pytest.mark.usefixtures("single_thread")

THRESH = 0.1
EDGE = 0.05  # fp32 detections this close to THRESH may cross it at reduced precision


def _views(path: Path) -> list[np.ndarray]:
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    return [image, image[:, ::-1].copy(), image[:2 * h // 3, :2 * w // 3].copy(),
            image[h // 3:, w // 3:].copy()]


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def _kept(found: dict[str, Any], other: list[dict[str, Any]]) -> bool:
    return any(o["class_id"] == found["class_id"] and _iou(found["box"], o["box"]) >= 0.5
               for o in other)


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    folder = require(YOLOV3_TINY)
    photos = sorted(require(IMAGES).glob("*.png"))
    views = [v for p in photos for v in _views(p)]
    cfg, weights = folder / "yolov3-tiny.cfg", folder / "yolov3-tiny.weights"
    reference = Detector(cfg, weights, thresh=THRESH)
    return {"cfg": cfg, "weights": weights, "photos": [str(p) for p in photos],
            "views": views, "fp32": [reference.detect(v) for v in views]}


def _agreement(real: dict[str, Any], detector: Detector) -> tuple[int, int, int]:
    """(kept, fp32 detections, fp32 detections over THRESH + EDGE not kept)."""
    kept = total = lost_clear = 0
    for view, expected in zip(real["views"], real["fp32"]):
        got = detector.detect(view)
        for found in expected:
            total += 1
            if _kept(found, got):
                kept += 1
            elif found["prob"] > THRESH + EDGE:
                lost_clear += 1
    return kept, total, lost_clear


def test_int8_keeps_the_fp32_detections_and_is_cached(real, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    detector = Detector(real["cfg"], real["weights"], backend="onnx", precision="int8",
                        calibration=real["photos"], cache_dir=cache, thresh=THRESH)
    kept, total, lost_clear = _agreement(real, detector)
    assert total >= 30  # not vacuous
    assert kept >= 0.9 * total, f"int8 kept {kept} of {total}"
    assert lost_clear == 0
    cached = sorted(cache.glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    Detector(real["cfg"], real["weights"], backend="onnx", precision="int8",
             calibration=real["photos"], cache_dir=cache)  # the same key: no new file
    assert sorted(cache.glob("*.onnx")) == cached and cached[0].stat().st_mtime_ns == stamp
    key = precision_module.int8_key
    model = detector.model
    assert key(model, real["cfg"], real["weights"], real["photos"][:2], 20, None) != \
        key(model, real["cfg"], real["weights"], real["photos"], 20, None)


def test_bf16_keeps_the_fp32_detections(real) -> None:
    if not precision_module.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX)")
    detector = Detector(real["cfg"], real["weights"], precision="bf16", thresh=THRESH)
    kept, total, lost_clear = _agreement(real, detector)
    assert total >= 30
    assert kept >= 0.9 * total, f"bf16 kept {kept} of {total}"
    assert lost_clear == 0


def _weight_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    """The dtypes of a layer's weights: parameters, or the pre-packed tensors of a fused
    oneDNN conv (plain attributes)."""
    found = {p.dtype for p in module.parameters()}
    for sub in module.modules():
        found |= {t.dtype for t in vars(sub).values() if isinstance(t, torch.Tensor)}
    return found


def test_bf16_keeps_image_and_head_convs_in_float32(real) -> None:
    """The convs that read the image and feed the heads run in float32 (as int8 keeps them),
    the others in bf16; the heads get float32 logits."""
    if not precision_module.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX)")
    backend = Detector(real["cfg"], real["weights"], precision="bf16").backend
    convs = [n.index for n in backend.net.nodes if n.kind.name == "convolutional"]
    heads = [n.index for n in backend.net.nodes if n.kind.name == "yolo"]
    feeding = {i for h in heads for i in backend.net.nodes[h].inputs}
    assert backend.float32_layers == frozenset({convs[0]} | feeding) and len(feeding) == 2
    for index in convs:
        want = torch.float32 if index in backend.float32_layers else torch.bfloat16
        found = _weight_dtypes(backend.net.layers[index])
        assert found == {want}, f"layer {index}: {found}"
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    assert all(o.dtype == np.float32 for o in backend.forward(x))


def test_bf16_is_refused_without_native_bf16(real, monkeypatch) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(DarkcspError, match="native bf16"):
        Detector(real["cfg"], real["weights"], precision="bf16")


def test_precision_on_the_wrong_backend_is_refused(real) -> None:
    with pytest.raises(DarkcspError, match="onnx backend"):
        Detector(real["cfg"], real["weights"], backend="torch", precision="int8")
    with pytest.raises(DarkcspError, match="torch backend"):
        Detector(real["cfg"], real["weights"], backend="opencv", precision="bf16")
    with pytest.raises(DarkcspError, match="unknown precision"):
        Detector(real["cfg"], real["weights"], precision="fp16")
