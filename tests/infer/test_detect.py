"""Detection as ``darknet detector test`` does it, checked against Darknet's own numbers.

* box decoding + NMS on every synthetic oracle case with ``dets``/``dets_nms``;
* the real yolov3-tiny on every photo, resize and letterbox: Darknet's detections, both from
  Darknet's own input tensor and through darkcsp's pre-processing of the PNG;
* pre-processing vs Darknet's input tensor (bit-exact today; asserted to 1e-6);
* the ``darkcsp detect`` command.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from reference_data import IMAGES, ORACLE, YOLOV3_TINY, require
from darkcsp import Darknet
from darkcsp.cli import main
from darkcsp.infer import (ImageError, apply_nms, darknet_resize, detect_image,
                           detections_from_rows, drop_empty, get_network_boxes, letterbox,
                           load_image, nms_sort, prepare)
from darkcsp.data.darknet import read_names
from darkcsp.infer.nms import box_diou, box_iou, nms_settings

DET_CASES = ["yolo", "yolo_new_coords", "yolo_scale_x_y", "gaussian_yolo", "region",
             "zoo_detector", "yolov4-tiny-416"]
REAL = ORACLE / "real-yolov3-tiny"
PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "motorcycle_left"]
MODES = ["resize", "letterbox"]
RTOL = 1e-4
# a probability or objectness this close to the threshold may fall on either side of it
# (float rounding in the network); such rows/classes may appear in one result only
EDGE = 2e-5


# -- comparing detection rows -------------------------------------------------------------------

def _near_edge(value: float, thresh: float) -> bool:
    return abs(value - thresh) <= EDGE


def _check_probs(ours: np.ndarray, ref: np.ndarray, thresh: float, where: str) -> None:
    """Class probabilities of matched rows: equal within RTOL, or zero in one of them only
    when the other is at the threshold."""
    both = (ours != 0) & (ref != 0)
    np.testing.assert_allclose(ours[both], ref[both], rtol=RTOL, atol=RTOL * 1e-2,
                               err_msg=where)
    for k in np.flatnonzero((ours != 0) != (ref != 0)):
        value = max(ours[k], ref[k])
        assert _near_edge(value, thresh), f"{where}: class {k} is {ours[k]} vs Darknet {ref[k]}"


def compare_dets(ours: np.ndarray, ref: np.ndarray, thresh: float, where: str) -> None:
    """Row by row, in Darknet's order; a row missing on one side must have its objectness at
    the threshold."""
    assert ours.shape[1] == ref.shape[1], where
    i = j = 0
    while i < len(ours) or j < len(ref):
        if i < len(ours) and j < len(ref) and np.allclose(ours[i, :5], ref[j, :5], rtol=RTOL,
                                                          atol=RTOL * 1e-2):
            _check_probs(ours[i, 5:], ref[j, 5:], thresh, f"{where} row {j}")
            i += 1
            j += 1
        elif j < len(ref) and _near_edge(ref[j, 4], thresh):
            j += 1
        elif i < len(ours) and _near_edge(ours[i, 4], thresh):
            i += 1
        else:
            row = ref[j] if j < len(ref) else None
            mine = ours[i] if i < len(ours) else None
            pytest.fail(f"{where}: row {j} differs:\n darkcsp {mine}\n darknet {row}")


def compare_dets_as_set(ours: np.ndarray, ref: np.ndarray, thresh: float, where: str) -> None:
    """``dets_nms`` rows in any order (Darknet's qsort is not stable), matched by box."""
    scale = RTOL * np.maximum(np.abs(ref[:, :5]), 1e-2)
    close = (np.abs(ours[:, None, :5] - ref[None, :, :5]) <= scale[None]).all(axis=2)
    used = np.zeros(len(ours), dtype=bool)
    for j, row in enumerate(ref):
        found = np.flatnonzero(close[:, j] & ~used)
        if not len(found):
            assert all(_near_edge(p, thresh) for p in row[5:][row[5:] != 0]), \
                f"{where}: Darknet row {row[:5]} has no match"
            continue
        used[found[0]] = True
        _check_probs(ours[found[0], 5:], row[5:], thresh, f"{where} row {j}")
    for i in np.flatnonzero(~used):
        probs = ours[i, 5:]
        assert all(_near_edge(p, thresh) for p in probs[probs != 0]), \
            f"{where}: extra row {ours[i, :5]}"


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# -- synthetic oracle cases ---------------------------------------------------------------------

def _case_model(case: str, fused: bool) -> Darknet:
    folder = require(ORACLE / case)
    model = Darknet(folder / "model.cfg")
    model.load_weights(folder / "model.weights")
    if fused:
        model.fuse()
    return model.eval()


@pytest.mark.parametrize("case", DET_CASES)
def test_oracle_case_dets_and_nms(case: str) -> None:
    """Rows as Darknet's get_network_boxes (fused network, as detector test runs it), then
    NMS of the kind the last head names."""
    model = _case_model(case, fused=True)
    folder = ORACLE / case
    ref = np.load(folder / "out_fused.npz")
    x = torch.from_numpy(np.load(folder / "input.npy"))[None]
    with torch.inference_mode():
        outputs = model(x)
    w, h = model.net.width, model.net.height
    dets = get_network_boxes(model, outputs, w, h, thresh=0.25, letterbox=False)
    compare_dets(dets, ref["dets"], 0.25, case)
    compare_dets_as_set(drop_empty(apply_nms(model, dets, 0.45)), ref["dets_nms"], 0.25, case)
    # NMS alone, on Darknet's own rows: exactly Darknet's set
    mine = drop_empty(apply_nms(model, ref["dets"], 0.45))
    assert sorted(map(tuple, mine)) == sorted(map(tuple, ref["dets_nms"].astype(np.float32)))


@pytest.mark.parametrize("case", [c for c in DET_CASES if c != "yolov4-tiny-416"])
def test_oracle_case_dets_unfused(case: str) -> None:
    """The unfused network decodes to out.npz's rows too (BN not folded)."""
    model = _case_model(case, fused=False)
    ref = np.load(ORACLE / case / "out.npz")
    x = torch.from_numpy(np.load(ORACLE / case / "input.npy"))[None]
    with torch.inference_mode():
        outputs = model(x)
    dets = get_network_boxes(model, outputs, model.net.width, model.net.height, 0.25)
    compare_dets(dets, ref["dets"], 0.25, case)


def test_nms_kind_comes_from_the_last_head() -> None:
    model = _case_model("yolo_scale_x_y", fused=False)
    assert nms_settings(model) == ("greedynms", pytest.approx(0.6))
    assert int(np.load(ORACLE / "yolo_scale_x_y" / "out_fused.npz")["nms_kind"]) == 1


# -- NMS against a plain transcription of Darknet's loops ---------------------------------------

def _naive_nms(dets: np.ndarray, thresh: float, kind: str, beta: float) -> np.ndarray:
    """do_nms_sort / diounms_sort as the C loops run (sort, then i suppresses later j)."""
    out = dets.copy()
    n = len(out)
    boxes = out[:, :4]
    if kind == "default":
        over = box_iou(boxes[:, None], boxes[None])
    else:
        over = box_diou(boxes[:, None], boxes[None], 0.6 if kind == "greedynms" else beta)
    hits = (over > np.float32(thresh)).tolist()
    for k in range(out.shape[1] - 5):
        order = sorted(range(n), key=lambda i: -out[i, 5 + k])
        for a, i in enumerate(order):
            if out[i, 5 + k] == 0:
                continue
            for j in order[a + 1:]:
                if hits[i][j]:
                    out[j, 5 + k] = 0
    return out


@pytest.mark.parametrize("kind,beta", [("default", 0.6), ("greedynms", 0.6), ("diounms", 0.9)])
def test_nms_matches_sequential_greedy(kind: str, beta: float) -> None:
    rng = np.random.default_rng(3)
    n, classes = 120, 3
    dets = np.zeros((n, 5 + classes), dtype=np.float32)
    dets[:, 0:2] = rng.random((n, 2)) * 0.6 + 0.2  # crowded, so chains of suppression occur
    dets[:, 2:4] = rng.random((n, 2)) * 0.3 + 0.05
    dets[:, 4] = 1
    probs = rng.random((n, classes)).astype(np.float32)
    dets[:, 5:] = np.where(probs > 0.3, probs, 0)
    ours = nms_sort(dets, 0.45, kind, beta)
    np.testing.assert_array_equal(ours, _naive_nms(dets, 0.45, kind, beta))
    assert (ours[:, 5:] == 0).sum() > (dets[:, 5:] == 0).sum()  # something was suppressed
    np.testing.assert_array_equal(nms_sort(dets, 0, kind, beta), dets)  # nms 0 = off


def test_nms_zeroes_only_the_same_class() -> None:
    """The lower-scored overlapping box loses that class only; another class at the same place
    survives (moved from the helper darkcsp.train.metrics had)."""
    dets = np.zeros((3, 7), dtype=np.float32)
    dets[:, :4] = [[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]]
    dets[:, 4] = 1
    dets[:, 5:] = [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]]
    np.testing.assert_array_equal(nms_sort(dets, 0.45)[:, 5:],
                                  np.array([[0.9, 0.0], [0.0, 0.0], [0.0, 0.7]], np.float32))


