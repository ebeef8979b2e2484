"""Curvature with known answers: a linear softmax classifier's exact Hessian, Hutchinson on known matrices, the CLI."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from landscape.checkpoints import build_model, load_checkpoint
from landscape.cli import app
from landscape.curvature import HessianSpec, HessianVectorProduct, hessian_report, hutchinson_trace, top_eigenvalues
from landscape.data import DataSpec, ImageSet, load_split, normalizer
from landscape.errors import LandscapeError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def tiny_problem(n: int = 7, classes: int = 3, seed: int = 0) -> tuple[nn.Module, ImageSet]:
    """A float64 linear softmax classifier on n random 3x2x2 images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, classes)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model, ImageSet(images, labels, np.arange(n))


def exact_hessian(model: nn.Module, images: ImageSet) -> np.ndarray:
    """The full Hessian of the mean cross-entropy over the flat parameters, by torch.autograd.functional.hessian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    scale, shift = normalizer(MEAN, STD, "cpu", torch.float64)
    x = images.images.double() * scale + shift

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        logits = torch.func.functional_call(model, params, (x,))
        return nn.functional.cross_entropy(logits, images.labels)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.autograd.functional.hessian(loss, theta).numpy()


def test_hvp_is_the_exact_hessian_times_v():
    model, images = tiny_problem()
    h = exact_hessian(model, images)
    hvp = HessianVectorProduct(model, images, MEAN, STD)
    assert hvp.names == ("1.weight", "1.bias") and hvp.dim == 39 == len(h)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(hvp.dim)
        np.testing.assert_allclose(hvp.numpy()(v), h @ v, rtol=0, atol=1e-10)
    assert hvp.count == 3


def test_batched_hvp_equals_one_batch():
    model, images = tiny_problem(n=10)
    v = torch.randn(39, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole = HessianVectorProduct(model, images, MEAN, STD, batch_size=100)(v)
    for batch_size in (1, 3, 4):
        batched = HessianVectorProduct(model, images, MEAN, STD, batch_size=batch_size)(v)
        torch.testing.assert_close(batched, whole, rtol=0, atol=1e-12)


def test_top_eigenvalues_are_the_exact_ones():
    model, images = tiny_problem()
    exact = np.linalg.eigvalsh(exact_hessian(model, images))[::-1]
    hvp = HessianVectorProduct(model, images, MEAN, STD)
    values, vectors = top_eigenvalues(hvp.numpy(), hvp.dim, k=4, tol=0, seed=0)
    np.testing.assert_allclose(values, exact[:4], rtol=1e-8)
    assert np.all(np.diff(values) <= 0) and vectors.shape == (39, 4)
    np.testing.assert_allclose(np.stack([hvp.numpy()(v) for v in vectors.T], 1), vectors * values, atol=1e-8)
    again, _ = top_eigenvalues(hvp.numpy(), hvp.dim, k=4, tol=0, seed=0)
    np.testing.assert_array_equal(again, values)


@pytest.mark.parametrize("k", [0, 39, 40])
def test_top_eigenvalues_bad_k(k):
    with pytest.raises(LandscapeError, match="--top-k"):
        top_eigenvalues(lambda v: v, 39, k)


def test_hutchinson_is_exact_on_a_diagonal():
    d = np.arange(-5.0, 45.0)  # whole numbers: every vᵀDv = Σ d_i is exact in float64
    trace = hutchinson_trace(lambda v: d * v, len(d), samples=20, seed=3)
    assert np.all(trace.samples == d.sum()) and trace.estimate == d.sum() and trace.stderr == 0.0


def test_hutchinson_on_a_random_spd_matrix():
    b = np.random.default_rng(0).standard_normal((40, 40))
    a = b @ b.T
    exact = np.trace(a)
    many = hutchinson_trace(lambda v: a @ v, 40, samples=4000, seed=0)
    assert abs(many.estimate - exact) < 4 * many.stderr
    few = hutchinson_trace(lambda v: a @ v, 40, samples=1000, seed=1)
    assert 1.6 < few.stderr / many.stderr < 2.4  # 1/√samples: a ratio of 2
    same = hutchinson_trace(lambda v: a @ v, 40, samples=1000, seed=1)
    assert same.estimate == few.estimate and same.stderr == few.stderr
    assert hutchinson_trace(lambda v: a @ v, 40, samples=1000, seed=2).estimate != few.estimate
    with pytest.raises(LandscapeError, match="at least 2 samples"):
        hutchinson_trace(lambda v: a @ v, 40, samples=1)


def test_report_and_eigenvectors_keyed_by_name(tmp_path):
    model, images = tiny_problem()
    spec = HessianSpec(top_k=2, trace_samples=4, seed=0, tol=0)
    path = tmp_path / "vectors.npz"
    report = hessian_report(model, images, MEAN, STD, spec, "cpu", eigenvectors=path)
    assert report["parameters"] == 39 and report["images"] == 7 and report["hvps"] > 4
    assert report["parameter_names"] == ["1.weight", "1.bias"] and report["spec"]["top_k"] == 2
    assert report["eigenvalues"][0] >= report["eigenvalues"][1] and report["trace_stderr"] >= 0
    with np.load(path) as vectors:
        assert set(vectors.files) == {"1.weight", "1.bias"}
        assert vectors["1.weight"].shape == (2, 3, 12) and vectors["1.bias"].shape == (2, 3)
        norm = np.sqrt((vectors["1.weight"][0] ** 2).sum() + (vectors["1.bias"][0] ** 2).sum())
        assert norm == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(LandscapeError, match="--top-k"):
        hessian_report(model, images, MEAN, STD, HessianSpec(top_k=0), "cpu")


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"LANDSCAPE_DATA_ROOT": ""})


def test_cli_hessian(tmp_path, cifar_root, resnet20_ckpt):
    out = tmp_path / "h.json"
    args = ("--ckpt", resnet20_ckpt, "--data-root", cifar_root, "--subset", 8, "--top-k", 2, "--tol", 1e-2)
    result = invoke("hessian", *args, "--trace-samples", 2, "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    assert "λ1" in result.stdout and "trace" in result.stdout and "± " in result.stdout
    report = json.loads(out.read_text())
    values = report["eigenvalues"]
    assert len(values) == 2 and values[0] >= values[1] and report["images"] == 8
    assert report["spec"]["data"]["subset"] == 8 and report["trace_stderr"] is not None

    checkpoint = load_checkpoint(resnet20_ckpt)
    model = build_model(checkpoint)
    images = load_split(DataSpec(root=str(cifar_root), subset=8), "train")
    spec = HessianSpec(top_k=2, tol=1e-2)
    library = hessian_report(model, images, checkpoint.metadata["mean"], checkpoint.metadata["std"], spec, "cpu")
    assert values[0] == pytest.approx(library["eigenvalues"][0], rel=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--top-k", 0), "--top-k must be at least 1"),
        (("--trace-samples", 1), "--trace-samples must be 0"),
        (("--subset", 0), "--subset must be a positive"),
        (("--split", "both"), "--split must be train or test"),
    ],
)
def test_cli_hessian_bad_input(cifar_root, resnet20_ckpt, extra, message):
    result = invoke("hessian", "--ckpt", resnet20_ckpt, "--data-root", cifar_root, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_hessian_missing_checkpoint(tmp_path, cifar_root):
    result = invoke("hessian", "--ckpt", tmp_path / "none.pt", "--data-root", cifar_root)
    assert result.exit_code == 2 and result.stderr.startswith("error: checkpoint not found")
