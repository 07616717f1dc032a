"""``export --to opencv``: OpenCV 4.x running the exported cfg + weights must compute what darkcsp
computes on the original cfg + weights, for every dialect section, every rewrite of a primitive
OpenCV misreads, and the zoo; and what OpenCV cannot compute must be refused with a CfgError.

Every Darknet layer's output is compared, not only the last, at ``max|a-b| / max|b| <= 1e-4``
(:mod:`opencv_support`, shared with the layer registry sweep).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darkcsp import CfgError, Darknet
from darkcsp.cli import main as cli_main
from darkcsp.export import export_model
from darkcsp.export.opencv import OPENCV_BN_EPS, VARIANCE_SHIFT
from opencv_support import compare_export, export_and_compare, opencv_available, randomize
from reference_data import ORACLE, REPO, oracle_cases, require

if (_NO_OPENCV := opencv_available()) is not None:
    pytest.skip(_NO_OPENCV, allow_module_level=True)

ZOO = REPO / "cfg"
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n\n"


def conv(filters: int, size: int = 1, stride: int = 1, activation: str = "leaky",
         bn: int = 1) -> str:
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation={activation}\n\n")


# -- each dialect section ---------------------------------------------------------------------

@pytest.mark.parametrize("form", ["k=3", "out_channels=4"])
def test_maxout(form: str, tmp_path: Path) -> None:
    cfg = NET.format(w=32, h=32) + conv(12, 3) + f"[maxout]\n{form}\n\n" + conv(6, 3)
    export_and_compare(cfg, tmp_path)


def test_maxout_on_the_network_input(tmp_path: Path) -> None:
    """The rewrite reads its input several times; the network input becomes a layer first."""
    export_and_compare(NET.format(w=32, h=32) + "[maxout]\nout_channels=1\n\n" + conv(4, 3),
                       tmp_path)


@pytest.mark.parametrize("channels", ["", "channels=4\n"])
def test_prn(channels: str, tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(16, 3) + conv(12, 1)
           + f"[prn]\nfrom=-2\n{channels}activation=leaky\n\n" + conv(4, 3))
    export_and_compare(cfg, tmp_path)


def test_sam_without_from(tmp_path: Path) -> None:
    export_and_compare(NET.format(w=32, h=32) + conv(6, 3) + "[sam]\n\n" + conv(4, 3), tmp_path)


@pytest.mark.parametrize("fusion", ["first", "last"])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_partial_transition(fusion: str, pool: str, tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(8, 3)
           + f"[partial_transition]\nroute=-2\nfilters=6\nfusion={fusion}\npool={pool}\n\n"
           + conv(4, 3))
    export_and_compare(cfg, tmp_path)


@pytest.mark.parametrize("block", ["dark", "res", "resnext", "plain", "dense", "pelee"])
@pytest.mark.parametrize("split_mode", ["conv", "slice"])
def test_csp(block: str, split_mode: str, tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(16, 3)
           + f"[csp]\nfilters=16\ndownsample=1\nsplit_mode={split_mode}\nblock={block}\n"
             "blocks=2\ngrowth_rate=8\ngroups=2\nbottleneck=8\npool=avg\n\n" + conv(4, 1))
    export_and_compare(cfg, tmp_path)


def test_efm_with_sam(tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(16, 3, 2) + conv(32, 3, 2)
           + "[route]\nlayers=1\n\n[efm]\nlayers=0,1,2\nfilters=12\nmaxout=4\nsam=1\n\n")
    export_and_compare(cfg, tmp_path)


# -- primitives OpenCV misreads or rejects, rewritten -----------------------------------------

def weighted_shortcut_model(cfg: str, tmp_path: Path) -> Darknet:
    """A model whose shortcut weights are spread out (some negative, for relu normalisation)."""
    path = tmp_path / "weighted.cfg"
    path.write_text(cfg)
    model = randomize(Darknet(path))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.layers:
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter):
                weight.copy_(torch.randn(weight.shape, generator=generator))
    return model


@pytest.mark.parametrize("weights", ["weights_type=per_feature\nweights_normalization=relu",
                                     "weights_type=per_channel\nweights_normalization=softmax"])
def test_weighted_shortcut(weights: str, tmp_path: Path) -> None:
    # from two layers, one with fewer and one with more channels than the output (PRN rule)
    cfg = (NET.format(w=32, h=32) + conv(6, 3) + conv(12, 3) + conv(8, 3)
           + f"[shortcut]\nfrom=-2,-3\n{weights}\nactivation=leaky\n\n" + conv(4, 3))
    export_and_compare(cfg, tmp_path, model=weighted_shortcut_model(cfg, tmp_path))


def test_multi_from_shortcut(tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(8, 3) + conv(8, 3)
           + "[shortcut]\nfrom=-2,-3\nactivation=leaky\n\n" + conv(4, 3))
    export_and_compare(cfg, tmp_path)


def test_multi_input_grouped_route(tmp_path: Path) -> None:
    cfg = (NET.format(w=32, h=32) + conv(8, 3) + conv(12, 3)
           + "[route]\nlayers=-1,-2\ngroups=2\ngroup_id=1\n\n" + conv(4, 3))
    export_and_compare(cfg, tmp_path)


def test_standalone_sections(tmp_path: Path) -> None:
    """[batchnorm], [activation], [local_avgpool], [empty], and [maxpool]/[upsample] written
    without the keys whose defaults differ."""
    cfg = (NET.format(w=32, h=32) + conv(8, 3, bn=0, activation="linear")
           + "[batchnorm]\n\n[activation]\nactivation=mish\n\n"
           + "[local_avgpool]\nsize=2\nstride=2\n\n[empty]\n\n[maxpool]\nstride=1\n\n"
           + "[upsample]\n\n" + conv(4, 3))
    errors = export_and_compare(cfg, tmp_path)
    assert len(errors) == 2 * 8 + 1


def test_aliases_share_index_and_network_header(tmp_path: Path) -> None:
    """OpenCV knows no section aliases and no [network]; it reads a share_index conv's weights
    from the file (Darknet stores none): written as a plain conv with a copy of them."""
    block = "[conv]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
    cfg = (NET.format(w=16, h=16).replace("[net]", "[network]") + block + "\n" + block
           + "\n" + block + "share_index=-1\n\n[max]\nsize=3\nstride=1\n\n"
           "[local_avg]\nsize=2\nstride=2\n\n[silence]\n\n[avg]\n\n"
           "[conn]\noutput=4\nactivation=linear\n\n[soft]\n")
    export_and_compare(cfg, tmp_path, size=(16, 16))
    text = (tmp_path / "opencv" / "model.cfg").read_text()
    assert "share_index" not in text and "[conv]" not in text and "[max]" not in text


def test_classifier_with_connected_bn(tmp_path: Path) -> None:
    """OpenCV reads a connected layer's BN before its weights: folded at export."""
    cfg = (NET.format(w=16, h=16) + conv(8, 3, 2) + "[connected]\noutput=10\n"
           "batch_normalize=1\nactivation=leaky\n\n[connected]\noutput=5\nactivation=linear\n\n"
           "[softmax]\n\n[cost]\n")
    export_and_compare(cfg, tmp_path, size=(16, 16))


