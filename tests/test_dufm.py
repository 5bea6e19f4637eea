"""The DUFM: hand-written gradients against autograd, structured reference losses against direct evaluation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from implicit_bias.dufm import (
    DUFM,
    dnc_loss,
    dnc_measures,
    product_family_optimum,
    refined_srg_loss,
    set_dnc_point,
    set_srg_point,
    srg_loss,
    srg_vertices,
    symmetrize_srg,
    train_dufm,
)
from implicit_bias.errors import InvalidArgumentError


@pytest.mark.parametrize(
    "depth, loss, activation, seed",
    [(2, "mse", "relu", 0), (3, "mse", "relu", 0), (4, "mse", "relu", 0), (2, "cross-entropy", "linear", 0),
     (3, "cross-entropy", "linear", 0), (3, "cross-entropy", "relu", 0), (3, "mse", "linear", [4, 5])],
)  # fmt: skip
def test_hand_written_gradients_match_autograd_on_random_points(depth, loss, activation, seed):
    model = DUFM(3, 4, depth=depth, width=7, lambdas=[0.01 * (i + 1) for i in range(depth + 1)], init_scale=0.7,
                 loss=loss, activation=activation, seed=seed)  # fmt: skip
    feature_grad, weight_grads = model.gradients()
    expected = torch.autograd.grad(model.loss(), [model.features, *model.weights])
    assert feature_grad == pytest.approx(expected[0], rel=1e-12, abs=1e-14)
    for ours, reference in zip(weight_grads, expected[1:]):
        assert ours == pytest.approx(reference, rel=1e-12, abs=1e-14)


def test_product_family_optimum_matches_a_brute_force_search():
    mus = [0.2, 0.05, 0.04, 0.3]
    optimum = product_family_optimum(mus)
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    m = torch.tensor(mus, dtype=torch.float64).log().mean().exp()
    brute = (0.5 * (1 - grid) ** 2 + len(mus) / 2 * m * grid ** (2 / len(mus))).min()
    assert optimum.loss == pytest.approx(float(brute), abs=1e-9)
    scales = torch.tensor(optimum.scales, dtype=torch.float64)
    direct = 0.5 * (1 - scales.prod()) ** 2 + (torch.tensor(mus, dtype=torch.float64) * scales**2).sum() / 2
    assert float(direct) == pytest.approx(optimum.loss, rel=1e-10)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_dnc_point_has_the_formula_loss_and_is_a_critical_point_that_gd_keeps(depth):
    model = DUFM(6, 3, depth=depth, width=8, lambdas=0.004)
    optimum = set_dnc_point(model)
    assert float(model.loss().detach()) == pytest.approx(optimum.loss, rel=1e-12)
    assert optimum.loss == pytest.approx(dnc_loss(model).loss)
    feature_grad, weight_grads = model.gradients()
    assert max(float(g.abs().max()) for g in [feature_grad, *weight_grads]) < 1e-8
    before = [p.detach().clone() for p in model.parameters()]
    train_dufm(model, steps=200, lr=0.5)
    assert all(torch.allclose(a, b, atol=1e-8) for a, b in zip(before, model.parameters()))
    layers = dnc_measures(model)
    assert all(m.nc1 < 1e-20 and m.rank == 6 for m in layers)
    assert all(m.max_cosine < 1e-12 for m in layers)


@pytest.mark.parametrize("depth", [2, 4])
def test_srg_point_has_the_formula_loss_and_rank_r_before_the_last_relu(depth):
    model = DUFM(10, 2, depth=depth, width=12, lambdas=0.004)
    optimum = set_srg_point(model)
    assert float(model.loss().detach()) == pytest.approx(optimum.loss, rel=1e-12)
    layers = dnc_measures(model)
    assert layers[-1].rank_pre_relu == 5 and layers[-1].rank == 10  # r = 5 → full rank after the ReLU
    assert layers[-1].max_cosine < 1e-12  # orthogonal after the last ReLU
    assert layers[0].rank == 5


def test_srg_beats_dnc_in_the_paper_setting_but_not_for_two_layers():
    paper = DUFM(10, 1, depth=4, width=30, lambdas=0.004)
    assert srg_loss(paper).loss < dnc_loss(paper).loss
    shallow = DUFM(10, 1, depth=2, width=30, lambdas=0.004)
    assert srg_loss(shallow).loss > dnc_loss(shallow).loss


def test_bad_settings_are_refused():
    with pytest.raises(InvalidArgumentError, match="C\\(r, 2\\)"):
        srg_vertices(7)
    with pytest.raises(InvalidArgumentError, match="lambdas"):
        DUFM(3, 2, depth=3, lambdas=[0.1, 0.1])
    with pytest.raises(InvalidArgumentError, match="width"):
        set_dnc_point(DUFM(6, 2, depth=3, width=4))


def test_gd_from_the_srg_point_keeps_its_symmetry_and_its_rank():
    model = DUFM(6, 2, depth=4, width=8, lambdas=0.004)  # K = C(4, 2): r = 4
    family = set_srg_point(model)
    assert symmetrize_srg(model) < 1e-12  # the constructed point is S_r-invariant
    train_dufm(model, steps=300, lr=0.5)
    assert symmetrize_srg(model) < 1e-10  # exact GD keeps the invariance (up to rounding)
    assert dnc_measures(model)[-1].rank_pre_relu == 4
    assert float(model.loss().detach()) < family.loss  # the point is not stationary: GD lowers the loss
    assert refined_srg_loss(model, steps=500) < family.loss


def test_orbit_averaging_equals_the_average_over_all_vertex_permutations():
    # Brute force over the 4! elements of S_4: π acts on vertex coordinates (H₁'s rows, inner layers), on edge
    # coordinates (the last hidden layer) and classes/samples (edges {i, j} ↦ {π i, π j}).
    r, n, depth, width = 4, 2, 4, 8
    edges = list(itertools.combinations(range(r), 2))
    K = len(edges)
    model = DUFM(K, n, depth=depth, width=width, init_scale=1.0, seed=3)
    params = [p.detach().clone() for p in model.parameters()]
    sums = [torch.zeros_like(p) for p in params]
    group = list(itertools.permutations(range(r)))
    for pi in group:
        edge_map = [edges.index(tuple(sorted((pi[i], pi[j])))) for i, j in edges]
        vertex = list(pi) + list(range(r, width))
        edge = edge_map + list(range(K, width))
        sample = [edge_map[c] * n + s for c in range(K) for s in range(n)]
        rows = [vertex, vertex, vertex, edge, edge_map]  # H₁, W₁, W₂, W₃ (into edges), W₄ (into classes)
        cols = [sample, vertex, vertex, vertex, edge]
        for total, param, row, col in zip(sums, params, rows, cols):
            moved = torch.empty_like(param)
            moved[torch.tensor(row)[:, None], torch.tensor(col)[None, :]] = param
            total += moved
    symmetrize_srg(model)
    for total, param in zip(sums, model.parameters()):
        assert torch.allclose(param.detach(), total / len(group), atol=1e-14)


@pytest.mark.parametrize("loss, activation", [("mse", "relu"), ("cross-entropy", "linear")])
def test_a_batch_trains_each_member_as_the_model_of_its_seed_alone(loss, activation):
    settings = {"depth": 3, "width": 6, "lambdas": 0.01, "init_scale": 0.8, "loss": loss, "activation": activation}
    batch = DUFM(4, 2, seed=[3, 8], **settings)
    train_dufm(batch, steps=60, lr=0.3)
    for index, seed in enumerate([3, 8]):
        alone = DUFM(4, 2, seed=seed, **settings)
        train_dufm(alone, steps=60, lr=0.3)
        member = batch.member(index)
        assert float(member.loss().detach()) == pytest.approx(float(alone.loss().detach()), rel=1e-12)
        for ours, reference in zip(member.parameters(), alone.parameters()):
            assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-13)
    assert float(batch.loss().detach()) == pytest.approx(float(batch.member_losses().detach().sum()), rel=1e-14)


def _explicit_cross_entropy_dnc_loss(K, n, d, depth, lam, scales):
    """The linear cross-entropy DUFM objective at the ETF point, from explicit numpy matrices (no DUFM code)."""
    centred = np.eye(K) - 1 / K

    def embed(matrix, rows, cols):
        return np.pad(matrix, ((0, rows - matrix.shape[0]), (0, cols - matrix.shape[1])))

    H = scales[0] * np.repeat(embed(centred, d, K), n, axis=1)
    Ws = [scales[l] * embed(centred, d, d) for l in range(1, depth)] + [scales[depth] * embed(centred, K, d)]
    Z = H
    for W in Ws:
        Z = W @ Z
    labels = np.repeat(np.arange(K), n)
    cross_entropy = np.mean(logsumexp(Z, axis=0) - Z[labels, np.arange(K * n)])
    return cross_entropy + lam / 2 * sum(np.square(M).sum() for M in [H, *Ws])


@pytest.mark.parametrize("depth, lam", [(2, 2**-10), (3, 2**-8)])
def test_cross_entropy_dnc_point_is_the_explicit_etf_point_and_critical(depth, lam):
    K, n, d = 10, 5, 12
    model = DUFM(K, n, depth=depth, width=d, lambdas=lam, loss="cross-entropy", activation="linear")
    optimum = set_dnc_point(model)
    explicit = _explicit_cross_entropy_dnc_loss(K, n, d, depth, lam, optimum.scales)
    assert optimum.loss == pytest.approx(explicit, rel=1e-12)
    assert float(model.loss().detach()) == pytest.approx(explicit, rel=1e-12)
    feature_grad, weight_grads = model.gradients()  # critical in the whole space, not only along the scales
    assert max(float(g.abs().max()) for g in [feature_grad, *weight_grads]) < 1e-10
    # the scale: the scalar family ℒ(P) = log(1 + (K−1)e^{−P}) + ((L+1)/2) m P^{2/(L+1)} on a fine grid
    mus = torch.tensor([lam * n * (K - 1)] + [lam * (K - 1)] * depth, dtype=torch.float64)
    grid = torch.linspace(0, 30, 3_000_001, dtype=torch.float64)
    family = torch.log1p((K - 1) * torch.exp(-grid)) + (depth + 1) / 2 * mus.log().mean().exp() * grid ** (
        2 / (depth + 1)
    )
    assert optimum.loss == pytest.approx(float(family.min()), abs=1e-12)
    assert optimum.output_scale == pytest.approx(float(grid[family.argmin()]), abs=1e-4)
    assert math.prod(optimum.scales) == pytest.approx(optimum.output_scale, rel=1e-12)
    # no single factor's rescaling lowers the explicit loss
    for index in range(depth + 1):
        for factor in (0.98, 0.995, 1.005, 1.02):
            scales = list(optimum.scales)
            scales[index] *= factor
            assert _explicit_cross_entropy_dnc_loss(K, n, d, depth, lam, scales) > explicit


def test_cross_entropy_dufm_refusals():
    with pytest.raises(InvalidArgumentError, match="linear layers"):
        dnc_loss(DUFM(4, 2, depth=2, width=5, loss="cross-entropy"))
    with pytest.raises(InvalidArgumentError, match="activation"):
        DUFM(4, 2, activation="tanh")
    with pytest.raises(InvalidArgumentError, match="seed"):
        DUFM(4, 2, seed=[])
    with pytest.raises(InvalidArgumentError, match="batched"):
        DUFM(4, 2).member(0)
