import pytest
import torch

from landscape import LandscapeError, create_model, normalize_direction, random_direction
from landscape.directions import center_of, check_finite, direction_names, inner, target_direction


@pytest.fixture
def center():
    torch.manual_seed(1)
    model = create_model("resnet20")
    return model, center_of(model, direction_names(model, "weights"))


def test_filter_normalization_matches_each_filter_norm(center):
    """d_ij <- d_ij / ‖d_ij‖ ‖θ_ij‖: each filter keeps the raw direction's way (a positive multiple of it) and takes
    θ*'s filter's norm (returning θ* itself would pass a test of norms alone)."""
    _, w = center
    raw = random_direction(w, seed=3)
    d = normalize_direction(raw, w, "filter", "biasbn")
    for name, t in d.items():
        if t.dim() <= 1:
            assert torch.count_nonzero(t) == 0, name
        else:
            torch.testing.assert_close(t.flatten(1).norm(dim=1), w[name].flatten(1).norm(dim=1), rtol=1e-5, atol=0)
            factor = w[name].flatten(1).norm(dim=1) / raw[name].flatten(1).norm(dim=1)
            torch.testing.assert_close(t.flatten(1), raw[name].flatten(1) * factor[:, None], rtol=1e-5, atol=1e-7)


def test_ignore_none_keeps_the_weights_of_small_tensors(center):
    _, w = center
    d = normalize_direction(random_direction(w, seed=3), w, "filter", "none")
    bias = "linear.bias"
    assert torch.equal(d[bias], w[bias])


def test_layer_and_model_normalization(center):
    _, w = center
    raw = random_direction(w, seed=4)
    layer = normalize_direction(raw, w, "layer", "biasbn")
    for name, t in layer.items():
        if t.dim() > 1:
            torch.testing.assert_close(t.norm(), w[name].norm(), rtol=1e-5, atol=0)
            torch.testing.assert_close(t, raw[name] * (w[name].norm() / raw[name].norm()), rtol=1e-5, atol=1e-7)
    model = normalize_direction(raw, w, "model", "biasbn")
    big = [n for n in w if w[n].dim() > 1]
    d_norm = sum(model[n].double().pow(2).sum() for n in big) ** 0.5
    w_norm = sum(w[n].double().pow(2).sum() for n in big) ** 0.5
    assert abs(float(d_norm / w_norm) - 1) < 1e-6
    raw_norm = sum(raw[n].double().pow(2).sum() for n in big) ** 0.5
    torch.testing.assert_close(model["conv1.weight"], raw["conv1.weight"] * float(w_norm / raw_norm), rtol=1e-5, atol=0)
    none = normalize_direction(raw, w, "none", "biasbn")
    assert torch.equal(none["conv1.weight"], raw["conv1.weight"])
    flat = {"bias": torch.ones(3)}  # no tensor of dim > 1: a model norm had nothing to scale (a RuntimeError)
    with pytest.raises(LandscapeError, match="scales the tensors of dim > 1: this model has none"):
        normalize_direction(flat, flat, "model", "none")


def test_random_directions_are_seeded_and_keyed_by_name(center):
    _, w = center
    a, b, c = random_direction(w, 0), random_direction(w, 0), random_direction(w, 1)
    assert list(a) == list(w)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert abs(inner(a, c)) < 0.05 * inner(a, a)


def test_states_include_bn_statistics_but_not_counters(center):
    model, _ = center
    names = direction_names(model, "states")
    assert "bn1.running_mean" in names and "bn1.running_var" in names
    assert not [n for n in names if n.endswith("num_batches_tracked")]
    assert set(direction_names(model, "weights")) < set(names)


def test_mismatched_keys_are_named(center):
    _, w = center
    d = random_direction(w, 0)
    d["extra.weight"] = d.pop("conv1.weight")
    with pytest.raises(LandscapeError, match="conv1.weight"):
        normalize_direction(d, w, "filter", "biasbn")


def test_target_direction_is_the_difference(center):
    _, w = center
    target = {n: t + 1 for n, t in w.items()}
    d = target_direction(w, target)
    assert all(torch.allclose(d[n], torch.ones_like(t)) for n, t in w.items())


def test_a_target_with_nan_or_inf_is_refused_naming_the_tensor(center):
    _, w = center
    target = {n: t + 1 for n, t in w.items()}
    target["layer2.1.conv2.weight"][0, 0, 1, 1] = float("-inf")
    with pytest.raises(LandscapeError, match=r"^the target checkpoint's layer2\.1\.conv2\.weight holds NaN or inf$"):
        target_direction(w, target)
    target = {n: t + 1 for n, t in w.items()} | {"bn1.running_var": torch.full((16,), float("nan"))}
    with pytest.raises(LandscapeError, match=r"^the target checkpoint's bn1\.running_var holds NaN or inf$"):
        target_direction(w, target)  # a tensor the direction does not use is θ* of the target all the same


def test_check_finite_names_the_first_tensor_by_name():
    tensors = {"a": torch.ones(3), "steps": torch.tensor(7), "b": torch.tensor([1.0, float("nan")])}
    with pytest.raises(LandscapeError, match=r"^the file's b holds NaN or inf$"):
        check_finite(tensors, "the file")
    check_finite({"a": torch.ones(2), "steps": torch.tensor(3)}, "the file")  # integer tensors are always finite


def test_a_buffer_that_is_not_persistent_is_not_part_of_the_states():
    """`states` took every floating buffer, then sorted by the state dict's order: a non-persistent one crashed."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.register_buffer("window", torch.ones(3), persistent=False)
    assert direction_names(model, "states") == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
    ]


def test_a_model_in_another_precision_is_refused_by_name():
    """θ* was rounded to float32 silently, and a float64 model failed deep inside the evaluation."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
    with pytest.raises(LandscapeError, match=r"the model's 0.weight is float64: .* model.float\(\)"):
        center_of(model, direction_names(model, "weights"))
    center = center_of(model.float(), direction_names(model, "weights"))
    assert all(t.dtype == torch.float32 for t in center.values())
