"""Hostile inputs: broken weights files and broken cfgs.

Why: a user's first contact with darkcsp is often a wrong file. Every failure must be a
:class:`WeightsError` / :class:`CfgError` that says where the problem is (bytes expected and
found, the layer; file:line [section] key), and a failed load must leave the model untouched.
The property tests mutate valid inputs at random to check that nothing else ever escapes.
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_data import ORACLE, YOLOV3_TINY
from darkcsp.config.reader import read_cfg
from darkcsp.checkpoint import load_pt, save_pt
from darkcsp.errors import CfgError, CfgWarning, WeightsError
from darkcsp.lower import build_graph
from darkcsp.network import Darknet
from darkcsp.summary import format_summary
from darkcsp.weights import WeightsHeader, expected_size

# Raise with DARKCSP_FUZZ_EXAMPLES=5000 for a long hunt; the suite keeps it short.
FUZZ_EXAMPLES = int(os.environ.get("DARKCSP_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"

# A small net with every kind of weight block: conv+BN, conv+bias, weighted shortcut,
# connected+BN, batchnorm.
SMALL = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
filters=8
size=1
activation=linear

[shortcut]
from=-2
weights_type=per_channel
weights_normalization=softmax

[maxpool]
size=2
stride=2

[batchnorm]

[connected]
output=5
batch_normalize=1
activation=linear
"""
HEADER_BYTES = 20


def quiet_model(cfg: object) -> Darknet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        return Darknet(cfg)  # type: ignore[arg-type]


