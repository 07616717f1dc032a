"""Budgets before allocation (issue 10, Build 4).

Why: a few bytes of cfg could ask for terabytes (``filters=100000000``, ``width=height=65536``)
or billions of objects (``num=2000000000``, ``blocks=2000000000``) and die with a MemoryError,
an allocator abort or a hang. darkcsp must estimate first and refuse with a CfgError naming
file:line. The estimate is checked against figures computed by hand; the attacks run in child
processes under a 4 GiB address-space limit and a timeout, so a regression fails here instead
of taking the machine down.
"""
from __future__ import annotations

import pytest
import torch

from darkcsp import budget
from darkcsp.errors import CfgError
from darkcsp.lower import load_graph
from darkcsp.network import Darknet
from darkcsp.summary import meta_model

from limited import assert_clean_error, run_cli_batch

TINY = """[net]
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=2
size=1
activation=linear
"""

# By hand, in floats at batch 1:
#   input 3x8x8 = 192
#   layer 0: weights 4*3*3*3 = 108, BN scale+bias+mean+var 4*4 = 16, BN's batch counter 1
#            -> 125 parameters; output 4x8x8 = 256
#   layer 1: no parameters; output 4x4x4 = 64
#   layer 2: weights 2*4*1*1 = 8, bias 2 -> 10 parameters; output 2x4x4 = 32
TINY_PARAMETERS = 108 + 16 + 1 + 10
TINY_ACTIVATIONS = 192 + 256 + 64 + 32
TINY_BYTES = 4 * (TINY_PARAMETERS + TINY_ACTIVATIONS)  # 2716


def test_estimate_matches_the_hand_computed_figures():
    estimate = load_graph(TINY).memory_estimate()
    assert estimate.complete
    assert [(c.parameters, c.activations) for c in estimate.layers] == \
        [(125, 256), (0, 64), (10, 32)]
    assert estimate.parameters == TINY_PARAMETERS
    assert estimate.activations == TINY_ACTIVATIONS
    assert estimate.bytes == TINY_BYTES == 2716
    model = Darknet(TINY, max_memory=None)  # the estimate is what the real module holds
    held = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    assert held == TINY_PARAMETERS


def test_budget_is_checked_before_modules_are_made():
    Darknet(TINY, max_memory=TINY_BYTES)  # exactly the estimate fits
    with pytest.raises(CfgError) as info:
        Darknet(TINY, max_memory=TINY_BYTES - 1)
    message = str(info.value)
    # the costliest layer (layer 0: 125 + 256 floats) is named by its file:line
    assert message.startswith("<cfg text>:6 [convolutional]:"), message
    assert "2.7 KiB" in message and "--max-memory" in message
    assert "layer 0" in message


def test_meta_models_skip_the_memory_budget_but_not_the_counts():
    with torch.device("meta"):
        assert Darknet(TINY, max_memory=1) is not None  # allocates nothing: no budget
    assert meta_model(TINY) is not None  # darkcsp summary
    with pytest.raises(CfgError):
        Darknet(TINY, max_memory=1)
    with torch.device("meta"), pytest.raises(CfgError, match="num"):
        Darknet(TINY + "[yolo]\nclasses=1\nnum=5000\n")


def test_layer_count_limit_stops_lowering_early(monkeypatch):
    import darkcsp.graph

    monkeypatch.setattr(darkcsp.graph, "MAX_LAYERS", 50)
    cfg = TINY + "\n[csp]\nfilters=4\nblocks=1000\n"  # would emit thousands of sections
    with pytest.raises(CfgError, match=r"^<cfg text>:22 \[\w+\]: more than 50 layers"):
        load_graph(cfg)
    with pytest.raises(CfgError, match=r"\[csp\] blocks: 2000000000 is above the maximum"):
        load_graph(TINY + "\n[csp]\nfilters=4\nblocks=2000000000\n")


def test_estimate_stops_early_once_over_the_limit():
    big = TINY.replace("width=8", "width=4096").replace("height=8", "height=4096")
    estimate = load_graph(big).memory_estimate(max_bytes=1 << 20)
    assert not estimate.complete and estimate.parameters == 0  # no module was built
    with pytest.raises(CfgError, match="at least"):
        budget.check_memory(estimate, 1 << 20)


@pytest.mark.parametrize("text, size", [("8G", 8 << 30), ("512MiB", 512 << 20), ("1.5k", 1536),
                                        ("1000", 1000), ("none", None)])
def test_memory_sizes(text, size):
    assert budget.parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "-1", "0", "8X", "nan", "1e9"])
def test_bad_memory_sizes(text):
    with pytest.raises(ValueError):
        budget.parse_bytes(text)


def test_default_budget_is_a_fraction_of_available_memory():
    available = budget.available_memory()
    assert available is not None and available > 0
    assert budget.resolve_max_memory() <= available * budget.MEMORY_FRACTION + 1


CONV = "[convolutional]\nfilters={filters}\nsize=3\npad=1\nactivation=leaky\n"
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"
ATTACKS = {
    "num": NET.format(w=32, h=32) + CONV.format(filters=18) + "\n[yolo]\nclasses=1\n"
                                                            "num=2000000000\n",
    "blocks": NET.format(w=32, h=32) + CONV.format(filters=8) + "\n[csp]\nfilters=8\n"
                                                              "blocks=2000000000\n",
    "layers": NET.format(w=32, h=32) + CONV.format(filters=8) + "\n[csp]\nfilters=8\n"
                                                              "blocks=15000\n",
    "filters": NET.format(w=32, h=32) + CONV.format(filters=100000000),
    "size": NET.format(w=65536, h=65536) + CONV.format(filters=16),
}


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    for name, text in ATTACKS.items():
        (root / f"{name}.cfg").write_text(text)
    (root / "tiny.cfg").write_text(TINY)
    Darknet(TINY).save_weights(root / "tiny.weights")
    (root / "dummy.weights").write_bytes(b"\0" * 64)
    jobs = {
        "summary num": ["summary", "num.cfg"],
        "summary blocks": ["summary", "blocks.cfg"],
        "summary size": ["summary", "size.cfg"],
        "summary layers": ["summary", "layers.cfg"],
        "convert filters": ["convert", "filters.cfg", "dummy.weights", "f.pt"],
        "convert size": ["convert", "size.cfg", "dummy.weights", "s.pt"],
        "convert tiny 1K": ["convert", "tiny.cfg", "tiny.weights", "t1.pt",
                                   "--max-memory", "1K"],
    }
    return run_cli_batch(jobs, root)


@pytest.mark.parametrize("job, needles", [
    ("summary num", ("num.cfg:14 [yolo] num", "maximum 4096")),
    ("summary blocks", ("blocks.cfg:14 [csp] blocks", "maximum 20000")),
    ("summary layers", ("layers.cfg:12", "20,000 layers")),
    ("convert filters", ("filters.cfg:6 [convolutional]", "memory budget")),
    ("convert size", ("size.cfg:6 [convolutional]", "memory budget")),
    ("convert tiny 1K", ("tiny.cfg:6 [convolutional]", "1.0 KiB")),
])
def test_attack_is_a_one_line_cfg_error(attacks, job, needles):
    assert_clean_error(attacks[job], *needles)


def test_summary_stays_instant_on_huge_cfgs(attacks):
    result = attacks["summary size"]  # 65536 x 65536: shapes only, on the meta device
    assert result.rc == 0, result.describe()
    assert "Total parameters" in result.stdout
