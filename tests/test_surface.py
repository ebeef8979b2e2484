"""compute_surface end to end: an exact analytic surface, the file layout, resume, refusal of another spec."""

import dataclasses
import json
import pickle
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TRAIN_PER_BATCH
from toymodels import dropout_bn, softmax
from typer.testing import CliRunner

from landscape import (
    Axis,
    CheckpointSpec,
    CurvatureMapSpec,
    DataSpec,
    DirectionSpec,
    GridSpec,
    LandscapeError,
    SurfaceSpec,
    build_model,
    compute_convexity,
    compute_surface,
    load_checkpoint,
    read_surface,
    save_checkpoint,
)
from landscape.checkpoints import CHECKPOINT_FORMAT
from landscape.cli import app
from landscape.data import subset_indices
from landscape.evaluate import EvalSpec, RunOptions
from landscape.storage import read_indices

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def softmax_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = softmax()
    path = tmp_path_factory.mktemp("toy") / "softmax.pt"
    save_checkpoint(
        path,
        model,
        {"arch": "toymodels:softmax", "num_classes": 10, "dataset": "cifar10", "mean": list(MEAN), "std": list(STD)},
    )
    return path, {k: v.double().numpy() for k, v in model.state_dict().items()}


def spec_for(ckpt, root, grid="-1:1:5", ygrid="-1:1:4", **data):
    arch = "toymodels:softmax" if Path(ckpt).name == "softmax.pt" else None  # the user's own --arch
    return SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(ckpt), arch=arch),
        data=DataSpec(root=str(root), **data),
        grid=GridSpec(Axis.parse(grid), Axis.parse(ygrid) if ygrid else None),
        x=DirectionSpec(seed=0),
        y=DirectionSpec(seed=1) if ygrid else None,
    )


