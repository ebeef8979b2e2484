"""PCA directions of a training trajectory: exact on a path that lies in a known plane, the PCA against NumPy's SVD,
resume, the stored path, untrusted snapshot files, the CLI."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from toymodels import softmax
from typer.testing import CliRunner

from landscape import (
    Axis,
    CheckpointSpec,
    DataSpec,
    DirectionSpec,
    GridSpec,
    SurfaceSpec,
    build_model,
    compute_surface,
    load_checkpoint,
    save_checkpoint,
)
from landscape.cli import app
from landscape.errors import LandscapeError
from landscape.plots import axis_titles
from landscape.spec import TrajectorySpec
from landscape.storage import read_surface
from landscape.trajectory import (
    load_differences,
    path_grid,
    principal_components,
    project,
    read_trajectory,
    resolve_trajectory,
    trajectory_files,
    trajectory_sha256,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
ARCH = "toymodels:softmax"
# The path in the plane of u and v: θ_i = θ* + a_i u + b_i v, the last snapshot θ* itself. The a and b have mean 0
# and are uncorrelated, Σa² = 120 > Σb² = 6: both the centered and the plain PCA give ±u and ±v, and the largest
# |a| (-8) and |b| (-2) are unique, so the signs are known: x = -u, y = -v.
A = np.array([-8.0, -2.0, 4.0, 6.0, 0.0])
B = np.array([1.0, -2.0, 1.0, 0.0, 0.0])
EPOCHS = [2, 4, 6, 8, 10]


def plane_vectors():
    """Orthonormal u and v with entries 0, ±0.5 on the softmax classifier's weight and bias (exact in float16)."""
    u = {"fc.weight": torch.zeros(10, 3072), "fc.bias": torch.zeros(10)}
    v = {"fc.weight": torch.zeros(10, 3072), "fc.bias": torch.zeros(10)}
    u["fc.weight"][0, :3] = 0.5
    u["fc.bias"][0] = 0.5
    v["fc.weight"][2, 5:7] = torch.tensor([0.5, -0.5])
    v["fc.weight"][4, 0] = 0.5
    v["fc.bias"][3] = -0.5
    return u, v


@pytest.fixture(scope="module")
def plane_run(tmp_path_factory):
    """θ* (dyadic weights, exact in float16), the trajectory as checkpoint files and as a snapshots file."""
    folder = tmp_path_factory.mktemp("plane")
    model = softmax()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-8, 9, p.shape, generator=g).float() / 8)
    theta = {k: v.clone() for k, v in model.state_dict().items()}
    meta = {"arch": ARCH, "num_classes": 10, "dataset": "cifar10", "mean": list(MEAN), "std": list(STD)}
    save_checkpoint(folder / "final.pt", model, meta)
    u, v = plane_vectors()
    (folder / "ckpts").mkdir()
    with h5py.File(folder / "snapshots.h5", "w") as f:
        f.attrs["format"] = "landscape-trajectory"
        for epoch, a, b in zip(EPOCHS, A, B):
            state = {k: theta[k] + a * u[k] + b * v[k] for k in theta}
            torch.save(state, folder / "ckpts" / f"epoch_{epoch}.pt")
            for k, t in state.items():
                f.create_dataset(f"epoch_{epoch:04d}/{k}", data=t.numpy().astype(np.float16))
    return folder, theta


def plane_spec(folder, root, trajectory, grid=("-1:1:3", "-1:1:3"), ignore="none", centered=True):
    return SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(folder / "final.pt"), arch=ARCH),
        data=DataSpec(root=str(root), subset=8),
        grid=GridSpec(Axis.parse(grid[0]), Axis.parse(grid[1])),
        x=DirectionSpec(kind="pca", index=1, norm="none", ignore=ignore),
        y=DirectionSpec(kind="pca", index=2, norm="none", ignore=ignore),
        trajectory=TrajectorySpec(paths=(str(trajectory),), centered=centered),
    )


