"""metrics.homogenization against its definition f_H(θ; x) = lim_{r→∞} f(rθ; x)/r^M and the κ bound."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.special import ndtr
from torch import nn
from torch.func import functional_call

from implicit_bias.errors import NotHomogeneousError
from implicit_bias.metrics import Residual, activation_gap, homogenization, homogenization_gap_bound
from implicit_bias.metrics.homogenization import GELU_GAP, SILU_GAP
from implicit_bias.models import build


def _seeded(seed, factory):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory().to(torch.float64)


def two_layer(activation=nn.SiLU, width=16, seed=0):
    return _seeded(seed, lambda: nn.Sequential(nn.Linear(2, width), activation(), nn.Linear(width, 1)))


def residual(seed=0, dim=3, width=5):
    """f = wᵀ(x + V ReLU(Ux)), all bias-free."""
    return _seeded(
        seed,
        lambda: nn.Sequential(
            Residual(nn.Sequential(nn.Linear(dim, width, bias=False), nn.ReLU(), nn.Linear(width, dim, bias=False))),
            nn.Linear(dim, 1, bias=False),
        ),
    )


def scaled_output(model, x, r):
    """f(rθ; x) by a functional call on the scaled parameters (the model itself is not touched)."""
    params = {name: r * p.detach() for name, p in model.named_parameters()}
    return functional_call(model, params, (x,))


CASES = {  # name: (factory, input dimension, M, what drops out)
    "two-layer SiLU + biases": (two_layer, 2, 2, ("2.bias",)),
    "two-layer GELU": (lambda: two_layer(nn.GELU), 2, 2, ("2.bias",)),
    "two-layer softplus": (lambda: two_layer(nn.Softplus), 2, 2, ("2.bias",)),
    "residual wᵀ(x + V ReLU(Ux))": (residual, 3, 3, ("0 (skip path)",)),
    "library MLP depth 3 with biases": (
        lambda: build("mlp:depth=3,width=8", (2,), 2, seed=0).to(torch.float64),
        2,
        3,
        ("layer2.0.bias", "head.bias"),
    ),
}


def inputs(dim, n=64, seed=1):
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", sorted(CASES))
def test_closed_form_is_the_limit_of_the_scaled_network(case):
    factory, dim, degree, dropped = CASES[case]
    model = factory()
    x = inputs(dim)
    result = homogenization(model)
    assert result.degree == degree and result.dropped == dropped
    # f(rθ)/r^M − f_H = O(1/r): the error shrinks tenfold per decade of r, and is far from 0 at r = 1
    with torch.no_grad():
        f_h = result.module(x)
        errors = [float((scaled_output(model, x, r) / r**degree - f_h).abs().max()) for r in (1e2, 1e3, 1e4)]
        assert float((model(x) - f_h).abs().max()) > 1e-3  # the homogenization is not the network itself
    assert errors[2] < 1e-3 * float(f_h.abs().max())
    assert errors[1] < 0.2 * errors[0] and errors[2] < 0.2 * errors[1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_homogenization_is_homogeneous_of_its_degree(case):
    factory, dim, degree, _ = CASES[case]
    result = homogenization(factory())
    x = inputs(dim, n=16)
    r = 3.7
    scaled = scaled_output(result.module, x, r)
    assert torch.allclose(scaled, r**degree * result.module(x), rtol=1e-12, atol=1e-12)


def test_model_is_untouched_and_the_homogenization_holds_copies():
    model = two_layer()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = homogenization(model)
    with torch.no_grad():
        for p in result.module.parameters():
            p.add_(1.0)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])
    assert [n for n, _ in result.module.named_parameters()] == ["0.weight", "0.bias", "2.weight"]


def test_silu_gap_is_lambert_w_of_one_over_e_and_the_sup_of_the_gap():
    assert SILU_GAP == pytest.approx(float(mpmath.lambertw(1 / mpmath.e)), abs=1e-15)
    z = np.linspace(-20, 20, 2_000_001)
    silu_gap = np.abs(z / (1 + np.exp(-z)) - np.maximum(z, 0))
    assert silu_gap.max() == pytest.approx(SILU_GAP, abs=1e-10) and silu_gap.max() <= SILU_GAP
    assert abs(z[silu_gap.argmax()]) == pytest.approx(1 + SILU_GAP, abs=1e-4)  # at t* = 1 + W(1/e)
    gelu_gap = np.abs(z * ndtr(z) - np.maximum(z, 0))
    assert gelu_gap.max() == pytest.approx(GELU_GAP, abs=1e-10)
    softplus_gap = np.abs(np.logaddexp(0, 2 * z) / 2 - np.maximum(z, 0))  # softplus with β = 2
    assert activation_gap(nn.Softplus(beta=2.0)) == pytest.approx(softplus_gap.max(), abs=1e-12)


def test_kappa_bound_holds_on_random_parameters_and_inputs_and_is_attained_in_the_limit():
    width = 16
    model = two_layer(width=width)
    kappa = homogenization_gap_bound(model)
    assert kappa == pytest.approx(SILU_GAP * 4 + 1)
    generator = torch.Generator().manual_seed(2)
    worst = 0.0
    for _ in range(200):
        scale = float(10 ** torch.empty(1).uniform_(-1, 2, generator=generator))
        params = {
            n: scale * torch.randn(p.shape, dtype=torch.float64, generator=generator)
            for n, p in model.named_parameters()
        }
        x = 3 * torch.randn(50, 2, dtype=torch.float64, generator=generator)
        norm = float(torch.cat([p.reshape(-1) for p in params.values()]).norm())
        with torch.no_grad():
            model.load_state_dict(params)
            gap = (model(x) - homogenization(model).module(x)).abs().max()
        worst = max(worst, float(gap) / norm)
        assert gap <= kappa * norm
    assert worst > 0.05  # random draws leave room; the constructions below reach each term of κ
    t_star = 1 + SILU_GAP
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(t_star)  # every z_j = t*: SiLU(t*) − ReLU(t*) = −W(1/e)
        model[2].weight.fill_(1e6)
        model[2].bias.zero_()
        x = torch.zeros(1, 2, dtype=torch.float64)
        gap = float((model(x) - homogenization(model).module(x)).abs())
        assert gap / parameter_norm_of(model) == pytest.approx(SILU_GAP * math.sqrt(width), rel=1e-6)
        model[2].weight.zero_()
        model[2].bias.fill_(1e6)  # c alone: |f − f_H| = |c| ≈ ‖θ‖
        gap = float((model(x) - homogenization(model).module(x)).abs())
        assert gap / parameter_norm_of(model) == pytest.approx(1.0, rel=1e-6)


def parameter_norm_of(model):
    return float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), r"module '1' \(Tanh\).*no homogeneous limit"),
        (nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4)), r"module '1' \(BatchNorm1d\)"),
        (nn.Sequential(nn.ReLU(), nn.Flatten()), "no parametrized layer"),
        ("not a model", "must be an nn.Module, got str"),
    ],
)
def test_unsupported_forms_are_refused_by_name(model, message):
    with pytest.raises(NotHomogeneousError, match=message):
        homogenization(model)


def test_gap_bound_refuses_other_shapes_and_unknown_activations():
    with pytest.raises(NotHomogeneousError, match=r"expected nn.Sequential\(nn.Linear\(d, m\), activation"):
        homogenization_gap_bound(residual())
    with pytest.raises(NotHomogeneousError, match="no bound for Tanh"):
        activation_gap(nn.Tanh())
    with pytest.raises(NotHomogeneousError, match="no bound for GELU.*tanh"):
        activation_gap(nn.GELU(approximate="tanh"))
    assert homogenization_gap_bound(two_layer(nn.ReLU)) == pytest.approx(1.0)  # ReLU: only the c term
