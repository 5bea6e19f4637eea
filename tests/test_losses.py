"""Each loss against a 60-digit mpmath reference, from ordinary margins to margins where ℒ underflows float64."""

import math

import mpmath
import pytest
import torch

from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.losses import inverse_loss, log_loss, log_loss_terms, log_softplus_log, output_margins

mpmath.mp.dps = 60
MARGINS = [0.1, 50.0, 500.0, 5000.0]


def reference_log_binary(loss: str, q: float) -> mpmath.mpf:
    q = mpmath.mpf(q)
    if loss == "exponential":
        return -q
    return mpmath.log(mpmath.log1p(mpmath.exp(-q)))


def reference_log_multiclass(loss: str, logits: list[float], label: int) -> mpmath.mpf:
    z = [mpmath.mpf(v) for v in logits]
    s = mpmath.fsum(mpmath.exp(z[j] - z[label]) for j in range(len(z)) if j != label)
    return mpmath.log(s) if loss == "exponential" else mpmath.log(mpmath.log1p(s))


@pytest.mark.parametrize("loss", ["exponential", "logistic", "cross-entropy"])
@pytest.mark.parametrize("q", MARGINS)
def test_binary_log_loss_matches_mpmath(loss, q):
    outputs = torch.tensor([[q], [-q]], dtype=torch.float64)
    y = torch.tensor([1, 0])  # both samples have margin +q
    terms = log_loss_terms(outputs, y, loss)
    expected = float(reference_log_binary(loss, q))
    assert torch.allclose(terms, torch.tensor([expected, expected], dtype=torch.float64), rtol=1e-14, atol=0)
    total = float(log_loss(outputs, y, loss))
    assert total == pytest.approx(float(mpmath.log(2) + reference_log_binary(loss, q)), rel=1e-14)


@pytest.mark.parametrize("loss", ["exponential", "cross-entropy", "logistic"])
@pytest.mark.parametrize("q", MARGINS)
def test_multiclass_log_loss_matches_mpmath(loss, q):
    logits = [[q, 0.0, -q / 3], [0.3, q + 0.3, 0.1], [-1.0, -2.0, q - 1.7]]
    y = [0, 1, 2]
    outputs = torch.tensor(logits, dtype=torch.float64)
    terms = log_loss_terms(outputs, torch.tensor(y), loss)
    for n in range(3):
        assert float(terms[n]) == pytest.approx(float(reference_log_multiclass(loss, logits[n], y[n])), rel=1e-13)
    mean = float(log_loss(outputs, torch.tensor(y), loss, reduction="mean"))
    ref = [reference_log_multiclass(loss, logits[n], y[n]) for n in range(3)]
    expected = mpmath.log(mpmath.fsum(mpmath.exp(r) for r in ref) / 3)
    assert mean == pytest.approx(float(expected), rel=1e-13)


