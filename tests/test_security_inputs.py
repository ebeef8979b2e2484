"""Crafted input files: they never import or run the code they name, and each is refused with one clear line."""

import importlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
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
    for arch in ("resnet21", "torchvision:os.system", "torchvision:", "torchvision:fcn_resnet50"):
        path = write_pt(tmp_path / "unknown.pt", model, arch)
        ckpt = load_checkpoint(path)
        assert "arch" not in ckpt.metadata and ckpt.untrusted_arch == arch
        with pytest.raises(LandscapeError) as error:
            build_model(ckpt)
        assert str(error.value) == (
            f"checkpoint {path} records arch '{arch}', which is not a registered model or "
            "torchvision:NAME of an image classifier: pass --arch (see `landscape models`)"
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
    """Unpickling it calls `func(*args)`, then, with a `state`, `result.__setstate__(state)` (pickle's BUILD)."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


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
    with pytest.raises(LandscapeError) as error, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert str(error.value) == (
        f"cannot read checkpoint {path}: it holds Python objects other than tensors and "
        "plain containers, which are never unpickled (Unsupported operand 149)"
    )
    assert [str(w.message) for w in caught] == []  # torch's "Detected pickle protocol 4" made it three lines


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


# numpy's own pickles call these three with fixed arguments; a crafted batch can call them with others.
RECONSTRUCT = np.ndarray(0).__reduce__()[0]
PLAIN_DTYPE_STATE = (3, "|", None, None, None, -1, -1, 0)


def array(shape, dtype, raw, dtype_state=PLAIN_DTYPE_STATE):
    """An array as numpy pickles it, with whatever shape, type and bytes: `_reconstruct(ndarray, (0,), b'b')`,
    then BUILD with (1, shape, dtype, fortran, bytes), the dtype `dtype(spec, False, True)` then BUILD."""
    fresh = lambda t: tuple(list(t))  # noqa: E731  # a tuple object of its own: one referred to twice is refused
    return Reduce(
        RECONSTRUCT,
        np.ndarray,
        fresh((0,)),
        b"b",
        state=(1, fresh(shape), Reduce(np.dtype, dtype, False, True, state=fresh(dtype_state)), False, raw),
    )


def refused_with_peak(root) -> tuple[str, int]:
    """The one-line error of loading the training split of `root`, and the most memory Python held meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(LandscapeError) as error:
            load_split(DataSpec(root=str(root)), "train")
        return str(error.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (Reduce(RECONSTRUCT, np.ndarray, (2**31,), b"b"), "asks numpy to rebuild an array from arguments"),
        (Reduce(RECONSTRUCT, np.ndarray, (0,), b"O"), "asks numpy to rebuild an array from arguments"),
        (Reduce(np.ndarray, (2**31,)), "asks to make a numpy array of a given shape"),
        (array((2**31,), "u1", b"x"), "declares 2147483648 bytes, and the file holds 1"),
        (array((1,), "O", [0]), "asks for the numpy data type 'O'"),
        (array((1,), "V2147483648", b"x"), "asks for the numpy data type 'V2147483648'"),
        (array((1,), "S2000000000", b"x"), "asks for the numpy data type 'S2000000000'"),
        (array((1,), "(2147483648,)u1", b"x"), "asks for the numpy data type '(2147483648,)u1'"),
        (array((1,), "u1,u1", b"xx"), "asks for the numpy data type 'u1,u1'"),
        (array((1,), "c16", b"x" * 16), "asks for the numpy data type 'c16'"),
        (array((1,), "u1", b"x", (3, "|", (np.dtype("u1"), (2**31,)), None, None, -1, -1, 0)), "data type state"),
        (array((1,), "u8", b"x" * 8, (3, "|", None, None, None, -1, -1, 1)), "data type state"),  # "holds objects"
    ],
    ids=[
        "reconstruct-2GB",
        "reconstruct-object",
        "ndarray-16GB",
        "setstate-2GB",
        "object",
        "void",
        "string",
        "subarray",
        "structured",
        "complex",
        "dtype-setstate-subarray",
        "dtype-setstate-hasobject",
    ],
)
def test_a_crafted_cifar_batch_makes_numpy_allocate_nothing(tmp_path, payload, reason):
    """A pickle of a few hundred bytes could make numpy allocate gigabytes (or build an array of "objects" from raw
    bytes): each is refused before numpy allocates, in one line naming the file."""
    path = crafted_cifar(tmp_path, {"data": payload, "labels": []})
    assert path.stat().st_size < 400
    error, peak = refused_with_peak(tmp_path)
    assert error.startswith(f"cannot read {path}: it ") and reason in error and "\n" not in error
    assert peak < 20 << 20


