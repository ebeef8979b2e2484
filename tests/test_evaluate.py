"""The evaluator against independent computations: plain eval-mode loss, batched vs one by one, BN modes."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape import DataSpec, EvalSpec, LandscapeError, PointEvaluator, RunOptions, build_model, load_checkpoint
from landscape.data import load_split
from landscape.directions import center_of, direction_names, normalize_direction, random_direction

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


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


def test_centre_point_equals_plain_eval_loss(setup):
    model, center, dirs, sets = setup
    reference = copy.deepcopy(model)
    result = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.zeros((1, 2)))
    for s, split in enumerate(sets):
        loss, acc = plain_loss(reference, sets[split])
        assert result[0, s, 0] == pytest.approx(loss, rel=1e-5)
        assert result[0, s, 1] == acc


def test_off_centre_point_equals_perturbed_model(setup):
    model, center, dirs, sets = setup
    a, b = 0.3, -0.7
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in moved.state_dict().items():
            if name in center:
                tensor.copy_(center[name] + a * dirs[0][name] + b * dirs[1][name])
    result = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.array([[a, b]]))
    loss, acc = plain_loss(moved, sets["train"])
    assert result[0, 0, 0] == pytest.approx(loss, rel=1e-5)
    assert result[0, 0, 1] == acc


@pytest.mark.parametrize("options", [
    RunOptions(points_per_pass=4), RunOptions(points_per_pass=3, fold_bn=False),
    RunOptions(fold_bn=False, channels_last=False), RunOptions(batch_size=7)],
    ids=["vmap4", "vmap3-nofold", "plain", "small-batches"])
def test_batched_and_optimized_paths_equal_one_by_one(setup, options):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, 0], [0, -0.5], [0.25, 0.75], [-1, 1], [1, 1]])
    reference = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD,
                               options=RunOptions(fold_bn=False, channels_last=False, batch_size=1000))
    expected = reference.evaluate(points)
    got = PointEvaluator(model, center, dirs, sets, MEAN, STD, options=options).evaluate(points)
    np.testing.assert_allclose(got[:, :, 0], expected[:, :, 0], rtol=1e-5)
    np.testing.assert_array_equal(got[:, :, 1], expected[:, :, 1])


def test_weights_are_restored_even_after_an_error(setup):
    model, center, dirs, sets = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broken = {"train": sets["train"].__class__(sets["train"].images, sets["train"].labels + 100,
                                               sets["train"].indices)}
    evaluator = PointEvaluator(model, center, dirs, broken, MEAN, STD, options=RunOptions(channels_last=False))
    with pytest.raises(Exception):
        evaluator.evaluate(np.array([[0.5, 0.5]]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_is_close_to_fp32(setup):
    model, center, dirs, sets = setup
    points = np.array([[0, 0], [0.5, -0.5]])
    fp32 = PointEvaluator(copy.deepcopy(model), center, dirs, sets, MEAN, STD).evaluate(points)
    bf16 = PointEvaluator(model, center, dirs, sets, MEAN, STD, EvalSpec(precision="bf16")).evaluate(points)
    np.testing.assert_allclose(bf16[:, :, 0], fp32[:, :, 0], rtol=3e-2)
    assert not np.array_equal(bf16[:, :, 0], fp32[:, :, 0])


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
    got = PointEvaluator(model, center, dirs, sets, MEAN, STD, spec, bn_set=bn_set).evaluate(np.array([[a, 0]]))
    assert got[0, 1, 0] == pytest.approx(expected[0], rel=1e-5)
    eval_mode = PointEvaluator(model, center, dirs, sets, MEAN, STD).evaluate(np.array([[a, 0]]))
    assert abs(eval_mode[0, 1, 0] - got[0, 1, 0]) > 1e-3  # the two modes really differ


def test_bn_recompute_refuses_vmap(setup):
    model, center, dirs, sets = setup
    with pytest.raises(LandscapeError, match="points-per-pass"):
        PointEvaluator(model, center, dirs, sets, MEAN, STD, EvalSpec(bn="recompute"),
                       RunOptions(points_per_pass=2), bn_set=sets["train"])