@pytest.mark.parametrize("source", ["ckpts", "snapshots.h5"])
@pytest.mark.parametrize("centered", [True, False])
def test_a_path_in_a_known_plane_is_exact(tmp_path, cifar_root, plane_run, source, centered):
    folder, theta = plane_run
    out = tmp_path / "pca.h5"
    surface = compute_surface(plane_spec(folder, cifar_root, folder / source, centered=centered), out)
    path = read_trajectory(surface)
    assert path is not None
    np.testing.assert_array_equal(path.epochs, EPOCHS)
    # exact to float64 rounding: x = -u, y = -v, the path at (-a, -b), nothing off the plane
    np.testing.assert_allclose(path.coordinates, np.stack([-A, -B], axis=1), rtol=0, atol=1e-14)
    assert np.all(path.residual <= 1e-14)
    np.testing.assert_array_equal(path.distance, np.sqrt(A**2 + B**2))
    np.testing.assert_allclose(path.explained_variance_ratio, [120 / 126, 6 / 126], rtol=1e-14)
    u, v = plane_vectors()
    with h5py.File(out) as f:
        for name in theta:
            np.testing.assert_allclose(f[f"directions/x/{name}"][()], -u[name].numpy(), rtol=0, atol=1e-15)
            np.testing.assert_allclose(f[f"directions/y/{name}"][()], -v[name].numpy(), rtol=0, atol=1e-15)
        spec = json.loads(f.attrs["spec"])
    assert spec["x"]["kind"] == "pca" and spec["x"]["index"] == 1 and spec["y"]["index"] == 2
    assert spec["trajectory"]["centered"] is centered and spec["trajectory"]["paths"] == [str(folder / source)]
    files = trajectory_files([folder / source])
    assert spec["trajectory"]["sha256"] == trajectory_sha256(
        [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    )
    assert surface.surface_spec.trajectory.sha256 == spec["trajectory"]["sha256"]
    share = "of variance" if centered else "of Σ‖θᵢ − θ*‖²"  # not centred: a share of the squares about θ*
    assert axis_titles(surface) == (f"α: PC1, 95.2% {share}", f"β: PC2, 4.8% {share}")


def test_ignore_biasbn_zeroes_the_biases_of_directions_and_path(tmp_path, cifar_root, plane_run):
    folder, _ = plane_run
    out = tmp_path / "biasbn.h5"
    surface = compute_surface(plane_spec(folder, cifar_root, folder / "ckpts", ignore="biasbn"), out)
    path = read_trajectory(surface)
    with h5py.File(out) as f:
        assert not f["directions/x/fc.bias"][()].any() and not f["directions/y/fc.bias"][()].any()
        x = f["directions/x/fc.weight"][()]
    # the weight parts of u and v (both of norm √0.75) still hold the path: coordinates scale by their norms
    np.testing.assert_allclose(np.abs(x[0, :3]), 1 / np.sqrt(3), rtol=1e-7)
    np.testing.assert_allclose(path.coordinates[:, 0], -A * np.sqrt(0.75), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(path.coordinates[:, 1], -B * np.sqrt(0.75), rtol=1e-7, atol=1e-7)
    assert np.all(path.residual < 1e-6)


def test_pca_equals_numpy_svd():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((9, 200)) * np.linspace(3, 0.1, 200) + rng.standard_normal(200)
    for centered in (True, False):
        data = m - m.mean(axis=0) if centered else m
        _, s, vt = np.linalg.svd(data, full_matrices=False)
        pcs = principal_components(m, centered=centered)
        for k in range(2):
            assert abs(pcs.vectors[k] @ vt[k]) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(pcs.vectors @ pcs.vectors.T, np.eye(2), atol=1e-12)
        np.testing.assert_allclose(pcs.singular_values, s[:2], rtol=1e-12)
        np.testing.assert_allclose(pcs.explained_variance_ratio, s[:2] ** 2 / (s**2).sum(), rtol=1e-12)
        assert pcs.explained_variance_ratio.sum() < 1
        scores = data @ pcs.vectors.T  # the sign convention: each component's largest score is positive
        assert np.all(scores[np.argmax(np.abs(scores), axis=0), [0, 1]] > 0)


def test_centred_pca_keeps_its_precision_far_from_the_origin():
    """The Gram matrix was centred after the product: with the rows 1e4 from θ* and a spread of about 1, the
    components were 1.3e-7 off numpy's SVD of the centred rows (1e-15 near the origin)."""
    rng = np.random.default_rng(3)
    spread = rng.standard_normal((8, 300)) * np.linspace(2, 0.1, 300)
    m = spread + 1e4 * rng.standard_normal(300)  # one far offset shared by every row
    _, s, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    pcs = principal_components(m, centered=True)
    for k in range(2):
        assert np.abs(pcs.vectors[k] - np.sign(pcs.vectors[k] @ vt[k]) * vt[k]).max() < 1e-11
    np.testing.assert_allclose(pcs.singular_values, s[:2], rtol=1e-11)


def test_explained_variance_of_a_plane_sums_to_one_and_projection_of_a_point_off_it():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((50, 3)))[0].T  # three orthonormal rows
    coefficients = rng.standard_normal((6, 2))
    pcs = principal_components(coefficients @ basis[:2], centered=False)
    assert pcs.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-14)
    assert pcs.explained_variance_ratio[0] > pcs.explained_variance_ratio[1] > 0
    off = coefficients @ basis[:2] + 3.0 * basis[2]  # 3 off the plane of basis[0], basis[1]
    coordinates, residual = project(off, basis[:2] * np.array([[2.0], [0.5]]))  # directions need not be unit
    np.testing.assert_allclose(coordinates, coefficients / [2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(residual, 3.0, atol=1e-12)


def test_a_path_on_a_line_or_too_short_is_refused():
    line = np.outer(np.arange(1.0, 6.0), np.ones(10))
    with pytest.raises(LandscapeError, match="does not span 2 dimensions"):
        principal_components(line, centered=False)
    with pytest.raises(LandscapeError, match="does not span 2 dimensions"):
        principal_components(line + 1.0, centered=True)
    with pytest.raises(LandscapeError, match="at least 3"):
        principal_components(np.eye(2, 10), centered=True)


def test_resumed_pca_surface_equals_uninterrupted(tmp_path, cifar_root, plane_run):
    folder, _ = plane_run
    spec = plane_spec(folder, cifar_root, folder / "snapshots.h5", grid=("-2:9:4", "-3:3:3"))

    def stop_after(points):
        def progress(done, total):
            if done >= points:
                raise KeyboardInterrupt

        return progress

    compute_surface(spec, tmp_path / "full.h5")
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, tmp_path / "part.h5", progress=stop_after(5))
    assert read_surface(tmp_path / "part.h5").computed.sum() == 5
    moved = dataclasses.replace(spec, trajectory=dataclasses.replace(spec.trajectory, paths=(str(folder / "ckpts"),)))
    with pytest.raises(LandscapeError, match="trajectory.sha256"):  # another trajectory: refused by content
        compute_surface(moved, tmp_path / "part.h5")
    compute_surface(spec, tmp_path / "part.h5")
    with h5py.File(tmp_path / "full.h5") as full, h5py.File(tmp_path / "part.h5") as part:
        assert full.attrs["spec"] == part.attrs["spec"]
        names = []
        full.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and n != "runs" else None)
        assert "trajectory/coordinates" in names and "train_loss" in names
        for name in names:
            np.testing.assert_array_equal(part[name][()], full[name][()], err_msg=name)


