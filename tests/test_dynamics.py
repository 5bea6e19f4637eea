"""Optimizers: closed-form limit directions, equivalence with PyTorch's Adam, rollback, exact Adam (mpmath) at
log ℒ = −10⁴, and progress toward each optimizer's max-margin direction deep in the terminal phase."""

import math

import mpmath
import pytest
import torch
from torch import nn

from implicit_bias.data import load
from implicit_bias.dynamics import DualAccelerated, LogAdam, LossBasedLR, make_optimizer
from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.losses import log_loss
from implicit_bias.metrics import (
    direction_cosine,
    hard_margin_svm,
    l1_max_margin,
    linf_max_margin,
    normalized_margin,
)
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# Exact Adam (Kingma & Ba 2015, Algorithm 1) in 60-digit mpmath, whose exponent range holds e^{-10⁴}; a zero
# second moment (a coordinate never given a gradient) gives a zero step, the ε → 0 limit of torch.optim.Adam.
def exact_adam(w0, gradients, *, lr, betas, eps, steps):
    with mpmath.workdps(60):
        beta1, beta2 = (mpmath.mpf(b) for b in betas)
        w = [mpmath.mpf(v) for v in w0]
        m, v, path = [0] * len(w), [0] * len(w), []
        for t in range(1, steps + 1):
            g = gradients(t, w)
            m = [beta1 * a + (1 - beta1) * b for a, b in zip(m, g)]
            v = [beta2 * a + (1 - beta2) * b**2 for a, b in zip(v, g)]
            c1, c2 = 1 - beta1**t, 1 - beta2**t
            w = [wi - (lr * (a / c1) / (mpmath.sqrt(b / c2) + eps) if b else 0) for wi, a, b in zip(w, m, v)]
            path.append([float(wi - mpmath.mpf(w0i)) for wi, w0i in zip(w, w0)])
    return torch.tensor(path, dtype=torch.float64)


TWO_POINTS = [[1.0, 2.0], [3.0, -1.0]]  # label +1 each: ℒ(w) = e^{-⟨w, x1⟩} + e^{-⟨w, x2⟩}


def two_point_gradient(t, w):  # ∇ℒ = −Σ_n x_n e^{−⟨w, x_n⟩}, by hand
    margins = [sum(mpmath.mpf(a) * b for a, b in zip(x, w)) for x in TWO_POINTS]
    return [-mpmath.fsum(x[i] * mpmath.exp(-q) for x, q in zip(TWO_POINTS, margins)) for i in range(2)]


def log_adam_path(optimizer, parameter, steps, log_value_and_grad):
    start, path = parameter.detach().clone(), []
    for t in range(1, steps + 1):
        value, grad = log_value_and_grad(t)
        parameter.grad = grad
        optimizer.step(log_loss=value)
        path.append((parameter.detach() - start).to(torch.float64))
    return torch.stack(path)