# -- the real yolov3-tiny -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> Darknet:
    """The real yolov3-tiny, fused, built once. Its forward is memoised by input bytes: the
    PNG path feeds the same tensor as Darknet's (when pre-processing is exact), so the network
    runs once per photo and mode (a different input would simply run again)."""
    folder = require(YOLOV3_TINY)
    model = Darknet(folder / "yolov3-tiny.cfg")
    model.load_weights(folder / "yolov3-tiny.weights")
    model.fuse().eval()
    forward = model.forward
    cache: dict[bytes, list[torch.Tensor]] = {}

    def cached(x: torch.Tensor) -> list[torch.Tensor]:
        key = hashlib.sha256(x.detach().cpu().numpy().tobytes()).digest()
        if key not in cache:
            cache[key] = forward(x)
        return cache[key]

    model.forward = cached  # type: ignore[method-assign]
    return model


@pytest.fixture(scope="module")
def coco_names() -> list[str]:
    return read_names(require(YOLOV3_TINY / "coco.names"))


def _oracle(photo: str, mode: str) -> tuple[Any, dict[str, Any]]:
    folder = require(REAL / photo)
    return np.load(folder / f"{mode}.npz"), json.loads((folder / f"{mode}.json").read_text())


def _oracle_entries(ref_json: dict[str, Any]) -> list[dict[str, Any]]:
    entries = []
    for det in ref_json["detections"]:
        px = det["box_pixels"]
        box = [px["left"], px["top"], px["right"], px["bottom"]]
        for cls in det["classes"]:
            entries.append({"class_id": cls["class_id"], "name": cls["name"],
                            "prob": cls["prob"], "box": box})
    return entries