def test_path_grid_holds_the_path_and_has_the_center_on_a_grid_point():
    grid = path_grid(np.stack([-A, -B], axis=1), 11, 9, margin=0.2)
    # x: the path spans -6..8, with 20% on each side -8.8..10.8: spacing 2.2 from -8.8 (θ* is point 4) to 13.2;
    # y: -1..2 widens to -1.6..2.6: spacing 0.54 from -1.62 (θ* is point 3) to 2.7
    assert grid == GridSpec(Axis(-8.8, 13.2, 11), Axis(-1.62, 2.7, 9))
    for axis in (grid.x, grid.y):
        assert np.abs(axis.coordinates()).min() < 1e-12
    assert path_grid(np.array([[0.0123, 0.5], [0.0456, -0.25]]), 3, 3, margin=0) == GridSpec(
        Axis(0.0, 0.046, 3), Axis(-0.5, 0.5, 3)
    )
    with pytest.raises(LandscapeError, match="margin"):
        path_grid(np.ones((3, 2)), 3, 3, margin=-1)
    with pytest.raises(LandscapeError, match="at least 2 points"):
        path_grid(np.stack([-A, -B], axis=1), 1, 3)
    with pytest.raises(LandscapeError, match="at least 3 points per axis here"):  # it gave 0:6e+06:2 silently
        path_grid(np.array([[-2.0, 1.0], [3.0, 2.0]]), 2, 2)
    assert path_grid(np.array([[0.5, 1.0], [2.0, 2.0]]), 2, 2, margin=0) == GridSpec(
        Axis(0.0, 2.0, 2), Axis(0.0, 2.0, 2)
    )


def test_other_surfaces_keep_their_stored_spec():
    spec = SurfaceSpec(
        checkpoint=CheckpointSpec(path="m.pt"), data=DataSpec(), grid=GridSpec(Axis(-1, 1, 3)), x=DirectionSpec()
    )
    stored = spec.to_dict()
    assert "trajectory" not in stored and "index" not in stored["x"] and "source_sha256" not in stored["x"]
    assert SurfaceSpec.from_dict(json.loads(json.dumps(stored))) == spec