def raw_cifar(root, split):
    """Images and labels read straight from the pickles, independently of landscape.data."""
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data, labels = [], []
    for name in files:
        with open(root / "cifar-10-batches-py" / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data.append(batch["data"])
        labels += batch["labels"]
    return np.concatenate(data).reshape(-1, 3, 32, 32), np.array(labels)


def test_softmax_regression_surface_is_exact(tmp_path, cifar_root, softmax_ckpt):
    ckpt, theta = softmax_ckpt
    out = tmp_path / "s.h5"
    surface = compute_surface(spec_for(ckpt, cifar_root, subset=40, split="both"), out)
    with h5py.File(out) as f:
        dx = {k: v[()].astype(np.float64) for k, v in f["directions/x"].items()}
        dy = {k: v[()].astype(np.float64) for k, v in f["directions/y"].items()}
        indices = {s: f[f"indices/{s}"][()] for s in ("train", "test")}
    assert not dx["fc.bias"].any()  # ignore=biasbn
    np.testing.assert_allclose(
        np.linalg.norm(dx["fc.weight"], axis=1), np.linalg.norm(theta["fc.weight"], axis=1), rtol=1e-6
    )
    for split in ("train", "test"):
        images, labels = raw_cifar(cifar_root, split)
        idx = indices[split]
        assert len(idx) == min(40, len(labels)) and np.all(np.diff(idx) > 0)
        x = (images[idx] / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
        x = x.reshape(len(idx), -1)
        y = labels[idx]
        for j, b in enumerate(surface.ycoordinates):
            for i, a in enumerate(surface.xcoordinates):
                w = theta["fc.weight"] + a * dx["fc.weight"] + b * dy["fc.weight"]
                logits = x @ w.T + theta["fc.bias"]
                top = logits.max(1, keepdims=True)
                logz = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
                loss = np.mean(logz - logits[np.arange(len(y)), y])
                acc = 100.0 * np.mean(logits.argmax(1) == y)
                assert surface[f"{split}_loss"][j, i] == pytest.approx(loss, rel=2e-5)
                assert surface[f"{split}_acc"][j, i] == pytest.approx(acc)
    assert surface.computed.all() and surface.completion == 1.0


def test_file_layout(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "r.h5"
    compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:3", "-0.5:0.5:2", subset=10), out)
    model_keys = set(torch.load(resnet20_ckpt, weights_only=True)["state_dict"])
    with h5py.File(out) as f:
        assert f.attrs["format"] == "landscape-surface" and f.attrs["format_version"] == 2
        spec = json.loads(f.attrs["spec"])
        assert spec["checkpoint"]["arch"] == "resnet20" and len(spec["checkpoint"]["sha256"]) == 64
        assert spec["grid"]["x"] == {"start": -1.0, "stop": 1.0, "num": 3}
        runs = f["runs"][()]
        assert runs.shape == (32,) and runs.dtype == np.dtype("S2048") and not runs[1:].any()
        assert json.loads(runs[0])["torch"] == torch.__version__ and json.loads(runs[0])["n"] == 0
        np.testing.assert_array_equal(f["xcoordinates"][()], [-1, 0, 1])
        np.testing.assert_array_equal(f["ycoordinates"][()], [-0.5, 0.5])
        assert f["train_loss"].shape == (2, 3) and "test_loss" not in f
        params = {k for k in model_keys if "running" not in k and "num_batches" not in k}
        assert set(f["directions/x"]) == set(f["directions/y"]) == params
        assert f["indices/train"].shape == (10,)
    assert SurfaceSpec.from_dict(spec).grid == GridSpec(Axis(-1, 1, 3), Axis(-0.5, 0.5, 2))


def test_one_dimensional_surface_is_the_beta_zero_row_of_the_plane(tmp_path, cifar_root, resnet20_ckpt):
    line = compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:5", None, subset=8), tmp_path / "c.h5")
    plane = compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:5", "-1:1:3", subset=8), tmp_path / "p.h5")
    assert line.ycoordinates is None and line["train_loss"].shape == (5,)
    assert plane.ycoordinates[1] == 0.0
    for metric in ("train_loss", "train_acc"):  # the same x direction (seed 0), β = 0: the same computation
        np.testing.assert_array_equal(line[metric], plane[metric][1], err_msg=metric)
    assert len(set(np.round(line["train_loss"], 6))) == 5  # and not a constant that would pass any way


def test_states_directions_match_the_papers_procedure(tmp_path, cifar_root, resnet20_ckpt):
    """dir_type=states, ignore=none as in the paper's code: 1-D tensors (biases, BN weights and running
    statistics) move along θ*'s own values, the others along filter-normalized noise; the surface equals a plain
    eval-mode forward of a model whose whole state was set to θ* + αδ + βη (BN folding and all)."""
    spec = spec_for(resnet20_ckpt, cifar_root, "-0.5:0.5:3", "-0.5:0.5:3", subset=16)
    spec = dataclasses.replace(
        spec,
        x=DirectionSpec(seed=0, ignore="none", dir_type="states"),
        y=DirectionSpec(seed=1, ignore="none", dir_type="states"),
    )
    surface = compute_surface(spec, tmp_path / "states.h5")
    checkpoint = load_checkpoint(resnet20_ckpt)
    float_state = {k for k, v in checkpoint.state_dict.items() if v.is_floating_point()}  # not the BN counters
    theta = {k: v.double() if k in float_state else v for k, v in checkpoint.state_dict.items()}
    with h5py.File(tmp_path / "states.h5", "r", locking=False) as f:
        dirs = {
            axis: {k: torch.from_numpy(v[()]).double() for k, v in f[f"directions/{axis}"].items()}
            for axis in ("x", "y")
        }
        idx = f["indices/train"][()]
    assert set(dirs["x"]) == float_state and "bn1.running_var" in float_state  # the BN statistics move too
    for d in dirs.values():
        for name, t in d.items():
            if t.dim() <= 1:
                torch.testing.assert_close(t, theta[name], rtol=1e-6, atol=0)  # the paper: d.copy_(w)
            else:
                torch.testing.assert_close(
                    t.flatten(1).norm(dim=1), theta[name].flatten(1).norm(dim=1), rtol=1e-5, atol=0
                )
    images, labels = raw_cifar(cifar_root, "train")
    mean, std = (torch.tensor(checkpoint.metadata[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(images[idx]).double() / 255 - mean) / std
    y = torch.from_numpy(labels[idx])
    model = build_model(checkpoint).double().eval()
    for j, b in enumerate(surface.ycoordinates):
        for i, a in enumerate(surface.xcoordinates):
            model.load_state_dict(
                {k: v + a * dirs["x"][k] + b * dirs["y"][k] if k in float_state else v for k, v in theta.items()}
            )
            with torch.no_grad():
                loss = torch.nn.functional.cross_entropy(model(x), y).item()
            assert surface["train_loss"][j, i] == pytest.approx(loss, rel=5e-6), (a, b)


def stop_after(points):
    def progress(done, total):
        if done >= points:
            raise KeyboardInterrupt

    return progress


def datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) and name != "runs" else None
            )
        )  # runs: provenance
        attrs = {k: f.attrs[k] for k in ("format", "format_version", "spec")}
    return out, attrs


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, cifar_root, resnet20_ckpt):
    spec = spec_for(resnet20_ckpt, cifar_root, "-1:1:4", "-1:1:3", subset=16)
    compute_surface(spec, tmp_path / "full.h5")
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, tmp_path / "part.h5", progress=stop_after(5))
    partial = read_surface(tmp_path / "part.h5")
    assert partial.computed.sum() == 5 and np.isnan(partial["train_loss"][~partial.computed]).all()
    seen = []
    compute_surface(spec, tmp_path / "part.h5", progress=lambda d, t: seen.append(d))
    assert seen == list(range(5, 13))  # only the missing points were computed
    full, full_attrs = datasets(tmp_path / "full.h5")
    resumed, resumed_attrs = datasets(tmp_path / "part.h5")
    assert [r["n"] for r in read_surface(tmp_path / "part.h5").runs] == [0, 1]
    assert full_attrs == resumed_attrs and full.keys() == resumed.keys()
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)


