"""wang-jacot-2024: the batched matrix-completion model against autograd, finite differences, numpy and closed
forms. The quick preset itself runs in tests/test_experiments.py."""

import itertools

import numpy as np
import pytest
import torch

from implicit_bias.errors import InvalidArgumentError
from implicit_bias.experiments import ExperimentError, reproduce
from implicit_bias.experiments.wang_jacot_2024 import (
    DTYPE,
    Sweep,
    balanced_factors,
    completion_problem,
    factor_gradients,
    full_gradient,
    gradient_norm,
    hessian_min_eigenvalue,
    numerical_ranks,
    objective,
    product,
    random_factors,
    rank_increases,
    train,
)
from implicit_bias.metrics import numerical_rank


def _problem(seeds=(0, 1), depth=3, scale=1.0):
    Y, M = completion_problem(seeds, size=6, rank=1, observed=18)
    return Y, M, random_factors(seeds, size=6, depth=depth, scale=scale)


def _autograd_loss(factors, Y, M, lam):
    """ℒ_λ of one unbatched copy, written directly from the definition."""
    A = factors[-1]
    for W in reversed(factors[:-1]):
        A = A @ W
    return ((A - Y) ** 2 * M).sum() / M.sum() + lam * sum((W**2).sum() for W in factors)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_batched_gradient_equals_autograd_on_each_unbatched_copy(depth):
    Y, M, weights = _problem(depth=depth)
    lam = torch.tensor([1e-2, 3e-1], dtype=DTYPE)
    gradients = full_gradient(weights, Y, M, lam)
    for b in range(2):
        copy = [W[b].clone().requires_grad_(True) for W in weights]
        expected = torch.autograd.grad(_autograd_loss(copy, Y[b], M[b], float(lam[b])), copy)
        for got, want in zip(gradients, expected):
            torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-13)


def test_batched_gradient_matches_central_finite_differences():
    Y, M, weights = _problem(depth=3)
    lam = torch.tensor([5e-2, 5e-2], dtype=DTYPE)
    gradients = full_gradient(weights, Y, M, lam)
    generator = torch.Generator().manual_seed(3)
    direction = [torch.randn(W.shape, generator=generator, dtype=DTYPE) for W in weights]
    h = 1e-5
    plus = objective([W + h * D for W, D in zip(weights, direction)], Y, M, lam)[1]
    minus = objective([W - h * D for W, D in zip(weights, direction)], Y, M, lam)[1]
    directional = sum((g * D).sum((1, 2)) for g, D in zip(gradients, direction))
    torch.testing.assert_close((plus - minus) / (2 * h), directional, rtol=1e-8, atol=1e-9)


def test_one_gd_step_and_one_sgd_step_are_steps_on_the_right_losses():
    Y, M, weights = _problem()
    lam, lr = torch.tensor([1e-2, 1e-2], dtype=DTYPE), torch.tensor([0.05, 0.05], dtype=DTYPE)
    generator = torch.Generator().manual_seed(0)
    common = {"lam": lam, "lr": lr, "steps": 1, "generator": generator, "log_every": 1, "tol": 1e-2}
    stepped, _ = train(weights, Y, M, stochastic=torch.tensor([False, True]), **common)
    # copy 0 (GD): W − η∇ℒ_λ by autograd
    copy = [W[0].clone().requires_grad_(True) for W in weights]
    grads = torch.autograd.grad(_autograd_loss(copy, Y[0], M[0], 1e-2), copy)
    for new, old, g in zip(stepped, weights, grads):
        torch.testing.assert_close(new[0], old[0] - 0.05 * g, rtol=1e-12, atol=1e-14)
    # copy 1 (SGD): W − η∇[(A_e − Y_e)² + λΣ‖W‖²] for exactly one observed entry e
    matches = []
    for i, j in M[1].nonzero().tolist():
        single = torch.zeros_like(M[1])
        single[i, j] = 1.0
        copy = [W[1].clone().requires_grad_(True) for W in weights]
        grads = torch.autograd.grad(_autograd_loss(copy, Y[1], single, 1e-2), copy)
        steps = zip(stepped, weights, grads)
        if all(torch.allclose(new[1], old[1] - 0.05 * g, rtol=1e-12, atol=1e-14) for new, old, g in steps):
            matches.append((i, j))
    assert len(matches) == 1


def test_the_trained_gd_point_has_the_fit_and_gradient_norm_an_independent_recomputation_gives():
    Y, M, weights = _problem()
    lam = torch.tensor([1e-3, 1e-3], dtype=DTYPE)
    point, ranks = train(
        weights,
        Y,
        M,
        lam=lam,
        lr=torch.tensor([0.2, 0.2], dtype=DTYPE),
        steps=400,
        stochastic=torch.tensor([False, False]),
        generator=torch.Generator().manual_seed(0),
        log_every=100,
        tol=1e-2,
    )
    assert ranks.shape == (2, 4)
    fit, total = objective(point, Y, M, lam)
    norms = gradient_norm(full_gradient(point, Y, M, lam))
    for b in range(2):
        W = [w[b].numpy() for w in point]
        A = W[2] @ W[1] @ W[0]
        mask = M[b].numpy().astype(bool)
        assert abs(float(fit[b]) - np.mean((A - Y[b].numpy())[mask] ** 2)) < 1e-14
        assert abs(float(total[b]) - float(fit[b]) - 1e-3 * sum((w**2).sum() for w in W)) < 1e-14
        copy = [w[b].clone().requires_grad_(True) for w in point]
        grads = torch.autograd.grad(_autograd_loss(copy, Y[b], M[b], 1e-3), copy)
        assert abs(float(norms[b]) - float(torch.sqrt(sum((g**2).sum() for g in grads)))) < 1e-12
        assert int(ranks[b, -1]) == np.linalg.matrix_rank(A, tol=1e-2 * np.linalg.norm(A, 2))


