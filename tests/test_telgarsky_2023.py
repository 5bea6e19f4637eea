"""telgarsky-2023-low-rotation and metrics.ntk: each piece against an independent truth.

The quick preset itself runs in tests/test_experiments.py (a parametrized row per registered experiment).
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from implicit_bias.errors import InvalidArgumentError
from implicit_bias.experiments import reproduce
from implicit_bias.experiments.telgarsky_2023 import ShallowReLU, _outputs, global_parity_margin, sparse_parity
from implicit_bias.metrics import l1_max_margin, ntk_margin, tangent_features


def _lp_margin(features: np.ndarray, signs: np.ndarray) -> float:
    """max t s.t. signs_n ⟨c, φ_n⟩ ≥ t, ‖c‖₁ ≤ 1, solved by scipy directly (c = c⁺ − c⁻)."""
    Z = signs[:, None] * features
    n, m = Z.shape
    result = linprog(
        np.r_[np.zeros(2 * m), -1.0],
        A_ub=np.vstack([np.hstack([-Z, Z, np.ones((n, 1))]), np.r_[np.ones(2 * m), 0.0][None]]),
        b_ub=np.r_[np.zeros(n), 1.0],
        bounds=[(0, None)] * (2 * m) + [(None, None)],
        method="highs",
    )
    return float(result.x[-1])


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_sparse_parity_global_margin_is_the_hand_construction_and_no_dense_direction_set_beats_it(dim):
    X, y = sparse_parity(dim)
    X, signs = X.numpy(), 2.0 * y.numpy() - 1.0
    gamma = 1 / (2 * math.sqrt(2) * math.sqrt(dim))
    assert global_parity_margin(dim) == pytest.approx(gamma, rel=1e-15)
    # the construction: +1/4 on ±(e₁+e₂)/√2, −1/4 on ±(e₁−e₂)/√2 has margin exactly γ on every point of the cube
    plus, minus = np.zeros(dim), np.zeros(dim)
    plus[:2], minus[:2] = [1, 1], [1, -1]
    U = np.stack([plus, -plus, minus, -minus]) / math.sqrt(2)
    f = np.maximum(X @ U.T, 0) @ np.array([0.25, 0.25, -0.25, -0.25])
    np.testing.assert_allclose(signs * f, gamma, rtol=1e-12)
    # brute force: the best ℓ1 margin over a dense set of unit directions (that includes the four) is γ, not more
    rng = np.random.default_rng(dim)
    dense = rng.standard_normal((3000, dim))
    dense = np.vstack([dense / np.linalg.norm(dense, axis=1, keepdims=True), U])
    assert _lp_margin(np.maximum(X @ dense.T, 0), signs) == pytest.approx(gamma, rel=1e-7)
    assert _lp_margin(np.maximum(X @ dense[:3000].T, 0), signs) <= gamma * (1 + 1e-9)


def test_lp_margin_over_few_directions_matches_a_brute_force_grid_over_the_l1_sphere():
    X, y = sparse_parity(2)
    angles = np.deg2rad(np.array([45.0, 135.0, 225.0, 315.0]) + np.random.default_rng(0).uniform(-15, 15, 4))
    U = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    features = np.maximum(X.numpy() @ U.T, 0)  # (4 points, 4 directions)
    signs = 2.0 * y.numpy() - 1.0
    lp = l1_max_margin(torch.as_tensor(features), y).margin
    steps = 48  # c = s ⊙ p, p on the simplex grid with spacing 1/48, s ∈ {±1}^4
    grid = np.array([p for p in itertools.product(range(steps + 1), repeat=3) if sum(p) <= steps], dtype=float)
    simplex = np.hstack([grid, steps - grid.sum(axis=1, keepdims=True)]) / steps
    best = -np.inf
    for s in itertools.product([-1.0, 1.0], repeat=4):
        best = max(best, float((signs[:, None] * (features @ (simplex * s).T)).min(axis=0).max()))
    assert 0 < best <= lp + 1e-12  # the LP is the maximum: no grid point beats it
    assert lp - best <= 2.0 / steps  # |Δ margin| ≤ max|φ|·‖Δc‖₁ and the grid is 2/48-dense in ℓ1
    assert lp == pytest.approx(_lp_margin(features, signs), abs=1e-9)


def test_sparse_parity_is_exactly_balanced_with_entries_plus_minus_one_over_sqrt_d():
    for dim, samples in [(5, None), (8, 100)]:
        X, y = sparse_parity(dim, samples, seed=3)
        n = 2**dim if samples is None else samples
        assert X.shape == (n, dim) and X.dtype == torch.float64
        assert torch.equal(X.abs(), torch.full_like(X, 1 / math.sqrt(dim)))
        assert torch.equal(y, (torch.sign(X[:, 0]) * torch.sign(X[:, 1]) > 0).long())
        patterns = torch.bincount(((X[:, 0] > 0).long() * 2 + (X[:, 1] > 0).long()), minlength=4)
        assert patterns.tolist() == [n // 4] * 4 and int(y.sum()) == n // 2
    assert len(torch.unique(sparse_parity(5)[0], dim=0)) == 32  # the whole cube, each point once
    with pytest.raises(InvalidArgumentError, match="samples must be a multiple of 4.*got 6"):
        sparse_parity(8, 6)


def test_tangent_features_match_per_sample_autograd_and_the_closed_form():
    torch.manual_seed(0)
    m, d = 6, 3
    model = ShallowReLU(
        torch.randn(m, d, dtype=torch.float64), torch.tensor([1.0, -1, 1, -1, 1, -1], dtype=torch.float64)
    )
    X = torch.randn(7, d, dtype=torch.float64)
    features = tangent_features(model, X, batch_size=3)
    closed = model.signs[None, :, None] * (X @ model.weight.T > 0)[:, :, None] * X[:, None, :] / math.sqrt(m)
    torch.testing.assert_close(features, closed.reshape(7, -1), rtol=0, atol=1e-15)  # ∇_{w_j}Φ = a_j 1[w_jᵀx > 0] x/√m
    # a user's float32 model with biases: every trainable parameter, frozen ones left out
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    net[2].bias.requires_grad_(False)
    X32 = torch.randn(4, 3)
    rows = []
    for x in X32:
        grads = torch.autograd.grad(net(x[None]).sum(), [p for p in net.parameters() if p.requires_grad])
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    torch.testing.assert_close(tangent_features(net, X32), torch.stack(rows).double(), rtol=1e-6, atol=1e-7)


def test_ntk_margin_of_a_linear_model_is_the_svm_margin_and_bounds_the_normalized_margin():
    linear = nn.Linear(2, 1, bias=False)  # tangent features = x: two points (1, 0) → +, (0, 1) → − have margin 1/√2
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert ntk_margin(linear, X, torch.tensor([1, -1])) == pytest.approx(1 / math.sqrt(2), rel=1e-9)
    X, y = sparse_parity(4)
    model = ShallowReLU(
        torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        torch.ones(64, dtype=torch.float64),
    )
    model.signs[::2] = -1.0
    q_min = float(((2.0 * y - 1) * model(X).detach()).min())
    # Φ is 1-homogeneous in W: Φ = ⟨W, ∇_WΦ⟩, so min y Φ/‖W‖ is one direction's margin and γ_ntk the best one
    assert q_min / float(model.weight.detach().norm()) <= ntk_margin(model, X, y) + 1e-12


def test_ntk_margin_refuses_multi_output_and_parameter_free_models():
    X, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(InvalidArgumentError, match="single-output model"):
        tangent_features(nn.Linear(3, 2), X)
    frozen = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(InvalidArgumentError, match="requires gradients, got none"):
        ntk_margin(frozen, X, y)


def test_batched_networks_equal_one_network_at_a_time():
    generator = torch.Generator().manual_seed(2)
    X = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    W = torch.randn(3, 8, 4, generator=generator, dtype=torch.float64)
    signs = torch.where(torch.rand(3, 8, generator=generator) < 0.5, -1.0, 1.0).double()
    batched = _outputs(X, W, signs)
    for s in range(3):
        torch.testing.assert_close(batched[s], ShallowReLU(W[s], signs[s])(X[s]), rtol=0, atol=1e-14)


def test_a_run_whose_groups_never_reach_the_target_fails_those_criteria_with_the_reason(tmp_path):
    tiny = {
        "ntk_dims": [4, 6],
        "ntk_width": 16,
        "ntk_steps": 200,
        "norm_only_dim": 4,
        "norm_only_width": 16,
        "lp_widths": [8, 16],
        "norm_only_steps": 50,
        "group_samples": [2, 4],
        "group_steps": 2,
        "target_error": 0.0,
        "log_points": 5,
    }
    result = reproduce("telgarsky-2023-low-rotation", tmp_path / "run", quick=True, overrides=tiny, progress=False)
    outcomes = {c["name"]: c for c in result["criteria"]}
    assert not result["passed"]
    for name in ("samples_grow_with_groups", "samples_do_not_grow_with_dimension"):
        assert outcomes[name]["measured"] is None and not outcomes[name]["passed"]
        assert "never reached 0.0 on the sample grid [2, 4]" in outcomes[name]["reason"]
    assert all(math.isfinite(v) for v in result["numbers"].values())  # no NaN, no inf
    assert outcomes["lp_margin_below_global"]["passed"]  # a property of the LP at any width
