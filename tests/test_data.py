"""Loaders, transforms and file formats, checked against independent constructions."""

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from implicit_bias.data import Dataset, corrupt_labels, files, load, read_idx
from implicit_bias.data.files import CIFAR_TEST, CIFAR_TRAIN, MNIST_FILES
from implicit_bias.errors import CorruptFileError, InvalidArgumentError, MissingFileError, UnknownNameError


def hard_margin_svm(X: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """min ½‖w‖² s.t. s_n⟨w, x_n⟩ ≥ 1, solved through its dual max Σα − ½‖Σ α_n s_n x_n‖², α ≥ 0."""
    Z = X * signs[:, None]
    gram = Z @ Z.T

    def negative_dual(alpha):
        return 0.5 * alpha @ gram @ alpha - alpha.sum(), gram @ alpha - 1.0

    result = minimize(
        negative_dual,
        np.zeros(len(X)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * len(X),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    return Z.T @ result.x


@pytest.mark.parametrize("name", ["gaussians", "xor", "linear-separable", "digits", "mnist1d"])
def test_builtin_loaders_have_consistent_shapes_and_splits(name):
    options = {"num_samples": 500} if name == "mnist1d" else {}
    data = load(name, **options)
    assert isinstance(data, Dataset)
    assert data.X.is_floating_point() and data.y.dtype == torch.long
    assert len(data.X) == len(data.y) and int(data.y.max()) < data.num_classes
    assert data.test is not None and data.test.input_shape == data.input_shape
    assert torch.isfinite(data.X).all()


def test_loaders_are_deterministic_in_their_seed():
    a, b, c = load("gaussians", seed=3), load("gaussians", seed=3), load("gaussians", seed=4)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert not torch.equal(a.X, c.X)


def test_gaussian_clusters_are_disjoint_and_nearest_mean_separable():
    data = load("gaussians", num_classes=5, dim=7, n_per_class=80, separation=3.0, noise=2.0, seed=1)
    means = data.info["means"]
    nearest = torch.cdist(data.X, means).argmin(dim=1)
    assert torch.equal(nearest, data.y)
    assert data.class_counts.tolist() == [80] * 5


def test_xor_labels_follow_the_sign_product():
    data = load("xor", noise=0.4, seed=2)
    assert torch.equal(((data.X[:, 0] * data.X[:, 1]) > 0).long(), data.y)


def test_linear_separable_planted_direction_is_the_svm_solution():
    data = load("linear-separable", n=120, dim=6, margin=0.25, support_pairs=2, seed=5)
    X, signs = data.X.numpy(), (2 * data.y - 1).numpy().astype(float)
    w = hard_margin_svm(X, signs)
    gamma = 1 / np.linalg.norm(w)
    assert gamma == pytest.approx(0.25, rel=1e-6)
    assert w / np.linalg.norm(w) @ data.info["w_star"].numpy() == pytest.approx(1.0, abs=1e-9)


def test_classes_per_class_and_standardize():
    data = load("digits", classes=[3, 5], per_class=40, standardize=True, seed=1)
    assert data.num_classes == 2 and data.class_counts.tolist() == [40, 40]
    assert set(data.test.y.tolist()) == {0, 1}
    flat = data.X.reshape(80, -1)
    assert torch.allclose(flat.mean(dim=0), torch.zeros(64), atol=1e-5)
    spread = flat.std(dim=0)
    constant = spread < 1e-6  # pixels that are blank in every training image stay blank
    assert int(constant.sum()) < 64 and torch.allclose(spread[~constant], torch.ones(int((~constant).sum())), atol=1e-5)


def test_per_class_too_large_names_the_short_classes():
    with pytest.raises(InvalidArgumentError, match=r"per_class=60 is more than .* class 0 has 50"):
        load("gaussians", per_class=60)


def test_unknown_names_and_options_are_refused():
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar100'"):
        load("cifar100")
    with pytest.raises(UnknownNameError, match="'dims'"):
        load("gaussians", dims=3)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_corrupt_labels_changes_exactly_the_fraction(fraction):
    data = load("digits", seed=0)
    noisy = corrupt_labels(data, fraction, seed=7)
    changed = noisy.y != data.y
    assert int(changed.sum()) == round(fraction * len(data))
    assert torch.equal(torch.nonzero(changed).flatten(), noisy.info["corrupted"])
    assert torch.equal(noisy.test.y, data.test.y)


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(s.to_bytes(4, "big") for s in array.shape)
    payload = header + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("compress", [False, True])
def test_mnist_layout_idx_files_round_trip(tmp_path, compress, name):
    rng = np.random.default_rng(0)
    images = {
        "train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
    }
    labels = {
        "train": rng.integers(0, 10, 12).astype(np.uint8),
        "test": rng.integers(0, 10, 5).astype(np.uint8),
    }
    for split, (image_name, label_name) in MNIST_FILES.items():
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{image_name}{suffix}", images[split], compress)
        write_idx(tmp_path / f"{label_name}{suffix}", labels[split], compress)
    data = load(name, path=str(tmp_path))
    assert data.name == name and data.num_classes == 10
    assert data.X.shape == (12, 1, 28, 28) and data.test.X.shape == (5, 1, 28, 28)
    assert torch.allclose(data.X[:, 0] * 255, torch.as_tensor(images["train"], dtype=torch.float32))
    assert data.y.tolist() == labels["train"].tolist() and data.test.y.tolist() == labels["test"].tolist()


def test_fashion_mnist_takes_the_shared_options(tmp_path):
    labels = {"train": np.repeat(np.arange(10, dtype=np.uint8), 3), "test": np.arange(10, dtype=np.uint8)}
    for split, (image_name, label_name) in MNIST_FILES.items():
        # every pixel of an image equals 10 × its label, so relabelling and subsampling can be read off the pixels
        write_idx(tmp_path / image_name, np.repeat(labels[split] * 10, 28 * 28).reshape(-1, 28, 28), compress=False)
        write_idx(tmp_path / label_name, labels[split], compress=False)
    data = load("fashion-mnist", path=str(tmp_path), classes=[7, 2], per_class=2, dtype="float64", seed=1)
    assert data.X.dtype == torch.float64 and data.class_counts.tolist() == [2, 2]
    assert torch.allclose(data.X[:, 0, 0, 0] * 255, torch.where(data.y == 0, 70.0, 20.0).double(), atol=1e-4)
    assert data.test.y.tolist() == [1, 0]  # test labels 2 and 7, in file order, relabelled by the given order


def test_fashion_mnist_missing_folder_names_the_path_and_the_fix(tmp_path, monkeypatch):
    absent = tmp_path / "nowhere"
    with pytest.raises(MissingFileError) as error:
        load("fashion-mnist", path=str(absent))
    message = str(error.value)
    assert "\n" not in message and str(absent) in message
    assert "pass path=" in message and "apt-get install dataset-fashion-mnist" in message
    monkeypatch.setattr(files, "FASHION_MNIST_ROOT", str(absent))  # a machine without the Debian package
    with pytest.raises(MissingFileError, match=f"{absent}.*apt-get install dataset-fashion-mnist"):
        load("fashion-mnist")


@pytest.mark.skipif(
    not Path(files.FASHION_MNIST_ROOT).is_dir(),
    reason=f"Fashion-MNIST is not installed in {files.FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_package_files_have_the_published_shapes_counts_and_statistics():
    data = load("fashion-mnist")
    assert data.X.shape == (60_000, 1, 28, 28) and data.test.X.shape == (10_000, 1, 28, 28)
    assert data.class_counts.tolist() == [6000] * 10 and data.test.class_counts.tolist() == [1000] * 10
    assert float(data.X.min()) == 0.0 and float(data.X.max()) == 1.0
    # torchvision's published normalization constants for the Fashion-MNIST training set: mean 0.2860, std 0.3530
    assert float(data.X.double().mean()) == pytest.approx(0.2860, abs=1e-4)
    assert float(data.X.double().std()) == pytest.approx(0.3530, abs=1e-4)


def test_idx_reader_handles_big_endian_ints(tmp_path):
    array = (np.arange(6).reshape(2, 3) - 2).astype(">i4")
    write_idx(tmp_path / "ints", array, compress=False)
    assert read_idx(tmp_path / "ints").tolist() == [[-2, -1, 0], [1, 2, 3]]
    write_idx(tmp_path / "gzipped-without-suffix", array, compress=True)  # recognised by gzip's magic bytes
    assert read_idx(tmp_path / "gzipped-without-suffix").tolist() == [[-2, -1, 0], [1, 2, 3]]


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="train-images-idx3-ubyte.*expected the files.*t10k-labels-idx1-ubyte"):
        load("mnist", path=str(tmp_path))
    with pytest.raises(MissingFileError, match="pass path="):
        load("mnist")


def test_truncated_idx_file_is_reported(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 4, 4), dtype=np.uint8), compress=False)
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-5])
    with pytest.raises(CorruptFileError, match="declares shape"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(CorruptFileError, match="not an IDX file"):
        read_idx(tmp_path / "y")
    for image_name, label_name in MNIST_FILES.values():  # images stored as int32, not bytes
        write_idx(tmp_path / image_name, np.zeros((2, 28, 28), dtype=">i4"), compress=False)
        write_idx(tmp_path / label_name, np.zeros(2, dtype=np.uint8), compress=False)
    with pytest.raises(CorruptFileError, match="fashion-mnist train images must be unsigned bytes .* or floats"):
        load("fashion-mnist", path=str(tmp_path))


def write_cifar(folder, names, rng, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [b"x.png"] * per_batch,
                },
                handle,
                protocol=2,
            )
        written[name] = (data, labels)
    return written


