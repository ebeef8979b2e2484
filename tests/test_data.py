"""The data loaders: CIFAR-10/100 pickles, ImageFolder trees, seeded subsets, clear errors."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from conftest import write_cifar10

from landscape import DataSpec, LandscapeError, load_split
from landscape.data import ImageSet, fingerprint, normalizer, subset_indices


def test_cifar10_images_labels_and_subsets(cifar_root):
    full = load_split(DataSpec(root=str(cifar_root)), "train")
    assert full.images.dtype == torch.uint8 and full.images.shape == (60, 3, 32, 32)
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    assert torch.equal(full.images[12], torch.from_numpy(batch["data"][0].reshape(3, 32, 32)))
    assert full.labels[12] == batch["labels"][0]
    sub = load_split(DataSpec(root=str(cifar_root), subset=10, seed=3), "train")
    again = load_split(DataSpec(root=str(cifar_root), subset=10, seed=3), "train")
    other = load_split(DataSpec(root=str(cifar_root), subset=10, seed=4), "train")
    assert np.array_equal(sub.indices, again.indices) and not np.array_equal(sub.indices, other.indices)
    assert torch.equal(sub.images, full.images[torch.from_numpy(sub.indices)])
    test = load_split(DataSpec(root=str(cifar_root / "cifar-10-batches-py")), "test")  # the folder itself
    assert len(test) == 20


def test_subset_indices():
    idx = subset_indices(100, 10, 0, "train")
    assert len(set(idx)) == 10 and list(idx) == sorted(idx)
    assert len(subset_indices(5, 10, 0, "train")) == 5


def test_disjoint_parts_of_a_subset_draw():
    old_draw = np.sort(np.random.default_rng([7, 0]).choice(100, size=30, replace=False))
    np.testing.assert_array_equal(subset_indices(100, 30, 7, "train"), old_draw)  # part 0: files stay reproducible
    np.testing.assert_array_equal(subset_indices(100, 30, 7, "train", part=0), old_draw)
    parts = [subset_indices(100, 30, 7, "train", part=k) for k in range(3)]
    assert all(len(p) == 30 and list(p) == sorted(p) for p in parts)
    assert not (set(parts[0]) & set(parts[1]) or set(parts[0]) & set(parts[2]) or set(parts[1]) & set(parts[2]))
    np.testing.assert_array_equal(subset_indices(100, 30, 7, "train", part=2), parts[2])  # deterministic
    assert not np.array_equal(subset_indices(100, 30, 7, "test", part=1), parts[1])  # each split its own draws
    with pytest.raises(LandscapeError, match="--data-part 3 needs 120 images"):
        subset_indices(100, 30, 7, "train", part=3)
    with pytest.raises(LandscapeError, match="goes with --subset"):
        DataSpec(part=1).validate()


def test_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 7), ("test", 3)):
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "fine_labels": list(range(90, 90 + n)),
                    "coarse_labels": [0] * n,
                },
                f,
                protocol=2,
            )
    train = load_split(DataSpec(name="cifar100", root=str(tmp_path)), "train")
    assert len(train) == 7 and train.labels.tolist() == list(range(90, 97))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for k in range(3):
            size = (20, 24) if k else (30, 26)
            Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
                tmp_path / "train" / cls / f"{k}.png"
            )
    with pytest.raises(LandscapeError, match="--image-size"):
        load_split(DataSpec(name="imagefolder", root=str(tmp_path)), "train")
    data = load_split(DataSpec(name="imagefolder", root=str(tmp_path), image_size=16), "train")
    assert data.images.shape == (6, 3, 16, 16) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(LandscapeError, match="no ImageFolder split"):
        load_split(DataSpec(name="imagefolder", root=str(tmp_path), image_size=16), "test")


def test_bad_data_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("LANDSCAPE_DATA_ROOT", raising=False)
    with pytest.raises(LandscapeError, match="no data root"):
        load_split(DataSpec(), "train")
    with pytest.raises(LandscapeError, match="no cifar10 under"):
        load_split(DataSpec(root=str(tmp_path)), "train")
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(b"garbage")
    with pytest.raises(LandscapeError, match="cannot read"):
        load_split(DataSpec(root=str(tmp_path)), "train")
    with pytest.raises(LandscapeError, match="unknown split"):
        load_split(DataSpec(root=str(tmp_path), split="val"), "val")


def test_normalizer_matches_to_tensor_and_normalize():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    scale, shift = normalizer(mean, std, "cpu")
    expected = (x.double() / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)) / torch.tensor(std).double().view(
        1, 3, 1, 1
    )
    torch.testing.assert_close((x.float() * scale + shift).double(), expected, rtol=0, atol=1e-5)


def cifar_with_batch(tmp_path, batch, name="cifar10"):
    """A CIFAR folder whose first training batch is `batch` (pickled like the real files)."""
    if name == "cifar10":
        write_cifar10(tmp_path)
        path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    else:
        (tmp_path / "cifar-100-python").mkdir()
        (tmp_path / "cifar-100-python" / "test").write_bytes(b"unused")
        path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


IMAGES = np.zeros((3, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, batch, problem",
    [
        ("cifar10", {"data": IMAGES, "labels": [0, 10, 3]}, "label 10 is outside 0..9"),
        ("cifar10", {"data": IMAGES, "labels": [0, -1, 3]}, "label -1 is outside 0..9"),
        ("cifar100", {"data": IMAGES, "fine_labels": [99, 100, 0]}, "label 100 is outside 0..99"),
        (
            "cifar10",
            {"data": IMAGES, "labels": [0, 1]},
            "it is not a CIFAR batch ('labels' or 'fine_labels' must be 3 whole numbers, one per image)",
        ),
        (
            "cifar10",
            {"data": IMAGES, "labels": ["a", "b", "c"]},
            "it is not a CIFAR batch ('labels' or 'fine_labels' must be 3 whole numbers, one per image)",
        ),
        (
            "cifar10",
            {"data": IMAGES},
            "it is not a CIFAR batch ('labels' or 'fine_labels' must be 3 whole numbers, one per image)",
        ),
        (
            "cifar10",
            {"data": IMAGES[:, :3000], "labels": [0, 1, 2]},
            "it is not a CIFAR batch (a dict whose 'data' is a uint8 array of N rows of 3072 pixels)",
        ),
        (
            "cifar10",
            {"data": IMAGES.astype(np.float32), "labels": [0, 1, 2]},
            "it is not a CIFAR batch (a dict whose 'data' is a uint8 array of N rows of 3072 pixels)",
        ),
        (
            "cifar10",
            [IMAGES, [0, 1, 2]],
            "it is not a CIFAR batch (a dict whose 'data' is a uint8 array of N rows of 3072 pixels)",
        ),
    ],
    ids=[
        "label-10",
        "label-minus-1",
        "cifar100-label-100",
        "too-few-labels",
        "text-labels",
        "no-labels",
        "short-rows",
        "float-data",
        "not-a-dict",
    ],
)
def test_malformed_cifar_batches_are_one_line_naming_the_file(tmp_path, name, batch, problem):
    path = cifar_with_batch(tmp_path, batch, name)
    with pytest.raises(LandscapeError) as error:
        load_split(DataSpec(name=name, root=str(tmp_path)), "train")
    assert str(error.value) == f"cannot read {path}: {problem}"


def test_recorded_indices_pick_rows_across_batches_in_their_order(cifar_root):
    full = load_split(DataSpec(root=str(cifar_root)), "train")
    picked = np.array([59, 0, 12, 11, 35, 12], dtype=np.int64)
    some = load_split(DataSpec(root=str(cifar_root)), "train", picked)
    assert torch.equal(some.images, full.images[torch.from_numpy(picked)])
    assert torch.equal(some.labels, full.labels[torch.from_numpy(picked)]) and some.indices is picked
    with pytest.raises(LandscapeError, match="recorded image indices exceed the 60 images"):
        load_split(DataSpec(root=str(cifar_root)), "train", np.array([60]))


def image_folder(root, classes=3, per_class=4, size=(12, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / "train" / f"class{c}").mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / f"class{c}" / f"{k}.png")
    return root


def test_image_folder_decodes_only_the_subset(tmp_path, monkeypatch):
    import PIL.Image

    image_folder(tmp_path)
    full = load_split(DataSpec(name="imagefolder", root=str(tmp_path)), "train")
    assert len(full) == 12
    opened = []
    real_open = PIL.Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(getattr(fp, "name", fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    sub = load_split(DataSpec(name="imagefolder", root=str(tmp_path), subset=2, seed=5), "train")
    assert len(opened) == 2
    assert np.array_equal(sub.indices, subset_indices(12, 2, 5, "train"))
    assert torch.equal(sub.images, full.images[torch.from_numpy(sub.indices)])
    assert torch.equal(sub.labels, full.labels[torch.from_numpy(sub.indices)])


def test_a_corrupt_image_among_the_chosen_is_one_line_naming_it(tmp_path):
    image_folder(tmp_path)
    spec = DataSpec(name="imagefolder", root=str(tmp_path))
    broken = tmp_path / "train" / "class1" / "2.png"  # index 6 in sorted order
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert len(load_split(spec, "train", np.array([0, 5, 7, 11]))) == 4  # not chosen: never read
    with pytest.raises(LandscapeError) as error:
        load_split(spec, "train", np.array([0, 6]))
    text = str(error.value)
    assert text.startswith(f"cannot read image {broken}: UnidentifiedImageError: ") and "\n" not in text


def test_fingerprint_is_the_sha256_of_shape_pixels_and_labels(cifar_root):
    images = load_split(DataSpec(root=str(cifar_root), subset=6), "test")
    header = np.array(images.images.shape, dtype="<i8").tobytes()
    expected = hashlib.sha256(header + images.images.numpy().tobytes() + images.labels.numpy().astype("<i8").tobytes())
    assert fingerprint(images) == expected.hexdigest()
    same = ImageSet(images.images.clone(), images.labels.clone(), images.indices + 1)  # the indices are not hashed
    assert fingerprint(same) == fingerprint(images)
    pixel = images.images.clone()
    pixel[5, 2, 31, 31] ^= 1
    label = images.labels.clone()
    label[0] = (label[0] + 1) % 10
    order = torch.arange(5, -1, -1)
    others = [
        ImageSet(pixel, images.labels, images.indices),
        ImageSet(images.images, label, images.indices),
        ImageSet(images.images[order], images.labels[order], images.indices),
        ImageSet(images.images.reshape(6, 3, 16, 64), images.labels, images.indices),
    ]
    assert len({fingerprint(images)} | {fingerprint(other) for other in others}) == 5


def test_fetch_cifar_downloads_only_what_is_missing(tmp_path, cifar_root, monkeypatch):
    """`landscape train --download` (its data error advised --download, which train did not have)."""
    import landscape.data

    calls = []
    monkeypatch.setattr(landscape.data, "_download_cifar", lambda root, name: calls.append((root, name)))
    landscape.data.fetch_cifar(str(cifar_root), "cifar10")
    assert calls == []
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LANDSCAPE_DATA_ROOT", str(empty))
    landscape.data.fetch_cifar("", "cifar10")
    assert calls == [(empty, "cifar10")]
    with pytest.raises(LandscapeError, match="only CIFAR can be downloaded, not imagefolder"):
        landscape.data.fetch_cifar(empty, "imagefolder")


@pytest.mark.parametrize("size, valid", [(1, True), (1024, True), (0, False), (-5, False), (20000, False)])
def test_image_size_is_checked(size, valid):
    """--image-size 20000 decoded 11 PNGs into 6 GB; -5 failed per image, 0 meant "no resize" without a word."""
    spec = DataSpec(name="imagefolder", image_size=size)
    if valid:
        spec.validate()
    else:
        with pytest.raises(LandscapeError, match=f"--image-size must be 1 to 1024 pixels, got {size}"):
            spec.validate()


def test_image_size_is_refused_for_cifar():
    """It was ignored for CIFAR yet recorded in the surface's spec: the same surface without it was "another"."""
    with pytest.raises(LandscapeError, match="--image-size is for --dataset imagefolder: cifar10 images are 32x32"):
        DataSpec(name="cifar10", image_size=32).validate()


