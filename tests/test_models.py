import pytest
import torch

from landscape import LandscapeError, create_model, list_models


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_papers_code():
    assert count(create_model("resnet56")) == 855_770
    assert count(create_model("resnet56_noshort")) == 853_018


@pytest.mark.parametrize("entry", [e for e in list_models() if e.name in
                                   ("resnet20", "resnet20_noshort", "resnet32", "resnet44", "resnet56_noshort",
                                    "resnet110", "resnet18", "resnet18_noshort", "resnet50")],
                         ids=lambda e: e.name)
def test_registered_models_classify_cifar_images(entry):
    model = entry.build(num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_every_registered_model_builds():
    for entry in list_models():
        assert count(entry.build(num_classes=10)) > 0


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
