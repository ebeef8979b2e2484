"""The evaluator against independent computations: plain eval-mode loss, batched vs one by one, BN modes,
BN folding, training's own evaluation, and results keyed by the names the surface file stores."""

import copy
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from surface_fixtures import spec as surface_spec
from torch import nn
from toymodels import ConvBN, DropoutBN, LinearBN, Softmax

from landscape import DataSpec, EvalSpec, LandscapeError, PointEvaluator, RunOptions, build_model, load_checkpoint
from landscape.batchnorm import NotTraceable, fold_batchnorm, random_in_training, recompute_batchnorm
from landscape.data import ImageSet, load_split, normalizer
from landscape.directions import center_of, direction_names, normalize_direction, random_direction
from landscape.evaluate import loss_and_accuracy, moved_weights
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


@pytest.mark.parametrize("fold_bn", [True, False])
def test_zero_directions_give_the_centre_batched_too(setup, fold_bn):
    """--xtarget equal to θ* (a zero direction): --points-per-pass 2 failed in vmap ("at least one Tensor")."""
    model, center, dirs, sets = setup
    zeros = [{n: torch.zeros_like(t) for n, t in d.items()} for d in dirs]
    points = np.array([[0, 0], [0.5, 0], [1, -1]])
    options = RunOptions(points_per_pass=2, fold_bn=fold_bn)
    got = PointEvaluator(copy.deepcopy(model), center, zeros, sets, MEAN, STD, options=options).evaluate(points)
    one = PointEvaluator(
        copy.deepcopy(model), center, zeros, sets, MEAN, STD, options=replace(options, points_per_pass=1)
    )
    expected = one.evaluate(points)
    assert_same_metrics(got, expected, rtol=0)
    assert len(set(got["train_loss"])) == 1


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


class SharedConv(nn.Module):
    """One conv module called twice: after it once a BN, once another BN (`second_bn`) or nothing."""

    def __init__(self, second_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3) if second_bn else nn.Identity()
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv(x)))
        h = torch.relu(self.bn2(self.conv(h)))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("second_bn", [True, False])
def test_a_conv_called_twice_is_not_folded(setup, second_bn):
    """Folding replaced the conv module, so its other call used the folded weights too (wrong losses, silently)."""
    _, _, _, sets = setup
    torch.manual_seed(0)
    model = SharedConv(second_bn)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.2, 3)
                bn.weight.uniform_(0.5, 2)
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    points = np.array([[0.0], [0.3]])
    evaluator = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD)
    got = evaluator.evaluate(points)
    for k, point in enumerate(points):
        for split in sets:
            loss, _ = plain_loss(moved(model, center, dirs, point), sets[split])
            assert got[f"{split}_loss"][k] == pytest.approx(loss, rel=1e-5)


class WeightNormConvBN(nn.Module):
    """conv with weight_norm (its weight set by a forward pre-hook from weight_g and weight_v) → BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.weight_norm(nn.Conv2d(3, 4, 3, padding=1, bias=False))
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_conv_whose_weight_a_hook_sets_is_not_folded(setup):
    """The fused conv read θ*'s weight once; the hook that rebuilds it from the moved weight_g/weight_v never ran
    again: every point off θ* had θ*'s conv (wrong losses, silently; --fold-bn is the default)."""
    _, _, _, sets = setup
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():  # no_grad: the computed weight a leaf that deepcopy takes
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm is deprecated for parametrizations
        model = WeightNormConvBN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.2, 3)
    assert fold_batchnorm(model) is None
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    points = np.array([[0.5], [-0.5]])
    got = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD).evaluate(points)
    for k, point in enumerate(points):
        for split in sets:
            loss, _ = plain_loss(moved(model, center, dirs, point), sets[split])
            assert got[f"{split}_loss"][k] == pytest.approx(loss, rel=1e-5)


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


def test_bf16_with_several_points_per_pass_is_refused_where_autocast_misses_vmap(setup):
    """On the CPU, autocast does not reach a vmapped pass: points of a group came out fp32, a lone last point bf16,
    in one file."""
    from landscape.hardware import autocast_reaches_vmap

    model, center, dirs, sets = setup
    if autocast_reaches_vmap("cpu"):  # PyTorch's behaviour (2.14): where it changes, nothing is refused
        pytest.skip("bf16 autocast reaches vmap on this CPU")
    with pytest.raises(LandscapeError, match="bf16 autocast does not reach a vmapped pass on the CPU"):
        PointEvaluator(
            model, center, dirs, sets, MEAN, STD, spec=EvalSpec(precision="bf16"), options=RunOptions(points_per_pass=2)
        )
    PointEvaluator(model, center, dirs, sets, MEAN, STD, options=RunOptions(points_per_pass=2))  # fp32 is exact


