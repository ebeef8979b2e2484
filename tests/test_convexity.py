"""Convexity maps (Li et al. Fig. 7): λmin and λmax of the loss Hessian at grid points, stored in the surface file.

Exact against the dense Hessian of a 79-parameter tanh network; resumed == uninterrupted (interrupted in process and
SIGKILLed); `--workers 2` == one process, bit for bit (one thread per process, as in tests/test_distributed.py);
crash safety (the map is added atomically, nothing grows afterwards); crafted files give one clear error.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from surface_fixtures import write_surface
from toymodels import tiny_tanh
from typer.testing import CliRunner

from landscape import (
    Axis,
    CheckpointSpec,
    DataSpec,
    DirectionSpec,
    GridSpec,
    SurfaceSpec,
    compute_surface,
    read_surface,
    save_checkpoint,
)
from landscape.checkpoints import build_model, load_checkpoint
from landscape.cli import app
from landscape.data import load_split, normalizer
from landscape.errors import LandscapeError
from landscape.evaluate import RunOptions
from landscape.spec import CurvatureMapSpec
from landscape.storage import CURVATURE_MASK, add_curvature, read_directions, write_points
from landscape.surface import compute_convexity

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
ARCH = "toymodels:tiny_tanh"
CPU = RunOptions(device="cpu")
TIMEOUT = 240
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_surface(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> Path:
    """A 5x5 loss surface of the tiny tanh network on 16 training images."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(3)
    model = tiny_tanh()
    with torch.no_grad():  # larger weights than the default init: a clearly indefinite Hessian
        for p in model.parameters():
            p.mul_(3.0)
    meta = {"num_classes": 10, "dataset": "cifar10", "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(folder / "tiny.pt", model, meta)
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(folder / "tiny.pt"), arch=ARCH),
        data=DataSpec(root=str(cifar_root), subset=16),
        grid=GridSpec(Axis.parse("-1:1:5"), Axis.parse("-1:1:5")),
        x=DirectionSpec(seed=0),
        y=DirectionSpec(seed=1),
    )
    compute_surface(spec, folder / "surface.h5", RunOptions(device="cpu", fold_bn=False))
    return folder / "surface.h5"


def copy(path: Path, to: Path) -> Path:
    shutil.copyfile(path, to)
    return to