def test_pca_spec_is_checked():
    base = dict(checkpoint=CheckpointSpec(path="m.pt"), data=DataSpec(), grid=GridSpec(Axis(-1, 1, 3), Axis(-1, 1, 3)))
    pca = dict(x=DirectionSpec(kind="pca", index=1), y=DirectionSpec(kind="pca", index=2))
    with pytest.raises(LandscapeError, match="needs a trajectory"):
        SurfaceSpec(**base, **pca).validate()
    trajectory = TrajectorySpec(paths=("t.h5",))
    with pytest.raises(LandscapeError, match="x = component 1, y = component 2"):
        SurfaceSpec(**base, x=pca["y"], y=pca["x"], trajectory=trajectory).validate()
    with pytest.raises(LandscapeError, match="component 1 or 2"):
        DirectionSpec(kind="pca", index=3).validate()
    SurfaceSpec(**base, **pca, trajectory=trajectory).validate()


def snapshots_with(path, theta, change):
    """A snapshots file of two epochs, the second one altered by `change(group)`."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "landscape-trajectory"
        for epoch in (1, 2):
            group = f.create_group(f"epoch_{epoch:04d}")
            for k, t in theta.items():
                group.create_dataset(k, data=t.numpy())
        change(f["epoch_0002"])
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g.__delitem__("fc.bias"), "lacks 1 tensors of the model, e.g. fc.bias"),
        (lambda g: g.create_dataset("conv9.weight", data=np.zeros(3)), "tensors the model does not have"),
        (lambda g: (g.__delitem__("fc.bias"), g.create_dataset("fc.bias", data=np.zeros(11))), "declares 11 values"),
        (lambda g: (g.__delitem__("fc.bias"), g.create_dataset("fc.bias", data=np.zeros((2, 5)))), r"\(2, 5\)"),
        (lambda g: (g.__delitem__("fc.bias"), g.create_dataset("fc.bias", data=np.zeros(10, int))), "int64"),
        (lambda g: (g.__delitem__("fc.bias"), g.create_dataset("fc.bias", data=np.full(10, np.nan))), "NaN or inf"),
        (lambda g: (g.__delitem__("fc.bias"), g.__setitem__("fc.bias", h5py.SoftLink("/x"))), "links are never"),
        (
            lambda g: (g.__delitem__("fc.bias"), g.__setitem__("fc.bias", h5py.ExternalLink("/etc/passwd", "/"))),
            "links are never",
        ),
    ],
)
def test_a_crafted_snapshots_file_is_one_clear_error(tmp_path, plane_run, change, message):
    _, theta = plane_run
    path = snapshots_with(tmp_path / "s.h5", theta, change)
    with pytest.raises(LandscapeError, match=message):
        load_differences(trajectory_files([path]), theta, theta.keys())


def test_a_file_that_is_not_a_trajectory_is_refused(tmp_path, plane_run):
    folder, theta = plane_run
    with h5py.File(tmp_path / "surface.h5", "w") as f:
        f.attrs["format"] = "landscape-surface"
    with pytest.raises(LandscapeError, match="not a snapshots file"):
        load_differences(trajectory_files([tmp_path / "surface.h5"]), theta, theta.keys())
    with pytest.raises(LandscapeError, match="holds no checkpoints"):
        trajectory_files([tmp_path])
    with pytest.raises(LandscapeError, match="pass it alone"):
        trajectory_files([folder / "snapshots.h5", folder / "final.pt"])
    with pytest.raises(LandscapeError, match="not found"):
        trajectory_files([tmp_path / "none.pt"])


def test_checkpoint_files_in_natural_order_with_their_epochs(tmp_path, plane_run):
    folder, theta = plane_run
    files = trajectory_files([folder / "ckpts"])
    assert [f.name for f in files] == [f"epoch_{e}.pt" for e in EPOCHS]  # epoch_10 last, not after epoch_1
    differences, epochs, _ = load_differences(files, theta, theta.keys(), ignore="none")
    assert epochs.tolist() == EPOCHS and differences.shape == (5, 30730)
    listed, epochs, _ = load_differences(files[::-1], theta, theta.keys(), ignore="none")  # a list: as given
    np.testing.assert_array_equal(listed, differences[::-1])


def test_read_trajectory_of_other_surfaces_is_none(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["xcoordinates"] = np.zeros(3)
    assert read_trajectory(tmp_path / "s.h5") is None


runner = CliRunner()


def test_cli_compute_with_a_trajectory(tmp_path, cifar_root, plane_run):
    folder, _ = plane_run
    out = tmp_path / "cli.h5"
    args = ["compute", "--ckpt", folder / "final.pt", "--arch", ARCH, "--trajectory", folder / "snapshots.h5"]
    args += ["--x", "5", "--y", "3", "--data-root", cifar_root, "--subset", 8, "--out", out, "--xignore", "none"]
    result = runner.invoke(app, [str(a) for a in args], env={"LANDSCAPE_DATA_ROOT": ""})
    assert result.exit_code == 0, result.output
    surface = read_surface(out)
    assert surface.surface_spec.grid == GridSpec(Axis(-10.8, 10.8, 5), Axis(-2.6, 2.6, 3))  # extent + 20%, θ* on it
    assert "explained variance" in result.stdout
    again = runner.invoke(app, [str(a) for a in args], env={"LANDSCAPE_DATA_ROOT": ""})  # resumes: nothing to do
    assert again.exit_code == 0, again.output
    bad = runner.invoke(
        app, [str(a) for a in args[:-2]] + ["--out", str(tmp_path / "b.h5"), "--xtarget", str(folder / "final.pt")]
    )
    assert bad.exit_code == 2 and "one source for the x direction" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    given = [str(a) for a in args] + ["--x", "-1:1:2", "--out", str(tmp_path / "g.h5")]  # the later --x, --out count
    given = runner.invoke(app, given, env={"LANDSCAPE_DATA_ROOT": ""})
    assert given.exit_code == 0, given.output  # the given axis was sized from the path too: "at least 3 points"
    assert read_surface(tmp_path / "g.h5").surface_spec.grid == GridSpec(Axis(-1, 1, 2), Axis(-2.6, 2.6, 3))
    zero = [str(a) for a in args[:-2]] + ["--x", "0", "--out", str(tmp_path / "z.h5")]  # the later --x counts
    zero = runner.invoke(app, zero, env={"LANDSCAPE_DATA_ROOT": ""})
    assert zero.exit_code == 2 and zero.stderr == "error: --x 0: an axis needs at least one point\n"  # was '0:0:0'


@pytest.mark.parametrize("name, overwrite", [("epoch_8.pt", True), ("epoch_99.pt", False)])
def test_the_surface_is_never_written_among_the_trajectorys_checkpoints(
    tmp_path, cifar_root, plane_run, name, overwrite
):
    """--out in the --trajectory folder replaced a snapshot with a surface (--overwrite), or joined the snapshots."""
    folder, _ = plane_run
    ckpts = tmp_path / "ckpts"
    shutil.copytree(folder / "ckpts", ckpts)
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    out = ckpts / name
    args = ["compute", "--ckpt", folder / "final.pt", "--arch", ARCH, "--trajectory", ckpts, "--xignore", "none"]
    args += ["--x", "3", "--y", "3", "--data-root", cifar_root, "--subset", 8, "--out", out]
    result = runner.invoke(app, [str(a) for a in args] + (["--overwrite"] if overwrite else []))
    assert result.exit_code == 2 and result.stderr == (
        f"error: {out} would be one of the checkpoints of the trajectory folder {ckpts}: write the surface elsewhere\n"
    )
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before


def test_theta_star_in_the_folder_is_taken_last_and_the_epochs_keep_their_numbers(tmp_path, capsys, monkeypatch):
    """checkpoint.pt among epoch_2..epoch_10: it was the path's start and the epochs were relabelled 1..6."""
    import landscape.trajectory
    from landscape.trajectory import _epoch_labels

    monkeypatch.setattr(landscape.trajectory, "_SAID", set())

    for name in ["checkpoint.pt", "epoch_2.pt", "epoch_4.pt", "epoch_10.pt"]:
        (tmp_path / name).write_bytes(b"")
    files = trajectory_files([tmp_path])
    assert [f.name for f in files] == ["epoch_2.pt", "epoch_4.pt", "epoch_10.pt", "checkpoint.pt"]
    assert _epoch_labels(files) == [2, 4, 10, 11]
    assert capsys.readouterr().err == "trajectory: names without an epoch number: checkpoint.pt as epoch 11\n"
    assert _epoch_labels(files) == [2, 4, 10, 11] and capsys.readouterr().err == ""  # said once (grid, then run)
    named = tmp_path / "named"  # θ* named after its architecture: the 20 of resnet20 is not an epoch
    named.mkdir()
    for name in ["resnet20.pt", "resnet20_epoch5.pt", "resnet20_epoch10.pt", "resnet20_epoch15.pt"]:
        (named / name).write_bytes(b"")
    files = trajectory_files([named])
    assert [f.name for f in files] == [
        "resnet20_epoch5.pt",
        "resnet20_epoch10.pt",
        "resnet20_epoch15.pt",
        "resnet20.pt",
    ]
    assert _epoch_labels(files) == [5, 10, 15, 16]
    assert _epoch_labels([Path("epoch_10.pt"), Path("epoch_12.pt")]) == [10, 12]  # "epoch_1" is not the shared part


