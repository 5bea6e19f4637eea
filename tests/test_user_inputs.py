"""The model and data a user brings: fit keeps the model's own dtype and device, non-finite inputs are refused
with their first index, labels must be integers everywhere, and a wrong input width is one line naming both
shapes (issue 13)."""

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.data import Dataset
from implicit_bias.errors import InvalidArgumentError
from implicit_bias.metrics import normalized_margin
from implicit_bias.metrics.collapse import CollapseAccumulator
from implicit_bias.train import TrainConfig, fit, run
from implicit_bias.validation import check_features_labels, check_finite

QUIET = {"progress": False, "log_points": 2}


def toy(dtype=torch.float64, n=24, d=5, seed=0):
    """Linearly separable ±1 data: the label is the sign of the first coordinate, kept away from 0."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    X[:, 0] = torch.where(X[:, 0] >= 0, X[:, 0] + 0.5, X[:, 0] - 0.5)
    return X.to(dtype), (X[:, 0] > 0).long()


def linear(d=5, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, 1, bias=False).to(dtype)


# ------------------------------------------------------------------ dtype and device of the user's model
def test_fit_trains_a_float32_model_in_float32_on_float64_data():
    X, y = toy(torch.float64)
    model = linear()
    before = model.weight.detach().clone()
    history = fit(model, (X, y), loss="logistic", optimizer="gd", steps=50, lr=0.5, **QUIET)
    assert model.weight.dtype == torch.float32 and model.weight.device.type == "cpu"
    assert not torch.equal(model.weight.detach(), before)  # it trained
    assert history.last["accuracy"] == 1.0  # separable by the first coordinate
    # one GD step by hand, in float32, on the float32 cast of the data: the same update fit made
    model = linear()
    reference = linear()
    fit(model, (X, y), loss="logistic", optimizer="gd", steps=1, lr=0.5, progress=False, log_points=1)
    margins = (2 * y - 1).float() * (X.float() @ reference.weight.detach().T).flatten()
    gradient = -((2 * y - 1).float() * torch.sigmoid(-margins)) @ X.float() / len(y)
    assert torch.allclose(model.weight.detach().flatten(), reference.weight.detach().flatten() - 0.5 * gradient)


def test_fit_casts_when_asked_and_config_records_what_was_used(tmp_path):
    X, y = toy(torch.float32)
    model = linear()
    fit(model, (X, y), steps=2, dtype=torch.float64, run_dir=tmp_path / "a", **QUIET)
    assert model.weight.dtype == torch.float64
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["dtype"] == "float64"
    fit(linear(), (X, y), steps=2, run_dir=tmp_path / "b", **QUIET)
    recorded = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert (recorded["dtype"], recorded["device"]) == ("float32", "cpu")


def test_config_driven_training_stays_float64(tmp_path):
    config = TrainConfig(dataset="linear-separable", model="linear:bias=false", steps=3, log_points=2, probes=[])
    assert config.dtype == "float64"
    run(config, tmp_path / "r", progress=False)
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["dtype"] == "float64"
    from implicit_bias.train import load_checkpoint

    weights = load_checkpoint(tmp_path / "r" / "checkpoint.safetensors").model
    assert all(t.dtype == torch.float64 for t in weights.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_model_stays_on_its_gpu_and_cpu_data_follow_it():
    X, y = toy(torch.float64)
    model = linear().cuda()
    history = fit(model, (X, y), loss="logistic", optimizer="gd", steps=50, lr=0.5, **QUIET)
    assert model.weight.device.type == "cuda" and model.weight.dtype == torch.float32
    assert history.last["accuracy"] == 1.0
    acc = CollapseAccumulator(2, 5)
    acc.update(X.cuda(), y.cuda())
    assert acc.device.type == "cuda" and acc.shifted_scatter.device.type == "cuda"


def test_a_model_split_across_dtypes_is_refused_unless_a_dtype_is_given():
    X, y = toy()
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 1).double())
    with pytest.raises(InvalidArgumentError, match="dtypes float32, float64; pass dtype="):
        fit(model, (X, y), steps=1, **QUIET)
    fit(model, (X, y), steps=1, dtype="float64", **QUIET)
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_accumulator_takes_device_and_dtype_from_the_first_batch_when_none_is_given():
    H = torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.0, 1.0], [0.0, 1.2]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    acc = CollapseAccumulator(2, 2, dtype=None)
    acc.update(H, y)
    assert acc.device == torch.device("cpu") and acc.dtype == torch.float64
    # tr Σ_W / tr Σ_B by hand: means (1.05, 0), (0, 1.1); Σ_W trace (2·0.05² + 2·0.1²)/4; Σ_B trace ‖μ0 − μ1‖²/4
    expected = ((2 * 0.05**2 + 2 * 0.1**2) / 4) / ((1.05**2 + 1.1**2) / 4)
    assert acc.compute().nc1_trace == pytest.approx(expected, rel=1e-12)
    half = CollapseAccumulator(2, 2, dtype=None)
    half.update(H.to(torch.float16), y)
    assert half.dtype == torch.float32  # accumulation is never in half precision
    assert CollapseAccumulator(2, 2).dtype == torch.float64  # the default precision whatever the features


# ------------------------------------------------------------------ non-finite inputs
@pytest.mark.parametrize("bad,kind", [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_features_name_their_first_index(bad, kind):
    X, y = toy()
    X[9, 1] = math.nan  # a later one, reported in the count only
    X[3, 2] = bad
    text = rf"X holds {kind} at index \(3, 2\) \(first of 2 non-finite values\)"
    with pytest.raises(InvalidArgumentError, match=text):
        check_features_labels(X, y)
    with pytest.raises(InvalidArgumentError, match=text):
        fit(linear(), (X, y), steps=1, **QUIET)
    with pytest.raises(InvalidArgumentError, match=text):
        normalized_margin(linear(), X, y, degree=1)
    with pytest.raises(InvalidArgumentError, match=f"dataset 'mine': {text}"):
        Dataset(X, y, 2, "mine")
    acc = CollapseAccumulator(2, 5)
    with pytest.raises(InvalidArgumentError, match=rf"features holds {kind} at index \(3, 2\)"):
        acc.update(X, y)
    assert int(acc.counts.sum()) == 0  # nothing of the bad batch was accumulated


def test_check_finite_reports_one_value_and_scalars():
    with pytest.raises(InvalidArgumentError, match=r"w holds NaN at index \(1,\) \(the only non-finite value\)"):
        check_finite("w", torch.tensor([0.0, math.nan, 1.0]))
    with pytest.raises(InvalidArgumentError, match=r"s holds inf \(the only"):
        check_finite("s", torch.tensor(math.inf))
    labels = torch.tensor([1, 2])
    assert check_finite("labels", labels) is labels  # integers are always finite
    large = torch.full((4,), 3e38)  # finite float32 entries whose sum overflows to inf
    assert check_finite("large", large) is large
    with pytest.raises(InvalidArgumentError, match=r"mixed holds -inf at index \(0, 1\) \(first of 2"):
        check_finite("mixed", torch.tensor([[1.0, -math.inf], [math.inf, 2.0]]))  # the sum is NaN


def test_a_float32_cast_that_overflows_is_refused():
    X, y = toy()
    X[5, 0] = 1e300  # finite in float64, inf in the float32 model's dtype
    with pytest.raises(
        InvalidArgumentError, match=r"holds inf at index \(5, 0\) .* after the cast to the model.s dtype float32"
    ):
        fit(linear(), (X, y), steps=1, **QUIET)


def test_collapse_by_layer_says_which_layer_and_batch_made_nan_features():
    from collections import OrderedDict

    from implicit_bias.metrics import collapse_by_layer

    class Log(nn.Module):
        def forward(self, x):
            return torch.log(x)

    X = 1 + torch.rand(24, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X[20, 1] = -1.0  # finite input, log(−1) = NaN feature
    y = torch.arange(24) % 2
    model = nn.Sequential(OrderedDict(log=Log(), head=nn.Linear(3, 2).double()))
    with pytest.raises(
        InvalidArgumentError, match=r"layer 'log', batch of samples 16..23: features holds NaN at index \(4, 1\)"
    ):
        collapse_by_layer(model, (X, y), layers=["log"], num_classes=2, batch_size=8)
    X[3, 0] = math.inf
    with pytest.raises(InvalidArgumentError, match=r"^X holds inf at index \(3, 0\)"):
        collapse_by_layer(model, (X, y), layers=["log"], num_classes=2, batch_size=8)


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0] * 12), torch.tensor([False, True] * 12)])
def test_float_and_bool_labels_are_refused_alike(labels):
    X, _ = toy()
    fragment = f"must be a 1-D integer tensor of class labels, got dtype {labels.dtype} and shape (24,)"
    with pytest.raises(InvalidArgumentError) as from_fit:
        fit(linear(), (X, labels), steps=1, **QUIET)
    with pytest.raises(InvalidArgumentError) as from_accumulator:
        CollapseAccumulator(2, 5).update(X, labels)
    assert str(from_fit.value) == "y " + fragment
    assert str(from_accumulator.value) == "labels " + fragment


# ------------------------------------------------------------------ a model that cannot take the data
def test_a_wrong_input_width_is_one_line_naming_both_shapes():
    X, y = toy(d=64, n=8)
    with pytest.raises(InvalidArgumentError) as error:
        fit(nn.Sequential(nn.Linear(10, 3), nn.ReLU(), nn.Linear(3, 1)), (X, y), steps=1, **QUIET)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith("model Sequential cannot take inputs of shape (N, 64): ")
    assert "(2x64 and 10x3)" in text and text.endswith("the data has 64 features per sample")


def test_other_model_errors_pass_through():
    class Broken(nn.Linear):
        def forward(self, x):
            raise RuntimeError("the user's own bug")

    X, y = toy()
    with pytest.raises(RuntimeError, match="the user's own bug"):
        fit(Broken(5, 1), (X, y), steps=1, **QUIET)


def test_cli_train_on_a_file_with_nan_exits_2_with_one_line(tmp_path):
    """An MNIST folder whose float IDX images hold one NaN: the loader's Dataset refuses it."""
    images = np.zeros((4, 2, 2), dtype=">f4")
    images[2, 1, 0] = np.nan
    labels = np.array([0, 1, 2, 3], dtype=">u1")

    def write(name, array, code):
        header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
        (tmp_path / name).write_bytes(header + array.tobytes())

    for prefix in ("train", "t10k"):
        write(f"{prefix}-images-idx3-ubyte", images, 0x0D)
        write(f"{prefix}-labels-idx1-ubyte", labels, 0x08)
    result = CliRunner().invoke(
        app, ["train", "--dataset", "mnist", "-d", f"path={tmp_path}", "--steps", "1", "--run-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "dataset 'mnist': X holds NaN at index (2, 0, 1, 0) (the only non-finite value)" in result.output
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ one feature check, one label check
@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 1], r"^y must be a torch tensor of integer class labels, got list; convert with torch.as_tensor$"),
        (torch.tensor([0.0, 1.7]), r"^y must be a 1-D integer tensor of class labels, got dtype torch.float32"),
        (torch.tensor([True, False]), r"^y must be a 1-D integer tensor of class labels, got dtype torch.bool"),
        (torch.tensor([[0, 1]]), r"^y must be a 1-D integer tensor of class labels, got dtype torch.int64 and shape"),
        (torch.tensor([], dtype=torch.long), r"^y is empty: at least one sample is needed$"),
        (torch.tensor([0, 3, 1]), r"^y must lie in 0..2, got 0..3$"),
        (torch.tensor([0, -1, 1]), r"^y must lie in 0..2, got -1..1$"),
    ],
)
def test_check_labels_refuses_what_is_not_a_label_vector(labels, message):
    from implicit_bias.validation import check_labels

    with pytest.raises(InvalidArgumentError, match=message):
        check_labels(labels, num_classes=3)
    good = torch.tensor([0, 2, 1], dtype=torch.int32)
    assert check_labels(good, num_classes=3) is good and check_labels(torch.tensor([7, 9])).tolist() == [7, 9]


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((2, 3)), r"^X must be a torch tensor, got ndarray; convert with torch.as_tensor$"),
        (torch.zeros(2, 3, dtype=torch.long), r"^X must be a floating-point tensor .* got dtype torch.int64"),
        (torch.tensor(1.0), r"^X must be a floating-point tensor with samples along axis 0, got .* shape \(\)$"),
        (torch.zeros(0, 3), r"^X is empty \(shape \(0, 3\)\): at least one sample is needed$"),
        (torch.tensor([[0.0, math.nan]]), r"^X holds NaN at index \(0, 1\)"),
    ],
)
def test_check_features_refuses_what_is_not_a_sample_tensor(features, message):
    from implicit_bias.metrics import homogeneity_degree
    from implicit_bias.validation import check_features

    with pytest.raises(InvalidArgumentError, match=message):
        check_features(features)
    with pytest.raises(InvalidArgumentError, match=message):
        homogeneity_degree(nn.Linear(3, 1, bias=False), features)