@pytest.mark.parametrize("loss", ["exponential", "logistic", "cross-entropy"])
def test_gradient_stays_finite_far_below_float64(loss):
    # At margin 5000 the loss is e^-5000 ≈ 10^-2171: zero in float64, yet ∇ log ℒ must be exact: -x for the sum.
    w = torch.tensor([2500.0, 0.0], dtype=torch.float64, requires_grad=True)
    X = torch.tensor([[2.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    value = log_loss((X @ w)[:, None], torch.tensor([1, 1]), loss)
    value.backward()
    assert torch.isfinite(w.grad).all()
    # both samples have margin 5000, so ∇ log ℒ = -(x1 + x2)/2 · d log ℓ/dq (= 1 for these losses, to 1e-2000)
    assert torch.allclose(w.grad, torch.tensor([-2.0, 0.0], dtype=torch.float64), rtol=1e-15, atol=1e-15)


def test_mse_matches_hand_computation():
    outputs = torch.tensor([[0.5, 0.2], [0.1, 0.7]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    expected = 0.5 * ((0.5 - 1) ** 2 + 0.2**2) + 0.5 * (0.1**2 + (0.7 - 1) ** 2)
    assert float(log_loss(outputs, y, "mse")) == pytest.approx(math.log(expected), rel=1e-15)
    binary = torch.tensor([0.5, -2.0], dtype=torch.float64)
    assert float(log_loss(binary, torch.tensor([1, -1]), "mse")) == pytest.approx(
        math.log(0.5 * 0.25 + 0.5 * 1.0), rel=1e-15
    )


def test_log_softplus_log_is_continuous_at_the_branch_switch():
    s = torch.tensor([-20.0 - 1e-12, -20.0, -20.0 + 1e-12], dtype=torch.float64)
    values = log_softplus_log(s)
    for v, point in zip(values, s):
        assert float(v) == pytest.approx(
            float(mpmath.log(mpmath.log1p(mpmath.exp(mpmath.mpf(float(point)))))), rel=1e-15
        )


@pytest.mark.parametrize("loss", ["exponential", "logistic", "cross-entropy"])
@pytest.mark.parametrize("q", [0.1, 3.0, 50.0, 5000.0])
def test_inverse_loss_recovers_a_single_sample_margin(loss, q):
    log_value = float(reference_log_binary(loss, q))
    assert inverse_loss(loss, log_value) == pytest.approx(q, rel=1e-12)


def test_margins_binary_and_multiclass():
    assert output_margins(torch.tensor([2.0, -3.0]), torch.tensor([1, 0])).tolist() == [2.0, 3.0]
    assert output_margins(torch.tensor([2.0, -3.0]), torch.tensor([1, -1])).tolist() == [2.0, 3.0]
    outputs = torch.tensor([[3.0, 1.0, 2.5], [0.0, 1.0, 2.0]])
    assert output_margins(outputs, torch.tensor([0, 1])).tolist() == [0.5, -1.0]


def test_bad_labels_and_names_are_refused():
    with pytest.raises(InvalidArgumentError, match=r"labels must lie in 0..2"):
        log_loss(torch.zeros(2, 3), torch.tensor([0, 3]), "exponential")
    with pytest.raises(InvalidArgumentError, match=r"binary labels"):
        log_loss(torch.zeros(2, 1), torch.tensor([0, 2]), "logistic")
    with pytest.raises(InvalidArgumentError, match=r"N = len\(y\) = 3"):
        log_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]), "exponential")
    with pytest.raises(UnknownNameError, match="expected one of"):
        log_loss(torch.zeros(2, 3), torch.tensor([0, 1]), "hinge")


def test_mse_gradient_is_finite_and_exact_where_a_sample_is_fitted_exactly():
    # ∂ log ℒ/∂Φ_n = (Φ_n − target_n)/ℒ: 0 for the fitted sample (the NaN of log(½·0)'s backward before).
    binary = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)  # labels +1, −1: first fitted
    value = log_loss(binary, torch.tensor([1, -1]), "mse")
    value.backward()
    assert float(value.detach()) == pytest.approx(math.log(0.125), rel=1e-15)  # ℒ = ½·0 + ½·0.5²
    assert binary.grad.tolist() == [0.0, pytest.approx(0.5 / 0.125, rel=1e-15)]
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    log_loss(outputs, torch.tensor([0, 1]), "mse", reduction="mean").backward()
    residual = torch.tensor([0.2, -0.5, 0.1], dtype=torch.float64)  # ℒ = ½‖r‖² = 0.15 for the second sample
    assert outputs.grad[0].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(outputs.grad[1], residual / 0.15, rtol=1e-14, atol=0)


def test_mse_on_an_exactly_fitted_dataset_is_minus_infinity_with_zero_gradient():
    # ℒ = 0: log ℒ = −inf, and the gradient is that of ℒ, 0 (finite for log-frame and plain optimizers alike).
    for outputs, y in [([1.0, -1.0], [1, -1]), ([[0.0, 1.0], [1.0, 0.0]], [1, 0])]:
        leaf = torch.tensor(outputs, dtype=torch.float64, requires_grad=True)
        value = log_loss(leaf, torch.tensor(y), "mse")
        assert float(value.detach()) == -math.inf
        value.backward()
        assert torch.equal(leaf.grad, torch.zeros_like(leaf))
        leaf.grad = None
        torch.exp(log_loss(leaf, torch.tensor(y), "mse")).backward()
        assert torch.equal(leaf.grad, torch.zeros_like(leaf))


def test_mse_does_not_underflow_for_tiny_residuals():
    # residuals 1e-200: ℒ = ½·1e-400 + ½·1e-400 = 1e-400, below float64, yet log ℒ = −400 log 10 and
    # ∇ log ℒ = r/ℒ = ±1e200 (squaring the residual first would give −inf and a zero gradient).
    outputs = torch.tensor([[1.0, 1e-200, 0.0], [0.0, 1.0, -1e-200]], dtype=torch.float64, requires_grad=True)
    value = log_loss(outputs, torch.tensor([0, 1]), "mse")
    value.backward()
    assert float(value.detach()) == pytest.approx(-400 * math.log(10), rel=1e-15)
    expected = torch.tensor([[0.0, 1e200, 0.0], [0.0, 0.0, -1e200]], dtype=torch.float64)
    assert torch.allclose(outputs.grad, expected, rtol=1e-14, atol=0)
