"""Crafted input files: they never import or run the code they name, and each is refused with one clear line."""

import importlib
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import write_cifar10
from typer.testing import CliRunner

from landscape import DataSpec, LandscapeError, build_model, create_model, load_checkpoint, load_split, save_checkpoint
from landscape.cli import app

FORBIDDEN = ("os", "posix", "builtins", "subprocess")


@pytest.fixture
def imports(monkeypatch):
    """Records every `importlib.import_module` call and fails the test at once on a module a crafted file names."""
    calls = []
    real = importlib.import_module

    def guarded(name, package=None):
        calls.append(name)
        if name in FORBIDDEN:
            pytest.fail(f"imported {name!r} on behalf of a file")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", guarded)
    return calls


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet20")


META = {"num_classes": 10, "dataset": "cifar10", "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
CODE = ["os:abort", "builtins:input", "subprocess:call"]


def write_pt(path, model, arch):
    save_checkpoint(path, model, {**META, "arch": arch})
    return path


def write_safetensors(path, model, arch):
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        metadata={"landscape": json.dumps({**META, "arch": arch})},
    )
    return path


def message(path, arch):
    return (
        f"checkpoint {path} records arch '{arch}', which names code to import: only your own --arch may do "
        f"that (pass --arch '{arch}' if you trust the file)"
    )


@pytest.mark.parametrize("arch", CODE)
@pytest.mark.parametrize("write", [write_pt, write_safetensors], ids=["pt", "safetensors"])
def test_a_recorded_arch_never_names_code(tmp_path, model, imports, write, arch):
    path = write(tmp_path / f"crafted{'.pt' if write is write_pt else '.safetensors'}", model, arch)
    ckpt = load_checkpoint(path)
    assert "arch" not in ckpt.metadata and ckpt.untrusted_arch == arch
    assert ckpt.metadata == META  # the rest is kept
    with pytest.raises(LandscapeError) as error:
        build_model(ckpt)
    assert str(error.value) == message(path, arch)
    rebuilt = build_model(ckpt, arch="resnet20")  # the user's own --arch still works
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    assert not set(imports) & set(FORBIDDEN)


def test_registered_and_torchvision_archs_are_kept(tmp_path, model, imports):
    for arch in ("resnet20", "torchvision:resnet18"):
        assert load_checkpoint(write_pt(tmp_path / "ok.pt", model, arch)).metadata["arch"] == arch
    for arch in ("resnet21", "torchvision:os.system", "torchvision:"):
        path = write_pt(tmp_path / "unknown.pt", model, arch)
        ckpt = load_checkpoint(path)
        assert "arch" not in ckpt.metadata and ckpt.untrusted_arch == arch
        with pytest.raises(LandscapeError) as error:
            build_model(ckpt)
        assert str(error.value) == (
            f"checkpoint {path} records arch '{arch}', which is not a registered model or "
            "torchvision:NAME: pass --arch (see `landscape models`)"
        )
    assert not set(imports) & set(FORBIDDEN)


def test_os_abort_in_a_checkpoint_does_not_abort(tmp_path, model):
    """In a fresh interpreter, without any guard: the process ends with the one-line error, not SIGABRT."""
    path = write_pt(tmp_path / "abort.pt", model, "os:abort")
    code = (
        "import sys\nfrom landscape import LandscapeError, build_model, load_checkpoint\n"
        "try:\n    build_model(load_checkpoint(sys.argv[1]))\n"
        "except LandscapeError as e:\n    print(e)\n    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == message(path, "os:abort") + "\n"


@pytest.mark.parametrize("arch", CODE)
def test_compute_refuses_a_checkpoint_that_names_code(tmp_path, model, cifar_root, imports, arch):
    path = write_pt(tmp_path / "crafted.pt", model, arch)
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
    assert result.stderr == f"error: {message(path, arch)}\n"
    assert not (tmp_path / "o.h5").exists()
    assert not set(imports) & set(FORBIDDEN)


class Reduce:
    """Unpickling it calls `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_a_pickled_os_system_is_named_and_never_run(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "hook": Reduce(os.system, f"touch {marker}")}, path)
    with pytest.raises(LandscapeError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"cannot read checkpoint {path}: it asks to load the Python object "
        f"'{os.system.__module__}.system', which is never unpickled "
        "(only tensors and plain containers are)"
    )
    assert not marker.exists()


def test_a_refused_pickle_keeps_torchs_whole_reason_on_one_line(tmp_path):
    path = tmp_path / "protocol4.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(2)}}, f, protocol=4)  # torch.save writes protocol 2
    with pytest.raises(LandscapeError) as error:
        load_checkpoint(path)
    assert str(error.value) == (
        f"cannot read checkpoint {path}: it holds Python objects other than tensors and "
        "plain containers, which are never unpickled (Unsupported operand 149)"
    )


def crafted_cifar(tmp_path, payload):
    """A CIFAR-10 folder whose data_batch_3 is `payload`, pickled like the real batches (protocol 2)."""
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda marker: (Reduce(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        lambda marker: (Reduce(exec, f"open({str(marker)!r}, 'w').close()"), "__builtin__.exec"),  # protocol 2 names
        lambda marker: (Reduce(open, str(marker), "w"), "io.open"),
    ],
    ids=["os.system", "builtins.exec", "open"],
)
def test_a_crafted_cifar_batch_runs_nothing(tmp_path, make):
    marker = tmp_path / "pwned"
    payload, name = make(marker)
    path = crafted_cifar(tmp_path, {"data": payload, "labels": []})
    with pytest.raises(LandscapeError) as error:
        load_split(DataSpec(root=str(tmp_path)), "train")
    assert str(error.value) == (
        f"cannot read {path}: it asks to load the Python object '{name}', which is never unpickled"
    )
    assert not marker.exists()


def test_codecs_encode_serves_only_pickled_bytes(tmp_path):
    import codecs

    path = crafted_cifar(tmp_path, {"data": Reduce(codecs.encode, "abc", "rot13"), "labels": []})
    with pytest.raises(LandscapeError) as error:
        load_split(DataSpec(root=str(tmp_path)), "train")
    assert str(error.value) == f"cannot read {path}: it asks to encode text as 'rot13', which pickled arrays never do"
