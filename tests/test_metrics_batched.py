"""The margin metrics on the model a user brings: float32 weights, data in another dtype or on another device,
data sets too large for one pass (``batch_size=``, ``max_memory=``). Batched results must equal unbatched ones
to 1e-12 in float64, and each function is checked once more against an independent truth."""

import copy
import itertools
import logging
import math

import mpmath
import numpy as np
import pytest
import torch
from torch import nn

from implicit_bias.data import load
from implicit_bias.errors import InvalidArgumentError, NotHomogeneousError
from implicit_bias.metrics import (
    alignment,
    asymmetric_margin,
    hard_margin_svm,
    homogeneity_degree,
    kkt_certificate,
    kkt_residual,
    margins,
    normalized_margin,
    parameter_norm,
    smoothed_margin,
    support_count,
)
from implicit_bias.train.probes import KKTProbe, MarginProbe, ProbeContext

N, BATCH = 50, 8  # 8 does not divide 50: the last batch is short (2)


def user_mlp(depth, width=32, d=4, k=3, *, bias=False, seed=0):
    """A ReLU MLP written as a user would: nn.Sequential, float32, PyTorch's own initialization."""
    torch.manual_seed(seed)
    sizes = [d] + [width] * (depth - 1)
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], k, bias=bias))


def features(n=N, d=4, seed=1, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def own_labels(model, X):
    """Labels the model fits by construction (its own argmax), so every margin is positive."""
    with torch.no_grad():
        return model(X.to(next(model.parameters()).dtype)).argmax(dim=1)


def fitted_data(model, n=N, q_min=5.0, dtype=torch.float64):
    """n samples that ``model`` fits with margins in [q_min, ~10 q_min]: of 4n random points labelled by the model's
    argmax, the n with the largest margins (kept in their random order); the head is rescaled in place."""
    X = features(4 * n, dtype=dtype)
    with torch.no_grad():
        top = model(X.to(next(model.parameters()).dtype)).topk(2, dim=1).values
        q = top[:, 0] - top[:, 1]
        keep = q.argsort()[-n:].sort().values
        model[-1].weight.mul_(q_min / q[keep].min())
    return X[keep], own_labels(model, X[keep])


def linear_model(W):
    model = nn.Linear(W.shape[1], W.shape[0], bias=False).double()
    with torch.no_grad():
        model.weight.copy_(W)
    return model


def hand_margins(W, X, y):
    """q_n = Φ_y − max_{j≠y} Φ_j for Φ = W x, in numpy."""
    outputs = X.numpy() @ W.numpy().T
    true = outputs[np.arange(len(y)), y.numpy()]
    outputs[np.arange(len(y)), y.numpy()] = -np.inf
    return true - outputs.max(axis=1)


# ---- 1. dtype: homogeneity of float32 models -------------------------------------------------------------------


def test_a_float32_depth_8_bias_free_mlp_is_8_homogeneous():
    model = user_mlp(8)
    X = features(dtype=torch.float32)
    assert homogeneity_degree(model, X) == 8.0
    assert homogeneity_degree(model.double(), X.double()) == 8.0  # float64 with a tolerance of 1.3e-12


def test_a_float32_bias_free_cnn_is_homogeneous_of_its_depth():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10, bias=False),
    )
    X = torch.randn(20, 1, 8, 8)
    assert homogeneity_degree(model, X, batch_size=BATCH) == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_biased_mlp_is_refused_in_either_precision(dtype):
    model = user_mlp(8, bias=True).to(dtype)
    with pytest.raises(NotHomogeneousError, match=f"tolerance .* for {dtype}"):
        homogeneity_degree(model, features(dtype=dtype))


def test_half_precision_is_refused_rather_than_guessed():
    model = user_mlp(3).to(torch.bfloat16)
    with pytest.raises(InvalidArgumentError, match="bfloat16 is too coarse .* pass degree="):
        homogeneity_degree(model, features())
    assert homogeneity_degree(model, features(), rtol=0.05) == 3.0  # an explicit tolerance is the user's call


def test_float32_model_margins_are_float64_and_match_the_model_in_float64():
    model = user_mlp(4)
    X, y = fitted_data(model)  # float64 data, float32 model: the model sees X in float32
    exact = copy.deepcopy(model).double()  # the same (float32) weights, evaluated in float64
    X32 = X.float().double()
    q = margins(model, X, y)
    assert q.dtype == torch.float64
    assert torch.allclose(q, margins(exact, X32, y), rtol=1e-5, atol=1e-6)
    assert normalized_margin(model, X, y) == pytest.approx(normalized_margin(exact, X32, y), rel=1e-5)
    assert smoothed_margin(model, X, y, loss="cross-entropy") == pytest.approx(
        smoothed_margin(exact, X32, y, loss="cross-entropy"), rel=1e-5
    )
    assert next(model.parameters()).dtype == torch.float32  # the model was not changed


