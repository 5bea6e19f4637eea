"""Spectra and ranks against matrices built with known singular values."""

from __future__ import annotations

import math

import pytest
import torch

from implicit_bias.errors import InvalidArgumentError
from implicit_bias.metrics import (
    effective_rank,
    feature_spectra,
    layer_spectra,
    numerical_rank,
    participation_ratio,
    singular_values,
    stable_rank,
)
from implicit_bias.models import build


def with_singular_values(sigma: list[float], rows: int = 9, cols: int = 7, seed: int = 0) -> torch.Tensor:
    """U diag(σ) Vᵀ with random orthonormal U, V."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(sigma), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(sigma), generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T


SIGMA = [10.0, 4.0, 1.0, 5e-3, 1e-5]


def test_singular_values_are_recovered():
    assert singular_values(with_singular_values(SIGMA)).tolist()[:5] == pytest.approx(SIGMA, rel=1e-9, abs=1e-12)


def test_numerical_rank_in_both_conventions():
    A = with_singular_values(SIGMA)
    assert numerical_rank(A, 1e-3) == 3  # σ_i > 0.01: 10, 4, 1
    assert numerical_rank(A, 0.2) == 2  # σ_i > 2: 10, 4
    frobenius = math.sqrt(sum(s * s for s in SIGMA))
    assert numerical_rank(A, 1e-3, relative=False) == sum(s > 1e-3 * frobenius for s in SIGMA)
    assert numerical_rank(A * 1e6, 1e-3) == numerical_rank(A, 1e-3)  # scale-free


def test_stable_effective_rank_and_participation_ratio_closed_forms():
    A = with_singular_values(SIGMA)
    assert stable_rank(A) == pytest.approx(sum(s * s for s in SIGMA) / SIGMA[0] ** 2, rel=1e-10)
    assert float(torch.linalg.matrix_norm(A, "fro") ** 2 / torch.linalg.matrix_norm(A, 2) ** 2) == pytest.approx(
        stable_rank(A), rel=1e-10
    )
    p = [s / sum(SIGMA) for s in SIGMA]
    assert effective_rank(A) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)), rel=1e-9)
    squares = [s * s for s in SIGMA]
    assert participation_ratio(A) == pytest.approx(sum(squares) ** 2 / sum(q * q for q in squares), rel=1e-10)
    for n in (1, 5, 12):
        identity = torch.eye(n)
        assert effective_rank(identity) == pytest.approx(n, rel=1e-12)
        assert participation_ratio(identity) == pytest.approx(n, rel=1e-12)
        assert stable_rank(identity) == pytest.approx(n, rel=1e-12)


def test_bad_matrices_are_refused():
    with pytest.raises(InvalidArgumentError, match="zero"):
        effective_rank(torch.zeros(3, 3))
    with pytest.raises(InvalidArgumentError, match="matrix"):
        stable_rank(torch.ones(3))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        numerical_rank(torch.tensor([[1.0, float("nan")]]))


def test_layer_spectra_reshape_conv_kernels():
    model = build("cnn:padding=same,channels=[3,4],hidden=8", (1, 8, 8), 3, seed=0)
    spectra = layer_spectra(model)
    assert spectra["block2.0.weight"].shape == (4, 3 * 3 * 3)
    assert "block2.0.bias" not in spectra
    kernel = model.block2[0].weight.detach().reshape(4, -1)
    assert spectra["block2.0.weight"].rank_relative == numerical_rank(kernel)


def test_feature_spectra_match_a_direct_svd_and_do_not_depend_on_the_batch_size():
    model = build("mlp:depth=3,width=12", (5,), 3, seed=0).double()
    X = torch.randn(60, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(60) % 3
    whole = feature_spectra(model, (X, y), ["layer2"], num_classes=3, batch_size=60)["layer2"]
    chunks = feature_spectra(model, (X, y), ["layer2"], num_classes=3, batch_size=7)["layer2"]
    H = torch.nn.Sequential(*list(model)[:3])(X).detach()  # flatten, layer1, layer2
    assert whole.features.singular_values[:5] == pytest.approx(torch.linalg.svdvals(H)[:5], rel=1e-8)
    # from the Gram HᵀH: values below ~1e−8 σ_1 are not resolved
    assert chunks.features.singular_values == pytest.approx(whole.features.singular_values, rel=1e-8, abs=1e-7)
    means = torch.stack([H[y == c].mean(0) for c in range(3)])
    assert whole.means.singular_values == pytest.approx(torch.linalg.svdvals(means), rel=1e-10)
    assert whole.centred_means.rank_relative <= 2  # K − 1 after centring


def test_feature_spectra_refuses_non_finite_features_naming_the_layer():
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    X = torch.randn(6, 3)
    X[4, 1] = float("nan")  # a batch from a loader: not checked as a dataset would be
    batches = [(X[:3], torch.tensor([0, 1, 0])), (X[3:], torch.tensor([1, 0, 1]))]
    with pytest.raises(InvalidArgumentError, match="features of layer '1' holds NaN"):
        feature_spectra(model, batches, ["1"], num_classes=2)


def test_feature_spectra_refuses_an_out_of_range_label_in_one_line():
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    X = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 3, 1])
    with pytest.raises(InvalidArgumentError, match=r"^y must lie in 0..2, got 0..3$"):
        feature_spectra(model, (X, y), ["1"], num_classes=3)
    batches = [(X[:3], y[:3]), (X[3:], y[3:])]
    with pytest.raises(InvalidArgumentError, match=r"^labels of samples 3..5 must lie in 0..2, got 0..3$"):
        feature_spectra(model, batches, ["1"], num_classes=3)
    with pytest.raises(InvalidArgumentError, match=r"^labels of samples 0..2 must be a 1-D integer tensor"):
        feature_spectra(model, [(X[:3], y[:3].double())], ["1"], num_classes=3)


def test_feature_spectra_refuses_a_one_shot_generator():
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    X, y = torch.randn(6, 3), torch.tensor([0, 1] * 3)
    batches = ((X[i : i + 3], y[i : i + 3]) for i in (0, 3))
    with pytest.raises(InvalidArgumentError, match=r"^data must be read more than once: pass a Dataset, DataLoader"):
        feature_spectra(model, batches, ["1"], num_classes=2)
    with pytest.raises(InvalidArgumentError, match=r"^data yielded no samples$"):
        feature_spectra(model, [], ["1"], num_classes=2)
