"""The CSPNet dialect: each macro section against a hand-written reference, the zoo against the
public cfgs and the paper's numbers, and malformed dialect against clear errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from darkcsp import CfgError, Darknet
from darkcsp.config.writer import format_cfg
from darkcsp.lower import load_graph
from darkcsp.weights import expected_size
from reference_data import CFG_CORPUS, REPO, require

ZOO = REPO / "cfg"
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n"


def conv(filters: int, size: int = 1, stride: int = 1, activation: str = "leaky",
         bn: int = 1) -> str:
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation={activation}\n\n")


def randomize(model: Darknet, seed: int = 0) -> Darknet:
    """Random weights in Darknet's ranges (BN variances kept away from 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, blocks in model.weight_blocks():
            for block in blocks:
                values = torch.rand(block.tensor.shape, generator=generator)
                block.tensor.copy_(0.5 + values if block.role == "bn" else (values - 0.5) * 0.6)
    return model.eval()


def run(model: Darknet, size: tuple[int, int] = (32, 32), seed: int = 1) -> list[torch.Tensor]:
    x = torch.rand((1, 3, *size), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model.forward_layers(x)


def lowered_twin(dialect: Darknet) -> Darknet:
    """The model built from the written-out Darknet lowering, with the dialect model's weights."""
    twin = Darknet(format_cfg(dialect.layer_graph.sections))
    with torch.no_grad():
        for (_, mine), (_, theirs) in zip(dialect.weight_blocks(), twin.weight_blocks()):
            for a, b in zip(mine, theirs):
                b.tensor.copy_(a.tensor)
    return twin.eval()


def check_lowering_matches(cfg: str, size: tuple[int, int] = (32, 32)) -> list[torch.Tensor]:
    """Build the dialect cfg and its written lowering; outputs must be identical."""
    model = randomize(Darknet(cfg))
    outputs = run(model, size)
    twin_outputs = run(lowered_twin(model), size)
    assert len(outputs) == len(twin_outputs)
    for a, b in zip(outputs, twin_outputs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return outputs


# -- each dialect section against an independent reference -------------------------------------

def test_maxout_is_interleaved_channel_max() -> None:
    cfg = NET.format(w=8, h=8) + conv(12, 3) + "[maxout]\nk=3\n\n[maxout]\nout_channels=2\n"
    outputs = check_lowering_matches(cfg, (8, 8))
    x = outputs[0].numpy()[0]
    expected = np.max(x.reshape(3, 4, 8, 8), axis=0)  # groups {g, g+4, g+8}
    np.testing.assert_allclose(outputs[1].numpy()[0], expected, rtol=0, atol=0)
    np.testing.assert_allclose(outputs[2].numpy()[0], np.max(expected.reshape(2, 2, 8, 8), 0))


def test_prn_adds_into_leading_channels() -> None:
    cfg = (NET.format(w=16, h=16) + conv(16, 3) + conv(8, 3) + "[prn]\nfrom=-2\n\n"
           + conv(16, 1) + "[prn]\nfrom=1\nactivation=leaky\n\n"
           + "[prn]\nfrom=0\nchannels=4\n")
    outputs = check_lowering_matches(cfg, (16, 16))
    layer0, layer1 = outputs[0], outputs[1]
    np.testing.assert_allclose(outputs[2], layer1 + layer0[:, :8], rtol=1e-6, atol=1e-6)
    added = outputs[3].clone()
    added[:, :8] += layer1  # from=1 names dialect layer 1, i.e. lowered layer 1
    expected = torch.nn.functional.leaky_relu(added, 0.1)
    model_out = outputs[4]
    np.testing.assert_allclose(model_out, expected, rtol=1e-6, atol=1e-6)
    four = model_out.clone()
    four[:, :4] += layer0[:, :4]
    np.testing.assert_allclose(outputs[-1], four, rtol=1e-6, atol=1e-6)


def test_sam_without_from_is_a_logistic_gate() -> None:
    model = randomize(Darknet(NET.format(w=8, h=8) + conv(6, 3) + "[sam]\n"))
    outputs = run(model, (8, 8))
    assert [n.kind.name for n in model.nodes] == ["convolutional", "convolutional", "sam"]
    gate = model.layers[1]
    with torch.no_grad():
        bn = gate.bn
        pre = gate.conv(outputs[0])
        pre = (pre - bn.running_mean[:, None, None]) / torch.sqrt(
            bn.running_var[:, None, None] + 1e-5) * bn.weight[:, None, None] \
            + bn.bias[:, None, None]
    np.testing.assert_allclose(outputs[-1], outputs[0] * torch.sigmoid(pre), rtol=1e-5,
                               atol=1e-6)
    check_lowering_matches(NET.format(w=8, h=8) + conv(6, 3) + "[sam]\n", (8, 8))


@pytest.mark.parametrize("fusion,pool,order", [("last", "none", "transition_first"),
                                               ("last", "max", "route_first"),
                                               ("first", "avg", "transition_first")])
def test_partial_transition(fusion: str, pool: str, order: str) -> None:
    cfg = (NET.format(w=16, h=16) + conv(8, 3) + conv(8, 3)
           + f"[partial_transition]\nroute=-2\nfilters=6\nfusion={fusion}\npool={pool}\n"
             f"order={order}\n")
    model = randomize(Darknet(cfg))
    outputs = run(model, (16, 16))
    kinds = [n.kind.name for n in model.nodes]
    expected = {"last": ["convolutional", "route"], "first": ["route", "convolutional"]}[fusion]
    expected = ["convolutional", "convolutional", *expected]
    if pool != "none":
        expected.append({"max": "maxpool", "avg": "local_avgpool"}[pool])
    assert kinds == expected
    assert outputs[-1].shape[1] == (14 if fusion == "last" else 6)
    check_lowering_matches(cfg, (16, 16))


@pytest.mark.parametrize("block", ["dark", "res", "resnext", "plain", "dense", "pelee"])
@pytest.mark.parametrize("split_mode", ["conv", "slice"])
def test_csp_blocks(block: str, split_mode: str) -> None:
    cfg = (NET.format(w=16, h=16) + conv(16, 3)
           + f"[csp]\nfilters=16\ndownsample=1\nsplit_mode={split_mode}\nblock={block}\n"
             f"blocks=2\ngrowth_rate=8\ngroups=2\nbottleneck=8\n\n" + conv(4, 1))
    outputs = check_lowering_matches(cfg, (16, 16))
    assert outputs[-1].shape == (1, 4, 8, 8)


def test_csp_fusion_strategies_follow_paper_figure_3() -> None:
    """(b) both: T -> concat -> U; (c) first: concat -> U; (d) last: T -> concat."""
    layouts = {}
    for fusion in ("both", "first", "last"):
        cfg = (NET.format(w=16, h=16) + conv(16, 3)
               + f"[csp]\nfilters=16\nblock=dark\nfusion={fusion}\n")
        graph = load_graph(cfg)
        layouts[fusion] = [n.kind.name for n in graph.nodes][-3:]
        check_lowering_matches(cfg, (16, 16))
    assert layouts["both"] == ["convolutional", "route", "convolutional"]
    assert layouts["first"] == ["shortcut", "route", "convolutional"]
    assert layouts["last"] == ["shortcut", "convolutional", "route"]


def test_efm_fuses_three_levels_at_the_middle_scale() -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(16, 3, 2) + conv(32, 3, 2)
           + "[route]\nlayers=1\n\n"
           + "[efm]\nlayers=0,1,2\nfilters=12\nmaxout=4\nsam=1\n")
    model = randomize(Darknet(cfg))
    outputs = run(model, (32, 32))
    assert outputs[-1].shape == (1, 12, 16, 16)
    concat = [n for n in model.nodes if n.kind.name == "route"][-1]
    assert concat.out_shape.c == 8 // 4 + 16 // 4 + 32 // 4
    check_lowering_matches(cfg, (32, 32))


def test_taps_reach_inside_a_macro() -> None:
    cfg = (NET.format(w=16, h=16) + conv(16, 3)
           + "[csp]\nfilters=16\nblock=dark\n\n[route]\nlayers=-1,1:transition\n")
    graph = load_graph(cfg)
    route = graph.nodes[-1]
    transition = [n.index for n in graph.nodes if n.kind.name == "convolutional"][-2]
    assert route.inputs == [route.index - 1, transition]


# -- malformed dialect --------------------------------------------------------------------------

@pytest.mark.parametrize("body,key,line", [
    ("[partial_transition]\nroute=-1\n", "filters", 14),
    ("[csp]\nfilters=16\nsplit=1.0\n", "split", 16),
    ("[efm]\nlayers=0,99\nfilters=8\n", "layers", 15),
    ("[csp]\nfilters=16\n\n[route]\nlayers=-1,1:middle\n", "layers", 18),
    ("[csp]\nfilters=16\n\n[route]\nlayers=1:3\n", "layers", 18),
    ("[maxout]\nk=5\n", "k", 15),
    ("[prn]\n", "from", 14),
])
def test_malformed_dialect_names_file_line_and_key(tmp_path: Path, body: str, key: str,
                                                   line: int) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(NET.format(w=16, h=16) + "\n" + conv(16, 3) + body)
    with pytest.raises(CfgError) as error:
        Darknet(path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line} ["), message
    assert f" {key}:" in message, message


# -- the zoo ------------------------------------------------------------------------------------

PUBLIC_TWINS = {
    "yolov4-tiny.cfg": "alexeyab/yolov4-tiny.cfg",
    "cspdarknet53.cfg": "cspnet/master/csdarknet53.cfg",
    "cspresnet50.cfg": "cspnet/master/csresnet50.cfg",
    "cspresnext50.cfg": "cspnet/master/csresnext50.cfg",
}


def layer_list(graph) -> list[tuple]:
    """What must agree between a lowering and a public cfg: type, inputs, shape, options."""
    return [(n.kind.name, n.inputs, n.out_shape,
             {k: v for k, v in n.opts.items() if k not in ("layers", "from")})
            for n in graph.nodes]


@pytest.mark.parametrize("name", sorted(PUBLIC_TWINS))
def test_zoo_lowering_is_the_public_cfg(name: str) -> None:
    public = require(CFG_CORPUS / PUBLIC_TWINS[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = load_graph(ZOO / name), load_graph(public)
    assert layer_list(ours) == layer_list(theirs)
    with torch.device("meta"):
        assert expected_size(Darknet(ZOO / name)) == expected_size(Darknet(public))


@pytest.mark.parametrize("name", sorted(PUBLIC_TWINS))
def test_zoo_and_public_cfg_give_identical_outputs(name: str) -> None:
    public = require(CFG_CORPUS / PUBLIC_TWINS[name])
    ours = randomize(Darknet(ZOO / name), seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Darknet(public).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        for a, b in zip(ours(x), theirs(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_yolov3_tiny_prn_matches_the_public_numbers() -> None:
    """AlexeyAB's yolov3-tiny-prn.cfg: 3.467 BFLOPs at 416 (Darknet's print), and 19,759,052
    weights bytes (computed from the public cfg's Darknet layer shapes)."""
    with torch.device("meta"):
        model = Darknet(ZOO / "yolov3-tiny-prn.cfg")
    assert f"{model.total_bflops():.3f}" == "3.467"
    assert expected_size(model) == 19_759_052
    prn = [n for n in model.nodes if n.kind.name == "shortcut" and n.inputs[1] == 8]
    assert [(n.in_shapes[0].c, n.in_shapes[1].c) for n in prn] == [(128, 256), (128, 256)]


def test_pelee_numbers_against_the_paper() -> None:
    """Paper/README: PeleeNet 1.017 BFLOPs, CSPPeleeNet 0.888 (-13 %), at 224x224."""
    with torch.device("meta"):
        pelee = Darknet(ZOO / "peleenet.cfg").total_bflops()
        csp = Darknet(ZOO / "csppeleenet.cfg").total_bflops()
    assert abs(pelee - 1.017) / 1.017 <= 0.03
    assert abs(csp - 0.888) / 0.888 <= 0.03
    assert abs((csp / pelee - 1) * 100 - (-13)) <= 2


@pytest.mark.parametrize("name", ["csppeleenet-efm.cfg", "cspdarknet53.cfg", "yolov4-tiny.cfg",
                                  "peleenet.cfg", "csppeleenet.cfg", "yolov3-tiny-prn.cfg",
                                  "cspresnet50.cfg", "cspresnext50.cfg",
                                  "cspdensenet-ref-prn.cfg"])
def test_zoo_cfg_lowers_to_the_same_numbers(name: str) -> None:
    model = randomize(Darknet(ZOO / name), seed=5)
    x = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(6))
    twin = lowered_twin(model)
    with torch.inference_mode():
        for a, b in zip(model(x), twin(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