def test_margins_take_data_of_the_other_dtype():
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    X32 = features(dtype=torch.float32)
    y = torch.as_tensor((X32.double().numpy() @ W.numpy().T).argmax(axis=1))
    # float32 data into a float64 model: cast up exactly
    np.testing.assert_allclose(margins(linear_model(W), X32, y).numpy(), hand_margins(W, X32.double(), y), rtol=1e-13)
    # float64 data into a float32 model: both rounded to float32, products formed in float32
    model32 = linear_model(W).float()
    expected = hand_margins(W.float().double(), features().float().double(), y)
    np.testing.assert_allclose(margins(model32, features(), y).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_margin_probe_logs_normalized_margins_of_a_float32_depth_8_mlp():
    model = user_mlp(8)
    X = features(dtype=torch.float32)
    y = own_labels(model, X)
    outputs = model(X).detach().double()
    context = ProbeContext(0, model, X, y, outputs, 0.0, "mse", torch.optim.SGD(model.parameters(), lr=0.1), 3)
    row = MarginProbe()(context)
    q = hand_margins(torch.eye(3, dtype=torch.float64), outputs, y)  # W = I: the margins of the outputs Φ
    assert row["normalized_margin"] == pytest.approx(q.min() / parameter_norm(model) ** 8, rel=1e-12)


def test_kkt_probe_reports_a_non_homogeneous_model_once(caplog):
    model = user_mlp(3, bias=True)
    X = features(dtype=torch.float32)
    y = own_labels(model, X)
    outputs = model(X).detach().double()
    context = ProbeContext(0, model, X, y, outputs, 0.0, "mse", torch.optim.SGD(model.parameters(), lr=0.1), 3)
    probe = KKTProbe()
    with caplog.at_level(logging.WARNING, logger="implicit_bias.train"):
        assert probe(context) == {} and probe(context) == {}
    warnings = [r.getMessage() for r in caplog.records if "kkt probe" in r.getMessage()]
    assert len(warnings) == 1 and "no KKT residuals" in warnings[0] and "degree=L" in warnings[0]


# ---- 2. device: a model on the accelerator, data on the CPU -------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_metric_takes_a_gpu_model_with_cpu_data():
    model = user_mlp(3).double()
    X = features()
    y = own_labels(model, X)
    rates = {name: 1 / 3 for name, _ in model.named_parameters()}
    on_cpu = {
        "margins": margins(model, X, y).numpy(),
        "normalized": normalized_margin(model, X, y, batch_size=BATCH),
        "smoothed": smoothed_margin(model, X, y, batch_size=BATCH),
        "support": support_count(model, X, y, batch_size=BATCH),
        "alignment": alignment(model, X, y, batch_size=BATCH),
        "kkt": kkt_residual(model, X, y, batch_size=BATCH),
        "asymmetric": asymmetric_margin(model, X, y, rates, batch_size=BATCH),
    }
    gpu = model.to("cuda")
    assert homogeneity_degree(gpu, X, batch_size=BATCH) == 3.0
    np.testing.assert_allclose(margins(gpu, X, y).cpu().numpy(), on_cpu["margins"], rtol=1e-10)
    assert normalized_margin(gpu, X, y, batch_size=BATCH) == pytest.approx(on_cpu["normalized"], rel=1e-10)
    assert smoothed_margin(gpu, X, y, batch_size=BATCH) == pytest.approx(on_cpu["smoothed"], rel=1e-10)
    assert support_count(gpu, X, y, batch_size=BATCH) == on_cpu["support"]
    assert alignment(gpu, X, y, batch_size=BATCH) == pytest.approx(on_cpu["alignment"], rel=1e-10)
    assert kkt_residual(gpu, X, y, batch_size=BATCH) == pytest.approx(on_cpu["kkt"], rel=1e-6, abs=1e-10)
    assert asymmetric_margin(gpu, X, y, rates, batch_size=BATCH) == pytest.approx(on_cpu["asymmetric"], rel=1e-10)


# ---- 3. data size: batched = unbatched, and each against an independent truth --------------------------------


@pytest.fixture(scope="module")
def mlp_and_data():
    model = user_mlp(3).double()
    return (model, *fitted_data(model))


def test_batch_size_is_validated():
    model, X = user_mlp(2), features()
    with pytest.raises(InvalidArgumentError, match="batch_size must be >= 1, got 0"):
        margins(model, X, own_labels(model, X), batch_size=0)


def test_margins_batched_match_a_hand_computation(mlp_and_data):
    model, X, y = mlp_and_data
    assert torch.allclose(margins(model, X, y, batch_size=BATCH), margins(model, X, y), rtol=1e-12, atol=0)
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_lin = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(3))
    expected = hand_margins(W, X, y_lin)
    np.testing.assert_allclose(margins(linear_model(W), X, y_lin, batch_size=BATCH).numpy(), expected, rtol=1e-13)