def test_another_spec_is_refused_and_overwrite_replaces(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "s.h5"
    compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:3", None, subset=8), out)
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match=r"holds a different surface: .*grid.x.num \(5 here, 3 in the file\)"):
        compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:5", None, subset=8), out)
    assert out.read_bytes() == before
    surface = compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:5", None, subset=8), out, overwrite=True)
    assert surface["train_loss"].shape == (5,)


def test_non_finite_losses_are_stored_as_they_are(tmp_path, cifar_root, softmax_ckpt):
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "0:1e39:3", None, subset=8)
    surface = compute_surface(spec, tmp_path / "far.h5")
    assert surface.computed.all()
    assert np.isfinite(surface["train_loss"][0]) and not np.isfinite(surface["train_loss"][2])


def test_directions_from_an_earlier_file_and_target_directions(tmp_path, cifar_root, resnet20_ckpt, capsys):
    first = compute_surface(spec_for(resnet20_ckpt, cifar_root, "-1:1:3", "-1:1:3", subset=8), tmp_path / "a.h5")
    again = SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(resnet20_ckpt)),
        data=DataSpec(root=str(cifar_root), subset=8),
        grid=GridSpec(Axis.parse("-1:1:3"), Axis.parse("-1:1:3")),
        x=DirectionSpec(kind="file", source=str(tmp_path / "a.h5"), source_axis="x"),
        y=DirectionSpec(kind="file", source=str(tmp_path / "a.h5"), source_axis="y"),
    )
    second = compute_surface(again, tmp_path / "b.h5")
    np.testing.assert_array_equal(second["train_loss"], first["train_loss"])
    line = SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(resnet20_ckpt)),
        data=DataSpec(root=str(cifar_root), subset=8),
        grid=GridSpec(Axis.parse("0:1:2")),
        x=DirectionSpec(kind="target", target=str(resnet20_ckpt)),
    )
    flat = compute_surface(line, tmp_path / "t.h5")  # target == θ*: a zero direction, a flat line
    assert flat["train_loss"][0] == flat["train_loss"][1] == pytest.approx(first["train_loss"][1, 1])
    assert "note: the x direction is zero (a target equal to θ*?)" in capsys.readouterr().err
    # a.h5's y is the random direction of seed 1: drawn again for x, the plane was one line, g(α + β)
    parallel = dataclasses.replace(again, x=DirectionSpec(seed=1))
    with pytest.raises(LandscapeError, match=r"^the x and y directions are parallel \(cosine 1.000000\)"):
        compute_surface(parallel, tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()
    loaded = load_checkpoint(
        resnet20_ckpt
    )  # another θ* of the same model: a.h5's directions fit, scaled to its filters
    model = build_model(loaded)
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    other = tmp_path / "other.pt"
    save_checkpoint(other, model, loaded.metadata)
    capsys.readouterr()
    compute_surface(dataclasses.replace(again, checkpoint=CheckpointSpec(path=str(other))), tmp_path / "o.h5")
    assert "note: the x direction of" in capsys.readouterr().err


def altered_copy(root, dest, split, index, what="pixel"):
    """A copy of the CIFAR folder `root` in which image `index` of `split` has one pixel value or its label changed."""
    shutil.copytree(root, dest)
    name, row = (
        ("test_batch", index)
        if split == "test"
        else (f"data_batch_{index // TRAIN_PER_BATCH + 1}", index % TRAIN_PER_BATCH)
    )
    path = dest / "cifar-10-batches-py" / name
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    if what == "pixel":
        batch["data"][row, 100] ^= 1
    else:
        batch["labels"][row] = (batch["labels"][row] + 1) % 10
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return dest


def with_root(spec, root):
    return dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=str(root)))