def snapshot(model: Darknet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: Darknet, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"a failed load modified {changed}"


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Darknet, Path, bytes]:
    """A model, a valid weights file for it with random values, and that file's bytes."""
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL)
    source = quiet_model(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    path = tmp_path / "small.weights"
    source.save_weights(path)
    return quiet_model(cfg), path, path.read_bytes()


def write(tmp_path: Path, data: bytes, name: str = "bad.weights") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- weights files ----------------------------------------------------------------------------

def test_valid_file_loads_and_round_trips(small: tuple[Darknet, Path, bytes],
                                          tmp_path: Path) -> None:
    model, path, data = small
    assert len(data) == expected_size(model)
    model.load_weights(path)
    model.save_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == data


@pytest.mark.parametrize("cut", [HEADER_BYTES, HEADER_BYTES + 4 * 8 + 2, -4, -1])
def test_truncated_file_names_sizes_and_layer(small: tuple[Darknet, Path, bytes],
                                              tmp_path: Path, cut: int) -> None:
    model, _, data = small
    truncated = data[:cut]
    path = write(tmp_path, truncated)
    before = snapshot(model)
    with pytest.raises(WeightsError) as info:
        model.load_weights(path)
    message = str(info.value)
    assert f"{len(truncated)} bytes found, {len(data)} expected" in message
    # which layer: the first whose block end lies past the end of the file
    plan, offset = [], HEADER_BYTES
    for index, blocks in model.weight_blocks():
        offset += 4 * sum(b.tensor.numel() for b in blocks)
        plan.append((index, offset))
    index = next(i for i, end in plan if end > len(truncated))
    kind = model.nodes[index].section.type
    assert f"runs out in layer {index} [{kind}] ({tmp_path / 'small.cfg'}:" in message
    assert "Nothing was loaded" in message
    assert_unchanged(model, before)


def test_oversized_file(small: tuple[Darknet, Path, bytes], tmp_path: Path) -> None:
    model, _, data = small
    path = write(tmp_path, data + b"\0" * 12)
    before = snapshot(model)
    with pytest.raises(WeightsError, match=rf"{len(data) + 12} bytes found, {len(data)} "
                                           r"expected .*12 bytes too many"):
        model.load_weights(path)
    assert_unchanged(model, before)


def test_cutoff_loads_a_prefix_and_rejects_a_short_prefix(small: tuple[Darknet, Path, bytes],
                                                          tmp_path: Path) -> None:
    model, path, data = small
    model.load_weights(path)
    model.save_weights(tmp_path / "backbone.weights", cutoff=2)
    fresh = quiet_model(SMALL)
    fresh.load_weights(tmp_path / "backbone.weights", cutoff=2)
    assert torch.equal(fresh.layers[1].conv.weight, model.layers[1].conv.weight)
    before = snapshot(fresh)
    with pytest.raises(WeightsError, match="for the first 3 layers of this cfg; the file runs "
                                           r"out in layer 2 \[shortcut\]"):
        fresh.load_weights(tmp_path / "backbone.weights", cutoff=3)
    assert_unchanged(fresh, before)


@pytest.mark.parametrize("header, expected", [
    (b"", "0 bytes is too short"),
    (b"\0" * 10, "10 bytes is too short"),
    (struct.pack("<iii", -1, 2, 5) + b"\0" * 8, r"version -1\.2\.5 is negative"),
    (struct.pack("<iii", 0, 2, 5) + b"\0" * 5, "needs 20 bytes, the file has 17"),
])
def test_bad_header(small: tuple[Darknet, Path, bytes], tmp_path: Path, header: bytes,
                    expected: str) -> None:
    model, _, _ = small
    before = snapshot(model)
    with pytest.raises(WeightsError, match=expected):
        model.load_weights(write(tmp_path, header))
    assert_unchanged(model, before)


def test_old_16_byte_header_is_read(small: tuple[Darknet, Path, bytes], tmp_path: Path) -> None:
    model, _, data = small
    old = WeightsHeader(0, 1, 0, 7)
    assert old.size == 16
    model.load_weights(write(tmp_path, old.to_bytes() + data[HEADER_BYTES:]))
    assert model.header == old


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float(small: tuple[Darknet, Path, bytes], tmp_path: Path,
                          value: float) -> None:
    model, _, data = small
    position = (len(data) - HEADER_BYTES) // 4 - 3
    broken = bytearray(data)
    struct.pack_into("<f", broken, HEADER_BYTES + 4 * position, value)
    before = snapshot(model)
    with pytest.raises(WeightsError, match=rf"float {position} \(byte "
                                           rf"{HEADER_BYTES + 4 * position}\) is not finite"):
        model.load_weights(write(tmp_path, bytes(broken)))
    assert_unchanged(model, before)


def test_missing_file_and_directory(small: tuple[Darknet, Path, bytes], tmp_path: Path) -> None:
    model, _, _ = small
    with pytest.raises(WeightsError, match="cannot read"):
        model.load_weights(tmp_path / "absent.weights")
    with pytest.raises(WeightsError, match="cannot read"):
        model.load_weights(tmp_path)


def test_transposed_connected_weights(small: tuple[Darknet, Path, bytes],
                                      tmp_path: Path) -> None:
    """major > 1000 marks connected weights stored (in, out); they load transposed."""
    model, path, data = small
    model.load_weights(path)
    reference = model.layers[5].linear.weight.detach().clone()
    flipped = bytearray(WeightsHeader(1001, 2, 5, 0).to_bytes() + data[HEADER_BYTES:])
    offset = HEADER_BYTES + 4 * sum(b.tensor.numel() for _, blocks in model.weight_blocks(5)
                                    for b in blocks) + 4 * 5  # past layer 5's biases
    rows, cols = reference.shape
    flipped[offset:offset + 4 * rows * cols] = reference.t().contiguous().numpy().tobytes()
    fresh = quiet_model(SMALL)
    fresh.load_weights(write(tmp_path, bytes(flipped)))
    assert torch.equal(fresh.layers[5].linear.weight, reference)
    fresh.save_weights(tmp_path / "flipped_again.weights")
    assert (tmp_path / "flipped_again.weights").read_bytes() == bytes(flipped)


def test_float64_model_loads_through_the_staging_path(small: tuple[Darknet, Path, bytes]
                                                      ) -> None:
    model, path, _ = small
    model.load_weights(path)
    double = quiet_model(SMALL).double()
    double.load_weights(path)
    for key, value in model.state_dict().items():
        assert torch.equal(double.state_dict()[key].to(value.dtype), value), key


@FUZZ
@given(data=st.one_of(st.binary(max_size=2048),
                      st.binary(min_size=8, max_size=8).map(lambda b: b * 400)))
def test_random_bytes_only_raise_weights_error(data: bytes, tmp_path: Path) -> None:
    model = _fuzz_small_model()
    path = write(tmp_path, data, "random.weights")
    before = snapshot(model)
    try:
        model.load_weights(path)
    except WeightsError:
        assert_unchanged(model, before)


@FUZZ
@given(body=st.binary(min_size=0, max_size=64), fill=st.sampled_from([b"\0", b"\x7f", b"\xff"]))
def test_random_files_of_the_right_size(body: bytes, fill: bytes, tmp_path: Path) -> None:
    """Right-sized files with a random header and random floats: loaded or WeightsError."""
    model = _fuzz_small_model()
    size = expected_size(model)
    data = (body + fill * size)[:size]
    path = write(tmp_path, data, "sized.weights")
    before = snapshot(model)
    try:
        model.load_weights(path)
    except WeightsError:
        assert_unchanged(model, before)
    else:
        floats = np.frombuffer(data, "<f4", offset=model.header.size)
        assert np.isfinite(floats).all()


_SMALL_MODEL: list[Darknet] = []


def _fuzz_small_model() -> Darknet:
    if not _SMALL_MODEL:
        _SMALL_MODEL.append(quiet_model(SMALL))
    return _SMALL_MODEL[0]


# -- .pt checkpoints --------------------------------------------------------------------------

def test_pt_of_another_cfg_is_rejected_naming_keys_and_shapes(small: tuple[Darknet, Path, bytes],
                                                              tmp_path: Path) -> None:
    model, path, _ = small
    model.load_weights(path)
    save_pt(model, tmp_path / "small.pt")
    other = quiet_model(SMALL.replace("filters=8\nsize=1", "filters=8\nsize=3\npad=1")
                        .replace("output=5", "output=6"))
    before = snapshot(other)
    with pytest.raises(WeightsError) as info:
        load_pt(other, tmp_path / "small.pt")
    message = str(info.value)
    assert "layers.1.conv.weight (8, 8, 1, 1) vs (8, 8, 3, 3)" in message
    assert "layers.5.linear.weight (5, 512) vs (6, 512)" in message
    assert "Nothing was loaded" in message
    assert_unchanged(other, before)
    fewer = quiet_model(SMALL.split("[batchnorm]")[0])
    with pytest.raises(WeightsError, match=r"unexpected layers\.4\.bn\.weight"):
        load_pt(fewer, tmp_path / "small.pt")


def test_pt_garbage_and_foreign_files(small: tuple[Darknet, Path, bytes], tmp_path: Path) -> None:
    model, _, data = small
    before = snapshot(model)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_pt(model, write(tmp_path, data, "weights_renamed.pt"))
    torch.save({"model": 1}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match="not a darkcsp checkpoint"):
        load_pt(model, tmp_path / "foreign.pt")
    save_pt(model, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    with pytest.raises(WeightsError):
        load_pt(model, write(tmp_path, good[:len(good) // 2], "half.pt"))
    with pytest.raises(WeightsError, match="cannot read"):
        load_pt(model, tmp_path / "absent.pt")
    assert_unchanged(model, before)


def test_pt_with_nan_is_rejected(small: tuple[Darknet, Path, bytes], tmp_path: Path) -> None:
    model, path, _ = small
    model.load_weights(path)
    payload = torch.load(_saved(model, tmp_path), weights_only=True)
    payload["state_dict"]["layers.0.bn.running_var"][3] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    fresh = quiet_model(SMALL)
    before = snapshot(fresh)
    with pytest.raises(WeightsError, match=r"layers\.0\.bn\.running_var holds NaN"):
        load_pt(fresh, tmp_path / "nan.pt")
    assert_unchanged(fresh, before)


def _saved(model: Darknet, tmp_path: Path) -> Path:
    save_pt(model, tmp_path / "saved.pt")
    return tmp_path / "saved.pt"


def test_pt_without_a_model_builds_one_from_its_cfg(small: tuple[Darknet, Path, bytes],
                                                    tmp_path: Path) -> None:
    model, path, _ = small
    model.load_weights(path)
    loaded = load_pt(None, _saved(model, tmp_path))
    assert loaded.header == model.header
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


_GOOD_PT: list[bytes] = []


def _good_pt(tmp_path: Path) -> bytes:
    if not _GOOD_PT:
        save_pt(_fuzz_small_model(), tmp_path / "good.pt")
        _GOOD_PT.append((tmp_path / "good.pt").read_bytes())
    return _GOOD_PT[0]


@FUZZ
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on a flipped byte
@given(cut=st.integers(0, 100_000), flips=st.lists(st.tuples(st.integers(0, 100_000),
                                                             st.integers(0, 255)), max_size=8))
def test_corrupted_pt_only_raises_weights_error(cut: int, flips: list[tuple[int, int]],
                                                tmp_path: Path) -> None:
    """Truncated or bit-flipped checkpoints: loaded (the flips hit only data) or WeightsError."""
    data = bytearray(_good_pt(tmp_path))
    for at, value in flips:
        data[at % len(data)] = value
    if cut % 3 == 0:  # a third of the examples are also truncated
        data = data[:cut % len(data)]
    model = _fuzz_small_model()
    before = snapshot(model)
    try:
        load_pt(model, write(tmp_path, bytes(data), "corrupt.pt"))
    except WeightsError:
        assert_unchanged(model, before)


# -- broken cfgs ------------------------------------------------------------------------------

CONV = "[convolutional]\nfilters={filters}\nsize=3\nstride={stride}\npad=1\nactivation=leaky\n"


def conv(filters: int = 8, stride: int = 1) -> str:
    return CONV.format(filters=filters, stride=stride)


def cfg_error(tmp_path: Path, text: str) -> tuple[CfgError, Path]:
    path = tmp_path / "broken.cfg"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        with pytest.raises(CfgError) as info:
            Darknet(path)
    return info.value, path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if line == needle]
    return lines[occurrence - 1]


def assert_place(error: CfgError, path: Path, line: int, section: str, key: str | None) -> None:
    place = f"{path}:{line} [{section}]" + (f" {key}" if key else "")
    assert str(error).startswith(place + ": "), (str(error), place)
    assert (error.source, error.line, error.section, error.key) == (str(path), line, section,
                                                                    key)


@pytest.mark.parametrize("body, section, key, needle, expected", [
    ("[convolutional]\nfilters=-8\n", "convolutional", "filters", "filters=-8", "minimum"),
    ("[convolutional]\nfilters=8\nsize=99\n", "convolutional", "size", "size=99",
     "does not fit"),
    ("[convolutional]\nfilters=9\ngroups=2\n", "convolutional", "filters", "filters=9",
     "not divisible"),
    ("[convolutional]\nfilters=8\ngroups=3\n", "convolutional", "groups", "groups=3",
     "not divisible"),
    ("[upsample]\nstride=0\n", "upsample", "stride", "stride=0", "must not be 0"),
    ("[maxpool]\nsize=2\nstride=x\n", "maxpool", "stride", "stride=x", "expected an integer"),
    ("[shortcut]\nfrom=-1\nweights_type=per_pixel\n", "shortcut", "weights_type",
     "weights_type=per_pixel", "not one of"),
    ("[route]\nlayers=-1\ngroups=2\ngroup_id=2\n", "route", "group_id", "group_id=2",
     "must be below"),
    ("[unknown_layer]\nfilters=3\n", "unknown_layer", None, "[unknown_layer]",
     "unknown section type"),
])
def test_bad_values(tmp_path: Path, body: str, section: str, key: str | None, needle: str,
                    expected: str) -> None:
    text = NET + conv() + body
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, needle), section, key)
    assert expected in str(error)


@pytest.mark.parametrize("section, key, value", [
    ("route", "layers", "2"),      # itself (layer 2)
    ("route", "layers", "3"),      # forward
    ("route", "layers", "0,5"),    # forward, second item
    ("route", "layers", "-3"),     # before layer 0
    ("route", "layers", "-100"),
    ("shortcut", "from", "2"),
    ("shortcut", "from", "7"),
    ("shortcut", "from", "-3"),
    ("sam", "from", "2"),
    ("sam", "from", "-5"),
    ("scale_channels", "from", "4"),
])
def test_dangling_layer_references(tmp_path: Path, section: str, key: str, value: str) -> None:
    text = NET + conv() + conv() + f"[{section}]\n{key}={value}\n" + conv()
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, f"{key}={value}"), section, key)
    assert "layer 2" in str(error) and "outside the earlier layers 0..1" in str(error)


