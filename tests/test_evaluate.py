"""The evaluator against independent computations: plain eval-mode loss, batched vs one by one, BN modes,
BN folding, training's own evaluation, and results keyed by the names the surface file stores."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from surface_fixtures import spec as surface_spec
from torch import nn

from landscape import DataSpec, EvalSpec, LandscapeError, PointEvaluator, RunOptions, build_model, load_checkpoint
from landscape.batchnorm import NotTraceable, fold_batchnorm
from landscape.data import load_split, normalizer
from landscape.directions import center_of, direction_names, normalize_direction, random_direction
from landscape.evaluate import loss_and_accuracy
from landscape.storage import create_surface_file, metric_names, read_surface, write_points
from landscape.train import TrainSpec, train

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
NAMES = ["train_loss", "train_acc", "test_loss", "test_acc"]


@pytest.fixture
def setup(cifar_root, resnet20_ckpt):
    model = build_model(load_checkpoint(resnet20_ckpt))
    names = direction_names(model, "weights")
    center = center_of(model, names)
    dirs = [normalize_direction(random_direction(center, s), center, "filter", "biasbn") for s in (0, 1)]
    data = DataSpec(root=str(cifar_root), split="both")
    sets = {s: load_split(data, s) for s in ("train", "test")}
    return model, center, dirs, sets


def plain_loss(model, images, mean=MEAN, std=STD):
    """The loss as a user would compute it: ToTensor-style scaling, Normalize, model.eval(), float64 sums."""
    x = images.images.float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.eval()(x)
    loss = F.cross_entropy(logits.double(), images.labels).item()
    acc = 100.0 * (logits.argmax(1) == images.labels).double().mean().item()
    return loss, acc


def moved(model, center, dirs, coefficients):
    """A copy of `model` at θ* + Σ c_k d_k, written by hand."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in copied.state_dict().items():
            if name in center:
                tensor.copy_(center[name] + sum(c * d[name] for c, d in zip(coefficients, dirs)))
    return copied


def assert_same_metrics(got, expected, rtol):
    assert list(got) == list(expected)
    for name in got:
        if name.endswith("_acc"):
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], expected[name], rtol=rtol, err_msg=name)


def test_center_point_equals_plain_eval_loss(setup):
    model, center, dirs, sets = setup
    reference = copy.deepcopy(model)
    result = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.zeros((1, 2)))
    assert list(result) == NAMES and all(v.shape == (1,) and v.dtype == np.float64 for v in result.values())
    for split in sets:
        loss, acc = plain_loss(reference, sets[split])
        assert result[f"{split}_loss"][0] == pytest.approx(loss, rel=1e-5)
        assert result[f"{split}_acc"][0] == acc


def test_off_center_point_equals_perturbed_model(setup):
    model, center, dirs, sets = setup
    a, b = 0.3, -0.7
    result = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.array([[a, b]]))
    loss, acc = plain_loss(moved(model, center, dirs, (a, b)), sets["train"])
    assert result["train_loss"][0] == pytest.approx(loss, rel=1e-5)
    assert result["train_acc"][0] == acc


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(points_per_pass=4),
        RunOptions(points_per_pass=3, fold_bn=False),
        RunOptions(fold_bn=False, channels_last=False),
        RunOptions(batch_size=7),
    ],
    ids=["vmap4", "vmap3-nofold", "plain", "small-batches"],
)
def test_batched_and_optimized_paths_equal_one_by_one(setup, options):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, 0], [0, -0.5], [0.25, 0.75], [-1, 1], [1, 1]])
    reference = PointEvaluator(
        copy.deepcopy(model),
        center,
        dirs,
        sets,
        MEAN,
        STD,
        options=RunOptions(fold_bn=False, channels_last=False, batch_size=1000),
    )
    expected = reference.evaluate(points)
    got = PointEvaluator(model, center, dirs, sets, MEAN, STD, options=options).evaluate(points)
    assert_same_metrics(got, expected, rtol=1e-5)


