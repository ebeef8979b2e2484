"""checkpoints/training/gpu/kit.py: the data reaches a GPU machine byte for byte, and the tree comes back whole."""

import importlib.util
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar10

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kit", REPO / "checkpoints" / "training" / "gpu" / "kit.py")
assert _spec is not None and _spec.loader is not None
kit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kit)


def cifar_folder(root: Path, train_per_batch: int, test_images: int) -> Path:
    """Generated CIFAR batches with the pixels as one raw byte string, as in the real (Python 2) files.

    Python 3's protocol 2 writes bytes as a latin-1 text: re-pickled with protocol 3 (BINBYTES, like Python 2's
    BINSTRING: an opcode, a 4-byte length, the raw bytes)."""
    folder = write_cifar10(root, train_per_batch=train_per_batch, test_images=test_images) / "cifar-10-batches-py"
    for path in folder.iterdir():
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes()), protocol=3))
    return folder


def test_pixel_coding_is_lossless_and_predicts_smooth_images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8).tobytes()
    assert kit.decode_pixels(kit.encode_pixels(noise)) == noise
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    ramps = np.stack([(a * i + b * j + c) % 256 for a, b, c in rng.integers(0, 4, size=(300, 3))]).astype(np.uint8)
    smooth = ramps.tobytes()
    coded = kit.encode_pixels(smooth)
    assert kit.decode_pixels(coded) == smooth
    assert len(coded) < len(smooth) / 20  # a plane a + b*i + c*j is predicted exactly away from its edges


def test_the_pixel_block_is_the_batch_arrays_bytes(tmp_path):
    folder = cifar_folder(tmp_path, train_per_batch=6, test_images=4)
    raw = (folder / "data_batch_1").read_bytes()
    pixels = pickle.loads(raw)["data"].tobytes()
    assert kit.pixel_block(raw) == (raw.find(pixels), len(pixels))
    assert kit.pixel_block((folder / "batches.meta").read_bytes()) is None


def test_pack_then_unpack_rebuilds_every_file_exactly(tmp_path):
    folder = cifar_folder(tmp_path / "data", train_per_batch=20, test_images=10)
    (folder / "readme.html").write_text("<meta>")
    manifest = kit.pack(folder, tmp_path / "xfer", parts=3)
    parts = sorted((tmp_path / "xfer").iterdir())
    assert [p.name for p in parts] == ["part1", "part2", "part3"]
    assert sum("pixels" in entry for entry in manifest["files"]) == 6  # five training batches and the test batch
    written = kit.unpack(parts[::-1], tmp_path / "back")  # any order of the parts
    assert sorted(written) == sorted(p.name for p in folder.iterdir())
    for original in folder.iterdir():
        assert (tmp_path / "back" / "cifar-10-batches-py" / original.name).read_bytes() == original.read_bytes()


def test_unpack_refuses_missing_or_damaged_parts(tmp_path):
    folder = cifar_folder(tmp_path / "data", train_per_batch=20, test_images=10)
    kit.pack(folder, tmp_path / "xfer", parts=2)
    part1, part2 = tmp_path / "xfer" / "part1", tmp_path / "xfer" / "part2"
    with pytest.raises(SystemExit, match="1 parts given, the manifest says 2"):
        kit.unpack([part1], tmp_path / "back")
    blob = bytearray((part2 / "blob").read_bytes())
    (part2 / "blob").write_bytes(blob[:-1])
    with pytest.raises(SystemExit, match="the parts hold .* bytes, the manifest says"):
        kit.unpack([part1, part2], tmp_path / "back")
    (part2 / "blob").write_bytes(blob)
    kit.unpack([part1, part2], tmp_path / "back")  # whole again
    for at in (200, len(blob) // 2):  # a flipped bit, in a verbatim stretch or in the pixels: one clear line
        damaged = bytearray(blob)
        damaged[at] ^= 1
        (part2 / "blob").write_bytes(damaged)
        with pytest.raises(SystemExit, match=r"error: \S+ (is damaged in the parts|rebuilt with another SHA-256)"):
            kit.unpack([part1, part2], tmp_path / "back")


def test_slim_sets_aside_only_big_files_outside_the_kept_folders_and_restore_brings_them_back(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    files = {
        "landscape/big.py": 300_000,
        "checkpoints/training/resnet56_scratch/state.pt": 400_000,
        "checkpoints/resnet56.pt": 300_000,
        "docs/results/a.h5": 262_144,
        "docs/small.md": 1000,
    }
    for name, size in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(bytes(size))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    monkeypatch.setattr(kit, "REPO", repo)
    monkeypatch.setattr(kit, "XFER", repo / ".xfer")
    assert kit.travelling_bytes([]) == sum(files.values())
    assert sorted(kit.slim()) == ["checkpoints/resnet56.pt", "docs/results/a.h5"]
    listed = (repo / ".xfer" / "slimmed.txt").stat().st_size  # untracked, and ignored only by the real .gitignore
    assert kit.travelling_bytes([]) == sum(files.values()) - 300_000 - 262_144 + listed
    assert not (repo / "docs/results/a.h5").exists() and (repo / "landscape/big.py").exists()
    assert sorted(kit.restore()) == ["checkpoints/resnet56.pt", "docs/results/a.h5"]
    for name, size in files.items():
        assert (repo / name).stat().st_size == size
