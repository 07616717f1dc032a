"""``[convolutional]`` rules checked against values computed by hand from Darknet's source."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from darkcsp import CfgWarning, Darknet

# A TridentNet-style branch on a trunk (layer 0): layer 1 owns the weights (dilation 1),
# layers 3 and 5 share them with dilation 2 and 3 (Darknet: share_index shares weights, biases
# and BN parameters; every layer keeps its own size, stride, pad and dilation).
TRIDENT = """[net]
width=20
height=20
channels=3

[convolutional]
filters=3
size=1
stride=1
pad=0
activation=linear

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[route]
layers=0

[convolutional]
share_index=1
batch_normalize=1
filters=4
size=3
stride=1
pad=1
dilation=2
activation=leaky

[route]
layers=0

[convolutional]
share_index=1
batch_normalize=1
filters=4
size=3
stride=2
pad=1
dilation=3
activation=leaky
"""


def _reference(x: torch.Tensor, owner: torch.nn.Module, stride: int, dilation: int
               ) -> torch.Tensor:
    """act(BN(conv(x))) with the owner's parameters and the sharing layer's geometry; Darknet
    pads by pad*dilation when it dilates (size/2 * dilation for pad=1)."""
    y = F.conv2d(x, owner.conv.weight, None, stride, 1 * dilation, dilation)
    bn = owner.bn
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    return F.leaky_relu(y, 0.1)


def test_shared_conv_keeps_its_own_dilation_and_stride() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        model = Darknet(TRIDENT).eval()
    owner = model.layers[1]
    with torch.no_grad():
        owner.bn.running_mean.uniform_(-0.5, 0.5)
        owner.bn.running_var.uniform_(0.5, 2.0)
        owner.bn.weight.uniform_(0.5, 1.5)
        owner.bn.bias.uniform_(-0.5, 0.5)
        outputs = model.forward_layers(torch.randn(1, 3, 20, 20))
        x = outputs[0]
        for index, stride, dilation in ((3, 1, 2), (5, 2, 3)):
            expected = _reference(x, owner, stride, dilation)
            assert outputs[index].shape == expected.shape
            torch.testing.assert_close(outputs[index], expected, rtol=1e-5, atol=1e-5)
        # the owner itself is untouched by its borrowers
        torch.testing.assert_close(outputs[1], _reference(x, owner, 1, 1), rtol=1e-5, atol=1e-5)


def test_shared_conv_weights_are_stored_once_and_survive_fuse() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        model = Darknet(TRIDENT).eval()
    assert model.layers[3].weight_blocks() == [] and model.layers[5].weight_blocks() == []
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        before = model.forward_layers(x)
        model.fuse()
        after = model.forward_layers(x)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