@pytest.mark.parametrize("dtype", [">i8", "<i8"])
def test_one_buffer_used_by_many_arrays_cannot_multiply_the_file(tmp_path, dtype):
    """Arrays may share a memoized buffer in a pickle; numpy copies it for each (a byte-swapped type, text): a 1 MiB
    file made 50 MiB. The arrays' bytes may come to at most twice the file's size."""
    raw = b"\x01" * (1 << 20)
    path = crafted_cifar(tmp_path, {"data": [array((1 << 17,), dtype, raw) for _ in range(50)], "labels": []})
    assert path.stat().st_size < (1 << 20) + 20_000
    error, peak = refused_with_peak(tmp_path)
    assert error == (
        f"cannot read {path}: it makes more bytes than the file holds (the same data used again), as no CIFAR file does"
    )
    assert peak < 8 << 20


def test_a_pickle_cannot_change_what_the_unpickler_hands_out(tmp_path):
    """BUILD on an allowed name (numpy's _reconstruct) would set attributes on it for the rest of the process."""
    data = (  # {"junk": <numpy.core.multiarray._reconstruct, BUILD with (None, {"__qualname__": "pwned"})>}
        b"\x80\x02}X\x04\x00\x00\x00junkcnumpy.core.multiarray\n_reconstruct\n"
        b"N}X\x0c\x00\x00\x00__qualname__X\x05\x00\x00\x00pwneds\x86bs."
    )
    path = crafted_cifar(tmp_path, {})
    path.write_bytes(data)
    with pytest.raises(LandscapeError, match="it asks to change a function it loads"):
        load_split(DataSpec(root=str(tmp_path)), "train")


