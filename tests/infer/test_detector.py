"""Deployment: ONNX export, the torch / OpenCV / onnxruntime backends and ``darkcsp.Detector``.

* the three backends (and OpenCV's ONNX route, the one for OpenCV 5) give the same detections
  for the real yolov3-tiny on every photo (same classes, boxes within 1 px);
* the raw-head ONNX export of every zoo detector (random weights, non-trivial BN, 128x128, batch
  2 through the dynamic batch axis) matches torch to 1e-4 in onnxruntime, and in OpenCV's ONNX
  importer (the OpenCV 5 route);
* the decoded ONNX export matches darkcsp's own box decode;
* ``Detector.detect`` on a path and on a BGR array agree; folders and videos give what
  ``detect`` gives; ``darkcsp detect --backend`` and ``darkcsp export --to onnx`` work.

Torch runs single-threaded here: on a busy 2-core machine two spinning OpenMP threads make
every forward (and the ONNX tracer's) up to 10x slower.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import torch

from reference_data import IMAGES, REPO, YOLOV3_TINY, require
from darkcsp import DarkcspError, Darknet, Detector
from darkcsp.cli import main
from darkcsp.export.onnx import export_onnx, output_names
from darkcsp.infer.decode import get_network_boxes

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

ZOO = ["yolov4-tiny", "yolov3-tiny-prn", "csppeleenet-efm"]
TOLERANCE = 1e-4
BOX_PX = 1.0
THRESH = 0.1  # lower than Darknet's 0.25 so that every photo has several detections
EDGE = 1e-3  # a probability this close to THRESH may be kept by one backend only

# new_coords=1 (no sigmoid in the head: the conv is logistic) and scale_x_y, on a tiny net
NEW_COORDS_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=logistic

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
new_coords=1
scale_x_y=2.0
"""


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _at_size(cfg_text: str, size: int) -> str:
    text = re.sub(r"(?m)^width\s*=.*$", f"width={size}", cfg_text)
    return re.sub(r"(?m)^height\s*=.*$", f"height={size}", text)


def _random_model(cfg_text: str, seed: int = 0) -> Darknet:
    """Random weights with non-trivial BN statistics (so BN folding is exercised)."""
    torch.manual_seed(seed)
    model = Darknet(cfg_text).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# -- ONNX export --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ZOO)
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    model = _random_model(_at_size((REPO / "cfg" / f"{name}.cfg").read_text(), 128))
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = [o.numpy() for o in model(x)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == output_names(model)
    assert session.get_inputs()[0].name == "images"
    got = session.run(None, {"images": x.numpy()})
    for out, expected in zip(got, ref):
        assert out.shape == expected.shape
        assert _rel_err(out, expected) <= TOLERANCE
    # OpenCV's ONNX importer (the only route in OpenCV 5): outputs looked up by name
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x.numpy())
    for out, expected in zip(net.forward(output_names(model)), ref):
        assert _rel_err(out, expected) <= TOLERANCE