def test_normalized_margin_and_support_count_batched(mlp_and_data):
    model, X, y = mlp_and_data
    for p in (1, 2, math.inf):
        assert normalized_margin(model, X, y, p=p, batch_size=BATCH) == pytest.approx(
            normalized_margin(model, X, y, p=p), rel=1e-12
        )
    assert support_count(model, X, y, k=0.5, batch_size=BATCH) == support_count(model, X, y, k=0.5)
    # a linear model by hand: q_min/‖W‖_F (degree 1 detected), and the count of q_n − q_min ≤ k log 10
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    linear = linear_model(W)
    y_lin = own_labels(linear, X)
    q = hand_margins(W, X, y_lin)
    assert normalized_margin(linear, X, y_lin, batch_size=BATCH) == pytest.approx(q.min() / float(W.norm()), rel=1e-12)
    assert support_count(linear, X, y_lin, k=0.5, batch_size=BATCH) == int((q - q.min() <= 0.5 * math.log(10)).sum())


def test_homogeneity_degree_batched_is_the_number_of_layers(mlp_and_data):
    model, X, _ = mlp_and_data
    assert homogeneity_degree(model, X, batch_size=BATCH) == homogeneity_degree(model, X) == 3.0
    biased = user_mlp(3, bias=True).double()
    for batch_size in (None, BATCH):
        with pytest.raises(NotHomogeneousError):
            homogeneity_degree(biased, X, batch_size=batch_size)


@pytest.mark.parametrize("loss", ["exponential", "cross-entropy"])
def test_smoothed_margin_batched_matches_mpmath_below_the_float64_range(loss):
    """All losses underflow (q_min ≈ 800, e^{−800} ≈ 1e−348): batches can only be joined in log space."""
    X = features()
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = own_labels(linear_model(W), X)
    W = W * (800 / hand_margins(W, X, y).min())
    model = linear_model(W)
    mpmath.mp.dps = 40
    outputs = X.numpy() @ W.numpy().T
    terms = []
    for row, label in zip(outputs, y.tolist()):
        tail = mpmath.fsum(mpmath.exp(mpmath.mpf(float(row[j] - row[label]))) for j in range(3) if j != label)
        terms.append(tail if loss == "exponential" else mpmath.log1p(tail))
    total = mpmath.fsum(terms)
    inverse = -mpmath.log(total) if loss == "exponential" else -mpmath.log(mpmath.expm1(total))
    expected = float(inverse) / float(W.norm())
    batched = smoothed_margin(model, X, y, loss=loss, batch_size=BATCH)
    assert batched == pytest.approx(expected, rel=1e-12)
    assert batched == pytest.approx(smoothed_margin(model, X, y, loss=loss), rel=1e-12)


def test_smoothed_margin_batched_on_an_mlp(mlp_and_data):
    model, X, y = mlp_and_data
    for loss in ("exponential", "logistic", "cross-entropy"):
        assert smoothed_margin(model, X, y, loss=loss, batch_size=BATCH) == pytest.approx(
            smoothed_margin(model, X, y, loss=loss), rel=1e-12
        )


def test_alignment_batched_matches_the_explicit_cross_entropy_gradient(mlp_and_data):
    model, X, y = mlp_and_data
    for loss in ("exponential", "cross-entropy", "mse"):
        assert alignment(model, X, y, loss, batch_size=BATCH) == pytest.approx(alignment(model, X, y, loss), abs=1e-12)
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    y_lin = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(9))
    P = np.exp(X.numpy() @ W.numpy().T)
    P /= P.sum(axis=1, keepdims=True)
    gradient = (P - np.eye(3)[y_lin.numpy()]).T @ X.numpy()  # ∇_W Σ_n CE_n = Σ_n (softmax_n − e_{y_n}) x_nᵀ
    expected = -(W.numpy() * gradient).sum() / (np.linalg.norm(W.numpy()) * np.linalg.norm(gradient))
    assert alignment(linear_model(W), X, y_lin, "cross-entropy", batch_size=BATCH) == pytest.approx(expected, rel=1e-12)


