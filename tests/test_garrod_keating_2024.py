"""The loss-surface tools of the garrod-keating-2024 reproduction: the Hessian against finite differences of the
hand-written gradients, the rotation symmetry's exact null directions and their count, the Newton polish."""

from __future__ import annotations

import pytest
import torch

from implicit_bias.dufm import DUFM, dnc_loss, set_dnc_point
from implicit_bias.dufm.hessian import (
    flat_gradient,
    flat_parameters,
    hessian_spectrum,
    loss_hessian,
    newton_polish,
    rotation_nullity,
)
from implicit_bias.errors import InvalidArgumentError
from implicit_bias.experiments.garrod_keating_2024 import GarrodKeatingConfig, Runs, _logit_ranks


def _tiny(**options) -> DUFM:
    settings = {"depth": 2, "width": 5, "lambdas": 0.01, "init_scale": 0.6, "loss": "cross-entropy"}
    settings["activation"] = "linear"
    return DUFM(4, 2, **{**settings, **options})


def _gradient_at(model: DUFM, theta: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
    return flat_gradient(model)


@pytest.mark.parametrize("depth", [2, 3])
def test_hessian_matches_central_differences_of_the_hand_written_gradient(depth):
    model = _tiny(depth=depth, seed=2)
    theta = flat_parameters(model)
    hessian = loss_hessian(model)
    step = 1e-5
    columns = []
    for index in range(theta.numel()):
        shift = torch.zeros_like(theta)
        shift[index] = step
        columns.append((_gradient_at(model, theta + shift) - _gradient_at(model, theta - shift)) / (2 * step))
    differences = torch.stack(columns, dim=1)
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    assert torch.allclose(hessian, differences, rtol=1e-6, atol=1e-8)


def _rotation_direction(model: DUFM, interface: int, generator: torch.Tensor) -> torch.Tensor:
    """d/dt of (W_{l+1}e^{−tS}, e^{tS}W_l) at t = 0 (W₀ = H₁): δW_l = S W_l, δW_{l+1} = −W_{l+1} S."""
    factors = [p.detach() for p in model.parameters()]
    moves = [torch.zeros_like(f) for f in factors]
    moves[interface] = generator @ factors[interface]
    moves[interface + 1] = -factors[interface + 1] @ generator
    return torch.cat([m.flatten() for m in moves])


def test_rotations_are_exact_null_directions_and_fill_the_dnc_null_space():
    model = _tiny(depth=2)
    set_dnc_point(model)
    hessian = loss_hessian(model)
    generator = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generator = generator - generator.T  # a random element of so(5)
    for interface in range(model.depth):
        direction = _rotation_direction(model, interface, generator)
        assert float(direction.norm()) > 0.1
        assert float((hessian @ direction).norm() / direction.norm()) < 1e-9  # 1e−9: the scale search's rounding
    spectrum = hessian_spectrum(model)
    # r = K − 1 = 3: at each interface so(5) minus the stabilizer so(2): 10 − 1 = 9 = 3·5 − 3·4/2
    assert rotation_nullity(5, 2, 3) == 18
    assert spectrum.nullity == 18
    assert spectrum.min_relative > -1e-8
    assert spectrum.smallest_nonzero > 1e4 * spectrum.tol * spectrum.scale  # a clear gap, not a borderline count


def test_newton_polish_returns_a_perturbed_dnc_point_to_a_critical_point_at_the_dnc_loss():
    model = _tiny(depth=2, lambdas=0.02)
    set_dnc_point(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert float(flat_gradient(model).norm()) > 1e-5
    assert newton_polish(model, iterations=6) < 1e-12
    assert float(model.loss().detach()) == pytest.approx(dnc_loss(model).loss, rel=1e-9)


def test_hessian_tools_refuse_a_batch():
    with pytest.raises(InvalidArgumentError, match="unbatched"):
        loss_hessian(_tiny(seed=[0, 1]))


def test_runs_classify_the_etf_point_as_dnc_and_a_rank_deficient_point_as_low_rank():
    config = GarrodKeatingConfig(num_classes=4, per_class=2, seeds=3)
    batch = _tiny(seed=[0, 1, 2])
    optimum = set_dnc_point(batch)
    with torch.no_grad():
        batch.weights[-1][1, 2:] = 0.0  # member 1: logits of rank 2 (the ETF's rows 0, 1 only)
        batch.weights[-1][2] *= 1.01  # member 2: rank K − 1, but off the DNC loss
    ranks = _logit_ranks(batch, config.rank_tol)
    assert ranks == [3, 2, 3]
    runs = Runs(batch, [float(v) for v in batch.member_losses().detach()], ranks, optimum.loss)
    assert runs.at_dnc(config) == [True, False, False]
    assert runs.low_rank(config) == [False, True, False]


def test_config_refuses_widths_whose_runs_it_would_not_have():
    with pytest.raises(InvalidArgumentError, match=r"among widths \[10, 70\].*\[30\]"):
        GarrodKeatingConfig(widths=(10, 70), hessian_widths=(30,))
    with pytest.raises(InvalidArgumentError, match="≥ K = 10"):
        GarrodKeatingConfig(widths=(8, 70), hessian_widths=(70,))