# -- the zoo ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["csppeleenet-efm", "yolov4-tiny"])
def test_zoo_detector(name: str, tmp_path: Path) -> None:
    """At 128x128; every layer is compared, the [yolo] outputs decoded as OpenCV does."""
    lines = []
    for line in (ZOO / f"{name}.cfg").read_text().splitlines():
        key = line.partition("=")[0].strip()
        lines.append(f"{key}=128" if key in ("width", "height") else line)
    errors = export_and_compare("\n".join(lines) + "\n", tmp_path, size=(128, 128), twin=False)
    assert sum(key.endswith(":yolo") for key in errors) == 2


# -- the exported files -----------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*unknown key 'nms_threshold'")
def test_exported_cfg_is_canonical_and_weights_are_eps_shifted(tmp_path: Path) -> None:
    cfg = (NET.format(w=16, h=16).replace("[net]", "[network]") + conv(8, 3)
           + "[maxpool]\nstride=2\n\n[upsample]\n\n"
           + conv(18, 1, bn=0, activation="linear")
           + "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n"
             "nms_threshold=0.4\n")
    source = tmp_path / "model.cfg"
    source.write_text(cfg)
    model = randomize(Darknet(source))
    model.save_weights(tmp_path / "model.weights")
    cfg_path, weights_path = export_model(source, tmp_path / "model.weights", tmp_path / "out",
                                          "opencv")
    text = cfg_path.read_text()
    assert "[net]" in text and "[network]" not in text
    assert "size=2\nstride=2\npadding=1" in text  # Darknet's size = stride, written out
    assert "[upsample]\nstride=2" in text
    assert "thresh=0" in text and "nms_threshold" not in text
    assert "activation=linear" in text and "padding=1" in text
    exported = np.fromfile(weights_path, dtype="<f4", offset=20)
    original = np.fromfile(tmp_path / "model.weights", dtype="<f4", offset=20)
    assert exported.size == original.size
    # conv 0: 8 biases, 8 scales, 8 means, 8 variances (+9e-6), then the weights
    np.testing.assert_array_equal(exported[:24], original[:24])
    np.testing.assert_array_equal(exported[24:32], original[24:32] + np.float32(VARIANCE_SHIFT))
    np.testing.assert_array_equal(exported[32:], original[32:])
    assert VARIANCE_SHIFT + OPENCV_BN_EPS == pytest.approx(1e-5)


def test_cli_lower_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "model.cfg"
    source.write_text(NET.format(w=16, h=16) + conv(12, 3) + "[maxout]\nk=3\n")
    randomize(Darknet(source)).save_weights(tmp_path / "model.weights")
    assert cli_main(["lower", str(source), "-o", str(tmp_path / "low.cfg"),
                     "--target", "opencv"]) == 0
    assert cli_main(["export", str(source), str(tmp_path / "model.weights"), "--to", "opencv",
                     str(tmp_path / "out")]) == 0
    lowered = (tmp_path / "low.cfg").read_text()
    exported = (tmp_path / "out" / "model.cfg").read_text()
    assert lowered.partition("\n")[2] == exported.partition("\n")[2]  # past the header line
    assert "maxpool_depth" not in lowered and "[shortcut]" in lowered
    capsys.readouterr()