def other_data_message(out, images):
    return (
        rf"^{re.escape(str(out))}: the {images} here differ from the ones this surface was computed on "
        r"\(sha256 [0-9a-f]{12}\.\.\. here, [0-9a-f]{12}\.\.\. in the file\): "
        r"point --data-root at the same data, or pass --overwrite$"
    )


def test_a_resume_on_other_images_is_refused_and_on_the_same_images_moved_resumes(tmp_path, cifar_root, softmax_ckpt):
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "-1:1:3", "-1:1:2", split="both", subset=8)
    compute_surface(spec, tmp_path / "full.h5")
    out = tmp_path / "part.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(2))
    stored, before = read_indices(out), out.read_bytes()
    for split, what in (("test", "pixel"), ("train", "label")):
        other = altered_copy(cifar_root, tmp_path / f"{split}-{what}", split, int(stored[split][3]), what)
        with pytest.raises(LandscapeError, match=other_data_message(out, f"{split} images")):
            compute_surface(with_root(spec, other), out)
        assert out.read_bytes() == before  # nothing written, not even a session record
    compute_surface(with_root(spec, shutil.copytree(cifar_root, tmp_path / "moved")), out)  # the same data elsewhere
    full, full_attrs = datasets(tmp_path / "full.h5")
    resumed, resumed_attrs = datasets(out)
    assert full_attrs == resumed_attrs and full.keys() == resumed.keys()
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)


def test_a_convexity_map_on_other_images_is_refused(tmp_path, cifar_root, softmax_ckpt):
    ckpt, _ = softmax_ckpt
    out = tmp_path / "s.h5"
    compute_surface(spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8), out)
    before = out.read_bytes()
    other = altered_copy(cifar_root, tmp_path / "other", "train", int(read_indices(out)["train"][0]), "label")
    curvature = CurvatureMapSpec(steps=3, images=4)
    message = other_data_message(out, "train images").replace(", or pass --overwrite", "")
    with pytest.raises(LandscapeError, match=message):
        compute_convexity(out, curvature, data_root=other, arch="toymodels:softmax")
    assert out.read_bytes() == before
    moved = shutil.copytree(cifar_root, tmp_path / "moved")
    surface = compute_convexity(out, curvature, data_root=moved, arch="toymodels:softmax")
    assert surface.curvature is not None and surface.curvature.computed.all()