def test_alignment_batched_is_one_at_the_scaled_svm_when_the_loss_underflows():
    data = load("linear-separable", n=60, dim=5, margin=0.25, seed=7)
    model = linear_model(data.info["w_star"][None] * (1e4 / 0.25))  # q_min = 10⁴: ℒ = e^{−10⁴}
    assert alignment(model, data.X, data.y, batch_size=BATCH) == pytest.approx(1.0, abs=1e-12)


def separable_data(seed=11, d=3):
    """Gaussian points labelled by a random direction, those within 0.3 of the boundary dropped."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * N, d, generator=generator, dtype=torch.float64)
    score = X @ torch.randn(d, generator=generator, dtype=torch.float64)
    keep = score.abs() > 0.3
    return X[keep][:N], (score[keep][:N] > 0).long()


def test_kkt_batched_recovers_the_svm_multipliers():
    X, y = separable_data()
    svm = hard_margin_svm(X, y)
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(5.0 * torch.as_tensor(svm.weight)[None])  # θ̃ = θ/q_min undoes the scale
    for options in ({}, {"batch_size": BATCH}, {"max_memory": 1}):  # max_memory = 1 byte: one sample per chunk
        certificate = kkt_certificate(model, X, y, degree=1, **options)
        assert certificate.epsilon < 1e-9 and abs(certificate.delta) < 1e-9
        np.testing.assert_allclose(certificate.multipliers, svm.dual[certificate.support], rtol=1e-6, atol=1e-9)
        assert set(np.flatnonzero(svm.dual > 1e-9)) <= set(certificate.support.tolist())


@pytest.mark.parametrize(
    ("slack", "options"),
    [(20.0, {"batch_size": BATCH}), (0.5, {"max_memory": 1})],  # all 50 samples in chunks of 7; a few, one each
)
def test_kkt_batched_equals_unbatched_away_from_a_kkt_point(mlp_and_data, slack, options):
    model, X, y = mlp_and_data
    whole = kkt_certificate(model, X, y, slack=slack)
    assert whole.epsilon > 0.01 and len(whole.support) > 2
    chunked = kkt_certificate(model, X, y, slack=slack, **options)
    assert np.array_equal(chunked.support, whole.support)
    assert chunked.epsilon == pytest.approx(whole.epsilon, abs=1e-12)
    assert chunked.delta == pytest.approx(whole.delta, abs=1e-12)
    np.testing.assert_allclose(chunked.multipliers, whole.multipliers, rtol=1e-9, atol=1e-12)
    assert kkt_residual(model, X, y, slack=slack, **options) == pytest.approx((whole.epsilon, whole.delta), abs=1e-12)


def test_asymmetric_margin_batched_is_the_normalized_margin_at_uniform_rates(mlp_and_data):
    model, X, y = mlp_and_data
    rates = {name: 1 / 3 for name, _ in model.named_parameters()}  # Λ = I/L: γ_Λ = q_min/‖θ‖^L
    batched = asymmetric_margin(model, X, y, rates, batch_size=BATCH)
    q = margins(model, X, y)
    assert batched == pytest.approx(float(q.min()) / parameter_norm(model) ** 3, rel=1e-12)
    assert batched == pytest.approx(asymmetric_margin(model, X, y, rates), rel=1e-12)


def test_metric_batches_never_leave_one_sample_alone():
    """BatchNorm with batch statistics (track_running_stats=False uses them in eval mode too) cannot take a batch
    of one: the single leftover sample of N = 7 in batches of 3 joins the batch before it."""
    from implicit_bias.models.inference import predict, sample_slices

    assert sample_slices(7, 3) == [slice(0, 3), slice(3, 7)]
    assert sample_slices(8, 3) == [slice(0, 3), slice(3, 6), slice(6, 8)]
    assert sample_slices(1, 3) == [slice(0, 1)] and sample_slices(0, 3) == []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 2)).double()
    X = features(n=7)
    with torch.no_grad():  # by hand: the model on the chunks 0..2 and 3..6
        expected = torch.cat([model(X[:3]), model(X[3:])])
    assert torch.allclose(predict(model, X, batch_size=3), expected, rtol=1e-13, atol=0)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    q = margins(model, X, y, batch_size=3)
    assert torch.allclose(q, (expected[:, 1] - expected[:, 0]) * (2 * y - 1), rtol=1e-13, atol=0)