def test_dangling_share_index(tmp_path: Path) -> None:
    text = NET + conv() + conv().replace("activation=leaky", "share_index=1\nactivation=leaky")
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "share_index=1"), "convolutional", "share_index")


def test_share_index_of_a_different_conv(tmp_path: Path) -> None:
    text = NET + conv(8) + conv(16) + conv(8).replace("activation", "share_index=0\nactivation")
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "share_index=0"), "convolutional", "share_index")
    assert "cannot be shared" in str(error)


def test_route_of_different_sizes(tmp_path: Path) -> None:
    text = NET + conv() + conv(stride=2) + "[route]\nlayers=-1,-2\n"
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "layers=-1,-2"), "route", "layers")
    assert "layer 0 is 16x16 but layer 1 is 8x8" in str(error)


def test_shortcut_of_different_sizes(tmp_path: Path) -> None:
    text = NET + conv() + conv(stride=2) + "[shortcut]\nfrom=-2\n"
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "from=-2"), "shortcut", "from")
    assert "16x16" in str(error) and "8x8" in str(error)


def test_sam_of_different_shapes(tmp_path: Path) -> None:
    text = NET + conv(8) + conv(16) + "[sam]\nfrom=-2\n"
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "from=-2"), "sam", "from")


YOLO = "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses={classes}\nnum=3\n"