def compare_entries(ours: list[dict[str, Any]], ref_json: dict[str, Any], where: str) -> None:
    """Same detections and classes; boxes within 1 px, probabilities within 0.01."""
    ref = _oracle_entries(ref_json)
    assert len(ours) == len(ref), f"{where}: {len(ours)} detections, Darknet {len(ref)}"
    left = list(ours)
    for entry in ref:
        match = [e for e in left if e["class_id"] == entry["class_id"]
                 and max(abs(a - b) for a, b in zip(e["box"], entry["box"])) <= 1.0]
        assert match, f"{where}: no detection like Darknet's {entry}"
        assert match[0]["name"] == entry["name"]
        assert abs(match[0]["prob"] - entry["prob"]) <= 0.01, where
        left.remove(match[0])
    lefts = [e["box"][0] for e in ours]
    assert lefts == sorted(lefts), f"{where}: not in Darknet's printing order (by left edge)"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("photo", PHOTOS)
def test_real_tiny_from_darknet_input(tiny: Darknet, coco_names: list[str], photo: str,
                                      mode: str) -> None:
    """Network + decoding + NMS, fed Darknet's own input tensor."""
    ref, ref_json = _oracle(photo, mode)
    meta = json.loads(str(ref["meta"]))
    img_w, img_h = meta["orig_w"], meta["orig_h"]
    with torch.inference_mode():
        outputs = tiny(torch.from_numpy(ref["input"])[None])
    assert rel_diff(outputs[0][0].numpy(), ref["L016_yolo"]) <= RTOL
    assert rel_diff(outputs[1][0].numpy(), ref["L023_yolo"]) <= RTOL
    lb = mode == "letterbox"
    for suffix, thresh in (("", 0.25), ("_t0005", 0.005)):
        dets = get_network_boxes(tiny, outputs, img_w, img_h, thresh, lb)
        where = f"{photo}/{mode} thresh {thresh}"
        compare_dets(dets, ref["dets" + suffix], thresh, where)
        after = apply_nms(tiny, dets, 0.45)
        compare_dets_as_set(drop_empty(after), ref["dets_nms" + suffix], thresh, where)
        if thresh == 0.25:
            entries = detections_from_rows(after, img_w, img_h, thresh, coco_names)
            compare_entries(entries, ref_json, where)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("photo", PHOTOS)