def dense_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The full Hessian of the mean cross-entropy over the flat parameters (float64)."""
    named = list(model.named_parameters())
    names, shapes, sizes = [n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    return torch.autograd.functional.hessian(loss, theta).numpy()


def map_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r", locking=False) as f:
        return {n: f[n][()] for n in ("hessian_min", "hessian_max", "hessian_products", CURVATURE_MASK)}


def test_the_selected_points_are_every_stride_th_from_the_middle():
    def rows(n, stride):
        return np.flatnonzero(CurvatureMapSpec(stride=stride).selected((n,)))

    assert list(rows(51, 5)) == list(range(0, 51, 5))  # 11 points, both ends
    assert list(rows(51, 10)) == [5, 15, 25, 35, 45]  # -0.8..0.8 on -1:1, θ* included
    assert list(rows(51, 8)) == [1, 9, 17, 25, 33, 41, 49]
    assert CurvatureMapSpec(stride=2).selected((3, 5)).sum() == 1 * 3  # the middle row, columns 0, 2, 4
    for bad, message in [
        ({"stride": 0}, "--stride"),
        ({"steps": 1}, "--steps"),
        ({"tol": 1.5}, "--tol"),
        ({"images": -1}, "--images"),
        ({"split": "val"}, "split"),
    ]:
        with pytest.raises(LandscapeError, match=message):
            CurvatureMapSpec(**bad).validate()


def test_the_map_is_the_dense_hessians_extreme_eigenvalues(tmp_path, tiny_surface, cifar_root):
    path = copy(tiny_surface, tmp_path / "s.h5")
    before = read_surface(path)
    exact_map = compute_convexity(path, CurvatureMapSpec(stride=2, steps=100, tol=0), CPU, arch=ARCH).curvature
    assert exact_map is not None
    selected = exact_map.selected
    assert selected.sum() == 9 and (exact_map.computed == selected).all()
    assert np.isnan(exact_map.smallest[~selected]).all() and (exact_map.products[~selected] == 0).all()
    assert exact_map.completion == 1.0
    surface = read_surface(path)
    for name in before.values:  # the loss is untouched
        np.testing.assert_array_equal(surface[name], before[name])
    # the dense Hessian at each point, float64, same images, same directions read from the file
    checkpoint = load_checkpoint(tiny_surface.parent / "tiny.pt")
    model = build_model(checkpoint, ARCH).double()
    center = {n: p.detach().clone() for n, p in model.named_parameters()}
    dx, dy = (read_directions(path, axis, like={n: t.float() for n, t in center.items()}) for axis in "xy")
    images = load_split(DataSpec(root=str(cifar_root), subset=16), "train", exact_map.indices)
    assert len(images) == 16
    scale, shift = normalizer(MEAN, STD, "cpu", torch.float64)
    x = images.images.double() * scale + shift
    signs = []
    for j, i in zip(*np.nonzero(selected)):
        a, b = surface.xcoordinates[i], surface.ycoordinates[j]
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(center[n] + a * dx[n].double() + b * dy[n].double())
        exact = np.linalg.eigvalsh(dense_hessian(model, x, images.labels))
        scale_ = abs(exact[-1])
        assert exact_map.smallest[j, i] == pytest.approx(exact[0], abs=1e-4 * scale_)
        assert exact_map.largest[j, i] == pytest.approx(exact[-1], abs=1e-4 * scale_)
        assert exact_map.products[j, i] <= 79  # the Krylov space closed: exact
        signs.append(exact[0] < 0 < exact[-1])
    assert any(signs)  # a non-convex point: |λmin/λmax| > 0 is measured, not assumed
    ratio = exact_map.ratio
    np.testing.assert_allclose(ratio[selected], np.abs(exact_map.smallest / exact_map.largest)[selected])
    # with a tolerance a point stops early, λmin and λmax each within tol of the exact values, relatively
    early = compute_convexity(
        copy(tiny_surface, tmp_path / "tol.h5"), CurvatureMapSpec(stride=2, steps=100, tol=1e-2), CPU, arch=ARCH
    ).curvature
    assert early is not None and early.products[selected].max() < 79
    for found, exact in ((early.smallest, exact_map.smallest), (early.largest, exact_map.largest)):
        assert (np.abs(found - exact)[selected] <= 1e-2 * np.abs(exact[selected])).all()


def stop_after(n):
    def progress(done, total):
        if done >= n:
            raise KeyboardInterrupt

    return progress


def test_resumed_equals_uninterrupted_and_nothing_grows(tmp_path, tiny_surface):
    spec = CurvatureMapSpec(steps=12, tol=0, images=10, seed=4)
    reference = copy(tiny_surface, tmp_path / "reference.h5")
    compute_convexity(reference, spec, CPU, arch=ARCH)
    path = copy(tiny_surface, tmp_path / "s.h5")
    with pytest.raises(KeyboardInterrupt):
        compute_convexity(path, spec, CPU, arch=ARCH, progress=stop_after(3))
    partial = read_surface(path).curvature
    assert partial is not None and 3 <= partial.computed.sum() < 25
    assert np.isnan(partial.largest[~partial.computed]).all()
    size = path.stat().st_size
    for _ in range(2):  # the second finds nothing to do
        compute_convexity(path, spec, CPU, arch=ARCH)
    assert path.stat().st_size == size  # the map was allocated when it was added: written in place since
    got, want = map_arrays(path), map_arrays(reference)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    surface = read_surface(path)
    assert len(surface.curvature.indices) == 10
    assert [r.get("work") for r in surface.runs] == [None, "convexity map", "convexity map"]  # created, added, resumed
    other = CurvatureMapSpec(steps=13, tol=0, images=10, seed=4)
    with pytest.raises(LandscapeError, match=r"holds a convexity map of other settings: steps \(13 here, 12 in the"):
        compute_convexity(path, other, CPU, arch=ARCH)


def test_overwrite_replaces_the_map_keeps_the_loss_and_the_file_does_not_grow(tmp_path, tiny_surface):
    first, second = CurvatureMapSpec(steps=4, tol=0, images=6, seed=1), CurvatureMapSpec(stride=2, steps=6, tol=0)
    reference = copy(tiny_surface, tmp_path / "reference.h5")
    compute_convexity(reference, second, CPU, arch=ARCH)
    path = copy(tiny_surface, tmp_path / "s.h5")
    loss = read_surface(path)["train_loss"].copy()
    with pytest.raises(KeyboardInterrupt):
        compute_convexity(path, first, CPU, arch=ARCH, progress=stop_after(2))
    with pytest.raises(LandscapeError, match="of other settings: .* or pass --overwrite to replace it"):
        compute_convexity(path, second, CPU, arch=ARCH)
    sizes = []
    for spec in (second, first, second):  # replaced each time, started afresh even with the same settings
        compute_convexity(path, spec, CPU, arch=ARCH, overwrite=True)
        sizes.append(path.stat().st_size)
    assert sizes[0] == sizes[2]  # the old map's storage went with it
    surface = read_surface(path)
    assert surface.curvature is not None and surface.curvature.spec == read_surface(reference).curvature.spec
    got, want = map_arrays(path), map_arrays(reference)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(surface["train_loss"], loss)
    assert surface.spec == read_surface(reference).spec and surface.computed.all()
    assert [r.get("work") for r in surface.runs][-3:] == ["convexity map"] * 3
    result = CliRunner().invoke(
        app,
        [
            "convexity",
            "--surface",
            str(path),
            "--stride",
            "2",
            "--steps",
            "6",
            "--tol",
            "0",
            "--arch",
            ARCH,
            "--overwrite",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"--overwrite: replacing the convexity map of {path} (9 of its points were computed)" in result.output


def test_a_surface_replaced_while_the_run_starts_is_refused(tmp_path, tiny_surface, monkeypatch):
    """The model is built from the spec read before the writer lock: a file replaced meanwhile (compute
    --overwrite of another surface on the same grid) got a map of the old model."""
    import landscape.surface

    path = copy(tiny_surface, tmp_path / "s.h5")
    built = landscape.surface.surface_model

    def then_replaced(*args, **kwargs):
        result = built(*args, **kwargs)
        with h5py.File(path, "r+", locking=False) as f:
            spec = json.loads(f.attrs["spec"])
            spec["x"]["seed"] += 5
            f.attrs["spec"] = json.dumps(spec, sort_keys=True)
        return result

    monkeypatch.setattr(landscape.surface, "surface_model", then_replaced)
    with pytest.raises(LandscapeError, match="was replaced by another surface while this run started: run it again"):
        compute_convexity(path, CurvatureMapSpec(stride=2, steps=3), CPU, arch=ARCH)
    assert read_surface(path).curvature is None


def test_a_recorded_image_size_is_range_checked(tmp_path, tiny_surface):
    """The surface's data settings were taken as recorded: --image-size 20000 (6 GB to decode 11 images) too."""
    path = copy(tiny_surface, tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        spec = json.loads(f.attrs["spec"])
        spec["data"].update(name="imagefolder", image_size=20000)
        f.attrs["spec"] = json.dumps(spec, sort_keys=True)
    with pytest.raises(LandscapeError, match="s.h5 records data settings that are refused: --image-size must be 1 to"):
        compute_convexity(path, CurvatureMapSpec(stride=2, steps=3), CPU, arch=ARCH)
    with h5py.File(path, "r+", locking=False) as f:  # as earlier versions recorded a CIFAR --image-size: no effect
        spec["data"].update(name="cifar10", image_size=32)
        f.attrs["spec"] = json.dumps(spec, sort_keys=True)
    assert compute_convexity(path, CurvatureMapSpec(stride=2, steps=3), CPU, arch=ARCH).curvature is not None


def test_a_map_is_not_replaced_in_a_file_with_links(tmp_path, tiny_surface):
    path = copy(tiny_surface, tmp_path / "s.h5")
    compute_convexity(path, CurvatureMapSpec(stride=2, steps=3), CPU, arch=ARCH)
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(path, "r+", locking=False) as f:
        f["extra"] = h5py.ExternalLink(str(secret), "x")
    before = path.read_bytes()
    with pytest.raises(LandscapeError, match="extra is a link, not part of a surface file"):
        compute_convexity(path, CurvatureMapSpec(stride=2, steps=4), CPU, arch=ARCH, overwrite=True)
    assert path.read_bytes() == before


def test_the_loss_resumes_beside_a_map_and_the_map_beside_the_loss(tmp_path, tiny_surface):
    path = copy(tiny_surface, tmp_path / "s.h5")
    compute_convexity(path, CurvatureMapSpec(stride=2, steps=5, tol=0), CPU, arch=ARCH)
    finished = map_arrays(path)
    loss = read_surface(path)["train_loss"].copy()
    with h5py.File(path, "r+", locking=False) as f:  # a loss point lost, as a stopped compute leaves it
        f["computed"][1, 1] = 0
        f["train_loss"][1, 1] = np.nan
    spec = SurfaceSpec.from_dict(read_surface(path).spec)
    surface = compute_surface(spec, path, RunOptions(device="cpu", fold_bn=False))
    assert surface.computed.all()
    np.testing.assert_allclose(surface["train_loss"], loss, rtol=1e-6)
    for name, values in map_arrays(path).items():
        np.testing.assert_array_equal(values, finished[name], err_msg=name)


def test_adding_the_map_is_atomic(tmp_path, tiny_surface, monkeypatch):
    path = copy(tiny_surface, tmp_path / "s.h5")
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("landscape.storage.append_run", full_disk)
    with pytest.raises(LandscapeError, match="cannot write .*s.h5: no space left on the device"):
        compute_convexity(path, CurvatureMapSpec(steps=3), CPU, arch=ARCH)
    assert path.read_bytes() == before  # untouched: the map was being added to a copy
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.h5.lock", "s.h5"]  # no temporary file left
    assert read_surface(path).curvature is None
    with pytest.raises(LandscapeError, match="has no computed_hessian mask"):
        write_points(path, np.array([0]), {"hessian_min": [1.0]}, mask=CURVATURE_MASK)


def test_refused_surfaces_and_checkpoints(tmp_path, tiny_surface, cifar_root):
    path = copy(tiny_surface, tmp_path / "s.h5")
    with pytest.raises(LandscapeError, match="names code to import: only your own --arch"):
        compute_convexity(path, CurvatureMapSpec(steps=3), CPU)  # the file's arch is not trusted
    other = tmp_path / "other.pt"
    save_checkpoint(other, tiny_tanh(), {"num_classes": 10, "dataset": "cifar10"})
    with pytest.raises(LandscapeError, match="is not the checkpoint of this surface"):
        compute_convexity(path, CurvatureMapSpec(steps=3), CPU, arch=ARCH, checkpoint=other)
    with pytest.raises(LandscapeError, match="--images 17: the surface evaluated 16 images"):
        compute_convexity(path, CurvatureMapSpec(steps=3, images=17), CPU, arch=ARCH)
    with pytest.raises(LandscapeError, match="holds no test images"):
        compute_convexity(path, CurvatureMapSpec(steps=3, split="test"), CPU, arch=ARCH)
    recompute = tmp_path / "recompute.h5"
    spec = SurfaceSpec.from_dict(read_surface(path).spec)
    spec = SurfaceSpec(**{**spec.__dict__, "evaluation": type(spec.evaluation)(bn="recompute", bn_images=8)})
    compute_surface(spec, recompute, RunOptions(device="cpu", fold_bn=False))
    with pytest.raises(LandscapeError, match="--bn recompute: a convexity map takes the Hessian with the stored"):
        compute_convexity(recompute, CurvatureMapSpec(steps=3), CPU, arch=ARCH)
    r = runner.invoke(app, ["convexity", "--surface", str(tmp_path / "missing.h5")])
    assert r.exit_code == 2 and r.stderr == f"error: no such file: {tmp_path / 'missing.h5'}\n"


def test_the_recorded_checkpoint_is_checked_by_sha256_before_it_is_parsed(tmp_path, tiny_surface):
    """A surface whose spec names /etc/passwd as its checkpoint: the file was parsed first, and the error showed its
    first bytes ("72 6f 6f 74": root)."""
    import json

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = copy(tiny_surface, tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        spec = json.loads(f.attrs["spec"])
        spec["checkpoint"]["path"] = str(secret)
        f.attrs["spec"] = json.dumps(spec)
    with pytest.raises(LandscapeError, match=r"secret\.txt is not the checkpoint of this surface \(sha256") as error:
        compute_convexity(path, CurvatureMapSpec(steps=3), CPU, arch=ARCH)
    assert "first bytes" not in str(error.value) and "72 6f 6f 74" not in str(error.value)


def test_a_relative_checkpoint_path_is_recorded_absolute_and_a_missing_one_is_named(
    tmp_path, tiny_surface, cifar_root, monkeypatch
):
    """`--ckpt tiny.pt` was recorded as given: a convexity map run from another folder said only "checkpoint not
    found: tiny.pt"."""
    shutil.copyfile(tiny_surface.parent / "tiny.pt", tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    spec = SurfaceSpec.from_dict(read_surface(tiny_surface).spec)
    spec = dataclasses.replace(spec, checkpoint=dataclasses.replace(spec.checkpoint, path="tiny.pt", sha256=None))
    compute_surface(spec, tmp_path / "s.h5", RunOptions(device="cpu", fold_bn=False))
    assert read_surface(tmp_path / "s.h5").spec["checkpoint"]["path"] == str(tmp_path / "tiny.pt")
    monkeypatch.chdir(cifar_root)
    compute_convexity(tmp_path / "s.h5", CurvatureMapSpec(steps=3), CPU, arch=ARCH)  # found from elsewhere
    (tmp_path / "tiny.pt").rename(tmp_path / "moved.pt")
    with pytest.raises(LandscapeError, match=r"the surface's checkpoint is not at its recorded path .*tiny\.pt: pass"):
        compute_convexity(tmp_path / "s.h5", CurvatureMapSpec(steps=3), CPU, arch=ARCH)


# Crafted files: one clear error, nothing outside the file read, nothing declared allocated.


def surface_with_map(path: Path) -> Path:
    write_surface(path)
    with h5py.File(path, "r+", locking=False) as f:  # the images the map is on, as the writer stores them
        f["indices/train"] = np.arange(8)
    add_curvature(path, CurvatureMapSpec(steps=4).to_dict(), np.arange(8), {"started": "test"})
    write_points(
        path,
        np.arange(15),
        {"hessian_min": -np.ones(15), "hessian_max": np.arange(15.0) + 1, "hessian_products": np.full(15, 4)},
        mask=CURVATURE_MASK,
    )
    return path


def craft(path, name, make):
    """Replace (or, with `make` None, delete) the object `name` of the file."""
    with h5py.File(path, "r+", locking=False) as f:
        del f[name]
        if make is not None:
            make(f, name)


def set_settings(path, text):
    with h5py.File(path, "r+", locking=False) as f:
        f.attrs["curvature"] = text


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: set_settings(p, "{not json"), r"has a damaged curvature attribute \(not JSON\)"),
        (
            lambda p: set_settings(p, json.dumps({"steps": "many"})),
            "damaged convexity-map settings: curvature.steps should be an integer",
        ),
        (lambda p: set_settings(p, json.dumps({"steps": 4, "evil": 1})), "curvature has unknown fields: evil"),
        (lambda p: set_settings(p, json.dumps({"steps": 0})), "--steps must be in 2..1000"),
        (lambda p: craft(p, CURVATURE_MASK, None), "its convexity map lacks some of its parts"),
        (
            lambda p: craft(p, "hessian_min", lambda f, n: f.create_dataset(n, data=np.zeros((5, 3)))),
            r"is damaged: hessian_min is float64 \(5, 3\), the grid \(3, 5\)",
        ),
        (
            lambda p: craft(p, "hessian_max", lambda f, n: f.create_dataset(n, data=np.full((3, 5), b"1.0"))),
            r"is damaged: hessian_max is \|S3",
        ),
        (
            lambda p: craft(p, "hessian_max", lambda f, n: f.__setitem__(n, h5py.SoftLink("/train_loss"))),
            "'hessian_max' is a SoftLink, and links are never followed",
        ),
        (
            lambda p: craft(
                p, "hessian_min", lambda f, n: f.create_dataset(n, shape=(20000, 20000), dtype="f8", chunks=(100, 100))
            ),
            "'hessian_min' declares 400000000 values",
        ),
        (
            lambda p: craft(p, "indices/hessian", lambda f, n: f.__setitem__(n, h5py.ExternalLink("/etc/x.h5", "d"))),
            "'hessian' is a ExternalLink, and links are never followed",
        ),
    ],
)
def test_a_crafted_map_is_one_clear_error(tmp_path, change, message):
    path = surface_with_map(tmp_path / "crafted.h5")
    assert read_surface(path).curvature.computed.all()
    change(path)
    with pytest.raises(LandscapeError, match=message):
        read_surface(path)
    r = runner.invoke(app, ["info", str(path)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and str(path) in r.stderr


# Both execution paths: one process and `--workers 2`, real processes, one thread each.


def env(data_root: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    environ.update(LANDSCAPE_DATA_ROOT=str(data_root), OMP_NUM_THREADS="1")
    return environ


def landscape(args: list[str], data_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landscape", *map(str, args)],
        env=env(data_root),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


CONVEXITY = ["--steps", "4", "--tol", "0", "--images", "6", "--seed", "2"]


def test_two_ranks_and_a_killed_run_resumed_equal_one_process(tmp_path, resnet20_ckpt, cifar_root):
    """ResNet-20 (BatchNorm in eval mode) on 8 images: one process, `--workers 2`, and a SIGKILLed single process
    resumed by 2 ranks give the same map, bit for bit, in the same file layout."""
    surface = tmp_path / "surface.h5"
    args = ["--ckpt", resnet20_ckpt, "--x", "-1:1:3", "--y", "-1:1:3", "--subset", "8", "--out", surface]
    assert landscape(["compute", *args], cifar_root).returncode == 0
    one = copy(surface, tmp_path / "one.h5")
    result = landscape(["convexity", "--surface", one, *CONVEXITY], cifar_root)
    assert result.returncode == 0, result.stderr
    assert "convexity map, 9/9 points computed (stride 1, 6 train images" in result.stdout
    two = copy(surface, tmp_path / "two.h5")
    result = landscape(["convexity", "--surface", two, *CONVEXITY, "--workers", "2"], cifar_root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("convexity map, 9/9 points computed") == 1
    with h5py.File(one, "r") as f, h5py.File(two, "r") as g:
        assert sorted(f) == sorted(g) and dict(f.attrs) == dict(g.attrs)
    for name, values in map_arrays(one).items():
        np.testing.assert_array_equal(map_arrays(two)[name], values, err_msg=name)
    # a single process killed after its first points, resumed by two ranks
    killed = copy(surface, tmp_path / "killed.h5")
    process = subprocess.Popen(
        [sys.executable, "-m", "landscape", "convexity", "--surface", str(killed), *CONVEXITY],
        env=env(cifar_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        try:
            if read_surface(killed).curvature is not None and read_surface(killed).curvature.computed.any():
                break
        except LandscapeError:  # caught mid-rename
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = read_surface(killed).curvature  # readable, finished points complete
    assert partial is not None and 0 < partial.computed.sum() < 9
    assert np.isfinite(partial.largest[partial.computed]).all()
    result = landscape(["convexity", "--surface", killed, *CONVEXITY, "--workers", "2"], cifar_root)
    assert result.returncode == 0, result.stderr
    for name, values in map_arrays(one).items():
        np.testing.assert_array_equal(map_arrays(killed)[name], values, err_msg=name)


def test_the_convexity_figure_draws_the_ratio_on_the_maps_points(tmp_path):
    from landscape.plots import convexity_figure

    path = surface_with_map(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:  # a map of every other point, one not yet computed
        f.attrs["curvature"] = json.dumps(CurvatureMapSpec(stride=2, steps=4).to_dict())
        f[CURVATURE_MASK][1, 0] = 0
    surface = read_surface(path)
    fig = convexity_figure([surface, surface], titles=["a", "b"], zmax=0.5)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 and fig.layout.coloraxis.cmax == 0.5 and fig.layout.coloraxis.cmin == 0
    np.testing.assert_array_equal(heatmaps[0].x, [-1.0, 0.0, 1.0])  # columns 0, 2, 4 of 5; the middle row of 3
    np.testing.assert_array_equal(heatmaps[0].y, [0.0])
    z = np.array(heatmaps[0].z, dtype=float)
    np.testing.assert_allclose(z[0, 1:], [1 / 8, 1 / 10])  # |λmin/λmax| = 1 / (flat index + 1)
    assert np.isnan(z[0, 0])  # not computed: a gap
    assert len(fig.layout.shapes) == 2  # θ*'s cell in each panel
    with pytest.raises(LandscapeError, match="needs surfaces with convexity maps"):
        convexity_figure([read_surface(write_surface(tmp_path / "plain.h5"))])


def test_kept_gradient_graphs_give_the_same_map(tmp_path, tiny_surface):
    spec = CurvatureMapSpec(stride=2, steps=8, tol=0)
    plain = compute_convexity(copy(tiny_surface, tmp_path / "a.h5"), spec, CPU, arch=ARCH).curvature
    kept = RunOptions(device="cpu", keep_graph=True)
    graphs = compute_convexity(copy(tiny_surface, tmp_path / "b.h5"), spec, kept, arch=ARCH).curvature
    for name in ("smallest", "largest", "products", "computed"):
        np.testing.assert_array_equal(getattr(graphs, name), getattr(plain, name), err_msg=name)


def test_points_where_the_loss_overflows_get_nan_curvature_and_the_others_theirs(tmp_path, cifar_root):
    """NaN or inf Hessian-vector products made Lanczos fail (LinAlgError) for the whole pass: no point of the map was
    ever stored. Now such a point gets NaN, as its loss is stored NaN, and the rest are computed."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", tiny_tanh(), {"num_classes": 10, "dataset": "cifar10"})
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(tmp_path / "m.pt"), arch=ARCH),
        data=DataSpec(root=str(cifar_root), subset=8),
        grid=GridSpec(Axis.parse("-1e39:1e39:3")),
        x=DirectionSpec(seed=0, norm="none"),
    )
    surface = compute_surface(spec, tmp_path / "s.h5", RunOptions(device="cpu", fold_bn=False))
    assert np.isfinite(surface["train_loss"][1]) and not np.isfinite(surface["train_loss"][[0, 2]]).any()
    curvature = compute_convexity(tmp_path / "s.h5", CurvatureMapSpec(steps=5), CPU, arch=ARCH).curvature
    assert curvature is not None and curvature.computed.all()
    assert np.isnan(curvature.largest[[0, 2]]).all() and np.isnan(curvature.smallest[[0, 2]]).all()
    assert np.isfinite(curvature.largest[1]) and np.isfinite(curvature.smallest[1])
    info = runner.invoke(app, ["info", str(tmp_path / "s.h5")])
    assert info.exit_code == 0 and "2 points without curvature: the loss overflows there (NaN or inf)" in info.stdout


def test_the_summary_says_how_many_points_stopped_at_the_step_cap(tmp_path, tiny_surface):
    """'9/9 points computed ... tol 0.01' hid that every point ran to --steps without reaching the tolerance."""
    capped = copy(tiny_surface, tmp_path / "capped.h5")
    compute_convexity(capped, CurvatureMapSpec(steps=3, tol=1e-9, images=10), CPU, arch=ARCH)
    info = runner.invoke(app, ["info", str(capped)])
    assert info.exit_code == 0, info.output
    assert "  0 of 25 points reached tol 1e-09; 25 stopped at --steps 3, not known to be within it" in info.stdout
    loose = copy(tiny_surface, tmp_path / "loose.h5")
    curvature = compute_convexity(loose, CurvatureMapSpec(steps=60, tol=0.5, images=10), CPU, arch=ARCH).curvature
    assert curvature is not None and (curvature.products < 60).all()  # every point stopped early: nothing to say
    assert "stopped at --steps" not in runner.invoke(app, ["info", str(loose)]).stdout