@pytest.mark.parametrize(
    "protocol, module",
    [
        (2, "numpy.core.multiarray"),  # numpy < 2, as the published batches
        (2, "numpy._core.multiarray"),
        (3, "numpy.core.multiarray"),
        (3, "numpy._core.multiarray"),
        (4, RECONSTRUCT.__module__),  # protocol 4 frames the module name: only this numpy's own
    ],
)
def test_cifar_batches_pickled_by_numpy_still_load(tmp_path, protocol, module):
    """As numpy < 2 and numpy 2 write them, with protocol 2 (bytes through `_codecs.encode`) and newer ones; the
    labels also as arrays of either byte order."""
    write_cifar10(tmp_path)
    images = np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072)
    folder = tmp_path / "cifar-10-batches-py"
    for name, labels in [
        ("data_batch_1", [1, 2, 3, 4]),
        ("data_batch_2", np.array([5, 6, 7, 8], dtype="<i8")),
        ("data_batch_3", np.array([9, 0, 1, 2], dtype=">i4")),
        ("data_batch_4", np.array([3, 4, 5, 6], dtype=np.uint8)),
        ("data_batch_5", [7, 8, 9, 0]),
    ]:
        raw = pickle.dumps({"data": images, "labels": labels, "batch_label": name}, protocol=protocol)
        native = RECONSTRUCT.__module__.encode()
        if protocol < 4:  # GLOBAL opcodes: the module name is a line of text
            raw = raw.replace(native + b"\n", module.encode() + b"\n")
        assert module.encode() in raw
        (folder / name).write_bytes(raw)
    split = load_split(DataSpec(root=str(tmp_path)), "train")
    assert split.images.shape == (20, 3, 32, 32)
    assert torch.equal(split.images[:4].reshape(4, 3072), torch.from_numpy(images))
    assert split.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def python2_pickle(images, labels):
    """A batch as the published CIFAR files hold it, pickled by Python 2 and numpy 1 (protocol 2): byte strings
    (read back as latin-1 text), `dtype('u1', 0, 1)`, `numpy.core.multiarray`."""

    def string(data):
        return b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data

    def small_int(n):
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)

    dtype = (
        b"cnumpy\ndtype\n"
        + string(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + string(b"b")
        + b"\x87R"
        + b"(K\x01("
        + small_int(images.shape[0])
        + small_int(images.shape[1])
        + b"t"
        + dtype
        + b"\x89"
        + string(images.tobytes())
        + b"tb"
    )
    label_list = b"](" + b"".join(small_int(int(v)) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def test_cifar_batches_as_python_2_pickled_them_still_load(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 3072), dtype=np.uint8)
    for k in range(5):
        (folder / f"data_batch_{k + 1}").write_bytes(python2_pickle(images[k], [k, k + 1, k + 2, k + 3]))
    split = load_split(DataSpec(root=str(tmp_path)), "train")
    assert torch.equal(split.images.reshape(20, 3072), torch.from_numpy(images.reshape(20, 3072)))
    assert split.labels.tolist() == [k + i for k in range(5) for i in range(4)]


def _batch_with(ops: bytes) -> bytes:
    """A real protocol-2 batch {"data": one image, ...} whose last SETITEM and STOP are replaced by `ops` (which
    push a key and a value), then SETITEM and STOP."""
    body = pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=2)
    assert body.endswith(b"s.")
    return body[:-1] + ops + b"s."


def _memo(op: bytes, i: int) -> bytes:
    return op + (1000 + i).to_bytes(4, "little")  # LONG_BINPUT / LONG_BINGET


def _hash_bomb(depth: int) -> bytes:
    """A dict key T(depth), T(i + 1) = (T(i), T(i)) through the memo: hashing it takes 2^depth steps."""
    ops = bytearray(b"K\x00K\x00\x86")  # (0, 0)
    for i in range(depth):
        ops += _memo(b"r", i) + b"0" + _memo(b"j", i) + _memo(b"j", i) + b"\x86"  # PUT, POP, GET, GET, TUPLE2
    return _batch_with(bytes(ops) + b"K\x01")


def _label_bomb(depth: int) -> bytes:
    """labels = L(depth), L(i + 1) = [L(i), L(i)] through the memo: 2^depth numbers for numpy to expand."""
    ops = bytearray(b"X\x06\x00\x00\x00labels](K\x00K\x00e")
    for i in range(depth):
        ops += _memo(b"r", i) + b"0" + b"](" + _memo(b"j", i) + _memo(b"j", i) + b"e"  # PUT, POP, [GET, GET]
    return _batch_with(bytes(ops))


@pytest.mark.parametrize(
    "bomb, kind", [(_hash_bomb, "tuple"), (_label_bomb, "list")], ids=["hash-of-nested-tuples", "nested-labels"]
)
def test_a_few_kilobytes_referring_to_a_container_twice_are_refused_at_once(tmp_path, bomb, kind):
    """A 4 KB batch hung the loader for days (a dict key hashed in 2^40 steps, in C: Ctrl-C waited), another made
    numpy expand its labels to gigabytes: a pickle's second reference to a tuple, list or dict is refused."""
    path = crafted_cifar(tmp_path, {})
    path.write_bytes(bomb(40))
    assert path.stat().st_size < 5000
    error, peak = refused_with_peak(tmp_path)
    assert error == f"cannot read {path}: it refers to one {kind} more than once, which CIFAR batches never do"
    assert peak < 20 << 20