def test_real_tiny_from_png(tiny: Darknet, coco_names: list[str], photo: str,
                            mode: str) -> None:
    """The whole path from the PNG file: darkcsp's pre-processing, then detect_image."""
    _, ref_json = _oracle(photo, mode)
    png = require(IMAGES / f"{photo}.png")
    entries = detect_image(tiny, png, 0.25, 0.45, letterbox=mode == "letterbox",
                           names=coco_names)
    compare_entries(entries, ref_json, f"{photo}/{mode} from png")
    assert all(e["image"] == str(png) for e in entries)


# -- pre-processing -----------------------------------------------------------------------------

PREPROCESS_BOUND = 1e-6  # achieved: 0.0 (bit-identical) on every photo and mode


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("photo", PHOTOS)
def test_preprocessing_matches_darknet_input(photo: str, mode: str) -> None:
    ref, _ = _oracle(photo, mode)
    tensor, meta = prepare(require(IMAGES / f"{photo}.png"), 416, 416, mode == "letterbox")
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == ref["input"].shape
    diff = float(np.abs(tensor.numpy() - ref["input"]).max())
    assert diff <= PREPROCESS_BOUND, f"{photo}/{mode}: max abs diff {diff}"
    info = json.loads(str(ref["meta"]))
    assert (meta.orig_w, meta.orig_h) == (info["orig_w"], info["orig_h"])


