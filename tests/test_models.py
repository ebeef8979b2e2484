import pytest
import torch

from landscape import LandscapeError, create_model, list_models


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn(c_in: int, c_out: int, k: int) -> int:
    """A bias-free k x k convolution and its BatchNorm (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


def block_params(kind: str, c_in: int, width: int, stride: int, skip: bool) -> int:
    """One residual block; the shortcut is a 1x1 conv + BN where the shape changes (option B), else identity."""
    if kind == "basic":
        c_out, body = width, conv_bn(c_in, width, 3) + conv_bn(width, width, 3)
    else:  # bottleneck: 1x1 down, 3x3, 1x1 up to 4x the width
        c_out, body = 4 * width, conv_bn(c_in, width, 1) + conv_bn(width, width, 3) + conv_bn(width, 4 * width, 1)
    projection = skip and (stride != 1 or c_in != c_out)
    return body + (conv_bn(c_in, c_out, 1) if projection else 0)


def resnet_params(kind: str, blocks: list[int], widths: list[int], skip: bool, classes: int) -> int:
    """3x3 stem to widths[0], stages of `blocks` (stride 2 from the second stage on), then one linear layer."""
    total, c_in = conv_bn(3, widths[0], 3), widths[0]
    for stage, (n, width) in enumerate(zip(blocks, widths)):
        for b in range(n):
            total += block_params(kind, c_in, width, 2 if stage and not b else 1, skip)
            c_in = width * (1 if kind == "basic" else 4)
    return total + c_in * classes + classes


CIFAR = [16, 32, 64]
WIDE = [64, 128, 256, 512]
ARCHITECTURES = {  # depth: (block, blocks per stage, stage widths)
    20: ("basic", [3] * 3, CIFAR),
    32: ("basic", [5] * 3, CIFAR),
    44: ("basic", [7] * 3, CIFAR),
    56: ("basic", [9] * 3, CIFAR),
    110: ("basic", [18] * 3, CIFAR),
    18: ("basic", [2, 2, 2, 2], WIDE),
    34: ("basic", [3, 4, 6, 3], WIDE),
    50: ("bottleneck", [3, 4, 6, 3], WIDE),
    101: ("bottleneck", [3, 4, 23, 3], WIDE),
    152: ("bottleneck", [3, 8, 36, 3], WIDE),
}


def expected_params(name: str, classes: int) -> int:
    depth, skip = int(name.removesuffix("_noshort").removeprefix("resnet")), not name.endswith("_noshort")
    kind, blocks, widths = ARCHITECTURES[depth]
    assert 2 + sum(blocks) * (2 if kind == "basic" else 3) == depth  # the name says how many weighted layers
    return resnet_params(kind, blocks, widths, skip, classes)


def test_the_formula_matches_published_counts():
    """Li et al.'s CIFAR ResNets, and the 3x3-stem ResNet-18/50 of the usual CIFAR code, with 10 classes."""
    known = {
        "resnet20": 272_474,
        "resnet20_noshort": 269_722,
        "resnet56": 855_770,
        "resnet56_noshort": 853_018,
        "resnet18": 11_173_962,
        "resnet50": 23_520_842,
    }
    assert {name: expected_params(name, 10) for name in known} == known


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_every_registered_model_has_its_parameter_count_and_classifies(entry):
    model = entry.build(num_classes=7).eval()
    assert count(model) == expected_params(entry.name, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_noshort_has_no_shortcut_tensors():
    keys = create_model("resnet20_noshort").state_dict()
    assert not [k for k in keys if "shortcut" in k]
    assert [k for k in create_model("resnet20").state_dict() if "shortcut" in k]


def test_torchvision_and_import_path_models():
    assert create_model("torchvision:resnet18", num_classes=5).fc.out_features == 5
    assert create_model("toymodels:softmax", num_classes=3).fc.out_features == 3


@pytest.mark.parametrize("name", ["resnet57", "torchvision:nonet", "nomodule.x:build"])
def test_unknown_models_are_refused(name):
    with pytest.raises(LandscapeError):
        create_model(name)