def test_yolo_with_wrong_filters(tmp_path: Path) -> None:
    text = NET + conv(24) + YOLO.format(classes=80)  # needs 3 * 85 = 255 filters
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "classes=80"), "yolo", "classes")
    assert "24 channels" in str(error) and "need 255" in str(error)


def test_yolo_mask_beyond_the_listed_anchors(tmp_path: Path) -> None:
    text = NET + conv(21) + YOLO.format(classes=2).replace("mask=0,1,2", "mask=0,1,3")
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "mask=0,1,3"), "yolo", "mask")
    assert "mask index 3 needs anchor pair 3, but only 3 pairs are listed" in str(error)


def test_yolo_mask_beyond_num_reads_the_listed_anchors(tmp_path: Path) -> None:
    """Darknet's parse_yolo reads every listed anchor into l.biases, so mask=0,1,3 with num=3
    and four pairs listed uses the fourth pair (with a warning), as Darknet does."""
    text = NET + conv(21) + YOLO.format(classes=2).replace("mask=0,1,2", "mask=0,1,3").replace(
        "anchors=10,14,23,27,37,58", "anchors=10,14,23,27,37,58,81,82")
    path = tmp_path / "model.cfg"
    path.write_text(text)
    with pytest.warns(CfgWarning, match="mask indices \\[3\\] are not below num=3"):
        model = Darknet(path)
    assert model.layers[-1].anchors == [(10.0, 14.0), (23.0, 27.0), (81.0, 82.0)]