def _resize_loops(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """image.c resize_image transcribed loop by loop in float32 scalars (CHW)."""
    c_, in_h, in_w = im.shape
    f = np.float32
    part = np.zeros((c_, in_h, w), f)
    out = np.zeros((c_, h, w), f)
    w_scale = f(in_w - 1) / f(w - 1)
    h_scale = f(in_h - 1) / f(h - 1)
    for k in range(c_):
        for r in range(in_h):
            for c in range(w):
                if c == w - 1 or in_w == 1:
                    val = im[k, r, in_w - 1]
                else:
                    sx = f(c) * w_scale
                    ix = int(sx)
                    dx = f(sx - f(ix))
                    val = (f(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, c] = val
    for k in range(c_):
        for r in range(h):
            sy = f(r) * h_scale
            iy = int(sy)
            dy = f(sy - f(iy))
            for c in range(w):
                out[k, r, c] = (f(1) - dy) * part[k, iy, c]
            if r == h - 1 or in_h == 1:
                continue
            for c in range(w):
                out[k, r, c] = out[k, r, c] + dy * part[k, iy + 1, c]
    return out


@pytest.mark.parametrize("src,dst", [((7, 5), (13, 9)), ((16, 16), (5, 7)), ((1, 6), (4, 3)),
                                     ((6, 1), (3, 4)), ((9, 16), (3, 416))])
def test_resize_matches_image_c_loops(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Vectorised resize == the C loops, incl. 1-pixel sources and a height where float
    rounding leaves the last output row with dy ~ 1 (16 -> 416: Darknet then keeps only
    (1-dy) * row 14, a near-black last row; mirrored, not fixed)."""
    (in_w, in_h), (w, h) = src, dst
    im = np.random.default_rng(0).random((2, in_h, in_w), dtype=np.float32)
    ours = darknet_resize(im.transpose(1, 2, 0), w, h).transpose(2, 0, 1)
    np.testing.assert_array_equal(ours, _resize_loops(im, w, h))


@pytest.mark.parametrize("src,dst", [((16, 16), (16, 16)), ((256, 3), (13, 9)), ((1, 6), (4, 3)),
                                     ((6, 1), (3, 4)), ((741, 500), (416, 416))])
def test_bytes_resize_like_the_float_image(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Bytes are scaled only where a tap reads them: bit-identical to scaling every byte to
    ``(float)(b / 255.)`` first, for all 256 values, through every entry point (uint8, BGR,
    a reversed-channel view, into a batch slot)."""
    (in_w, in_h), (w, h) = src, dst
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
    u8.reshape(-1)[:256] = np.arange(256)[:u8.size]
    as_float = (u8.astype(np.float64) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(darknet_resize(u8, w, h), _resize_loops(
        as_float.transpose(2, 0, 1), w, h).transpose(1, 2, 0))
    for boxed in (False, True):
        expected, _ = prepare(as_float, w, h, boxed)
        bgr = np.ascontiguousarray(u8[:, :, ::-1])
        batch = torch.full((2, 3, h, w), -1.0)
        for got in (prepare(u8, w, h, boxed)[0], prepare(bgr, w, h, boxed, bgr=True)[0],
                    prepare(bgr[:, :, ::-1], w, h, boxed)[0],
                    prepare(u8, w, h, boxed, out=batch[1])[0]):
            assert torch.equal(got, expected)
        assert torch.equal(batch[1], expected) and bool((batch[0] == -1).all())


def test_letterbox_geometry() -> None:
    img = np.ones((300, 451, 3), np.float32)
    boxed = letterbox(img, 416, 416)
    rows = np.flatnonzero(boxed[:, 0, 0] == 1)  # new_h = 300*416//451 = 276, top = 70
    assert (rows[0], len(rows)) == (70, 276)
    assert boxed[0, 0, 0] == np.float32(0.5) and boxed[-1, -1, 2] == np.float32(0.5)


def test_load_image_gray_is_replicated() -> None:
    img = load_image(require(IMAGES / "camera.png"))
    assert img.shape == (512, 512, 3) and img.dtype == np.float32
    assert np.array_equal(img[..., 0], img[..., 2])


def test_load_image_alpha_and_errors(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 10, 200, 0  # B=10, R=200, fully transparent
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rgba)
    loaded = load_image(path)
    assert loaded.shape == (4, 5, 3)  # alpha dropped, not composited
    assert loaded[0, 0, 0] == np.float32(200 / 255) and loaded[0, 0, 2] == np.float32(10 / 255)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(ImageError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# -- the command --------------------------------------------------------------------------------

def test_cli_detect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = require(YOLOV3_TINY / "yolov3-tiny.cfg")
    weights = YOLOV3_TINY / "yolov3-tiny.weights"
    images = [require(IMAGES / "camera.png"), IMAGES / "coffee.png"]
    out = tmp_path / "dets.json"
    save = tmp_path / "drawn"
    code = main(["detect", str(cfg), str(weights), *map(str, images), "--json", str(out),
                 "--save-dir", str(save), "--names", str(YOLOV3_TINY / "coco.names")])
    assert code == 0
    entries = json.loads(out.read_text())
    for image in images:
        _, ref_json = _oracle(image.stem, "resize")
        mine = [e for e in entries if e["image"] == str(image)]
        compare_entries(mine, ref_json, f"cli {image.name}")
        drawn = cv2.imread(str(save / image.name))
        assert drawn is not None and drawn.shape[:2] == (ref_json["orig_h"], ref_json["orig_w"])
    printed = capsys.readouterr().out
    assert "person: 45%" in printed and "toilet: 40%" in printed  # Darknet's own printout


def test_cli_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clear error naming the file and exit status 2 (Darknet would detect on black)."""
    case = require(ORACLE / "yolo")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    code = main(["detect", str(case / "model.cfg"), str(case / "model.weights"), str(bad)])
    assert code == 2
    assert "broken.png" in capsys.readouterr().err
