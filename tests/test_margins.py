"""Margin metrics against hand computations, invariances and the Lyu & Li bounds."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from implicit_bias.data import load
from implicit_bias.errors import NotSeparatedError
from implicit_bias.metrics import l1_max_margin, margins, normalized_margin, parameter_norm, smoothed_margin
from implicit_bias.models import build


def planted_linear_model(data):
    model = build("linear:bias=false", data.input_shape, 2).double()
    with torch.no_grad():
        model.head.weight.copy_(3.0 * data.info["w_star"][None])
    return model


def test_linear_model_on_the_planted_direction_has_the_planted_margin():
    data = load("linear-separable", n=80, dim=5, margin=0.2, seed=3)
    model = planted_linear_model(data)
    assert normalized_margin(model, data.X, data.y, degree=1) == pytest.approx(0.2, rel=1e-12)
    assert normalized_margin(model, data.X, data.y) == pytest.approx(0.2, rel=1e-12)  # degree detected = 1


def test_margins_match_a_hand_computation():
    model = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    X = torch.tensor([[2.0, 1.0], [0.5, 3.0], [-1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    # outputs: [2, 1, -3], [0.5, 3, -3.5], [-1, -1, 2]
    assert margins(model, X, y).tolist() == [1.0, 2.5, 3.0]


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_normalized_margin_is_scale_invariant(p):
    data = load("gaussians", num_classes=3, dim=4, n_per_class=10, separation=6.0, noise=0.3, seed=2)
    model = build("mlp:depth=3,width=32,bias=false", data.input_shape, 3, seed=0).double()
    nearest_mean_init(model, data)
    before = normalized_margin(model, data.X.double(), data.y, p=p, degree=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.7)
    assert normalized_margin(model, data.X.double(), data.y, p=p, degree=3) == pytest.approx(before, rel=1e-12)


def nearest_mean_init(model, data):
    """Make a bias-free 3-layer ReLU net separate the clusters: layer1 = [I; −I] (x ↦ (x⁺, x⁻)), layer2 = I,
    head = the means against (x⁺ − x⁻), i.e. Φ_c(x) = ⟨μ_c, x⟩."""
    d = data.input_shape[0]
    width = model.layer1[0].weight.shape[0]
    with torch.no_grad():
        first = torch.zeros(width, d, dtype=torch.float64)
        first[:d], first[d : 2 * d] = torch.eye(d), -torch.eye(d)
        model.layer1[0].weight.copy_(first)
        model.layer2[0].weight.copy_(torch.eye(width, dtype=torch.float64))
        head = torch.zeros(3, width, dtype=torch.float64)
        head[:, :d], head[:, d : 2 * d] = data.info["means"], -data.info["means"]
        model.head.weight.copy_(head)


def test_smoothed_margin_obeys_the_lyu_li_sandwich():
    data = load("linear-separable", n=50, dim=4, margin=0.5, seed=1)
    model = planted_linear_model(data)
    with torch.no_grad():
        model.head.weight.mul_(20.0)
    gamma = normalized_margin(model, data.X, data.y, degree=1)
    smooth = smoothed_margin(model, data.X, data.y, loss="exponential", degree=1)
    norm = parameter_norm(model)
    assert gamma - math.log(len(data)) / norm <= smooth <= gamma
    direct = -math.log(torch.exp(-margins(model, data.X, data.y)).sum().item()) / norm
    assert smooth == pytest.approx(direct, rel=1e-12)


def test_margins_of_a_model_that_does_not_fit_are_refused():
    data = load("linear-separable", n=50, dim=4, seed=1)
    model = planted_linear_model(data)
    with torch.no_grad():
        model.head.weight.neg_()
    with pytest.raises(NotSeparatedError, match="50 of 50 samples have margin <= 0"):
        normalized_margin(model, data.X, data.y, degree=1)
    with pytest.raises(NotSeparatedError, match="not below ℓ\\(0\\)"):
        smoothed_margin(model, data.X, data.y, loss="logistic", degree=1)


def svm_dual(data):
    """Independent hard-margin SVM (no intercept) dual via L-BFGS-B: w = Σ α_n y_n x_n."""
    import numpy as np
    from scipy.optimize import minimize

    Z = (data.X * (2 * data.y - 1)[:, None].double()).numpy()
    gram = Z @ Z.T
    result = minimize(
        lambda a: (0.5 * a @ gram @ a - a.sum(), gram @ a - 1.0),
        np.zeros(len(Z)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * len(Z),
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    return Z, result.x


def test_kkt_residual_vanishes_at_the_svm_with_the_svm_multipliers():
    from implicit_bias.metrics import kkt_certificate, kkt_residual

    data = load("linear-separable", n=60, dim=5, margin=0.25, seed=7)
    Z, alpha = svm_dual(data)
    w_svm = (data.info["w_star"] / 0.25).numpy()  # the planted solution; alpha is solved independently
    assert np.allclose(Z.T @ alpha, w_svm, atol=1e-5)
    model = build("linear:bias=false", data.input_shape, 2).double()
    with torch.no_grad():
        model.head.weight.copy_(17.0 * torch.as_tensor(w_svm)[None])  # any positive scale: θ̃ undoes it
    epsilon, delta = kkt_residual(model, data.X, data.y, degree=1)
    assert epsilon < 1e-8 and abs(delta) < 1e-8
    certificate = kkt_certificate(model, data.X, data.y, degree=1)
    combination = Z[certificate.support].T @ certificate.multipliers
    assert np.allclose(combination, w_svm, atol=1e-10)
    assert certificate.multipliers.sum() == pytest.approx(alpha.sum(), rel=1e-6)  # both = ‖w_svm‖² = 1/γ²
    assert alpha.sum() == pytest.approx(1 / 0.25**2, rel=1e-6)


def test_kkt_residual_is_large_away_from_a_kkt_point():
    from implicit_bias.metrics import kkt_residual

    data = load("linear-separable", n=60, dim=5, margin=0.25, seed=7)
    model = planted_linear_model(data)
    with torch.no_grad():
        model.head.weight.add_(0.3 * torch.tensor([[0.0, 1.0, -1.0, 0.5, 0.2]], dtype=torch.float64))
    epsilon, _ = kkt_residual(model, data.X, data.y, degree=1)
    assert epsilon > 0.05


def test_alignment_is_one_at_the_scaled_svm_even_when_the_loss_underflows():
    from implicit_bias.metrics import alignment

    data = load("linear-separable", n=60, dim=5, margin=0.25, seed=7)
    model = planted_linear_model(data)
    with torch.no_grad():
        model.head.weight.mul_(1e4 / 0.25 / 3.0)  # q_min = 10⁴: ℒ = e^{-10⁴}
    assert alignment(model, data.X, data.y, "exponential") == pytest.approx(1.0, abs=1e-12)


def test_alignment_matches_the_explicit_gradient():
    from implicit_bias.metrics import alignment

    data = load("linear-separable", n=40, dim=3, seed=2)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    model = build("linear:bias=false", data.input_shape, 2).double()
    with torch.no_grad():
        model.head.weight.copy_(w[None])
    Z = data.X * (2 * data.y - 1)[:, None].double()
    gradient = -(torch.exp(-(Z @ w))[:, None] * Z).sum(dim=0)  # ∇ Σ e^{−⟨w, z_n⟩}
    expected = float(torch.dot(w, -gradient) / (w.norm() * gradient.norm()))
    assert alignment(model, data.X, data.y, "exponential") == pytest.approx(expected, rel=1e-13)


def test_direction_cosine_and_support_count():
    from implicit_bias.metrics import direction_cosine, support_count

    assert direction_cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(2**-0.5)
    assert direction_cosine({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, torch.tensor([6.0, 8.0])) == 1.0
    data = load("linear-separable", n=60, dim=5, margin=0.25, seed=7)
    model = planted_linear_model(data)
    q = margins(model, data.X, data.y)
    assert support_count(model, data.X, data.y, k=1) == int((q - q.min() <= math.log(10)).sum())
    assert support_count(model, data.X, data.y, k=1e-9) == 4  # the two planted pairs, exactly at the margin


def test_l1_max_margin_matches_a_brute_force_search_on_the_l1_sphere():
    generator = torch.Generator().manual_seed(3)
    X = torch.randn(30, 2, generator=generator, dtype=torch.float64)
    y = torch.where(X @ torch.tensor([1.0, 0.4], dtype=torch.float64) > 0, 1, -1)
    solution = l1_max_margin(X, y)
    t = torch.linspace(-1, 1, 400_001, dtype=torch.float64)
    sphere = torch.cat([torch.stack([t, 1 - t.abs()], 1), torch.stack([t, t.abs() - 1], 1)])  # ‖β‖₁ = 1
    brute = (y[:, None] * (X @ sphere.T)).min(dim=0).values.max()
    assert solution.margin == pytest.approx(float(brute), abs=1e-5)
    assert np.abs(solution.weight).sum() == pytest.approx(1.0, abs=1e-9)
    assert float((y * (X @ torch.as_tensor(solution.weight))).min()) == pytest.approx(solution.margin, abs=1e-9)
    with pytest.raises(NotSeparatedError):
        l1_max_margin(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, -1]))
