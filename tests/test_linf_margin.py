"""The ℓ∞ max-margin linear separator against a closed form and an exhaustive enumeration of its LP's vertices."""

import itertools

import numpy as np
import pytest
import torch

from implicit_bias.errors import NotSeparatedError
from implicit_bias.metrics import linf_max_margin


def vertex_enumeration(Z):
    """max t s.t. Z w ≥ t, −1 ≤ w ≤ 1 by brute force: the feasible set in (w, t) contains no line (w is boxed),
    so the bounded maximum is attained at a vertex, where d + 1 linearly independent constraints are tight."""
    n, d = Z.shape
    rows = [np.r_[-z, 1.0] for z in Z] + [np.r_[s * np.eye(d)[i], 0.0] for i in range(d) for s in (1, -1)]
    rhs = [0.0] * n + [1.0] * (2 * d)  # rows · (w, t) ≤ rhs
    A, b = np.array(rows), np.array(rhs)
    best = (-np.inf, None)
    for subset in itertools.combinations(range(len(A)), d + 1):
        square = A[list(subset)]
        if abs(np.linalg.det(square)) < 1e-12:
            continue
        vertex = np.linalg.solve(square, b[list(subset)])
        if (A @ vertex <= b + 1e-12).all() and vertex[-1] > best[0]:
            best = (vertex[-1], vertex[:-1])
    return best


def test_two_points_symmetric_about_the_origin_have_margin_l1_norm_and_direction_sign():
    # z_1 = z_2 = x: max_{‖w‖∞ ≤ 1} ⟨w, x⟩ = ‖x‖₁ (Hölder, equality only at w = sign(x) when no x_i = 0)
    x = torch.tensor([0.5, -2.0, 1.25], dtype=torch.float64)
    solution = linf_max_margin(torch.stack([x, -x]), torch.tensor([1, 0]))
    assert solution.margin == pytest.approx(3.75, abs=1e-12)
    np.testing.assert_allclose(solution.weight, [1.0, -1.0, 1.0], atol=1e-12)
    assert solution.p == np.inf


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_margin_matches_an_enumeration_of_every_vertex_of_the_lp(seed):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    y = torch.where(X @ torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64) > 0, 1, -1)
    Z = (X * y[:, None]).numpy()
    truth, _ = vertex_enumeration(Z)
    solution = linf_max_margin(X, y)
    assert solution.margin == pytest.approx(truth, abs=1e-9)
    assert np.abs(solution.weight).max() == pytest.approx(1.0, abs=1e-9)  # every maximizer lies on the sphere
    assert (Z @ solution.weight).min() == pytest.approx(solution.margin, abs=1e-9)


def test_enumeration_covers_optima_that_are_not_sign_vectors():
    # Guard for the test above: several points are active, so the optimum is an interior point of a cube face —
    # max over sign vectors alone (the single-point closed form) would be wrong here.
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -3.0]], dtype=torch.float64)  # all labelled +1
    truth, w = vertex_enumeration(X.numpy())
    signs = max((X.numpy() @ np.array(s)).min() for s in itertools.product((-1, 1), repeat=2))
    # by hand: w_1 = 1 and w_2 = t with 1 − 3t = t, so w = (1, ¼), γ = ¼, all three points active
    assert truth == pytest.approx(0.25, abs=1e-12)
    np.testing.assert_allclose(w, [1.0, 0.25], atol=1e-12)
    assert signs == -1.0  # the best sign vector, (1, −1), does not even separate
    assert linf_max_margin(X, torch.ones(3, dtype=torch.long)).margin == pytest.approx(truth, abs=1e-9)
    np.testing.assert_allclose(linf_max_margin(X, torch.ones(3, dtype=torch.long)).weight, w, atol=1e-9)


def test_non_separable_data_are_refused():
    with pytest.raises(NotSeparatedError, match="ℓ∞"):
        linf_max_margin(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, -1]))
