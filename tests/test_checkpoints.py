import json
import pickle

import pytest
import torch
from toymodels import softmax, tiny_tanh

from landscape import LandscapeError, build_model, create_model, load_checkpoint, save_checkpoint
from landscape.checkpoints import check_same_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("resnet20")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": s},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
        lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
        lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()},
    ],
    ids=["raw", "state_dict", "model", "module-prefix", "compile-prefix", "both-prefixes"],
)
def test_common_wrappers_load(tmp_path, model, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(model.state_dict()), path)
    loaded = build_model(load_checkpoint(path), arch="resnet20")
    assert same_weights(loaded, model)


def test_project_format_carries_metadata(tmp_path, model):
    meta = {"arch": "resnet20", "num_classes": 10, "dataset": "cifar10", "test_acc": 91.5}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.metadata == meta and len(ckpt.sha256) == 64
    assert same_weights(build_model(ckpt), model)  # --ckpt alone is enough


def test_safetensors(tmp_path, model):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert same_weights(build_model(load_checkpoint(path), arch="resnet20"), model)


def test_mismatch_names_missing_and_unexpected_keys(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "r20.pt")
    with pytest.raises(
        LandscapeError, match=r"missing layer1\.3\.conv1\.weight.* and 55 more; unexpected none"
    ):  # no counters
        build_model(load_checkpoint(tmp_path / "r20.pt"), arch="resnet32")
    with pytest.raises(LandscapeError, match=r"missing none; unexpected .*shortcut"):
        build_model(load_checkpoint(tmp_path / "r20.pt"), arch="resnet20_noshort")


def test_foreign_checkpoint_needs_arch(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "r20.pt")
    with pytest.raises(LandscapeError, match="--arch"):
        build_model(load_checkpoint(tmp_path / "r20.pt"))


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_arbitrary_objects_are_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(LandscapeError, match="cannot read checkpoint"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(LandscapeError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(LandscapeError, match="cannot read checkpoint") as error:
        load_checkpoint(tmp_path / "junk.pt")
    assert str(error.value) == (
        f"cannot read checkpoint {tmp_path / 'junk.pt'}: not a PyTorch checkpoint "
        "(neither a torch.save zip archive nor a pickle; first bytes: 6e 6f 74 20)"
    )
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LandscapeError, match="not a PyTorch checkpoint .*it is empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_legacy_pickled_and_zip_checkpoints_still_load(tmp_path):
    state = {"w": torch.arange(3.0)}
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, tmp_path / "zip.pt")
    for name in ("legacy.pt", "zip.pt"):
        assert torch.equal(load_checkpoint(tmp_path / name).state_dict["w"], state["w"])


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("num_classes", -3, "a whole number in 1..1000000"),
        ("num_classes", 0, "a whole number in 1..1000000"),
        ("num_classes", 1_000_001, "a whole number in 1..1000000"),
        ("num_classes", "ten", "a whole number in 1..1000000"),
        ("num_classes", 10.0, "a whole number in 1..1000000"),
        ("num_classes", True, "a whole number in 1..1000000"),
        ("mean", "abc", "a list of 1 to 4 finite numbers"),
        ("mean", [], "a list of 1 to 4 finite numbers"),
        ("mean", [0.5] * 5, "a list of 1 to 4 finite numbers"),
        ("mean", [0.5, float("nan"), 0.5], "a list of 1 to 4 finite numbers"),
        ("mean", [0.5, "0.5", 0.5], "a list of 1 to 4 finite numbers"),
        ("std", [0, 0, 0], "a list of 1 to 4 finite numbers, all > 0"),
        ("std", [0.2, -0.2, 0.2], "a list of 1 to 4 finite numbers, all > 0"),
        ("std", [0.2, float("inf"), 0.2], "a list of 1 to 4 finite numbers, all > 0"),
        ("dataset", 5, "a dataset name such as cifar10"),
        ("skips", "yes", "true or false"),
        ("arch", 20, "a model name"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_mistyped_metadata_is_one_line_naming_file_and_field(tmp_path, model, field, value, expected):
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"arch": "resnet20", "num_classes": 10, "dataset": "cifar10", field: value})
    with pytest.raises(LandscapeError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"checkpoint {path} has malformed metadata: '{field}' must be {expected}, found {value!r}"
    )