def test_cifar_batches_are_read_with_the_restricted_unpickler(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py", [*CIFAR_TRAIN, CIFAR_TEST], np.random.default_rng(1))
    data = load("cifar10", path=str(tmp_path))
    assert data.X.shape == (20, 3, 32, 32) and data.test.X.shape == (4, 3, 32, 32)
    first, labels = written["data_batch_1"]
    assert torch.allclose(data.X[:4].reshape(4, -1) * 255, torch.as_tensor(first, dtype=torch.float32))
    assert data.y[:4].tolist() == labels


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar_pickle_with_a_foreign_global_is_refused(tmp_path):
    write_cifar(tmp_path, [*CIFAR_TRAIN, CIFAR_TEST], np.random.default_rng(2))
    with open(tmp_path / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle, protocol=2)
    with pytest.raises(CorruptFileError, match="not allowed in a CIFAR batch"):
        load("cifar10", path=str(tmp_path))


def test_cifar_missing_batches_are_named(tmp_path):
    write_cifar(tmp_path, ["data_batch_1"], np.random.default_rng(3))
    with pytest.raises(
        MissingFileError, match="lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch"
    ):
        load("cifar10", path=str(tmp_path))


def test_dataset_rejects_mismatched_inputs():
    with pytest.raises(InvalidArgumentError, match="same number of samples"):
        Dataset(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(InvalidArgumentError, match="labels .* must lie in 0..1"):
        Dataset(torch.zeros(3, 2), torch.tensor([0, 1, 2]), 2)


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"standardize": "flase"}, "option standardize must be bool (true or false), got str 'flase'"),  # was truthy
        ({"per_class": 2.5}, "option per_class must be int | None, got float 2.5"),
        ({"n_per_class": True}, "option n_per_class must be int, got bool True"),
        ({"noise": "x"}, "option noise must be float, got str 'x'"),
        ({"classes": [0, "1"]}, "option classes must be list[int] | None, got list [0, '1']"),
        ({"seed": 1.5}, "option seed must be int | None, got float 1.5"),
    ],
)
def test_option_types_are_checked_against_the_loaders_annotations(options, fragment):
    with pytest.raises(InvalidArgumentError) as caught:
        load("gaussians", **options)
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert "allowed: seed: int | None, num_classes: int, dim: int," in message and "standardize: bool" in message


def test_standardize_false_and_0_leave_the_features_as_generated():
    raw = load("gaussians", num_classes=2, seed=3)
    for off in (False, 0):
        assert torch.equal(load("gaussians", num_classes=2, seed=3, standardize=off).X, raw.X)
    scaled = load("gaussians", num_classes=2, seed=3, standardize=1).X
    assert torch.allclose(scaled.mean(dim=0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(scaled.std(dim=0), torch.ones(2, dtype=torch.float64), atol=1e-12)  # z-scores


def test_a_path_option_takes_a_string_or_a_path_and_nothing_else(tmp_path):
    for path in (tmp_path / "absent", str(tmp_path / "absent")):
        with pytest.raises(MissingFileError, match="absent"):  # got past the type check, to the folder check
            load("mnist", path=path)
    with pytest.raises(InvalidArgumentError, match=re.escape("option path must be str | Path | None, got int 3")):
        load("mnist", path=3)