def test_batched_equals_one_by_one_equals_the_shared_loop_on_a_plain_model(setup):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, 0], [0, -0.5], [0.25, 0.75], [-1, 1]])
    plain = RunOptions(fold_bn=False, channels_last=False)
    one_by_one = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD, options=plain).evaluate(points)
    batched = PointEvaluator(
        copy.deepcopy(model),
        center,
        dirs,
        sets,
        MEAN,
        STD,
        options=RunOptions(fold_bn=False, channels_last=False, points_per_pass=3),
    ).evaluate(points)
    scale, shift = normalizer(MEAN, STD, "cpu")
    by_hand = {name: [] for name in NAMES}
    for point in points:
        at_point = moved(model, center, dirs, point).eval()
        for split, images in sets.items():
            metrics = loss_and_accuracy(at_point, images, scale, shift, batch_size=128)
            by_hand[f"{split}_loss"].append(metrics.loss[0])
            by_hand[f"{split}_acc"].append(metrics.acc[0])
    by_hand = {name: np.array(values) for name, values in by_hand.items()}
    assert_same_metrics(one_by_one, by_hand, rtol=1e-6)  # the same computation, in the same order
    assert_same_metrics(batched, one_by_one, rtol=1e-5)  # vmap over stacked weights: other kernels


def test_folded_equals_unfolded(setup):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, -0.25], [-1, 1]])
    for options in (RunOptions(), RunOptions(points_per_pass=3)):
        folded = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD, options=options)
        norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert folded.folded is not None and len(folded.folded.pairs) == norms  # every BN of resnet20 is folded
        unfolded = PointEvaluator(
            copy.deepcopy(model),
            center,
            dirs,
            sets,
            MEAN,
            STD,
            options=RunOptions(fold_bn=False, points_per_pass=options.points_per_pass),
        )
        assert_same_metrics(folded.evaluate(points), unfolded.evaluate(points), rtol=1e-5)


class Branchy(nn.Module):
    """conv → BN with data-dependent control flow after it, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if h.sum() > 0:
            h = h.relu()
        return self.fc(h.mean((2, 3)))


def test_an_untraceable_model_is_evaluated_unfolded_with_one_warning(setup):
    _, _, _, sets = setup
    torch.manual_seed(0)
    model = Branchy()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    with pytest.raises(NotTraceable, match=r"Branchy cannot be traced by torch\.fx") as raised:
        fold_batchnorm(copy.deepcopy(model))
    assert "control flow" in raised.value.reason
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    points = np.array([[0.0], [0.5]])
    with pytest.warns(
        UserWarning,
        match=r"BatchNorm not folded: Branchy cannot be traced by torch.fx \(.+\); "
        r"evaluating unfolded \(same numbers, slower\)",
    ) as caught:
        evaluator = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD)
    assert len(caught) == 1 and caught[0].filename == __file__  # stacklevel: the caller's line
    assert evaluator.folded is None
    got = evaluator.evaluate(points)
    for k, point in enumerate(points):
        at_point = moved(model, center, dirs, point)
        for split in sets:
            loss, acc = plain_loss(at_point, sets[split])
            assert got[f"{split}_loss"][k] == pytest.approx(loss, rel=1e-5)
            assert got[f"{split}_acc"][k] == pytest.approx(acc, rel=1e-12)


class Untraceable(nn.Module):
    """No BatchNorm at all, and not traceable either: there is nothing to fold, so nothing to warn about."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) if x.sum() > 0 else -x.flatten(1))


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)), Untraceable()],
    ids=["traceable", "untraceable"],
)
def test_a_model_without_batchnorm_is_not_folded_and_not_warned_about(setup, model):
    _, _, _, sets = setup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fold_batchnorm(model) is None
        center = center_of(model, direction_names(model, "weights"))
        evaluator = PointEvaluator(model, center, [center], sets, MEAN, STD)
    assert evaluator.folded is None


def test_training_evaluates_as_the_surface_evaluator_at_the_center(tmp_path, cifar_root):
    meta = train(
        TrainSpec(
            arch="resnet20",
            data=DataSpec(root=str(cifar_root)),
            epochs=1,
            batch_size=16,
            lr=0.05,
            precision="fp32",
            channels_last=False,
        ),
        tmp_path / "run",
        device="cpu",
    )
    assert meta["eval_precision"] == "fp32"
    model = build_model(load_checkpoint(tmp_path / "run" / "checkpoint.pt"))
    center = center_of(model, direction_names(model, "weights"))
    direction = normalize_direction(random_direction(center, 0), center, "filter", "biasbn")
    sets = {split: load_split(DataSpec(root=str(cifar_root), split="both"), split) for split in ("train", "test")}
    for options in (RunOptions(fold_bn=False, channels_last=False), RunOptions()):
        result = PointEvaluator(
            copy.deepcopy(model), center, [direction], sets, meta["mean"], meta["std"], options=options
        ).evaluate(np.zeros((1, 1)))
        for name in NAMES:
            assert result[name][0] == pytest.approx(meta[name], rel=1e-6, abs=0), (name, options)