def test_labels_the_model_has_no_output_for_are_refused():
    """An image folder of 11 classes and a 10-class network: an IndexError deep in the loss (on CUDA a device-side
    assert); now one line before anything is computed. The model's mode is left as it was."""
    from landscape.data import ImageSet, check_labels_fit

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10), torch.nn.Dropout())
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    fitting = ImageSet(images, torch.tensor([0, 9, 3]), np.arange(3))
    check_labels_fit(model, {"train": fitting})
    assert model.training
    eleven = ImageSet(images, torch.tensor([0, 10, 3]), np.arange(3))
    with pytest.raises(LandscapeError) as error:
        check_labels_fit(model.double(), {"train": fitting, "test": eleven})
    assert str(error.value) == (
        "the test images have 11 or more classes (labels up to 10), the model outputs 10: evaluate it on the data it "
        "was trained for"
    )
    assert model.training


def test_compute_refuses_an_image_folder_with_more_classes_than_the_model(tmp_path, resnet20_ckpt):
    from PIL import Image
    from typer.testing import CliRunner

    from landscape import load_checkpoint
    from landscape.cli import app

    raw = tmp_path / "raw.pt"
    torch.save(load_checkpoint(resnet20_ckpt).state_dict, raw)  # no metadata: any dataset may be named
    for cls in range(11):
        (tmp_path / "images" / "train" / f"c{cls:02d}").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "train" / f"c{cls:02d}" / "0.png")
    out = tmp_path / "s.h5"
    args = ["compute", "--ckpt", raw, "--arch", "resnet20", "--dataset", "imagefolder", "--split", "train"]
    args += ["--data-root", tmp_path / "images", "--x", "-1:1:3", "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: the train images have 11 or more classes (labels up to 10), the model outputs 10: evaluate it on the "
        "data it was trained for\n"
    )
    assert not out.exists()