def test_a_batchnorm_without_running_statistics_is_refused(tiny_sets):
    """It normalizes every batch by its own statistics: the loss depended on --batch-size (128 on the CPU, 1000 on
    CUDA), so a file resumed on another device mixed two sets of numbers."""
    model = ConvBN()
    model.bn = nn.BatchNorm2d(model.bn.num_features, track_running_stats=False)
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    with pytest.raises(LandscapeError, match=r"^the model's bn is a BatchNorm without running statistics"):
        PointEvaluator(model, center, dirs, tiny_sets, MEAN, STD)


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


# Non-finite points and inputs.


@pytest.fixture
def tiny_sets(cifar_root):
    data = DataSpec(root=str(cifar_root), split="both")
    return {s: load_split(data, s) for s in ("train", "test")}


def test_loss_and_accuracy_give_nan_accuracy_beside_a_non_finite_loss():
    images = ImageSet(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 2]), np.arange(4))
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5]])  # 3 of 4 right

    def forward(x: torch.Tensor) -> torch.Tensor:
        nan, inf = torch.full_like(logits, float("nan")), logits.clone()
        inf[2, 1] = float("-inf")  # image 2: a logit of -inf for its label, a loss of +inf
        return torch.stack([logits, nan, inf])

    scale, shift = normalizer((0.5,) * 3, (0.25,) * 3, "cpu")
    got = loss_and_accuracy(forward, images, scale, shift, batch_size=4, points=3)
    expected_loss = F.cross_entropy(logits.double(), images.labels).item()
    assert got.loss[0] == pytest.approx(expected_loss, rel=1e-6) and got.acc[0] == 75.0
    assert np.isnan(got.loss[1]) and np.isnan(got.acc[1])  # argmax of NaN logits would say class 0: 25%
    assert got.loss[2] == np.inf and np.isnan(got.acc[2])


@pytest.mark.parametrize("points_per_pass", [1, 3])
def test_a_point_whose_loss_is_not_finite_has_nan_accuracy(tiny_sets, points_per_pass):
    torch.manual_seed(0)
    model = Softmax()
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    points = np.array([[0.0], [1e40], [0.5]])  # 1e40 overflows float32: inf weights, NaN logits
    got = PointEvaluator(
        copy.deepcopy(model), center, dirs, tiny_sets, MEAN, STD, options=RunOptions(points_per_pass=points_per_pass)
    ).evaluate(points)
    for split, images in tiny_sets.items():
        assert not np.isfinite(got[f"{split}_loss"][1]) and np.isnan(got[f"{split}_acc"][1]), split
        for k in (0, 2):
            loss, acc = plain_loss(moved(model, center, dirs, points[k]), images)
            assert got[f"{split}_loss"][k] == pytest.approx(loss, rel=1e-5)
            assert got[f"{split}_acc"][k] == acc


class Tied(nn.Module):
    """conv → BN → ReLU → mean over pixels → a → b → classes, with b's weight the very tensor of a's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 10)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.b(torch.tanh(self.a(torch.relu(self.bn(self.conv(x))).mean((2, 3)))))))


@pytest.mark.parametrize("fold_bn", [False, True])
def test_tied_weights_move_once_and_batched_equals_one_by_one(tiny_sets, fold_bn):
    """With several points per pass, θ* went in under one name of a shared weight and the moved values under the
    other: functional_call refused the pair (a ValueError, exit 1)."""
    torch.manual_seed(0)
    model = conftest_randomize(Tied())
    center = center_of(model, direction_names(model, "weights"))
    assert "a.weight" in center and "b.weight" not in center  # one tensor, one direction entry
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    points = np.array([[0.0], [0.3], [-0.6]])
    results = [
        PointEvaluator(
            copy.deepcopy(model),
            center,
            dirs,
            tiny_sets,
            MEAN,
            STD,
            options=RunOptions(points_per_pass=ppp, fold_bn=fold_bn),
        ).evaluate(points)
        for ppp in (1, 3)
    ]
    assert_same_metrics(results[0], results[1], rtol=2e-6)
    loss, _ = plain_loss(moved(model, center, dirs, points[1]), tiny_sets["train"])  # b moves with a
    assert results[1]["train_loss"][1] == pytest.approx(loss, rel=1e-5)


class TiedConv(nn.Module):
    """c1 → BN → c2 with c2's weight the very tensor of c1's (c1 was folded: c2 kept θ* under vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1)
        self.c2.weight = self.c1.weight
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.bn(self.c1(x))))).mean((2, 3)))