@pytest.mark.parametrize("case", ["yolov4-tiny", "new_coords"])
def test_decoded_onnx_matches_darkcsp_decode(case: str, tmp_path: Path) -> None:
    text = (NEW_COORDS_CFG if case == "new_coords"
            else _at_size((REPO / "cfg" / f"{case}.cfg").read_text(), 128))
    model = _random_model(text)
    size = int(model.net.width)
    path = export_onnx(model, tmp_path / "decoded.onnx", decoded=True)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        outputs = model(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    for image in range(2):
        # thresh 0 keeps every cell and anchor, in OpenCV's row order (cells, then anchors)
        rows = get_network_boxes(model, [o[image:image + 1] for o in outputs], size, size,
                                 thresh=0.0)
        decoded = np.concatenate([g[image] for g in got])
        assert decoded.shape == rows.shape
        np.testing.assert_allclose(decoded, rows, rtol=TOLERANCE, atol=1e-6)
    net = cv2.dnn.readNetFromONNX(str(path))  # only elementwise ops: no Exp layer
    net.setInput(x.numpy())
    for out, expected in zip(net.forward(output_names(model)), got):
        np.testing.assert_allclose(out, expected, rtol=TOLERANCE, atol=1e-6)


def test_export_cli_writes_onnx(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(NEW_COORDS_CFG)
    model = _random_model(NEW_COORDS_CFG)
    weights = tmp_path / "tiny.weights"
    model.save_weights(weights)
    out = tmp_path / "out" / "tiny.onnx"
    assert main(["export", str(cfg), str(weights), "--to", "onnx", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)[0].numpy()
    assert _rel_err(session.run(None, {"images": x.numpy()})[0], expected) <= TOLERANCE
    decoded = tmp_path / "decoded.onnx"
    assert main(["export", str(cfg), str(weights), "--to", "onnx", "--decoded",
                 str(decoded)]) == 0
    session = ort.InferenceSession(str(decoded), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": x.numpy()})[0].shape == (1, 32 * 32 * 3, 7)


# -- backends and Detector on the real yolov3-tiny ----------------------------------------------

def _photos() -> list[Path]:
    return sorted(require(IMAGES).glob("*.png"))


@pytest.fixture(scope="module")
def detectors() -> dict[str, Detector]:
    model_dir = require(YOLOV3_TINY)
    cfg, weights = model_dir / "yolov3-tiny.cfg", model_dir / "yolov3-tiny.weights"
    names = model_dir / "coco.names"
    options: dict[str, dict[str, Any]] = {
        "torch": {}, "opencv": {}, "onnx": {"threads": 1},
        "opencv-onnx": {"route": "onnx"}}  # OpenCV 5's route, run on OpenCV 4's ONNX importer
    return {b: Detector(cfg, weights, backend=b.split("-")[0], thresh=THRESH, names=names,
                        **options[b]) for b in options}


def _matches(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[str]:
    """Problems matching ``ours`` to ``ref``: same class, box within BOX_PX; an entry without
    a partner is allowed only at the threshold."""
    problems = []
    unused = list(ref)
    for entry in ours:
        partner = next((r for r in unused if r["class_id"] == entry["class_id"] and
                        max(abs(a - b) for a, b in zip(r["box"], entry["box"])) <= BOX_PX),
                       None)
        if partner is not None:
            unused.remove(partner)
            if abs(partner["prob"] - entry["prob"]) > EDGE:
                problems.append(f"prob {entry['prob']} vs {partner['prob']}")
        elif abs(entry["prob"] - THRESH) > EDGE:
            problems.append(f"unmatched {entry}")
    problems += [f"missing {r}" for r in unused if abs(r["prob"] - THRESH) > EDGE]
    return problems


def test_backends_agree_on_real_yolov3_tiny(detectors: dict[str, Detector]) -> None:
    total = 0
    for photo in _photos():
        image = cv2.imread(str(photo))
        found = {b: d.detect(image) for b, d in detectors.items()}
        total += len(found["torch"])
        for backend in ("opencv", "onnx", "opencv-onnx"):
            problems = _matches(found[backend], found["torch"])
            assert not problems, f"{photo.name} {backend}: {problems}"
            assert ([e["class_id"] for e in found[backend]]
                    == [e["class_id"] for e in found["torch"]]), photo.name
    assert total >= 5  # the comparison is not vacuous


def test_detector_path_and_array_agree(detectors: dict[str, Detector]) -> None:
    detector = detectors["torch"]
    photo = _photos()[-1]
    from_path = detector.detect(photo)
    from_array = detector.detect(cv2.imread(str(photo)))
    assert from_path and all(e["image"] == str(photo) for e in from_path)
    assert from_array == [dict(e, image=None) for e in from_path]
    assert {"image", "class_id", "name", "prob", "box"} == set(from_path[0])


def test_detector_matches_detect_cli(detectors: dict[str, Detector], tmp_path: Path) -> None:
    """``darkcsp detect --backend opencv --json`` writes what ``Detector.detect`` returns."""
    model_dir = require(YOLOV3_TINY)
    photo = _photos()[-1]
    out = tmp_path / "dets.json"
    assert main(["detect", str(model_dir / "yolov3-tiny.cfg"),
                 str(model_dir / "yolov3-tiny.weights"), str(photo), "--backend", "opencv",
                 "--thresh", str(THRESH), "--names", str(model_dir / "coco.names"),
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == detectors["opencv"].detect(photo)


def test_detector_folder_and_video(detectors: dict[str, Detector], tmp_path: Path) -> None:
    detector = detectors["onnx"]
    photos = _photos()[-2:]
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    (folder / "notes.txt").write_text("not an image")
    singles = [e for p in sorted(folder.glob("*.png")) for e in detector.detect(p)]
    assert detector.detect_folder(folder, batch_size=2, progress=False) == singles

    video = tmp_path / "clip.avi"
    frame = cv2.imread(str(photos[0]))
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (width, height))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for photo in [photos[0], photos[1], photos[0]]:
        writer.write(cv2.resize(cv2.imread(str(photo)), (width, height)))
    writer.release()
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 3
    result = list(detector.detect_video(video, batch_size=2))
    assert [i for i, _ in result] == [0, 1, 2]
    assert [found for _, found in result] == [detector.detect(f) for f in frames]
    assert [i for i, _ in detector.detect_video(video, stride=2)] == [0, 2]


# -- one pipeline: .pt weights, the command, detect_image ---------------------------------------

@pytest.fixture
def tiny_files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(cfg, .weights, .pt, image): a random-weight 64x64 two-head detector (BN non-trivial)
    saved both ways, and a 90x70 noise image (many random detections)."""
    from darkcsp.checkpoint import save_pt
    from train_support import tiny_cfg

    cfg = tiny_cfg(tmp_path)
    model = _random_model(cfg.read_text(), seed=1)
    model.save_weights(tmp_path / "tiny.weights")
    save_pt(model, tmp_path / "tiny.pt")
    image = tmp_path / "noise.png"
    cv2.imwrite(str(image), np.random.default_rng(2).integers(0, 255, (70, 90, 3), np.uint8))
    return cfg, tmp_path / "tiny.weights", tmp_path / "tiny.pt", image


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_detector_takes_pt_weights(tiny_files, backend: str) -> None:
    cfg, weights, pt, image = tiny_files
    from_weights = Detector(cfg, weights, backend=backend, thresh=0.2).detect(image)
    from_pt = Detector(cfg, pt, backend=backend, thresh=0.2).detect(image)
    assert len(from_weights) > 3 and from_pt == from_weights


def test_detect_command_is_the_detector(tiny_files, tmp_path: Path) -> None:
    """``darkcsp detect`` (a .pt, --letterbox, torch backend) writes Detector.detect's entries."""
    cfg, _, pt, image = tiny_files
    out = tmp_path / "dets.json"
    assert main(["detect", str(cfg), str(pt), str(image), "--thresh", "0.2", "--letterbox",
                 "--json", str(out)]) == 0
    expected = Detector(cfg, pt, thresh=0.2, letterbox=True).detect(image)
    assert len(expected) > 3 and json.loads(out.read_text()) == expected
    stretched = Detector(cfg, pt, thresh=0.2).detect(image)
    assert [e["box"] for e in stretched] != [e["box"] for e in expected]


def test_detect_image_wraps_the_detector_on_a_model(tiny_files) -> None:
    """detect_image / detect_rows (the module as it is, RGB arrays) give the file Detector's
    detections (fused, oneDNN convs): same classes, boxes within 1e-3 px."""
    from darkcsp.checkpoint import load_model
    from darkcsp.infer import detect_image, detect_rows, load_image

    cfg, weights, _, image = tiny_files
    reference = Detector(cfg, weights, thresh=0.2).detect(image)
    model = load_model(cfg, weights)
    for source in (image, (load_image(image) * 255).round().astype(np.uint8)):
        found = detect_image(model, source, thresh=0.2)
        assert [e["class_id"] for e in found] == [e["class_id"] for e in reference]
        assert max(abs(a - b) for f, r in zip(found, reference)
                   for a, b in zip(f["box"], r["box"])) < 1e-3
    rows, width, height = detect_rows(model, image, thresh=0.2)
    assert (width, height) == (90, 70) and rows.shape[1] == 5 + 3
    with pytest.raises(DarkcspError, match="2 names but the network has 3 classes"):
        Detector(cfg, weights, names=["only", "two"])


def test_torch_threads_is_set_for_the_block_and_restored() -> None:
    """Pre-processing next to another engine's forward runs on one torch thread; the count
    comes back afterwards, also when the block raises."""
    import torch

    from darkcsp.infer.backends import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
