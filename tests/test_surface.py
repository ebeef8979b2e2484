"""compute_surface end to end: an exact analytic surface, the file layout, resume, refusal of another spec."""

import dataclasses
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from toymodels import softmax

from landscape import (
    Axis,
    CheckpointSpec,
    DataSpec,
    DirectionSpec,
    GridSpec,
    LandscapeError,
    SurfaceSpec,
    build_model,
    compute_surface,
    load_checkpoint,
    read_surface,
    save_checkpoint,
)

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


def test_directions_from_an_earlier_file_and_target_directions(tmp_path, cifar_root, resnet20_ckpt):
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