def test_the_batchnorm_images_are_checked_too(tmp_path, cifar_root, softmax_ckpt):
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8)
    spec = dataclasses.replace(spec, evaluation=EvalSpec(bn="recompute", bn_images=16))
    out = tmp_path / "bn.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(1))
    stored, before = read_indices(out), out.read_bytes()
    bn_only = sorted(set(stored["bn"]) - set(stored["train"]))[0]  # changes the BN images, not the evaluated ones
    other = altered_copy(cifar_root, tmp_path / "other", "train", int(bn_only))
    with pytest.raises(LandscapeError, match=other_data_message(out, r"BatchNorm images \(--bn recompute\)")):
        compute_surface(with_root(spec, other), out)
    assert out.read_bytes() == before


def as_before_fingerprints(path):
    """The file as an older landscape wrote it: no sha256 on the stored indices."""
    with h5py.File(path, "r+") as f:
        for name in f["indices"]:
            f["indices"][name].attrs.pop("sha256", None)


def test_a_file_without_fingerprints_resumes_with_one_warning(tmp_path, cifar_root, softmax_ckpt, capsys):
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "-1:1:3", "-1:1:2", subset=8, part=1)
    full = compute_surface(spec, tmp_path / "full.h5")
    out = tmp_path / "old.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(2))
    as_before_fingerprints(out)
    capsys.readouterr()
    resumed = compute_surface(spec, out)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"warning: {out} predates data fingerprints: cannot check that its images (train) here are the ones it "
        "was computed on"
    ]
    assert resumed.computed.all()
    np.testing.assert_array_equal(resumed["train_loss"], full["train_loss"])


def test_a_bn_recompute_file_of_the_old_statistics_is_refused(tmp_path, cifar_root, softmax_ckpt):
    """Before the fingerprints, --bn recompute weighted every batch alike: its points and new ones would differ."""
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "-1:1:3", "-1:1:2", subset=8)
    spec = dataclasses.replace(spec, evaluation=EvalSpec(bn="recompute", bn_images=16))
    out = tmp_path / "old.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(2))
    as_before_fingerprints(out)
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match="was computed with an earlier --bn recompute .* Pass --overwrite"):
        compute_surface(spec, out)
    assert out.read_bytes() == before
    assert compute_surface(spec, out, overwrite=True).computed.all()


def test_a_bn_recompute_file_of_random_statistics_is_refused(tmp_path, cifar_root):
    """Before only BatchNorms were put in train mode, --bn recompute re-estimated the statistics with dropout on: a
    file so computed, of a model with dropout, is refused on resume; with the new record it resumes."""
    torch.manual_seed(0)
    ckpt = tmp_path / "dropout.pt"
    save_checkpoint(ckpt, dropout_bn(), {"arch": "toymodels:dropout_bn", "num_classes": 10, "dataset": "cifar10"})
    spec = spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8)
    spec = dataclasses.replace(
        spec,
        checkpoint=CheckpointSpec(path=str(ckpt), arch="toymodels:dropout_bn"),
        evaluation=EvalSpec(bn="recompute", bn_images=16),
    )
    full = compute_surface(spec, tmp_path / "full.h5")
    assert compute_surface(spec, tmp_path / "full.h5", overwrite=True)["train_loss"].tolist() == (
        full["train_loss"].tolist()  # the same numbers every time
    )
    out = tmp_path / "old.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(1))
    resumed = compute_surface(spec, out)
    np.testing.assert_array_equal(resumed["train_loss"], full["train_loss"])
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, overwrite=True, progress=stop_after(1))
    with h5py.File(out, "r+") as f:  # the creating session's record as an older landscape wrote it
        first = json.loads(f["runs"][0].decode())
        del first["bn_recompute"]
        f["runs"][0] = json.dumps(first).encode()
    before = out.read_bytes()
    with pytest.raises(LandscapeError, match=r"earlier --bn recompute, which left drop \(dropout or stochastic depth"):
        compute_surface(spec, out)
    assert out.read_bytes() == before