def test_epoch_labels_are_the_first_whole_number_of_each_name(capsys, monkeypatch):
    """The last number was taken: epoch_{1,2,3}_loss_0.532/0.311/0.250 were epochs 532, 311, 250 (a path drawn
    backwards), and ckpt_e{5,10,20}_lr0.1 all epoch 1, silently counted 1, 2, 3."""
    import landscape.trajectory
    from landscape.trajectory import _epoch_labels

    monkeypatch.setattr(landscape.trajectory, "_SAID", set())
    losses = [f"epoch_{e}_loss_0.{v}.pt" for e, v in ((1, 532), (2, 311), (3, 250))]
    assert _epoch_labels([Path(n) for n in losses]) == [1, 2, 3]
    assert _epoch_labels([Path(f"ckpt_e{e}_lr0.1.pt") for e in (5, 10, 20)]) == [5, 10, 20]
    named = [Path(f"resnet20_epoch{e}.pt") for e in (5, 10, 15)] + [Path("checkpoint.pt")]  # no shared beginning
    assert _epoch_labels(named) == [5, 10, 15, 16]  # not the 20 of every name
    capsys.readouterr()
    assert capsys.readouterr().err == ""
    assert _epoch_labels([Path(f"epoch_{e}.pt") for e in (10, 5, 1)]) == [10, 5, 1]  # taken as given, and said
    assert capsys.readouterr().err == (
        "trajectory: epochs fall from 10 (epoch_10.pt) to 5 (epoch_5.pt): the files are taken in the order given\n"
    )
    assert _epoch_labels([Path("a_7.pt"), Path("b_7.pt"), Path("c_7.pt")]) == [1, 2, 3]
    assert (
        capsys.readouterr().err == "trajectory: the file names give no distinct epochs: the 3 files are epochs 1 to 3\n"
    )

    names = ["run1_epoch_1234567890.pt", "run1_epoch_1234567891.pt"]  # a run of 9 digits cut these to 0 and 1
    assert _epoch_labels([Path(n) for n in names]) == [1234567890, 1234567891]
    assert _epoch_labels([Path("a_7.pt"), Path("b_7.pt")]) == [1, 2]  # not distinct: counted instead
    assert _epoch_labels([Path("e_" + "9" * 19 + ".pt"), Path("e_2.pt")]) == [1, 2]  # beyond int64