def test_metadata_of_a_safetensors_header_is_checked_too(tmp_path, model):
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"landscape": json.dumps({"arch": "resnet20", "std": [0.2, 0.0, 0.2]})})
    with pytest.raises(LandscapeError, match=r"^checkpoint .*m\.safetensors has malformed metadata: 'std' must be "):
        load_checkpoint(path)
    save_file(tensors, str(path), metadata={"landscape": json.dumps(["resnet20"])})
    with pytest.raises(LandscapeError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"checkpoint {path} has malformed metadata: expected a mapping of names to values, found list"
    )


def test_free_form_and_null_metadata_are_accepted(tmp_path, model):
    path = tmp_path / "m.pt"
    meta = {"arch": "resnet20", "num_classes": None, "mean": (0.5,), "std": [1], "epochs": "twenty", "notes": [1, {}]}
    save_checkpoint(path, model, meta)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata == {"arch": "resnet20", "mean": [0.5], "std": [1], "epochs": "twenty", "notes": [1, {}]}
    assert same_weights(build_model(ckpt), model)  # num_classes inferred from the classifier


def test_compute_with_mistyped_metadata_exits_2_with_one_line(tmp_path, model, cifar_root):
    from typer.testing import CliRunner

    from landscape.cli import app

    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"arch": "resnet20", "num_classes": "ten"})
    result = CliRunner().invoke(
        app,
        [
            "compute",
            "--ckpt",
            str(path),
            "--x",
            "-1:1:3",
            "--subset",
            "4",
            "--data-root",
            str(cifar_root),
            "--out",
            str(tmp_path / "o.h5"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: checkpoint {path} has malformed metadata: 'num_classes' must be a whole "
        "number in 1..1000000, found 'ten'\n"
    )


# A second checkpoint (--xtarget) must be of the model: same recorded arch, classes, dataset and normalization,
# the same tensor names and shapes.


def saved(path, model, metadata=None):
    save_checkpoint(path, model, metadata or {})
    return load_checkpoint(path)


def test_a_target_of_another_structure_is_refused_naming_the_first_tensor(tmp_path):
    model = softmax()
    other = saved(tmp_path / "t.pt", tiny_tanh())
    with pytest.raises(LandscapeError) as raised:
        check_same_model(other, model.state_dict(), {})
    assert str(raised.value) == (
        f"the target checkpoint {tmp_path / 't.pt'} is not of this model: it lacks fc.weight (2 of the model's "
        "tensors missing, 4 tensors the model lacks)"
    )


def test_a_target_with_one_extra_tensor_is_refused(tmp_path):
    model = softmax()
    path = tmp_path / "t.pt"
    torch.save({**model.state_dict(), "fc2.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(LandscapeError) as raised:
        check_same_model(load_checkpoint(path), model.state_dict(), {})
    assert (
        str(raised.value)
        == f"the target checkpoint {path} is not of this model: it holds fc2.weight, which the model lacks"
    )
    check_same_model(saved(tmp_path / "same.pt", softmax()), model.state_dict(), {})  # the same structure is fine


def test_a_target_of_other_shapes_is_refused(tmp_path):
    model = softmax()
    other = saved(tmp_path / "t.pt", softmax(num_classes=5))
    with pytest.raises(LandscapeError) as raised:
        check_same_model(other, model.state_dict(), {})
    assert str(raised.value) == (
        f"the target checkpoint {tmp_path / 't.pt'} is not of this model: its fc.weight has shape (5, 3072), "
        "the model's (10, 3072)"
    )


@pytest.mark.parametrize(
    "field, theirs, ours, shown",
    [
        ("arch", "resnet20_noshort", "resnet20", "arch 'resnet20_noshort', the model 'resnet20'"),
        ("num_classes", 100, 10, "num_classes 100, the model 10"),
        ("dataset", "cifar100", "cifar10", "dataset 'cifar100', the model 'cifar10'"),
        ("mean", [0.5, 0.5, 0.5], (0.49, 0.48, 0.45), "mean [0.5, 0.5, 0.5], the model [0.49, 0.48, 0.45]"),
        ("std", [0.2, 0.2, 0.2], [0.25, 0.24, 0.26], "std [0.2, 0.2, 0.2], the model [0.25, 0.24, 0.26]"),
    ],
)
def test_a_target_recording_other_metadata_is_refused_naming_the_field(tmp_path, field, theirs, ours, shown):
    model = softmax()
    same = {"arch": "resnet20", "num_classes": 10, "dataset": "cifar10", "mean": [0.49, 0.48, 0.45]}
    target = saved(tmp_path / "t.pt", softmax(), {**same, "std": [0.25, 0.24, 0.26], field: theirs})
    with pytest.raises(LandscapeError) as raised:
        check_same_model(target, model.state_dict(), {**same, "std": (0.25, 0.24, 0.26), field: ours})
    assert str(raised.value) == f"the target checkpoint {tmp_path / 't.pt'} is not of this model: it records {shown}"


def test_metadata_recorded_on_one_side_only_is_no_difference(tmp_path):
    model = softmax()
    target = saved(tmp_path / "t.pt", softmax(), {"arch": "resnet20", "test_acc": 50.0})
    check_same_model(target, model.state_dict(), {"num_classes": 10, "mean": (0.5, 0.5, 0.5), "arch": None})
    check_same_model(target, model.state_dict(), {"arch": "resnet20"})


def test_a_file_from_before_pytorch_0_4_1_without_batch_counters_loads(tmp_path, model):
    """The paper's checkpoints (2018) have no `num_batches_tracked`: they were refused as not fitting the arch."""
    old = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet20.t7"
    torch.save({"acc": 91.2, "epoch": 300, "state_dict": old}, path)
    loaded = build_model(load_checkpoint(path), arch="resnet20")
    assert same_weights(loaded, model)  # the counters are 0 in both
    check_same_model(load_checkpoint(path), model.state_dict(), {})  # as a target of this model too


def test_a_file_whose_wrapping_dict_holds_itself_is_one_line(tmp_path):
    """`torch.load(weights_only=True)` accepts a dict that holds itself: unwrapping it never ended (100% CPU)."""
    looped: dict = {}
    looped["state"] = looped
    torch.save(looped, tmp_path / "loop.pt")
    with pytest.raises(LandscapeError, match="holds no state_dict .*in a loop"):
        load_checkpoint(tmp_path / "loop.pt")


def test_a_huge_head_in_the_metadata_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """{"arch": "resnet18", "num_classes": 1000000} in a 2 KB file built a 512M-weight head (2.6 GB, a minute)
    before finding that the file's tensors do not fit: the shapes are compared on the meta device first."""
    import landscape.checkpoints

    built = []

    def recording(*args, **kwargs):
        model = create_model(*args, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(landscape.checkpoints, "create_model", recording)
    path = tmp_path / "big.pt"
    payload = {"format": "landscape-checkpoint", "metadata": {"arch": "resnet20", "num_classes": 1_000_000}}
    torch.save({**payload, "state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(LandscapeError, match="does not fit arch 'resnet20': missing"):
        build_model(load_checkpoint(path))
    assert built == ["meta"]
    torch.save(create_model("resnet20").state_dict(), tmp_path / "fits.pt")
    build_model(load_checkpoint(tmp_path / "fits.pt"), arch="resnet20")
    assert built == ["meta", "meta", "cpu"]


def test_state_dict_keys_are_names_and_stay_distinct(tmp_path, model):
    torch.save({1: torch.zeros(2)}, tmp_path / "int.pt")
    with pytest.raises(LandscapeError, match=r"holds a state_dict with a key that is no name \(a int\)"):
        load_checkpoint(tmp_path / "int.pt")
    torch.save({"module.conv1.weight": torch.zeros(1), "conv1.weight": torch.ones(1)}, tmp_path / "two.pt")
    with pytest.raises(LandscapeError, match="holds two tensors named conv1.weight once wrappers' prefixes are"):
        load_checkpoint(tmp_path / "two.pt")
