import pickle

import pytest
import torch

from landscape import LandscapeError, build_model, create_model, load_checkpoint, save_checkpoint


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("resnet20")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"model": s},
    lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
    lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()},
], ids=["raw", "state_dict", "model", "module-prefix", "compile-prefix", "both-prefixes"])
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
    with pytest.raises(LandscapeError, match=r"missing layer1\.3\.conv1\.weight.* and 67 more; unexpected none"):
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
    with pytest.raises(LandscapeError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