@pytest.mark.parametrize("anchors", ["anchors=10,14,23,27,37", "anchors=10,14"])
def test_yolo_with_too_few_anchors_warns_at_the_key(tmp_path: Path, anchors: str) -> None:
    """Darknet fills missing anchors with 0.5; darkcsp does the same but says where."""
    text = NET + conv(21) + YOLO.format(classes=2).replace("anchors=10,14,23,27,37,58", anchors)
    path = tmp_path / "short.cfg"
    path.write_text(text)
    with pytest.warns(CfgWarning, match=rf"{path}:{line_of(text, anchors)} \[yolo\] anchors: "):
        model = Darknet(path)
    assert model.layers[1].anchors[-1][1] == 0.5


def test_region_with_wrong_filters(tmp_path: Path) -> None:
    text = NET + conv(24) + "[region]\nanchors=1,1,2,2\nclasses=20\nnum=2\ncoords=4\n"
    error, path = cfg_error(tmp_path, text)
    assert_place(error, path, line_of(text, "classes=20"), "region", "classes")


def test_layer_shrinking_to_nothing(tmp_path: Path) -> None:
    text = NET + "[maxpool]\nsize=2\nstride=2\n" * 4 + "[maxpool]\nsize=3\nstride=2\npadding=0\n"
    error, _ = cfg_error(tmp_path, text)
    assert "[maxpool] size" in str(error) and "does not fit the 1x1 input" in str(error)


