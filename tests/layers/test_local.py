"""``[local]`` and ``[crnn]`` against direct re-implementations of Darknet's C loops.

No Darknet oracle case covers these layers, so the references below read the raw ``.weights``
float stream with Darknet's own indexing (forward_local_layer's per-location gemm over
im2col_cpu's columns; forward_crnn_layer's three convs and state sums). Getting the stream order
or the tensor layout wrong therefore fails here, not only the forward formula.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from darkcsp import CfgError, Darknet
from darkcsp.config.reader import read_cfg
from darkcsp.lower import build_graph
from darkcsp.weights import expected_size

HEADER = struct.pack("<iiiQ", 0, 2, 5, 0)


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.1 * x)


def _load_random(model: Darknet, path: Path, seed: int) -> np.ndarray:
    """Load random floats (small, so deep products stay O(1)) into ``model``; the float stream."""
    count = (expected_size(model) - len(HEADER)) // 4
    floats = np.random.default_rng(seed).uniform(-0.5, 0.5, count).astype(np.float32)
    path.write_bytes(HEADER + floats.astype("<f4").tobytes())
    model.load_weights(path)
    return floats.astype(np.float64)


def _im2col(image: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    """im2col_cpu: (c*size*size, out_h*out_w), row = (channel, kernel row, kernel column)."""
    c, h, w = image.shape
    out_h, out_w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    cols = np.zeros((c * size * size, out_h * out_w))
    for row in range(c * size * size):
        w_off, h_off, c_im = row % size, (row // size) % size, row // size // size
        for y in range(out_h):
            for x in range(out_w):
                iy, ix = h_off + y * stride - pad, w_off + x * stride - pad
                if 0 <= iy < h and 0 <= ix < w:
                    cols[row, y * out_w + x] = image[c_im, iy, ix]
    return cols


def _local_reference(stream: np.ndarray, image: np.ndarray, n: int, size: int, stride: int,
                     pad: int) -> np.ndarray:
    """forward_local_layer: biases, then per location j the (n x k) matrix at j*k*n."""
    c, h, w = image.shape
    out_h = (h - (1 if pad else size)) // stride + 1
    out_w = (w - (1 if pad else size)) // stride + 1
    locations, k = out_h * out_w, size * size * c
    biases, weights = stream[:n * locations], stream[n * locations:]
    assert weights.size == k * n * locations
    cols = _im2col(image, size, stride, pad)
    out = biases.copy()
    for j in range(locations):
        a = weights[j * k * n:(j + 1) * k * n].reshape(n, k)
        out[j::locations] += a @ cols[:, j]  # output index m*locations + j
    return _leaky(out).reshape(n, out_h, out_w)


LOCAL_CASES = [  # (W, H, C, filters, size, stride, pad)
    (7, 6, 3, 4, 3, 1, 1),  # YOLOv1's form, non-square input
    (9, 8, 2, 3, 3, 2, 1),
    (8, 7, 2, 5, 2, 2, 0),
    (5, 5, 3, 2, 5, 1, 0),
]


@pytest.mark.parametrize("case", LOCAL_CASES, ids=str)
def test_local_forward_and_stream(case: tuple[int, ...], tmp_path: Path) -> None:
    w, h, c, n, size, stride, pad = case
    cfg = (f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n"
           f"[local]\nfilters={n}\nsize={size}\nstride={stride}\npad={pad}\nactivation=leaky\n")
    model = Darknet(cfg).eval()
    stream = _load_random(model, tmp_path / "l.weights", seed=w * 100 + size)
    image = np.random.default_rng(1).random((c, h, w)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(image)[None])[0][0].double().numpy()
    reference = _local_reference(stream, image.astype(np.float64), n, size, stride, pad)
    shape = model.nodes[0].out_shape
    assert out.shape == reference.shape == (shape.c, shape.h, shape.w)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    assert model.total_bflops() == 0.0  # make_local_layer never sets l.bflops


@pytest.mark.parametrize("size,pad", [(1, 1), (5, 1), (3, 2)])
def test_local_pad_inconsistent_with_im2col_is_rejected(size: int, pad: int) -> None:
    """With pad set, Darknet sizes the output (in-1)/stride+1 but im2col pads by `pad` pixels:
    only size = 2*pad + 1 makes the two agree."""
    cfg = f"[net]\nwidth=8\nheight=8\nchannels=2\n[local]\nfilters=2\nsize={size}\npad={pad}\n"
    with pytest.raises(CfgError) as info:
        build_graph(read_cfg(cfg))
    assert (info.value.section, info.value.key) == ("local", "pad")


def _conv_block(stream: np.ndarray, offset: int, c_in: int, n: int, size: int, bn: bool
                ) -> tuple[dict[str, np.ndarray], int]:
    """load_convolutional_weights: biases, [scales, mean, variance], weights (n, c, k, k)."""
    parts: dict[str, np.ndarray] = {}
    for name in ("biases", *(("scales", "mean", "variance") if bn else ())):
        parts[name] = stream[offset:offset + n]
        offset += n
    count = n * c_in * size * size
    parts["weights"] = stream[offset:offset + count].reshape(n, c_in * size * size)
    return parts, offset + count


def _conv_reference(parts: dict[str, np.ndarray], image: np.ndarray, size: int) -> np.ndarray:
    """forward_convolutional_layer (stride 1, padding size/2): gemm, BN, bias, leaky."""
    c, h, w = image.shape
    out = parts["weights"] @ _im2col(image, size, 1, size // 2)
    if "scales" in parts:
        out = (out - parts["mean"][:, None]) / np.sqrt(parts["variance"][:, None] + 1e-5)
        out = out * parts["scales"][:, None]
    return _leaky(out + parts["biases"][:, None]).reshape(-1, h, w)


@pytest.mark.parametrize("bn", [0, 1])
@pytest.mark.parametrize("shortcut", [0, 1])
def test_crnn_one_step_from_zero_state(bn: int, shortcut: int, tmp_path: Path) -> None:
    c, hidden, output, size = 3, 4, 5, 3
    cfg = ("[net]\nwidth=6\nheight=5\nchannels=3\n"
           f"[crnn]\nbatch_normalize={bn}\nsize={size}\npad=1\noutput={output}\n"
           f"hidden={hidden}\nactivation=leaky\nshortcut={shortcut}\n")
    model = Darknet(cfg).eval()
    stream = _load_random(model, tmp_path / "c.weights", seed=bn + 2 * shortcut)
    if bn:  # variances must be positive
        with torch.no_grad():
            for conv in (model.layers[0].input_layer, model.layers[0].self_layer,
                         model.layers[0].output_layer):
                conv.bn.running_var.abs_().add_(0.5)
        model.save_weights(tmp_path / "c.weights")
        stream = np.frombuffer((tmp_path / "c.weights").read_bytes()[len(HEADER):],
                               dtype="<f4").astype(np.float64)
    input_layer, offset = _conv_block(stream, 0, c, hidden, size, bool(bn))
    self_layer, offset = _conv_block(stream, offset, hidden, hidden, size, bool(bn))
    output_layer, offset = _conv_block(stream, offset, hidden, output, size, bool(bn))
    assert offset == stream.size  # three conv blocks, nothing else

    image = np.random.default_rng(2).random((c, 5, 6))
    state = np.zeros((hidden, 5, 6))
    state = (state if shortcut else 0) + _conv_reference(input_layer, image, size) \
        + _conv_reference(self_layer, state, size)
    reference = _conv_reference(output_layer, state, size)
    with torch.no_grad():
        out = model(torch.from_numpy(image).float()[None])[0][0].double().numpy()
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_crnn_bflops_and_dontloadscales(tmp_path: Path) -> None:
    """BFLOPs: the three sub-convs' float32 terms (xnor /32), summed in float32. dontloadscales
    does not reach the sub-layers (load_convolutional_weights reads their own flag, always 0),
    so a file saved by the same cfg loads."""
    cfg = ("[net]\nwidth=13\nheight=13\nchannels=256\n"
           "[crnn]\nbatch_normalize=1\nsize=3\npad=1\noutput=512\nhidden=256\n"
           "activation=leaky\ndontloadscales=1\n")
    graph = build_graph(read_cfg(cfg))
    terms = [np.float32(2.0 * ci * co * 9 * 169 / 1e9)
             for ci, co in ((256, 256), (256, 256), (256, 512))]
    total = np.float32(np.float32(terms[0] + terms[1]) + terms[2])
    assert graph.total_bflops() == float(total)
    xnor = build_graph(read_cfg(cfg + "xnor=1\n"))
    assert xnor.total_bflops() == float(total) / 32  # /32 is exact in float32

    small = cfg.replace("256", "8").replace("512", "4")
    model = Darknet(small)
    model.save_weights(tmp_path / "s.weights")
    Darknet(small).load_weights(tmp_path / "s.weights")  # would be "bytes too many" if skipped


@pytest.mark.parametrize("geometry", ["stride=2\npad=1", "pad=0", "padding=2"])
def test_crnn_state_must_keep_the_input_size(geometry: str) -> None:
    """make_crnn_layer asserts the input conv's output fits the self/output convs' input."""
    cfg = f"[net]\nwidth=8\nheight=8\nchannels=2\n[crnn]\nsize=3\nhidden=2\n{geometry}\n"
    with pytest.raises(CfgError) as info:
        build_graph(read_cfg(cfg))
    assert info.value.section == "crnn"
