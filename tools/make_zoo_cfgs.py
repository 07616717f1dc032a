"""Write the zoo cfgs the CSPNet authors never published: cfg/peleenet.cfg, cfg/csppeleenet.cfg,
cfg/csppeleenet-efm.cfg and cfg/cspdensenet-ref-prn.cfg.

PeleeNet follows the authors' prototxt (stem, two-way dense layers with growth 32, stages of
3/4/8/6 layers with bottleneck widths 1/2/4/4, 1x1 transitions that keep the width, 2x2/2
average pooling after all but the last stage). CSPNet never published CSPPeleeNet; ours is the
reconstruction that fits the paper's 0.888 BFLOPs / 2.83M parameters best: every stage split in
half by channel slicing, the dense layers on part 2 with unchanged growth and bottleneck, a
transition T that keeps part 2's width, concat [T, part 1], 2x2/2 average pooling, then the
transition U at the pooled resolution (fusion "both", paper Fig. 3b). docs/dialect.md lists the
choices. CSPDenseNet Ref.-PRN: the paper gives only the backbone's totals (3.48M parameters,
0.886 BFLOPs at 256x256, "sized against Darknet Ref."); ours is a 3x3/2 stem + 2x2/2 max-pool and
four CSP dense stages (widths 128/256/512/1024, 1/2/4/4 dense layers of growth 32/32/64/64,
bottleneck 2x growth, fusion (b), average pooling after stages 1-3) which gives 3.51M and 0.896,
with yolov3-tiny-prn's two-head PRN neck on top. Run: python tools/make_zoo_cfgs.py
"""
from __future__ import annotations

from pathlib import Path

CFG = Path(__file__).resolve().parents[1] / "cfg"
STAGES = [(3, 16), (4, 32), (8, 64), (6, 64)]  # dense layers, 1x1 bottleneck width
WIDTHS = [128, 256, 512, 704]

CLASSIFIER_NET = """[net]
batch=128
subdivisions=4
width=224
height=224
channels=3
min_crop=128
max_crop=448
burn_in=1000
learning_rate=0.1
policy=poly
power=4
max_batches=800000
momentum=0.9
decay=0.0005
angle=7
hue=.1
saturation=.75
exposure=.75
aspect=.75
"""


def conv(filters: int, size: int, stride: int = 1, activation: str = "leaky",
         batch_normalize: int = 1) -> str:
    bn = f"batch_normalize={batch_normalize}\n" if batch_normalize else ""
    return (f"\n[convolutional]\n{bn}filters={filters}\nsize={size}\nstride={stride}\npad=1\n"
            f"activation={activation}\n")


def stem() -> str:
    return ("\n# stem: 3x3/2, then [2x2/2 max-pool | 1x1 -> 3x3/2] concatenated, then 1x1\n"
            + conv(32, 3, 2) + conv(16, 1) + conv(32, 3, 2)
            + "\n[route]\nlayers=-3\n\n[maxpool]\nsize=2\nstride=2\n\n[route]\nlayers=-1,-3\n"
            + conv(32, 1))


def dense_layer(inter: int) -> str:
    """One two-way dense layer on the previous layer X: [X, 1x1 -> 3x3, 1x1 -> 3x3 -> 3x3]."""
    return (conv(inter, 1) + conv(16, 3) + "\n[route]\nlayers=-3\n" + conv(inter, 1)
            + conv(16, 3) + conv(16, 3) + "\n[route]\nlayers=-7,-5,-1\n")


def peleenet() -> str:
    text = "# PeleeNet (Wang, Li, Ling 2018) at 224x224 for ImageNet, in Darknet syntax.\n"
    text += CLASSIFIER_NET + stem()
    for stage, ((layers, inter), width) in enumerate(zip(STAGES, WIDTHS), start=1):
        text += f"\n# stage {stage}: {layers} two-way dense layers, transition 1x1 {width}\n"
        text += "".join(dense_layer(inter) for _ in range(layers)) + conv(width, 1)
        if stage < 4:
            text += "\n[local_avgpool]\nsize=2\nstride=2\n"
    return text + classifier_head()


def classifier_head() -> str:
    return ("\n[avgpool]\n\n[dropout]\nprobability=.05\n"
            + conv(1000, 1, activation="linear", batch_normalize=0) + "\n[softmax]\ngroups=1\n")


def csp_stage(layers: int, inter: int, width: int, pool: bool) -> str:
    return ("\n[csp]\n"
            f"filters={width}\nsplit=0.5\nsplit_mode=slice\npart1=slice\nblock=pelee\n"
            f"blocks={layers}\ngrowth_rate=32\nbottleneck={inter}\nfusion=both\n"
            f"pool={'avg' if pool else 'none'}\nactivation=leaky\n")