def test_labels_must_be_a_flat_list_of_whole_numbers(tmp_path):
    """Nested lists (no shared references) are not labels: refused before numpy expands them."""
    path = crafted_cifar(tmp_path, {"data": np.zeros((2, 3072), np.uint8), "labels": [[0, 1], [1, 0]]})
    with pytest.raises(LandscapeError, match="'labels' or 'fine_labels' must be 2 whole numbers"):
        load_split(DataSpec(root=str(tmp_path)), "train")
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, True]}, protocol=2))
    with pytest.raises(LandscapeError, match="must be 2 whole numbers"):
        load_split(DataSpec(root=str(tmp_path)), "train")


@pytest.mark.parametrize(
    "ops, reason",
    [
        (b"K\x00" + b"\x85" * 1_000_000 + b"K\x01", "it has a dict key of type tuple"),  # ((..(0,)..),): 1 MB deep
        (b"\x8f(K\x00\x90K\x01", "it holds a set"),  # a set (protocol 4 opcodes)
    ],
    ids=["million-deep-key", "set"],
)
def test_dict_keys_are_text_bytes_or_numbers(tmp_path, ops, reason):
    """A dict key nested a million tuples deep overflowed the C stack when hashed: the process died (SIGSEGV)."""
    path = crafted_cifar(tmp_path, {})
    path.write_bytes(_batch_with(ops))
    with pytest.raises(LandscapeError) as error:
        load_split(DataSpec(root=str(tmp_path)), "train")
    assert str(error.value).startswith(f"cannot read {path}: {reason}")


def test_a_torchvision_model_that_fetches_weights_is_never_built(tmp_path, monkeypatch):
    """`torchvision:fcn_resnet50` (weights=None) still loads its backbone's weights through torch.hub, which unpickles
    a cached file with weights_only=False: only torchvision's image classifiers are taken, from a file or the user."""
    import torch.hub

    def fetch(*args, **kwargs):
        raise AssertionError("torch.hub was asked for weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fetch)
    with pytest.raises(
        LandscapeError, match="unknown torchvision model 'fcn_resnet50': torchvision:NAME takes an image"
    ):
        create_model("torchvision:fcn_resnet50")
    assert isinstance(create_model("torchvision:squeezenet1_1", num_classes=3), torch.nn.Module)


def test_a_model_built_from_computed_widths_is_checked_without_its_memory(tmp_path):
    """torchvision's RegNets cannot be built on the meta device: a 2 KB file recording 250000 classes was built for
    real (1.1 GB, a minute) before its tensors were compared. Now their parameters go to meta as they register."""
    path = tmp_path / "regnet.pt"
    torch.save(
        {
            "format": "landscape-checkpoint",
            "metadata": {"arch": "torchvision:regnet_x_400mf", "num_classes": 250000},
            "state_dict": {"w": torch.zeros(1)},
        },
        path,
    )
    code = (
        "import resource, sys, torch, torchvision\nfrom landscape import LandscapeError, build_model, load_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    build_model(load_checkpoint(sys.argv[1]))\nexcept LandscapeError as e:\n    print(e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
        "print(torch.nn.Module.register_parameter.__qualname__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    said, grown_kb, restored = result.stdout.splitlines()
    assert said.startswith(f"checkpoint {path} does not fit arch 'torchvision:regnet_x_400mf': missing stem.0.weight")
    assert int(grown_kb) < 100_000  # the head alone is 250000 x 400 float32: 400 MB
    assert restored == "Module.register_parameter"


@pytest.mark.parametrize(
    ("arch", "said"),
    [
        (":foo", "cannot import model builder ':foo': ValueError: Empty module name"),
        ("math:pi", "model builder 'math:pi' is a float, not a callable"),
        ("collections:OrderedDict", "'collections:OrderedDict' returned OrderedDict, not a torch.nn.Module"),
        ("json:loads", "model builder 'json:loads' failed: TypeError:"),
    ],
)
def test_a_bad_model_builder_is_one_line(arch, said):
    with pytest.raises(LandscapeError) as error:
        create_model(arch)
    assert str(error.value).startswith(said)