def test_the_batchnorm_images_do_not_depend_on_the_data_part(tmp_path, cifar_root, softmax_ckpt):
    ckpt, _ = softmax_ckpt
    stored = []
    for part in (0, 1):
        spec = spec_for(ckpt, cifar_root, "0:0:1", None, subset=8, part=part)
        spec = dataclasses.replace(spec, evaluation=EvalSpec(bn="recompute", bn_images=40))  # > half the 60 images
        compute_surface(spec, tmp_path / f"part{part}.h5")
        stored.append(read_indices(tmp_path / f"part{part}.h5"))
    assert not set(stored[0]["train"]) & set(stored[1]["train"])  # the evaluated images: disjoint parts
    np.testing.assert_array_equal(stored[0]["bn"], stored[1]["bn"])  # the BN images: the same for every part
    np.testing.assert_array_equal(stored[0]["bn"], subset_indices(5 * TRAIN_PER_BATCH, 40, 1, "train"))


def test_overwrite_says_what_it_replaces_and_recomputes(tmp_path, cifar_root, softmax_ckpt, capsys, monkeypatch):
    ckpt, _ = softmax_ckpt
    spec = spec_for(ckpt, cifar_root, "-1:1:3", "-1:1:2", subset=8)
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        compute_surface(spec, out, progress=stop_after(4))
    capsys.readouterr()
    seen = []
    surface = compute_surface(spec, out, overwrite=True, progress=lambda done, total: seen.append(done))
    assert capsys.readouterr().err == f"--overwrite: replacing {out} (4 of 6 points were computed)\n"
    assert seen == list(range(7)) and surface.computed.all()  # every point computed again, in a new file
    assert [run["n"] for run in surface.runs] == [0]
    before = out.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("landscape.storage._create_runs", full_disk)  # creation fails half way
    with pytest.raises(LandscapeError, match=r"cannot write .*s\.h5: no space left"):
        compute_surface(spec, out, overwrite=True)
    assert out.read_bytes() == before  # the old file is replaced only by a complete new one
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.h5.lock", "s.h5"]


def test_options_the_spec_cannot_take_are_refused_before_overwrite_replaces(tmp_path, cifar_root, softmax_ckpt):
    """--bn recompute with --points-per-pass 2 was refused only once --overwrite had replaced the finished file."""
    ckpt, _ = softmax_ckpt
    out = tmp_path / "s.h5"
    compute_surface(spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8), out)
    before = out.read_bytes()
    spec = spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8)
    spec = dataclasses.replace(spec, evaluation=EvalSpec(bn="recompute", bn_images=16))
    with pytest.raises(LandscapeError, match="^--bn recompute evaluates one point per pass: use --points-per-pass 1$"):
        compute_surface(spec, out, RunOptions(device="cpu", points_per_pass=2), overwrite=True)
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "options, problem",
    [
        (["--mean", "0.5,0.5,0.5", "--std", "0.2,0,0.2"], "--std must be positive"),
        (["--mean", "0.5,0.5,0.5", "--std", "nan,0.2,0.2"], "--std must be finite numbers"),
        (["--mean", "0.5,inf,0.5", "--std", "0.2,0.2,0.2"], "--mean must be finite numbers"),
        (["--mean", "0.5,0.5", "--std", "0.2,0.2"], "--mean must be 3 numbers, one per colour channel"),
        (["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2,0.2"], "--std must be 3 numbers, one per colour channel"),
        (["--mean", "0.5,0.5,0.5"], "--mean and --std go together"),
    ],
)
def test_a_bad_normalization_is_one_line_before_any_file(tmp_path, cifar_root, resnet20_ckpt, options, problem):
    out = tmp_path / "s.h5"
    args = ["compute", "--ckpt", str(resnet20_ckpt), "--x", "0:0:1", "--subset", "4", "--data-root", str(cifar_root)]
    result = CliRunner().invoke(app, [*args, *options, "--out", str(out)], env={"LANDSCAPE_DATA_ROOT": ""})
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_records_a_bad_normalization_is_refused(tmp_path, cifar_root):
    model = softmax()
    ckpt = tmp_path / "softmax.pt"
    meta = {"arch": "toymodels:softmax", "num_classes": 10, "dataset": "cifar10", "mean": [0.5], "std": [0.25]}
    save_checkpoint(ckpt, model, meta)
    out = tmp_path / "s.h5"
    with pytest.raises(
        LandscapeError, match=r"softmax.pt records an unusable input normalization: mean must be 3 numbers"
    ):
        compute_surface(spec_for(ckpt, cifar_root, "0:0:1", None, subset=4), out)
    assert not out.exists()