# -- what OpenCV cannot compute ----------------------------------------------------------------

@pytest.mark.parametrize("body,key", [
    (conv(8, 3, activation="hard_mish"), "activation"),
    (conv(8, 3, activation="relu6"), "activation"),
    ("[convolutional]\nfilters=8\nsize=3\npad=1\ndilation=2\nactivation=leaky\n", "dilation"),
    ("[convolutional]\nfilters=8\nsize=3\npad=1\nstride_x=2\nstride_y=1\nactivation=leaky\n",
     "stride_x"),
    ("[maxpool]\nsize=2\nstride_x=2\nstride_y=1\n", "stride_x"),
    (conv(8, 3) + "[reorg3d]\nstride=2\n", None),
    (conv(8, 3) + "[upsample]\nstride=2\nscale=0.5\n", "scale"),
    (conv(8, 3) + "[upsample]\nstride=-2\n", "stride"),
    (conv(8, 3) + "[softmax]\n", None),
    (conv(8, 3) + "[maxout]\nout_channels=3\n", "out_channels"),
    (conv(8, 3) + "[maxpool]\nmaxpool_depth=1\nout_channels=3\n", "out_channels"),
    (conv(8, 3) + "[local_avgpool]\nsize=3\nstride=2\n", "size"),
    (conv(18, 1, bn=0, activation="linear") + "[Gaussian_yolo]\nmask=0\nanchors=10,14\n"
     "classes=9\nnum=1\n", None),
])
def test_what_opencv_cannot_compute_is_refused(body: str, key: str | None,
                                               tmp_path: Path) -> None:
    source = tmp_path / "model.cfg"
    source.write_text(NET.format(w=16, h=16) + body)
    with pytest.raises(CfgError, match="OpenCV 4.x cannot compute") as info:
        export_model(source, None, tmp_path / "out", "opencv")
    assert info.value.key == key
    assert not (tmp_path / "out").exists()  # nothing half-written


# -- the Darknet oracle: real Darknet-written weights ----------------------------------------

# Oracle cases (Darknet runs, ../shared/oracle) that OpenCV 4.x cannot compute, with the key
# (or section) the refusal must name; every other case must export and match.
REFUSED = {
    **{f"act_{name}": "activation" for name in (
        "elu", "gelu", "hard_mish", "hardtan", "lhtan", "loggy", "normalize_channels",
        "normalize_channels_softmax", "normalize_channels_softmax_maxval", "plse", "ramp",
        "relie", "revleaky", "selu", "stair")},
    "activation_layer": "activation",  # [activation] elu
    "zoo_classifier": "activation",  # elu
    "zoo_detector": "dilation",
    "conv_dilation": "dilation",
    "conv_stride_xy": "stride_x",
    "maxpool_stride_xy": "stride_x",
    "maxout_nondiv": "out_channels",
    "local_avgpool": "size",  # 2x2/2 on a 33-wide map: the last window is partly padding
    "reorg3d": "[reorg3d]",
    "gaussian_yolo": "[Gaussian_yolo]",
    "scale_channels_wh": "scale_wh",
    "softmax_groups": "groups",
    "softmax_spatial": "[softmax]",
    "softmax_temperature": "temperature",
    "upsample_negative_stride": "stride",
    "upsample_scale": "scale",
}
# yolov4-tiny at 416 is slow here; test_zoo_detector[yolov4-tiny] exports the same cfg.
SLOW = frozenset({"yolov4-tiny-416"})
_ORACLE = [pytest.param(case, marks=[pytest.mark.slow] if case in SLOW else [])
           for case in oracle_cases()] or [pytest.param(None, marks=pytest.mark.skip(
               reason=f"no oracle cases: reference data {ORACLE} is not present"))]


@pytest.mark.filterwarnings("ignore::darkcsp.errors.CfgWarning")
@pytest.mark.parametrize("case", _ORACLE)
def test_oracle_case_exports_or_is_refused(case: str, tmp_path: Path) -> None:
    """Each Darknet oracle case (cfg, Darknet's own .weights and input) either exports and
    matches darkcsp in OpenCV, or is refused with a CfgError naming what OpenCV lacks."""
    folder = require(ORACLE / case)
    cfg, weights = folder / "model.cfg", folder / "model.weights"
    if case in REFUSED:
        with pytest.raises(CfgError, match="OpenCV 4.x cannot compute") as info:
            export_model(cfg, weights, tmp_path, "opencv")
        what = REFUSED[case]
        assert (info.value.key == what if not what.startswith("[")
                else info.value.section == what[1:-1] or what in str(info.value))
        return
    model = Darknet(cfg)
    model.load_weights(weights)
    x = torch.from_numpy(np.load(folder / "input.npy")[None])
    compare_export(model.eval(), cfg, weights, x, tmp_path)