def test_hard_linked_snapshot_groups_are_refused(tmp_path, plane_run):
    """One group under many epoch names: a small file that counted as thousands of snapshots."""
    _, theta = plane_run
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "landscape-trajectory"
        for k, t in theta.items():
            f.create_dataset(f"epoch_0001/{k}", data=t.numpy())
        for epoch in range(2, 9):
            f[f"epoch_{epoch:04d}"] = f["epoch_0001"]  # hard links
    with pytest.raises(LandscapeError) as error:
        load_differences(trajectory_files([path]), theta, theta.keys())
    assert str(error.value) == f"{path} is damaged: 'epoch_0001' is stored under more than one name (hard links)"


def test_hard_linked_datasets_of_snapshots_are_refused(tmp_path, plane_run):
    _, theta = plane_run

    def link(group):
        del group["fc.weight"]
        group["fc.weight"] = group.file["epoch_0001/fc.weight"]

    path = snapshots_with(tmp_path / "s.h5", theta, link)
    with pytest.raises(LandscapeError) as error:
        load_differences(trajectory_files([path]), theta, theta.keys())
    assert (
        str(error.value)
        == f"{path} (epoch_0001) is damaged: 'fc.weight' is stored under more than one name (hard links)"
    )


def test_differences_beyond_the_memory_budget_are_refused_before_a_snapshot_is_read(tmp_path, plane_run, monkeypatch):
    _, theta = plane_run
    # epoch 2 holds NaN: read, it would be that error instead
    nan = lambda g: (g.__delitem__("fc.bias"), g.create_dataset("fc.bias", data=np.full(10, np.nan)))  # noqa: E731
    path = snapshots_with(tmp_path / "s.h5", theta, nan)
    monkeypatch.setattr("landscape.trajectory.memory_budget", lambda: 2 * 30730 * 8 - 1)
    with pytest.raises(LandscapeError) as error:
        load_differences(trajectory_files([path]), theta, theta.keys())
    assert str(error.value) == (
        f"{path}: 2 snapshots of 30730 values take 0.5 MB in float64, more than half of this machine's memory "
        "(0.5 MB): take fewer snapshots"
    )
    monkeypatch.setattr("landscape.trajectory.memory_budget", lambda: 2 * 30730 * 8)  # exactly fits: read
    with pytest.raises(LandscapeError, match="NaN or inf"):
        load_differences(trajectory_files([path]), theta, theta.keys())