def test_results_are_keyed_by_the_names_the_surface_file_stores(setup, tmp_path):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, 0.5]])
    result = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(points)
    assert list(result) == metric_names(list(sets))
    path = tmp_path / "s.h5"
    create_surface_file(
        path, surface_spec(nx=2, ny=None), {"started": "test"}, (2,), [np.linspace(-1.0, 1.0, 2)], list(sets), {}, {}
    )
    with pytest.raises(LandscapeError, match="has no metric 'train_accuracy'"):
        write_points(path, [0, 1], result | {"train_accuracy": result["train_acc"]})
    with pytest.raises(LandscapeError, match="no values given for test_acc"):
        write_points(path, [0, 1], {k: v for k, v in result.items() if k != "test_acc"})
    with pytest.raises(LandscapeError, match="train_loss holds"):
        write_points(path, [0, 1], result | {"train_loss": result["train_loss"][:1]})
    write_points(path, [1, 0], dict(reversed(result.items())))  # the order of the dict does not matter
    surface = read_surface(path)
    for name in NAMES:
        np.testing.assert_array_equal(surface[name], result[name][::-1])
    assert surface.computed.all()


def test_weights_are_restored_even_after_an_error(setup):
    model, center, dirs, sets = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broken = {"train": sets["train"].__class__(sets["train"].images, sets["train"].labels + 100, sets["train"].indices)}
    evaluator = PointEvaluator(model, center, dirs, broken, MEAN, STD, options=RunOptions(channels_last=False))
    with pytest.raises(Exception):
        evaluator.evaluate(np.array([[0.5, 0.5]]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_is_close_to_fp32(setup):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, -0.5]])
    fp32 = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD).evaluate(points)
    bf16 = PointEvaluator(model, center, dirs, sets, MEAN, STD, spec=EvalSpec(precision="bf16")).evaluate(points)
    for name in ("train_loss", "test_loss"):
        np.testing.assert_allclose(bf16[name], fp32[name], rtol=3e-2)
        assert not np.array_equal(bf16[name], fp32[name])


def test_bn_recompute_re_estimates_statistics_at_each_point(setup):
    model, center, dirs, sets = setup
    bn_set = sets["train"]
    a = 0.5
    # Independent computation: perturb, reset the statistics, one train-mode pass over all BN images, evaluate.
    manual = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in manual.state_dict().items():
            if name in center:
                tensor.copy_(center[name] + a * dirs[0][name])
        for m in manual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        x = (bn_set.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        manual.train()(x)
    expected = plain_loss(manual, sets["test"])
    spec = EvalSpec(bn="recompute", bn_images=len(bn_set), bn_batch_size=len(bn_set))
    got = PointEvaluator(model, center, dirs, sets, MEAN, STD, spec=spec, bn_set=bn_set).evaluate(np.array([[a, 0]]))
    assert got["test_loss"][0] == pytest.approx(expected[0], rel=1e-5)
    eval_mode = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.array([[a, 0]]))
    assert abs(eval_mode["test_loss"][0] - got["test_loss"][0]) > 1e-3  # the two modes really differ


def test_bn_recompute_refuses_vmap(setup):
    model, center, dirs, sets = setup
    with pytest.raises(LandscapeError, match="points-per-pass"):
        PointEvaluator(
            model,
            center,
            dirs,
            sets,
            MEAN,
            STD,
            spec=EvalSpec(bn="recompute"),
            options=RunOptions(points_per_pass=2),
            bn_set=sets["train"],
        )


def test_settings_are_built_by_name():
    with pytest.raises(TypeError):
        EvalSpec("bf16")
    with pytest.raises(TypeError):
        RunOptions("cpu")