def csppeleenet_backbone() -> str:
    text = stem()
    for stage, ((layers, inter), width) in enumerate(zip(STAGES, WIDTHS), start=1):
        text += f"\n# stage {stage}" + csp_stage(layers, inter, width, pool=stage < 4)
    return text


def csppeleenet() -> str:
    return ("# CSPPeleeNet (CSPNet paper, reconstruction; see docs/dialect.md) at 224x224.\n"
            + CLASSIFIER_NET + csppeleenet_backbone() + classifier_head())


DETECTOR_NET = """[net]
batch=64
subdivisions=8
width=320
height=320
channels=3
momentum=0.9
decay=0.0005
angle=0
saturation=1.5
exposure=1.5
hue=.1
learning_rate=0.00261
burn_in=1000
max_batches=500200
policy=steps
steps=400000,450000
scales=.1,.1
mosaic=1
"""

ANCHORS = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"


def yolo(mask: str) -> str:
    return (conv(255, 1, activation="linear", batch_normalize=0)
            + f"\n[yolo]\nmask={mask}\nanchors={ANCHORS}\nclasses=80\nnum=6\njitter=.3\n"
            "scale_x_y=1.05\nignore_thresh=.7\ntruth_thresh=1\niou_thresh=0.213\n"
            "iou_loss=ciou\niou_normalizer=0.07\ncls_normalizer=1.0\nnms_kind=greedynms\n"
            "beta_nms=0.6\nrandom=1\n")


def csppeleenet_efm() -> str:
    # dialect indices: 0-6 stem, 7-10 stages (P3 = 7 at /8, P4 = 8 at /16, P5 = 10 at /32)
    return ("# CSPPeleeNet + EFM(SAM), the CSPNet paper's small COCO detector (reconstruction;\n"
            "# see docs/dialect.md): two yolo heads at strides 32 and 16, each fed by an [efm]\n"
            "# that fuses pyramid levels s-1, s, s+1 compressed 4:1 by Maxout, gated by SAM.\n"
            + DETECTOR_NET + csppeleenet_backbone()
            + "\n# head at stride 32: levels P4 (finer) and P5\n"
            "\n[efm]\nlayers=8,10\nfilters=256\nsize=3\nmaxout=4\nsam=1\nactivation=leaky\n"
            + yolo("3,4,5")
            + "\n# head at stride 16: levels P3 (finer), P4, P5 (coarser)\n"
            "\n[route]\nlayers=8\n"
            "\n[efm]\nlayers=7,8,10\nfilters=128\nsize=3\nmaxout=4\nsam=1\nactivation=leaky\n"
            + yolo("0,1,2"))


DENSE_REF_STAGES = [(128, 1, 32), (256, 2, 32), (512, 4, 64), (1024, 4, 64)]


def cspdensenet_ref_backbone() -> str:
    text = "\n# stem\n" + conv(32, 3, 2) + "\n[maxpool]\nsize=2\nstride=2\n"
    for stage, (width, layers, growth) in enumerate(DENSE_REF_STAGES, start=1):
        text += (f"\n# stage {stage}\n[csp]\nfilters={width}\nsplit=0.5\nsplit_mode=slice\n"
                 f"part1=slice\nblock=dense\nblocks={layers}\ngrowth_rate={growth}\n"
                 f"bottleneck={2 * growth}\nfusion=both\n"
                 f"pool={'avg' if stage < 4 else 'none'}\nactivation=leaky\n")
    return text


def cspdensenet_ref_prn() -> str:
    # dialect indices: 0 stem conv, 1 max-pool, 2-5 stages (3 = stride 16, 5 = stride 32)
    return ("# CSPDenseNet Ref.-PRN, the CSPNet paper's small CPU detector (reconstruction; see\n"
            "# docs/dialect.md): a CSPDenseNet Ref. backbone and yolov3-tiny-prn's PRN neck.\n"
            + DETECTOR_NET + cspdensenet_ref_backbone()
            + "\n# head at stride 32\n" + conv(256, 1) + conv(256, 3)
            + "\n[prn]\nfrom=-2\nactivation=leaky\n" + yolo("3,4,5")
            + "\n# head at stride 16\n\n[route]\nlayers=-5\n" + conv(128, 1)
            + "\n[upsample]\nstride=2\n\n[prn]\nfrom=3\nactivation=leaky\n" + conv(128, 3)
            + "\n[prn]\nfrom=-3\nactivation=leaky\n" + yolo("0,1,2"))


def main() -> None:
    for name, text in (("peleenet.cfg", peleenet()), ("csppeleenet.cfg", csppeleenet()),
                       ("csppeleenet-efm.cfg", csppeleenet_efm()),
                       ("cspdensenet-ref-prn.cfg", cspdensenet_ref_prn())):
        (CFG / name).write_text(text, encoding="utf-8")
        print("wrote", CFG / name)


if __name__ == "__main__":
    main()