@pytest.mark.parametrize(
    "depth,eps,betas",
    [(1e4, 0.0, (0.9, 0.999)), (1e4, 0.0, (0.5, 0.9)), (1e4, 1e-8, (0.9, 0.999)), (700.0, 1e-304, (0.9, 0.999))],
)
def test_log_adam_is_exact_adam_deep_in_the_terminal_phase(depth, eps, betas):
    # Margins ⟨w, x1⟩ = depth, ⟨w, x2⟩ = depth + ½: ℒ ≈ e^{-depth}. With ε = 0 Adam's steps are O(lr) however
    # small ℒ is; with ε = 1e−8 at depth 10⁴ they are ~lr e^{−10⁴}/ε, i.e. θ must not move at all in float64; at
    # depth 700 and ε = 1e−304 ≈ √v̂ both terms of √v̂ + ε count (and plain Adam's g² ≈ 1e−608 underflows).
    w0 = [(3 * depth + 1) / 7, (4 * depth - 1) / 14]
    parameter = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    X = torch.tensor(TWO_POINTS, dtype=torch.float64)

    def value_and_grad(t):
        parameter.grad = None
        value = log_loss((X @ parameter)[:, None], torch.tensor([1, 1]), "exponential")
        value.backward()
        return float(value.detach()), parameter.grad

    optimizer = LogAdam([parameter], lr=0.1, betas=betas, eps=eps)
    path = log_adam_path(optimizer, parameter, 5, value_and_grad)
    assert value_and_grad(0)[0] < -depth + 1
    expected = exact_adam(w0, two_point_gradient, lr=0.1, betas=betas, eps=eps, steps=5)
    assert torch.allclose(path, expected, rtol=1e-10, atol=4e-12)  # θ ≈ 4300 is stored to ±4.5e−13
    if eps == 0.0:
        assert expected[0].abs().min() == pytest.approx(0.1, rel=1e-12)  # the first step: lr · sign(g)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_adam_is_exact_when_a_gradient_component_squared_underflows(dtype):
    # Components 1e−200 (float64) / 1e−30 (float32) have squares below the smallest float, and 1e−320 is itself
    # subnormal; Adam is scale-free per coordinate, so each still moves by O(lr). The old frame formed g² and
    # stepped by 1.8e307 on such a component; the always-zero component must stay put.
    tiny = {torch.float64: [1e-200, 1e-320], torch.float32: [1e-30, 1e-44]}[dtype]
    scales = torch.tensor([1.0, *tiny, 0.0], dtype=dtype).tolist()  # the values the optimizer actually receives
    parameter = nn.Parameter(torch.ones(4, dtype=dtype))
    pattern = [[1 + 0.3 * t, (-1) ** t * (1 + t), 1.0, 1.0] for t in range(1, 7)]
    log_values = [-1e4 - 2.5 * t for t in range(1, 7)]

    def value_and_grad(t):
        return log_values[t - 1], torch.tensor([p * s for p, s in zip(pattern[t - 1], scales)], dtype=dtype)

    def true_gradient(t, w):
        received = value_and_grad(t)[1].tolist()
        return [mpmath.exp(log_values[t - 1]) * mpmath.mpf(g) for g in received]

    optimizer = LogAdam([parameter], lr=0.1, eps=0.0)
    path = log_adam_path(optimizer, parameter, 6, value_and_grad)
    expected = exact_adam([1.0] * 4, true_gradient, lr=0.1, betas=(0.9, 0.999), eps=0.0, steps=6)
    assert torch.isfinite(path).all() and path.abs().max() < 1.0  # the sane bound: Adam moves ≤ 7.3 lr a step
    tolerance = 1e-12 if dtype == torch.float64 else 1e-7
    assert torch.allclose(path, expected, rtol=0, atol=tolerance)
    assert bool((path[:, :3].abs() > 0.05).all()) and bool((path[:, 3] == 0).all())


def test_log_adam_loss_decay_rate_deep_in_the_terminal_phase_is_half_log_beta2():
    # With ε = 0 and a steady gradient direction, √v remembers old, larger gradients: once ℒ falls faster than
    # √β₂ per step, the steps shrink until log ℒ falls by exactly ½|log β₂| a step (torch.optim.Adam does the
    # same while ℒ is representable: 0.005014 a step for β₂ = 0.99 from log ℒ = −10). Here from log ℒ = −10⁴;
    # the old frame stood still there (rate 0).
    X = torch.tensor(TWO_POINTS, dtype=torch.float64)
    parameter = nn.Parameter(torch.tensor([4000.0, 3000.0], dtype=torch.float64))  # margins 10⁴, 9000
    optimizer = LogAdam([parameter], lr=0.5, betas=(0.5, 0.9), eps=0.0)
    values = []
    for _ in range(600):
        value = log_loss((X @ parameter)[:, None], torch.tensor([1, 1]), "exponential")
        optimizer.zero_grad()
        value.backward()
        optimizer.step(log_loss=float(value.detach()))
        values.append(float(value.detach()))
    assert values[0] == pytest.approx(-9000, abs=1e-6)
    assert (values[-201] - values[-1]) / 200 == pytest.approx(-0.5 * math.log(0.9), rel=1e-2)