def shifted_snapshots(path, theta, shift):
    """The plane path of `plane_run` moved `shift` off θ* along a unit vector w orthogonal to the plane (exact in
    float16): each snapshot's distance to θ* is √(a² + b² + shift²)."""
    u, v = plane_vectors()
    w = torch.zeros(10, 3072)
    w[7, 100:104] = 0.5
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "landscape-trajectory"
        for epoch, a, b in zip(EPOCHS, A, B):
            for k in theta:
                moved = theta[k] + a * u[k] + b * v[k] + (shift * w if k == "fc.weight" else 0)
                f.create_dataset(f"epoch_{epoch:04d}/{k}", data=moved.numpy().astype(np.float16))
    return path


def test_a_trajectory_that_does_not_lead_to_the_center_is_refused(tmp_path, cifar_root, plane_run):
    """Neither the checkpoint nor the file records a recipe: the nearest snapshot must be within half the farthest's
    distance of θ*."""
    folder, _ = plane_run
    _, theta = plane_run
    far = shifted_snapshots(tmp_path / "far.h5", theta, 10.0)  # distances √165 = 12.85 .. 10 (epoch 10)
    with pytest.raises(LandscapeError) as error:
        compute_surface(plane_spec(folder, cifar_root, far), tmp_path / "far_pca.h5")
    assert str(error.value) == (
        f"{far} does not lead to θ*: its nearest snapshot (epoch 10) is 10 from it, 78% of its farthest's 12.85 "
        "(epoch 2): the snapshots of another run, or a θ* trained on after them?"
    )
    assert not (tmp_path / "far_pca.h5").exists()
    near = shifted_snapshots(tmp_path / "near.h5", theta, 4.0)  # √81 = 9 .. 4: 44%, a path that ends near θ*
    path = read_trajectory(compute_surface(plane_spec(folder, cifar_root, near), tmp_path / "near_pca.h5"))
    np.testing.assert_allclose(path.distance, np.sqrt(A**2 + B**2 + 16), rtol=1e-14)


TRAIN = dict(arch=ARCH, epochs=3, batch_size=16, lr=0.05, snapshot_every=1, channels_last=False, precision="fp32")


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, cifar_root):
    """Three short runs of `landscape train` with snapshots: `a`, `b` (another seed) and `c` (a warm restart of
    `a`)."""
    from landscape import DataSpec as Data
    from landscape.train import TrainSpec, train

    folder = tmp_path_factory.mktemp("runs")
    data = Data(root=str(cifar_root))
    train(TrainSpec(data=data, **TRAIN), folder / "a", device="cpu")
    train(TrainSpec(data=data, **TRAIN, seed=1), folder / "b", device="cpu")
    train(TrainSpec(data=data, **TRAIN, init=str(folder / "a" / "checkpoint.pt")), folder / "c", device="cpu")
    return folder


def own_plane(checkpoint_path, snapshots):
    """`trajectory_plane` of `snapshots` around the checkpoint, given the checkpoint (as `trajectory_grid` does)."""
    from landscape.directions import center_of, direction_names
    from landscape.trajectory import trajectory_plane

    checkpoint = load_checkpoint(checkpoint_path)
    model = build_model(checkpoint, ARCH)
    center = center_of(model, direction_names(model, "weights"))
    return trajectory_plane(
        TrajectorySpec(paths=(str(snapshots),)), center, model.state_dict().keys(), "none", checkpoint
    )


def compute_on_trajectory(ckpt: Path, snapshots: Path, cifar_root: Path, out: Path):
    """`landscape compute` of a 3x3 grid on the PCA directions of `snapshots` around `ckpt`."""
    args = ["compute", "--ckpt", ckpt, "--arch", ARCH, "--trajectory", snapshots, "--x", "3", "--y", "3"]
    args += ["--data-root", cifar_root, "--subset", 8, "--out", out]
    return runner.invoke(app, [str(a) for a in args], env={"LANDSCAPE_DATA_ROOT": ""})