class ReadConv(nn.Module):
    """c1 → BN, then c1's weight read directly for a second convolution (it read the folded weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.c1(x)))
        return self.fc(torch.relu(F.conv2d(h, self.c1.weight, self.c1.bias, padding=1)).mean((2, 3)))


@pytest.mark.parametrize("model_type", [TiedConv, ReadConv])
def test_a_convolution_whose_weight_is_used_elsewhere_is_not_folded(tiny_sets, model_type):
    torch.manual_seed(0)
    model = conftest_randomize(model_type())
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.5)
        model.bn.running_var.uniform_(0.2, 3)
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, s), center, "filter", "biasbn") for s in (0, 1)]
    points = np.array([[0.0, 0.0], [0.5, -0.3], [-0.8, 0.4]])
    for fold_bn in (False, True):
        for ppp in (1, 3):
            options = RunOptions(points_per_pass=ppp, fold_bn=fold_bn, channels_last=False)
            got = PointEvaluator(copy.deepcopy(model), center, dirs, tiny_sets, MEAN, STD, options=options).evaluate(
                points
            )
            for k, point in enumerate(points):
                loss, _ = plain_loss(moved(model, center, dirs, point), tiny_sets["train"])
                assert got["train_loss"][k] == pytest.approx(loss, rel=1e-5), (fold_bn, ppp, k)
    assert fold_batchnorm(copy.deepcopy(model)) is None  # its only pair is left unfolded


def test_a_model_with_nan_or_inf_is_refused_naming_the_tensor(tiny_sets):
    model = ConvBN()
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(LandscapeError, match=r"^the model's conv\.weight holds NaN or inf$"):
        center_of(model, direction_names(model, "weights"))
    model = ConvBN()
    center = center_of(model, direction_names(model, "weights"))  # parameters only: the statistics are θ* too
    dirs = [normalize_direction(random_direction(center, 0), center, "filter", "biasbn")]
    model.bn.running_var[1] = float("inf")
    with pytest.raises(LandscapeError, match=r"^the model's bn\.running_var holds NaN or inf$"):
        PointEvaluator(model, center, dirs, tiny_sets, MEAN, STD)


@pytest.mark.parametrize("points_per_pass", [1, 5])
def test_a_direction_with_nan_or_inf_is_refused_before_any_evaluation(tiny_sets, points_per_pass):
    torch.manual_seed(0)
    model = Softmax()
    center = center_of(model, direction_names(model, "weights"))
    good = normalize_direction(random_direction(center, 0), center, "filter", "biasbn")
    bad = {n: t.clone() for n, t in good.items()}
    bad["fc.weight"][3, 7] = float("inf")  # before: 0·inf = NaN at c = 0 in the batched path, skipped in the other
    options = RunOptions(points_per_pass=points_per_pass)
    with pytest.raises(LandscapeError, match=r"^direction 2's fc\.weight holds NaN or inf$"):
        PointEvaluator(model, center, [good, bad], tiny_sets, MEAN, STD, options=options)
    bad["fc.weight"][3, 7], bad["fc.bias"][0] = 0.0, float("nan")
    with pytest.raises(LandscapeError, match=r"^direction 1's fc\.bias holds NaN or inf$"):
        PointEvaluator(model, center, [bad, good], tiny_sets, MEAN, STD, options=options)


def test_the_weights_of_a_point_are_the_same_alone_or_with_others():
    """Batched and one-point evaluation write the same weights, bit for bit, c = 0 included."""
    g = torch.Generator().manual_seed(0)
    center = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    dirs = [[torch.randn(t.shape, generator=g) for t in center] for _ in range(2)]
    coefficients = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.0, -0.7], [0.1, 0.2], [-1.0, 1e-8]], dtype=torch.float64)
    together = moved_weights(center, dirs, coefficients)
    for p in range(len(coefficients)):
        alone = moved_weights(center, dirs, coefficients[p : p + 1])
        for t, a in zip(together, alone):
            assert torch.equal(t[p], a[0]) and not (t[p] != a[0]).any()
    for t, c in zip(together, center):
        assert torch.equal(t[0], c)  # θ* itself at the origin


# --bn recompute: statistics of all the BN images, however they are batched.


def bn_reference(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and unbiased variance, per channel, of the BN's input over all of `x` at once (float64)."""
    with torch.no_grad():
        h = model.conv(x) if isinstance(model, ConvBN) else model.hidden(model.pool(x).flatten(1))
    dims = [d for d in range(h.dim()) if d != 1]
    return h.double().mean(dims), h.double().var(dims, unbiased=True)