def test_numerical_rank_of_matrices_with_known_singular_values():
    generator = torch.Generator().manual_seed(0)
    spectra = torch.tensor([[5.0, 1.0, 0.06, 0.04, 0.0], [1.0, 0.5, 0.2, 0.011, 0.009], [2.0, 0, 0, 0, 0]], dtype=DTYPE)
    Q1 = torch.linalg.qr(torch.randn(3, 5, 5, generator=generator, dtype=DTYPE))[0]
    Q2 = torch.linalg.qr(torch.randn(3, 5, 5, generator=generator, dtype=DTYPE))[0]
    A = Q1 @ torch.diag_embed(spectra) @ Q2.transpose(1, 2)
    assert numerical_ranks(A, 1e-2).tolist() == [3, 4, 1]  # σ_i > 0.05, 0.01, 0.02
    assert [numerical_rank(a, 1e-2) for a in A] == [3, 4, 1]
    assert numerical_ranks(torch.zeros(1, 3, 3, dtype=DTYPE), 1e-2).tolist() == [0]


def test_rank_increases_counts_upward_steps_only():
    ranks = torch.tensor([[6, 6, 4, 5, 3, 3, 1], [3, 2, 2, 1, 1, 1, 1]])
    assert rank_increases(ranks).tolist() == [1, 0]


def test_the_completion_problem_has_the_stated_rank_norm_and_a_mask_hitting_every_row_and_column():
    Y, M = completion_problem((0, 1, 2, 7), size=8, rank=2, observed=32)
    for target, mask in zip(Y.numpy(), M.numpy()):
        assert np.linalg.matrix_rank(target) == 2
        assert abs(np.linalg.norm(target) - 8) < 1e-12
        assert mask.sum() == 32 and set(np.unique(mask)) == {0.0, 1.0}
        assert (mask.sum(0) >= 1).all() and (mask.sum(1) >= 1).all()
    with pytest.raises(InvalidArgumentError, match="observed must be >= 8, got 5"):
        completion_problem((0,), size=8, rank=1, observed=5)


def test_hessian_at_zero_is_twice_lambda_for_three_factors():
    # A = W₃W₂W₁ is cubic: the fit's Hessian vanishes at W = 0, leaving 2λI from the weight decay
    Y, M, weights = _problem()
    zero = [torch.zeros_like(W) for W in weights]
    assert abs(hessian_min_eigenvalue(zero, Y, M, 0.03, 1) - 0.06) < 1e-12


def test_balanced_factors_multiply_to_the_best_rank_r_approximation_and_are_balanced():
    Y, _ = completion_problem((0, 1), size=6, rank=3, observed=18)
    weights = balanced_factors(Y, depth=3, rank=2, noise=0.0, seed=0)
    U, sigma, Vh = np.linalg.svd(Y[0].numpy())
    best = (U[:, :2] * sigma[:2]) @ Vh[:2]
    np.testing.assert_allclose(product(weights)[0].numpy(), best, atol=1e-12)
    for lower, upper in itertools.pairwise(weights):
        torch.testing.assert_close(lower @ lower.transpose(1, 2), upper.transpose(1, 2) @ upper, atol=1e-12, rtol=0)


def test_factor_gradients_are_zero_for_zero_residual_and_no_decay():
    _, _, weights = _problem()
    zero = factor_gradients(weights, torch.zeros(2, 6, 6, dtype=DTYPE), torch.zeros(2, dtype=DTYPE))
    assert all(float(g.abs().max()) == 0.0 for g in zero)


def test_a_diverging_learning_rate_is_one_precise_error(tmp_path):
    with pytest.raises(ExperimentError, match=r"NumericalError: training diverged .* in copies .* lower the learning"):
        reproduce(
            "wang-jacot-2024",
            tmp_path / "run",
            quick=True,
            progress=False,
            overrides={"seeds": [0], "gd_steps": 200, "gd_lr": 50.0, "log_points": 10},
        )


def test_a_sweep_point_is_sgd_specific_only_when_sgd_reaches_the_rank_and_gd_stays_above_from_every_start():
    # ranks (method, point, start, log): point 0 SGD jumps and GD stays; point 1 GD also jumps on one start;
    # point 2 SGD stays too
    final = torch.tensor([[[2, 1], [1, 2], [2, 2]], [[2, 2], [2, 1], [2, 2]]])
    ranks = torch.stack([torch.full_like(final, 2), final], -1)
    reached = (final == 1).to(DTYPE).mean(2)
    zeros = torch.zeros(2, 3, 2)
    sweep = Sweep(ranks, reached, zeros, zeros, zeros, torch.zeros(3, 2))
    assert sweep.specific(1).tolist() == [True, False, False]
