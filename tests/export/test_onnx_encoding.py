"""The ONNX encoding of ``[maxpool]`` and ``[upsample]``: one ``MaxPool`` with Darknet's asymmetric
``pads`` (no -inf Pad, no Slice: ONNX Runtime's static quantization cannot calibrate -inf) and one
nearest ``Resize``, exact against darkcsp in ONNX Runtime and in OpenCV's ``readNetFromONNX``.

Inputs lie in [-2, -1], so a pad read as 0 instead of -inf would show in every border cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darkcsp import Darknet
from darkcsp.export.onnx import export_onnx, output_names

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

TOLERANCE = 1e-4
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"

# (input w x h, maxpool keys): Darknet's default padding = size - 1 and explicit ones
MAXPOOLS = {
    "2/2 even": ((12, 12), "size=2\nstride=2"),
    "2/2 odd": ((13, 13), "size=2\nstride=2"),
    "2/2 odd w, even h": ((13, 10), "size=2\nstride=2"),
    "2/1": ((13, 13), "size=2\nstride=1"),
    "3/1": ((13, 13), "size=3\nstride=1"),
    "3/2 odd": ((13, 13), "size=3\nstride=2"),
    "3/2 even": ((12, 12), "size=3\nstride=2"),
    "5/1 spp": ((13, 13), "size=5\nstride=1"),
    "9/1 spp": ((13, 13), "size=9\nstride=1"),
    "13/1 spp": ((13, 13), "size=13\nstride=1"),
    "2/2 padding=0 odd": ((13, 13), "size=2\nstride=2\npadding=0"),
    "3/2 padding=0": ((13, 13), "size=3\nstride=2\npadding=0"),
    "3/2 padding=1": ((12, 12), "size=3\nstride=2\npadding=1"),
    "3/1 padding=3": ((11, 11), "size=3\nstride=1\npadding=3"),
    "4/3 padding=5": ((14, 14), "size=4\nstride=3\npadding=5"),
    "2 stride_x=2 stride_y=1": ((12, 12), "size=2\nstride_x=2\nstride_y=1"),
}
# padding so large that a pad reaches the kernel size (ONNX Runtime refuses such MaxPool pads):
# the explicit -inf Pad encoding stays, and must stay exact
WIDE_PADDING = {"2/1 padding=4": ((9, 9), "size=2\nstride=1\npadding=4")}
UPSAMPLES = {"stride=2": "stride=2", "stride=3": "stride=3",
             "stride=2 scale=0.5": "stride=2\nscale=0.5"}


def _check(cfg: str, tmp_path: Path) -> "onnx.ModelProto":
    """Export ``cfg``; ONNX Runtime and OpenCV match darkcsp at batch 2; the model proto."""
    model = Darknet(cfg).eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    net = model.net
    x = torch.rand(2, 3, int(net.height), int(net.width),
                   generator=torch.Generator().manual_seed(0)) - 2.0
    with torch.inference_mode():
        ref = [o.numpy() for o in model(x)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for got, expected in zip(session.run(None, {"images": x.numpy()}), ref):
        assert got.shape == expected.shape
        _assert_close(got, expected)
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    reader = cv2.dnn.readNetFromONNX(str(path))
    for one in range(2):  # OpenCV's importer, one image at a time
        reader.setInput(x[one:one + 1].numpy())
        for got, expected in zip(reader.forward(output_names(model)), ref):
            got = np.asarray(got).reshape(expected[one:one + 1].shape)
            _assert_close(got, expected[one:one + 1])
    return proto


def _assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Within TOLERANCE. A window wholly in the padding (only with a padding beyond the kernel)
    is -inf in darkcsp and ONNX Runtime, -FLT_MAX in OpenCV and Darknet: the same here."""
    lowest = np.finfo(np.float32).min
    np.testing.assert_allclose(np.maximum(got, lowest), np.maximum(expected, lowest), rtol=0,
                               atol=TOLERANCE)


def _ops(proto: "onnx.ModelProto") -> list[str]:
    return [node.op_type for node in proto.graph.node]


@pytest.mark.parametrize("case", list(MAXPOOLS))
def test_maxpool_is_one_onnx_maxpool_with_pads(case: str, tmp_path: Path,
                                               single_thread: None) -> None:
    (w, h), keys = MAXPOOLS[case]
    proto = _check(NET.format(w=w, h=h) + f"[maxpool]\n{keys}\n", tmp_path)
    assert _ops(proto) == ["MaxPool"]
    node = proto.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert len(attrs["pads"]) == 4 and attrs.get("ceil_mode", 0) == 0
    size = attrs["kernel_shape"][0]
    assert all(0 <= p < size for p in attrs["pads"])


def test_spp_block_and_a_conv_net(tmp_path: Path, single_thread: None) -> None:
    """SPP's three stride-1 pools on a conv output, routed together, and a 2/2 pool after it:
    no Pad or Slice anywhere, every MaxPool fed by the tensor itself."""
    conv = "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=linear\n\n"
    spp = "".join(f"[maxpool]\nsize={k}\nstride=1\n\n[route]\nlayers=-{2 if i else 1}\n\n"
                  for i, k in enumerate((5, 9))) + "[maxpool]\nsize=13\nstride=1\n\n"
    cfg = (NET.format(w=15, h=15) + conv + spp + "[route]\nlayers=-1,-3,-5,-6\n\n"
           "[maxpool]\nsize=2\nstride=2\n\n" + conv)
    proto = _check(cfg, tmp_path)
    ops = _ops(proto)
    assert "Pad" not in ops and "Slice" not in ops
    assert ops.count("MaxPool") == 4
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        if node.op_type == "MaxPool":
            assert producers.get(node.input[0]) not in ("Pad", "Slice")
            assert any(a.name == "pads" for a in node.attribute)


@pytest.mark.parametrize("case", list(WIDE_PADDING))
def test_maxpool_with_pads_beyond_the_kernel_stays_exact(case: str, tmp_path: Path,
                                                         single_thread: None) -> None:
    (w, h), keys = WIDE_PADDING[case]
    _check(NET.format(w=w, h=h) + f"[maxpool]\n{keys}\n", tmp_path)


@pytest.mark.parametrize("case", list(UPSAMPLES))
def test_upsample_is_one_nearest_resize(case: str, tmp_path: Path, single_thread: None) -> None:
    proto = _check(NET.format(w=7, h=5) + f"[upsample]\n{UPSAMPLES[case]}\n", tmp_path)
    ops = _ops(proto)
    assert ops[0] == "Resize" and ops.count("Resize") == 1
    assert ops == (["Resize"] if "scale" not in case else ["Resize", "Mul"])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in proto.graph.node[0].attribute}
    assert attrs["mode"] == b"nearest"