@pytest.mark.parametrize("toy", [ConvBN, LinearBN])
@pytest.mark.parametrize("sizes", [(5, 5, 2), (12,), (1, 11), (2, 3, 7)])
def test_recomputed_statistics_are_those_of_all_images_at_once(toy, sizes):
    torch.manual_seed(0)
    model = toy().double().eval()
    x = torch.randn(12, 3, 6, 6, dtype=torch.float64) * 2 + 0.5
    if toy is LinearBN and 1 in sizes:
        pytest.skip("train-mode BatchNorm1d cannot take one image")
    recompute_batchnorm(model, list(x.split(list(sizes))))
    mean, var = bn_reference(model, x)
    torch.testing.assert_close(model.bn.running_mean, mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.bn.running_var, var, rtol=1e-12, atol=1e-14)
    assert not model.training  # its mode restored


def test_recompute_leaves_dropout_off():
    """Only the BatchNorms train: with dropout on, the statistics (and the loss) were random at every call."""
    torch.manual_seed(0)
    model = DropoutBN().double().eval()
    model.drop.train()  # a mode of the caller's, restored after
    x = torch.randn(12, 3, 6, 6, dtype=torch.float64)
    recompute_batchnorm(model, list(x.split(5)))
    with torch.no_grad():
        h = model.conv(x)  # dropout off: the BN's input is the convolution's output
    torch.testing.assert_close(model.bn.running_mean, h.mean((0, 2, 3)), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-12, atol=1e-14)
    assert model.drop.training and not model.bn.training and not model.training
    assert random_in_training(model) == ["drop"] and random_in_training(ConvBN()) == []


def test_recompute_refuses_fewer_than_two_images():
    model = LinearBN()
    with pytest.raises(LandscapeError, match=r"^--bn recompute needs at least 2 images \(got 1\)"):
        recompute_batchnorm(model, [torch.randn(1, 3, 4, 4)])
    with pytest.raises(LandscapeError, match=r"^--bn-images must be >= 2"):
        EvalSpec(bn="recompute", bn_images=1).validate()
    EvalSpec(bn="eval", bn_images=1).validate()  # unused without recompute: files made so still resume


@pytest.mark.parametrize("toy", [ConvBN, LinearBN])
@pytest.mark.parametrize("count", [12, 11])
def test_bn_recompute_does_not_depend_on_the_batch_size(tiny_sets, toy, count):
    """5+5+2 (or 5+5+1, the one image joined to the batch before) weigh every image alike: the same surface as one
    batch of all images, and the statistics as computed by hand."""
    torch.manual_seed(0)
    model = conftest_randomize(toy())
    center = center_of(model, direction_names(model, "weights"))
    dirs = [normalize_direction(random_direction(center, 0), center, "layer", "none")]
    train = tiny_sets["train"]
    bn_set = ImageSet(train.images[:count], train.labels[:count], train.indices[:count])
    points = np.array([[0.0], [0.4]])
    results = []
    for batch in (5, count):
        spec = EvalSpec(bn="recompute", bn_images=count, bn_batch_size=batch)
        evaluator = PointEvaluator(copy.deepcopy(model), center, dirs, tiny_sets, MEAN, STD, spec=spec, bn_set=bn_set)
        results.append(evaluator.evaluate(points))
    assert_same_metrics(results[0], results[1], rtol=2e-6)
    # by hand, at the second point: the model moved, statistics over all images in float64, then eval mode
    at_point = moved(model, center, dirs, points[1])
    x = (bn_set.images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    mean, var = bn_reference(at_point, x)
    with torch.no_grad():
        at_point.bn.running_mean.copy_(mean)
        at_point.bn.running_var.copy_(var)
    for split, images in tiny_sets.items():
        loss, acc = plain_loss(at_point, images)
        assert results[0][f"{split}_loss"][1] == pytest.approx(loss, rel=2e-6)
        assert results[0][f"{split}_acc"][1] == pytest.approx(acc, rel=1e-12)  # 100·k/n vs a mean


def conftest_randomize(model: nn.Module) -> nn.Module:
    """Non-trivial BN parameters, so that the statistics matter."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data = 1 + 0.5 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.3 * torch.randn(m.bias.shape, generator=g)
    return model