def test_only_net(tmp_path: Path) -> None:
    error, path = cfg_error(tmp_path, NET)
    assert_place(error, path, 1, "net", None)
    assert "no layers" in str(error)


# -- random mutations of valid cfgs -----------------------------------------------------------

def _cfg_texts() -> list[str]:
    texts = []
    tiny = YOLOV3_TINY / "yolov3-tiny.cfg"
    if tiny.is_file():
        text = tiny.read_text()
        texts.append(text.replace("width=416", "width=64").replace("height=416", "height=64"))
    for case in ("zoo_detector", "zoo_classifier"):
        path = ORACLE / case / "model.cfg"
        if path.is_file():
            texts.append(path.read_text())
    return texts or [SMALL]


CFG_TEXTS = _cfg_texts()
VALUES = ["-1", "0", "1", "2", "3", "-2", "-3", "-100", "100", "1000", "abc", "1.5", "-0", "nan",
          "inf", "1e3", "0x10", ",", "1,,2", "-1,-1", "leaky", "linear", "mish", "per_channel",
          "softmax", "relu", "", "#", "=", "[", "1=2"]
GARBAGE = st.text(alphabet="[]=#;,-.0123456789abcxyz_ \t", max_size=24)


@st.composite
def mutated_cfg(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(CFG_TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "value", "value", "garbage",
                                       "number"]))
        if action == "delete":
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "garbage":
            lines.insert(at, draw(GARBAGE))
        else:
            with_value = [i for i, line in enumerate(lines) if "=" in line]
            if not with_value:
                continue
            at = draw(st.sampled_from(with_value))
            value = (draw(st.sampled_from(VALUES)) if action == "value"
                     else str(draw(st.integers(-40, 300))))
            lines[at] = lines[at].split("=", 1)[0] + "=" + value
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=mutated_cfg())
def test_mutated_cfgs_only_raise_cfg_error(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        try:
            with torch.device("meta"):
                model = Darknet(text)
        except CfgError:
            return
        assert format_summary(model).splitlines()[-1].startswith("Total parameters ")
        build_graph(read_cfg(model.cfg_text))  # what we would write reads back


@settings(FUZZ, max_examples=max(1, FUZZ_EXAMPLES // 3))
@given(text=mutated_cfg())
def test_mutated_cfgs_that_build_also_run(text: str) -> None:
    """A cfg that builds must give a model that runs (real tensors, a tiny input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        try:
            with torch.device("meta"):
                meta = Darknet(text)
        except CfgError:
            return
        if expected_size(meta) > 4_000_000 * 4 or any(  # keep the real build cheap; a huge
                max(node.opts.get(k) or 0 for k in ("size", "padding")) > 16  # pool pads a lot
                for node in meta.nodes):
            return
        model = Darknet(text).eval()
    net = model.net
    with torch.no_grad():
        outputs = model(torch.rand(1, net.channels, net.height, net.width))
    assert outputs and all(o is not None for o in outputs)