@pytest.mark.parametrize(
    "name,options,lr,steps,p",
    [
        ("normalized-gd", {}, 5.0, 300, 2),
        ("loss-based", {}, 1.0, 60, 2),
        ("dual-accelerated", {}, 1.0, 300, 2),
        ("sign", {"normalize": True}, 2.0, 300, math.inf),
        ("coordinate", {"normalize": True}, 5.0, 300, 1),
        # Adam's log ℒ can fall by at most ½|log β₂| a step here (test above): 0.69 for β₂ = ¼, 0.0005 for 0.999
        ("adam", {"eps": 0.0, "betas": (0.3, 0.25)}, 5.0, 1000, math.inf),
    ],
)
def test_terminal_phase_progress_toward_each_optimizers_max_margin_direction(name, options, lr, steps, p):
    # From a perturbed direction scaled to q_min = 800 (log ℒ ≈ −797, ℒ ≈ 1e−346): the loss keeps falling, ‖θ‖
    # grows, and the normalized margin in the optimizer's own norm closes most of its gap to the max margin γ*_p
    # (ℓ2: the SVM; ℓ∞: sign descent and Adam without ε; ℓ1: coordinate descent).
    data = load("linear-separable", n=20, dim=3, margin=0.5, seed=0)
    best = {
        2: hard_margin_svm(data.X, data.y).margin,
        math.inf: linf_max_margin(data.X, data.y).margin,
        1: l1_max_margin(data.X, data.y).margin,
    }[p]
    model = build("linear:bias=false", data.input_shape, 2).double()
    direction = data.info["w_star"] + 0.15
    with torch.no_grad():
        model.head.weight.copy_(800 / float((margins_of(direction, data)).min()) * direction[None])

    def gap():
        return 1 - normalized_margin(model, data.X, data.y, p=p, degree=1) / best

    gap_before, norm_before = gap(), float(model.head.weight.detach().norm())
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer=name,
        optimizer_options=options,
        steps=steps,
        lr=lr,
        reduction="sum",
        log_points=5,
        progress=False,
    )
    log_values = history.column("log_loss")[1]
    assert -800 < log_values[0] < -709
    assert log_values[-1] < log_values[0] - 100
    assert float(model.head.weight.detach().norm()) > norm_before
    assert gap_before > 0.3 and gap() < gap_before / 4


def margins_of(direction, data):
    return data.X @ direction * (2.0 * data.y - 1)


@pytest.mark.parametrize(
    "name,options",
    [
        ("gd", {}),
        ("sgd", {"momentum": 0.9}),
        ("adam", {"eps": 1e-8}),
        ("sign", {}),
        ("coordinate", {}),
    ],
)
def test_true_gradient_steps_at_log_loss_minus_ten_thousand_do_not_move(name, options):
    # These step on ℒ itself: g = ℒ ∇log ℒ with ℒ ≈ e^{−10⁴}, and Adam with ε > 0 moves by ≈ lr |g|/ε. The exact
    # displacement is below 1e−4000, so the float64 iterate must come back unchanged, and finite.
    data = load("linear-separable", n=50, dim=4, margin=0.5, seed=2)
    model = planted_model(data, q_min=1e4)
    before = model.head.weight.detach().clone()
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer=name,
        optimizer_options=options,
        steps=30,
        lr=0.1,
        log_points=3,
        progress=False,
    )
    assert history.rows[0]["log_loss"] < -9990
    assert torch.equal(model.head.weight, before)


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


@pytest.mark.slow
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
    with pytest.raises(InvalidArgumentError, match=r"betas\[1\] must be > 0.0, got 0.0"):  # log β₂ is needed
        make_optimizer("adam", parameters, lr=0.1, betas=(0.9, 0.0))
    groups = [{"params": [nn.Parameter(torch.zeros(1))]}, {"params": [nn.Parameter(torch.zeros(1))]}]
    with pytest.raises(InvalidArgumentError, match="single parameter group"):
        DualAccelerated(groups, lr=0.1)


def test_log_adam_keeps_its_weight_decay_at_an_exact_mse_fit():
    # W = I fits one-hot targets exactly: ℒ = 0, ∇ℒ = 0, no moments yet — AdamW's step is θ ← (1 − lr·λ)θ.
    from torch import nn

    from implicit_bias.train import fit

    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2, dtype=torch.float64))
    X, y = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    fit(model, (X, y), loss="mse", optimizer="adam", optimizer_options={"weight_decay": 0.1}, lr=0.1, steps=1,
        log_points=1, progress=False)  # fmt: skip
    assert torch.equal(model.weight.detach(), 0.99 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("name", "options"),
    [("gd", {"weight_decay": 1e-3}), ("sgd", {"momentum": 0.9, "weight_decay": 1e-3, "nesterov": True})],
)
def test_named_sgd_matches_torch_for_loop_sgd_bitwise(name, options):
    # make_optimizer picks the fused (foreach) update; it must be the per-parameter loop's arithmetic exactly
    data = load("gaussians", seed=0)
    models = [nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    named = make_optimizer(name, models[0].parameters(), lr=0.1, **options)
    reference = torch.optim.SGD(models[1].parameters(), lr=0.1, foreach=False, **options)
    for _ in range(20):
        for model, optimizer in zip(models, (named, reference)):
            optimizer.zero_grad()
            torch.exp(log_loss(model(data.X.double()), data.y, "cross-entropy")).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))