def target_line(ckpt, target, root):
    arch = "toymodels:softmax" if Path(ckpt).name == "softmax.pt" else None
    return SurfaceSpec(
        checkpoint=CheckpointSpec(path=str(ckpt), arch=arch),
        data=DataSpec(root=str(root), subset=8),
        grid=GridSpec(Axis.parse("0:1:2")),
        x=DirectionSpec(kind="target", target=str(target)),
    )


def test_a_target_of_another_model_is_refused_before_any_file(tmp_path, cifar_root, softmax_ckpt):
    """x = 1 must be the target: a checkpoint with an extra tensor, or one that records other settings, is refused
    (extra tensors used to be ignored)."""
    ckpt, _ = softmax_ckpt
    torch.manual_seed(1)
    model = softmax()
    state = dict(model.state_dict(), **{"extra.weight": torch.ones(3)})
    extra = tmp_path / "extra.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "metadata": {"num_classes": 10}}, extra)
    other_data = tmp_path / "other_data.pt"
    save_checkpoint(other_data, model, {"arch": "toymodels:softmax", "num_classes": 10, "dataset": "cifar100"})
    same = tmp_path / "same.pt"
    save_checkpoint(same, model, {"arch": "toymodels:softmax", "num_classes": 10, "dataset": "cifar10"})
    for target, message in [(extra, "holds extra.weight, which the model lacks"), (other_data, "records dataset")]:
        with pytest.raises(LandscapeError, match=f"is not of this model: .*{message}"):
            compute_surface(target_line(ckpt, target, cifar_root), tmp_path / "t.h5")
        assert not (tmp_path / "t.h5").exists()
    line = compute_surface(target_line(ckpt, same, cifar_root), tmp_path / "t.h5")
    assert np.isfinite(line["train_loss"]).all()


def nan_first(values):
    values = values.copy()
    values.flat[0] = np.nan
    return values


@pytest.mark.parametrize(
    "damage, message",
    [
        (nan_first, "the x direction in .*a.h5's {name} holds NaN or inf"),
        (lambda values: (values > 0).astype(np.uint32), "the x direction in .*a.h5 is uint32 for {name}, not floating"),
    ],
    ids=["nan", "integers"],  # integers: uint32 or bool directions were used, and copied into the new surface
)
def test_a_damaged_direction_file_is_refused_before_any_file(tmp_path, cifar_root, softmax_ckpt, damage, message):
    ckpt, _ = softmax_ckpt
    source = tmp_path / "a.h5"
    compute_surface(spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8), source)
    with h5py.File(source, "r+") as f:
        name = sorted(f["directions/x"])[0]
        values = damage(f[f"directions/x/{name}"][()])
        del f[f"directions/x/{name}"]
        f[f"directions/x/{name}"] = values
    spec = dataclasses.replace(
        spec_for(ckpt, cifar_root, "-1:1:3", None, subset=8),
        x=DirectionSpec(kind="file", source=str(source), source_axis="x"),
    )
    with pytest.raises(LandscapeError, match=message.format(name=re.escape(name))):
        compute_surface(spec, tmp_path / "b.h5")
    assert not (tmp_path / "b.h5").exists()


def test_a_target_with_the_users_own_normalization_is_accepted(tmp_path, cifar_root, softmax_ckpt):
    """--mean/--std replace the checkpoint's normalization: the target, which records the checkpoint's, still fits."""
    ckpt, _ = softmax_ckpt
    line = target_line(ckpt, ckpt, cifar_root)
    line = dataclasses.replace(
        line, checkpoint=dataclasses.replace(line.checkpoint, mean=(0.4, 0.4, 0.4), std=(0.3,) * 3)
    )
    flat = compute_surface(line, tmp_path / "t.h5")  # target == θ*: a flat line
    assert flat["train_loss"][0] == flat["train_loss"][1]