def test_homogeneity_degree_refuses_nan_inputs_instead_of_measuring_them():
    from implicit_bias.metrics import homogeneity_degree

    X, _ = toy()
    assert homogeneity_degree(linear(dtype=torch.float64), X) == 1.0
    X[4, 0] = math.nan
    with pytest.raises(InvalidArgumentError, match=r"^X holds NaN at index \(4, 0\)"):
        homogeneity_degree(linear(dtype=torch.float64), X)


def test_dataset_and_accumulator_share_the_range_check():
    X, _ = toy(n=3)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(InvalidArgumentError, match=r"^labels of dataset 'mine' must lie in 0..1, got 0..2$"):
        Dataset(X, y, 2, "mine")
    with pytest.raises(InvalidArgumentError, match=r"^labels must lie in 0..1, got 0..2$"):
        CollapseAccumulator(2, 5).update(X, y)


# ------------------------------------------------------------------ minibatches: BatchNorm, loss-based, logging
def batchnorm_mlp(d=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()


@pytest.mark.parametrize(
    "n, batch_size, sizes", [(7, 3, [3, 4]), (10, 3, [3, 3, 4]), (9, 4, [4, 5]), (8, 3, [3, 3, 2])]
)
def test_batch_indices_fold_a_lone_leftover_sample_and_depend_on_the_step_alone(n, batch_size, sizes):
    from implicit_bias.train.loop import batch_indices

    cache: dict = {}
    for epoch in range(3):
        batches = [batch_indices(epoch * len(sizes) + i, n, batch_size, 5, cache) for i in range(len(sizes))]
        assert [len(b) for b in batches] == sizes
        assert sorted(torch.cat(batches).tolist()) == list(range(n))  # each epoch is a permutation
    for step in (0, 4, 7):  # exact resume: a fresh cache gives the same batch
        assert torch.equal(batch_indices(step, n, batch_size, 5, {}), batch_indices(step, n, batch_size, 5, cache))


def test_fit_with_batchnorm_and_a_lone_leftover_sample_trains():
    X, y = toy(n=7)
    history = fit(batchnorm_mlp(), (X, y), loss="logistic", steps=4, lr=0.1, batch_size=3, **QUIET)
    assert history.last["step"] == 4


def test_loss_based_lr_refuses_minibatches_and_says_why():
    X, y = toy()
    with pytest.raises(
        InvalidArgumentError, match=r"^optimizer 'loss-based' trains full-batch only, got batch_size=8 "
    ):
        fit(linear(), (X, y), loss="exponential", optimizer="loss-based", steps=1, batch_size=8, **QUIET)
    from implicit_bias.dynamics import LossBasedLR

    model = linear()
    with pytest.raises(InvalidArgumentError, match=r"^optimizer 'LossBasedLR' trains full-batch only"):
        fit(model, (X, y), optimizer=LossBasedLR(model.parameters(), lr=0.1), steps=1, batch_size=8, **QUIET)
    history = fit(linear(), (X, y), loss="exponential", optimizer="loss-based", steps=2, batch_size=24, **QUIET)
    assert history.last["step"] == 2  # a batch of all N samples is full-batch


@pytest.mark.parametrize("steps, points", [(37, 1), (37, 2), (1000, 5), (1, 1), (5, 100)])
def test_logging_always_includes_step_zero_and_the_last_step(steps, points):
    from implicit_bias.dynamics import log_spaced_steps

    logged = log_spaced_steps(steps, points)
    assert logged[0] == 0 and logged[-1] == steps and logged == sorted(set(logged))
    assert len(logged) <= points + 2


def test_fit_with_one_log_point_logs_the_last_step():
    X, y = toy()
    history = fit(linear(), (X, y), loss="logistic", steps=6, lr=0.1, progress=False, log_points=1)
    assert history.column("step")[0] == [0, 6]