def test_a_snapshots_file_of_another_run_is_refused(tmp_path, cifar_root, trained_runs):
    runs = trained_runs
    result = compute_on_trajectory(
        runs / "a" / "checkpoint.pt", runs / "b" / "snapshots.h5", cifar_root, tmp_path / "other.h5"
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {runs / 'b' / 'snapshots.h5'} holds the snapshots of another run than {runs / 'a' / 'checkpoint.pt'}: "
        "their recorded recipes differ in seed\n"
    )
    assert not (tmp_path / "other.h5").exists()
    with pytest.raises(LandscapeError, match="holds the snapshots of another run than"):  # as compute_surface resolves
        resolve_trajectory(
            TrajectorySpec(paths=(str(runs / "b" / "snapshots.h5"),)), load_checkpoint(runs / "a" / "checkpoint.pt")
        )
    plane = own_plane(runs / "a" / "checkpoint.pt", runs / "a" / "snapshots.h5")  # its own run: taken
    assert plane.path.epochs.tolist() == [1, 2, 3] and plane.path.distance[-1] < 1e-2


def test_the_snapshots_of_the_run_a_warm_restart_continued_are_refused(tmp_path, cifar_root, trained_runs):
    """The documented case: `checkpoints/resnet20.pt` continued the run of `checkpoints/resnet20_trajectory.h5`."""
    runs = trained_runs
    result = compute_on_trajectory(
        runs / "c" / "checkpoint.pt", runs / "a" / "snapshots.h5", cifar_root, tmp_path / "restart.h5"
    )
    assert result.exit_code == 2, result.output
    sha256 = hashlib.sha256((runs / "a" / "checkpoint.pt").read_bytes()).hexdigest()
    assert result.stderr == (
        f"error: {runs / 'a' / 'snapshots.h5'} holds the snapshots of the run that {runs / 'c' / 'checkpoint.pt'} "
        f"continues (--init, sha256 {sha256[:12]}...): they lead to that run's checkpoint, not to θ*; pass that one as "
        "--ckpt\n"
    )
    plane = own_plane(runs / "c" / "checkpoint.pt", runs / "c" / "snapshots.h5")  # the warm restart's own: taken
    assert plane.path.epochs.tolist() == [1, 2, 3]


def recipe_edited(source, path, edit):
    """A copy of a snapshots file whose recorded recipe `edit(recipe)` changed."""
    path.write_bytes(source.read_bytes())
    with h5py.File(path, "a") as f:
        recipe = json.loads(f.attrs["spec"])
        edit(recipe)
        f.attrs["spec"] = json.dumps(recipe)
    return path


def test_recipes_compare_without_what_a_resume_may_change(tmp_path, trained_runs):
    runs = trained_runs
    source, checkpoint = runs / "a" / "snapshots.h5", runs / "a" / "checkpoint.pt"

    def resumed_elsewhere(recipe):  # another precision and data folder; a field added since missing
        recipe["precision"], recipe["data"]["root"] = "bf16", "/elsewhere"
        del recipe["init"], recipe["data"]["part"]

    own_plane(checkpoint, recipe_edited(source, tmp_path / "same.h5", resumed_elsewhere))
    longer = recipe_edited(source, tmp_path / "longer.h5", lambda r: r.update(epochs=30, lr=0.1))
    with pytest.raises(LandscapeError) as error:
        own_plane(checkpoint, longer)
    assert str(error.value) == (
        f"{longer} holds the snapshots of another run than {checkpoint}: their recorded recipes differ in epochs, lr"
    )
    unknown = recipe_edited(source, tmp_path / "unknown.h5", lambda r: r.update(future_field=1))  # one side only
    own_plane(checkpoint, unknown)
    with h5py.File(bad := tmp_path / "bad.h5", "w") as f:
        f.attrs["format"], f.attrs["spec"] = "landscape-trajectory", "[" * 100_000
    with pytest.raises(LandscapeError) as error:
        own_plane(checkpoint, bad)
    assert str(error.value) == f"{bad}: its spec attribute is not a training recipe (a JSON object)"


def test_recipe_fields_named_by_a_crafted_file_are_shown_on_one_line(tmp_path, trained_runs):
    runs = trained_runs
    checkpoint = load_checkpoint(runs / "a" / "checkpoint.pt")
    model = build_model(checkpoint, ARCH)
    recipe = {**checkpoint.metadata["recipe"], "x\ny": 2}
    save_checkpoint(tmp_path / "crafted.pt", model, {**checkpoint.metadata, "recipe": recipe})
    snapshots = recipe_edited(runs / "a" / "snapshots.h5", tmp_path / "s.h5", lambda r: r.update({"x\ny": 1}))
    with pytest.raises(LandscapeError) as error:
        own_plane(tmp_path / "crafted.pt", snapshots)
    assert str(error.value) == (
        f"{snapshots} holds the snapshots of another run than {tmp_path / 'crafted.pt'}: their recorded recipes "
        "differ in 'x\\ny'"
    )
