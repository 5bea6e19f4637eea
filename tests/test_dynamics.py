"""Optimizers: closed-form limit directions, equivalence with PyTorch's Adam, rollback, rescaling, and numerics
at log ℒ = −10⁴."""

import math

import pytest
import torch
from torch import nn

from implicit_bias.data import load
from implicit_bias.dynamics import DualAccelerated, LogAdam, LossBasedLR, make_optimizer
from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.losses import log_loss
from implicit_bias.metrics import direction_cosine, normalized_margin
from implicit_bias.models import build
from implicit_bias.train import fit

# Two points with label +1; only x1 = (1, 2) is ever active, so the max-margin direction in each norm is the
# maximizer of ⟨w, x1⟩ on that norm's unit ball: ℓ2 → x1/‖x1‖, ℓ∞ → sign(x1) = (1, 1), ℓ1 → e_2 (largest |x1_i|).
TOY_X = torch.tensor([[1.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
TOY_Y = torch.tensor([1, 1])
L2, LINF, L1 = (1.0, 2.0), (1.0, 1.0), (0.0, 1.0)
TOY_DIRECTIONS = {"normalized-gd": L2, "sign": LINF, "coordinate": L1}


def toy_model():
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2]]))
    return model


@pytest.mark.parametrize("name", list(TOY_DIRECTIONS))
def test_each_optimizer_converges_to_its_own_max_margin_direction(name):
    options = {"normalize": True} if name in ("sign", "coordinate") else {}
    model = toy_model()
    fit(
        model,
        (TOY_X, TOY_Y),
        loss="exponential",
        optimizer=name,
        optimizer_options=options,
        steps=2000,
        lr=0.5,
        log_points=5,
        progress=False,
    )
    expected = torch.tensor(TOY_DIRECTIONS[name], dtype=torch.float64)
    assert direction_cosine(model.weight.flatten(), expected) > 1 - 1e-6


def test_adam_follows_sign_descent_without_eps_and_drifts_to_gradient_descent_with_it():
    # Adam's steps shrink with the gradients it remembers, so its direction converges slowly: compare the runs.
    weights = {}
    for eps in (0.0, 1.0):
        model = toy_model()
        fit(
            model,
            (TOY_X, TOY_Y),
            loss="exponential",
            optimizer="adam",
            optimizer_options={"eps": eps},
            steps=3000,
            lr=0.5,
            log_points=5,
            progress=False,
        )
        weights[eps] = model.weight.flatten()

    def cos(weight, direction):
        return direction_cosine(weight, torch.tensor(direction, dtype=torch.float64))

    assert cos(weights[0.0], LINF) > 0.999
    assert cos(weights[1.0], L2) > cos(weights[0.0], L2) + 1e-3
    assert cos(weights[1.0], LINF) < cos(weights[0.0], LINF) - 1e-3


def test_log_adam_matches_torch_adam_while_the_loss_is_representable():
    data = load("gaussians", num_classes=3, dim=4, seed=0)
    runs = []
    for optimizer_class in (torch.optim.Adam, LogAdam):
        model = build("mlp:width=16", data.input_shape, 3, seed=0).double()
        optimizer = optimizer_class(model.parameters(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
        for _ in range(60):
            value = log_loss(model(data.X), data.y, "cross-entropy", reduction="mean")
            optimizer.zero_grad()
            if isinstance(optimizer, LogAdam):
                value.backward()
                optimizer.step(log_loss=float(value.detach()))
            else:
                torch.exp(value).backward()
                optimizer.step()
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(runs[0], runs[1], rtol=1e-10, atol=1e-12)


def planted_model(data, q_min):
    model = build("linear:bias=false", data.input_shape, 2).double()
    with torch.no_grad():
        model.head.weight.copy_(q_min / data.info["margin"] * data.info["w_star"][None])
    return model


@pytest.mark.parametrize(
    "name,options",
    [
        ("gd", {}),
        ("sgd", {"momentum": 0.9}),
        ("adam", {"eps": 0.0}),
        ("adam", {"eps": 1e-8}),
        ("normalized-gd", {}),
        ("loss-based", {}),
        ("sign", {}),
        ("sign", {"normalize": True}),
        ("coordinate", {"normalize": True}),
        ("dual-accelerated", {}),
    ],
)
def test_no_nan_at_log_loss_minus_ten_thousand(name, options):
    data = load("linear-separable", n=50, dim=4, margin=0.5, seed=2)
    model = planted_model(data, q_min=1e4)
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer=name,
        optimizer_options=options,
        steps=30,
        lr=0.1,
        log_points=10,
        progress=False,
    )
    assert history.rows[0]["log_loss"] < -9990
    assert all(math.isfinite(row["log_loss"]) and row["accuracy"] == 1.0 for row in history)
    assert torch.isfinite(model.head.weight).all()
    assert normalized_margin(model, data.X, data.y, degree=1) > 0.5 * (1 - 1e-3)


def test_loss_based_schedule_grows_alpha_and_rolls_back():
    parameter = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    optimizer = LossBasedLR([parameter], lr=1.0)

    def loss():  # log of a 1-D quadratic bowl: steps that overshoot raise it
        return torch.log(1 + parameter.square()).sum()

    trajectory = []
    for _ in range(8):
        value = loss()
        optimizer.zero_grad()
        value.backward()
        before = (
            parameter.item(),
            optimizer.param_groups[0]["lr"],
            optimizer.param_groups[0]["previous_log_loss"],
        )
        optimizer.step(log_loss=float(value.detach()))
        trajectory.append((before, float(value.detach()), parameter.item(), optimizer.param_groups[0]["lr"]))
    accepted_losses = []
    for (theta, alpha, previous), value, theta_after, alpha_after in trajectory:
        if previous is not None and value > previous:
            assert alpha_after == pytest.approx(alpha / 2**0.1)
        else:
            assert alpha_after == pytest.approx(alpha * (2**0.2 if previous is not None else 1.0))
            accepted_losses.append(value)
    assert optimizer.param_groups[0]["rejected"] > 0
    assert accepted_losses == sorted(accepted_losses, reverse=True)


def test_dual_accelerated_beats_normalized_gd_to_the_svm_margin():
    data = load("linear-separable", n=300, dim=20, margin=0.1, seed=0)
    step = 1.0 / float(data.X.square().sum(dim=1).max())
    gaps = {}
    for name in ("normalized-gd", "dual-accelerated"):
        model = build("linear:bias=false", data.input_shape, 2, seed=0)
        fit(model, data, loss="exponential", optimizer=name, steps=1000, lr=step, log_points=5, progress=False)
        gaps[name] = 1 - normalized_margin(model, data.X, data.y, degree=1) / 0.1
    assert 0 < gaps["dual-accelerated"] < 1e-3 and gaps["dual-accelerated"] < gaps["normalized-gd"] / 20


def test_optimizer_names_and_options_are_checked():
    parameters = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(UnknownNameError, match="unknown optimizer 'lbfgs'"):
        make_optimizer("lbfgs", parameters, lr=0.1)
    with pytest.raises(UnknownNameError, match="'momentum'"):
        make_optimizer("adam", parameters, lr=0.1, momentum=0.9)
    with pytest.raises(InvalidArgumentError, match="lr must be > 0"):
        make_optimizer("sign", parameters, lr=0.0)
    groups = [{"params": [nn.Parameter(torch.zeros(1))]}, {"params": [nn.Parameter(torch.zeros(1))]}]
    with pytest.raises(InvalidArgumentError, match="single parameter group"):
        DualAccelerated(groups, lr=0.1)
