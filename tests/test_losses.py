"""Each loss against a 60-digit mpmath reference, from ordinary margins to margins where ℒ underflows float64."""

import math

import mpmath
import pytest
import torch

from implicit_bias import losses
from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.losses import inverse_loss, log_loss, log_loss_terms, log_softplus_log, output_margins

mpmath.mp.dps = 60
MARGINS = [0.1, 50.0, 500.0, 5000.0]


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def backend(request, monkeypatch):
    """Every test here runs twice: float64 CPU outputs through the compiled kernel (the default), then through the
    torch operations that other devices and dtypes use."""
    monkeypatch.setattr(losses, "_COMPILED", request.param == "compiled")
    return request.param


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


# ------------------------------------------------------------------ the fused backward
def reference_log_total(loss: str, logits: list[list[float]], labels: list[int]) -> mpmath.mpf:
    """log Σ_n ℓ_n in mpmath (K ≥ 2 outputs; mse against one-hot targets)."""
    if loss == "mse":
        terms = [
            mpmath.fsum((mpmath.mpf(v) - (1 if j == label else 0)) ** 2 for j, v in enumerate(row)) / 2
            for row, label in zip(logits, labels)
        ]
        return mpmath.log(mpmath.fsum(terms))
    return mpmath.log(mpmath.fsum(mpmath.exp(reference_log_multiclass(loss, r, c)) for r, c in zip(logits, labels)))


def mpmath_gradient(loss: str, logits: list[list[float]], labels: list[int]) -> list[list[float]]:
    """∂ log ℒ/∂Φ_nj by mpmath's numerical differentiation at 60 digits (independent of any gradient formula)."""

    def partial(n: int, j: int) -> float:
        def f(t):
            moved = [[mpmath.mpf(v) for v in row] for row in logits]
            moved[n][j] = t
            return reference_log_total(loss, moved, labels)

        return float(mpmath.diff(f, mpmath.mpf(logits[n][j])))

    return [[partial(n, j) for j in range(len(logits[0]))] for n in range(len(logits))]


@pytest.mark.parametrize("loss", ["exponential", "logistic", "cross-entropy", "mse"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradient_matches_finite_differences_at_moderate_values(loss, reduction):
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(6, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    assert torch.autograd.gradcheck(lambda o: log_loss(o, y, loss, reduction=reduction), (outputs,))
    assert torch.autograd.gradcheck(lambda o: log_loss_terms(o, y, loss), (outputs,))
    binary = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.tensor([1, -1, 1, 1, -1])
    assert torch.autograd.gradcheck(lambda o: log_loss(o, labels, loss, reduction=reduction), (binary,))
    assert torch.autograd.gradcheck(lambda o: log_loss(o[:, None], labels, loss), (binary,))


@pytest.mark.parametrize("loss", ["exponential", "logistic", "cross-entropy"])
@pytest.mark.parametrize("q", [0.5, 30.0, 800.0, 1e4])
def test_gradient_matches_mpmath_into_the_terminal_phase(loss, q):
    # At q = 1e4, log ℒ ≈ −1e4: ℒ underflows every float format, and ∇ log ℒ is still a softmax-weighted sum.
    logits = [[q, 0.0, -q / 3], [0.3, q + 0.3, 0.1], [-1.0, -2.0, q - 1.7]]
    labels = [0, 1, 2]
    outputs = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    value = log_loss(outputs, torch.tensor(labels), loss)
    value.backward()
    assert float(value.detach()) == pytest.approx(float(reference_log_total(loss, logits, labels)), rel=1e-14)
    expected = torch.tensor(mpmath_gradient(loss, logits, labels), dtype=torch.float64)
    # log ℓ_n ≈ −q is itself known to q·1.1e−16 only (the float64 spacing there), and w_n = e^{log ℓ_n − log ℒ}
    # inherits that absolute error as a relative one. mpmath.diff resolves a partial only to ~1e−60 of log ℒ, so
    # the entries e^{−4q/3} ≪ 1e−16 (the third class of the first sample) are compared absolutely
    assert torch.allclose(outputs.grad, expected, rtol=max(1e-14, 4 * q * 2.2e-16), atol=1e-16)


def test_mse_gradient_matches_mpmath():
    logits = [[0.9, 0.2, -0.1], [0.1, 0.7, 0.3], [1e-3, 2e-3, 1.0 - 1e-3]]
    outputs = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    log_loss(outputs, torch.tensor([0, 1, 2]), "mse").backward()
    expected = torch.tensor(mpmath_gradient("mse", logits, [0, 1, 2]), dtype=torch.float64)
    assert torch.allclose(outputs.grad, expected, rtol=1e-14, atol=0)


def test_float32_outputs_get_a_float32_gradient_of_the_float64_loss():
    outputs = torch.tensor([[2.0, -1.0], [0.5, 1.5]], requires_grad=True)
    value = log_loss(outputs, torch.tensor([0, 1]), "cross-entropy")
    value.backward()
    assert value.dtype == torch.float64 and outputs.grad.dtype == torch.float32
    # ∂ log ℒ/∂Φ = (ℓ_n/ℒ) (σ-weights − e_y)/ℓ_n = (p − e_y)/ℒ with p the softmax (cross-entropy)
    p = torch.softmax(outputs.detach().double(), dim=1)
    total = -torch.log(p[[0, 1], [0, 1]]).sum()
    expected = (p - torch.eye(2, dtype=torch.float64)) / total
    assert torch.allclose(outputs.grad.double(), expected, rtol=1e-6, atol=0)


def test_a_second_derivative_is_refused_not_silently_wrong():
    outputs = torch.tensor([[2.0, -1.0], [0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_loss(outputs, torch.tensor([0, 1]), "logistic"), outputs)
    assert torch.isfinite(grad).all()
    with pytest.raises(NotImplementedError, match="differentiable once"):
        torch.autograd.grad(log_loss(outputs, torch.tensor([0, 1]), "logistic"), outputs, create_graph=True)


def test_float64_cpu_outputs_take_the_compiled_kernel(backend, monkeypatch):
    calls = []
    original = losses.kernels.log_loss
    monkeypatch.setattr(losses.kernels, "log_loss", lambda *args: calls.append(args[2]) or original(*args))
    log_loss(torch.zeros(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0]), "logistic")
    log_loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), "mse")  # float32 outputs are promoted first
    assert calls == (["logistic", "mse"] if backend == "compiled" else [])


@pytest.mark.parametrize("loss", ["exponential", "logistic", "mse"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_output_is_never_read_as_a_fit(backend, loss, bad):
    # NaN in any output, or (compiled kernel) an overflowed one, gives NaN, not log ℒ = −inf ("every sample fitted")
    if backend == "torch" and not math.isnan(bad):
        pytest.skip("the torch path keeps IEEE arithmetic for ±inf outputs (a −inf competitor adds e^−inf = 0)")
    outputs = torch.tensor([[0.5, bad, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    value = log_loss(outputs, torch.tensor([0, 1]), loss, validate=False)
    value.backward()
    assert math.isnan(float(value.detach())) and outputs.grad.isnan().all()
    terms = log_loss_terms(outputs.detach(), torch.tensor([0, 1]), loss, validate=False)
    assert math.isnan(float(terms[0])) and math.isfinite(float(terms[1]))


def test_an_out_of_range_label_is_an_error_even_unvalidated(backend):
    # validate=False skips the label checks, but the loss must never read outside the outputs (torch: RuntimeError)
    with pytest.raises((IndexError, RuntimeError), match="out"):
        log_loss(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 3]), "logistic", validate=False)
