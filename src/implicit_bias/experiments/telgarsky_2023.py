"""``telgarsky-2023-low-rotation``: margins of shallow ReLU networks whose inner weights rotate little (Telgarsky 2023).

Two-layer ReLU networks on 2-sparse parity, x ∈ {±1/√d}^d, y = sign(x₁x₂) (d·x₁x₂ = ±1), in three regimes:

(A) near initialization. Φ(x; W) = (1/√m) Σ_j a_j σ(w_jᵀx), a_j = ±1 fixed, w_j ~ N(0, I_d), GD on W with the
    logistic loss. The NTK margin γ_ntk of the initialization is the SVM margin of the tangent features
    ∇_WΦ(x_n; W₀) (:func:`~implicit_bias.metrics.ntk_margin`); Φ is 1-homogeneous in W, and the claim is that GD
    reaches a normalized margin min_n y_nΦ(x_n; W_t)/‖W_t‖ of at least γ_ntk, while γ_ntk itself is Θ(1/d).
(B) norm only. w_j = r_j u_j with the directions u_j fixed at their random initial values and the scales r_j
    trained with a_j: Φ(x) = (1/√m) Σ_j a_j r_j σ(u_jᵀx), a linear predictor c = a ⊙ r/√m on the features
    σ(u_jᵀx), 2-homogeneous in (a, r). GD reaches the largest ℓ1 margin max_{‖c‖₁ ≤ 1} min_n y_n Σ_j c_j σ(u_jᵀx_n)
    available over those directions (a linear program, :func:`~implicit_bias.metrics.l1_max_margin`), which
    approaches the global margin γ_gl = 1/(2√2·√d) of 2-sparse parity as the width grows.
(C) neural-collapse data. Inputs in k tight, well-separated groups (orthonormal centres, a balanced ±1 label per
    group): the samples the near-initialization network needs for a low test error grow with k, not with d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..dynamics.schedule import log_spaced_steps
from ..errors import InvalidArgumentError, NotSeparatedError
from ..losses import log_loss_terms
from ..metrics import l1_max_margin, ntk_margin
from ..report import plot_series
from ..validation import check_scalar
from .analysis import log_log_slope
from .criteria import Criterion
from .registry import Experiment, Outcome, register

PAPER = "Telgarsky (ICLR 2023, arXiv 2208.02789)"

CRITERIA = (
    Criterion(
        "gd_attains_ntk_margin",
        "gd_over_ntk_margin_min",
        ">=",
        1.0,
        f"{PAPER}, §2 near-initialization theorem: GF attains at least the NTK margin of its initialization "
        "(final min_n y_nΦ(x_n; W)/‖W‖ over γ_ntk(W₀), the smallest over the dimensions d).",
        over="each",
    ),
    Criterion(
        "ntk_margin_scales_as_inverse_d",
        "ntk_margin_log_slope",
        "in",
        (-1.25, -0.75),
        f"{PAPER}, 2-sparse parity example: γ_ntk = Θ(1/d) (slope of log γ_ntk against log d, a population claim: on "
        "the seed mean, as one finite-width estimate varies by ±10%; the pilot measured γ_ntk·d ≈ 0.62 at d = 8 and "
        "16, so ±0.25 around −1).",
        over="mean",
    ),
    Criterion(
        "norm_only_reaches_lp_margin",
        "norm_only_over_lp",
        ">=",
        0.8,
        f"{PAPER}, §4 norm-only theorem: with directions fixed, GF reaches the maximal ℓ1 margin over them (final "
        "ℓ1-normalized margin over the LP optimum; the pilot measured 83–87%).",
        over="each",
    ),
    Criterion(
        "lp_margin_below_global",
        "lp_over_global_max",
        "<=",
        1.0 + 1e-9,
        f"{PAPER}, 2-sparse parity example: γ_gl = 1/(2√2·√d) is the global maximum, so no set of directions "
        "beats it (largest LP margin over γ_gl on the full cube; 1e−9 allows the LP's tolerance).",
        over="each",
    ),
    Criterion(
        "lp_margin_approaches_global",
        "lp_gap_ratio",
        "<=",
        0.6,
        f"{PAPER}, §4: as the width grows the directions cover the sphere and the LP margin approaches γ_gl "
        "(gap 1 − LP/γ_gl at the largest width over the gap at the smallest; threshold from the pilot, 0.40–0.50).",
        over="each",
    ),
    Criterion(
        "samples_grow_with_groups",
        "groups_log2_sample_ratio",
        ">=",
        1.0,
        f"{PAPER}, §3 neural-collapse theorem: the sample complexity scales with the number of groups k "
        "(log₂ of the samples needed for the test error target at 4× the groups over the base; ≥ 1: at least "
        "twice as many).",
        over="mean",
    ),
    Criterion(
        "samples_do_not_grow_with_dimension",
        "dimension_log2_sample_ratio",
        "<=",
        0.5,
        f"{PAPER}, §3 neural-collapse theorem: the sample complexity does not depend on the input dimension d "
        "(log₂ of the samples needed at 4× the dimension over the base; a doubling on the grid is 1).",
        over="mean",
    ),
)


@dataclass(frozen=True)
class Telgarsky2023Config:
    # (A) near initialization
    ntk_dims: tuple[int, ...] = (8, 16)
    ntk_samples: int = 512  # training points when 2^d exceeds it (else the full cube)
    ntk_width: int = 128
    ntk_lr: float = 8.0
    ntk_steps: int = 2000
    # (B) norm only
    norm_only_dim: int = 8
    norm_only_width: int = 256
    lp_widths: tuple[int, ...] = (64, 256, 1024, 4096)
    norm_only_lr: float = 10000.0  # normalized GD θ ← θ − η ∇log ℒ/‖θ‖^{2(L−1)}; ‖θ₀‖² ≈ m(1 + d) = 2304
    norm_only_degree: float = 2.0  # L: Φ is 2-homogeneous in (a, r)
    norm_only_steps: int = 2000
    # (C) groups
    group_counts: tuple[int, int] = (4, 16)
    group_dims: tuple[int, int] = (16, 64)
    group_noise: float = 0.05
    group_samples: tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
    group_test_per_group: int = 25
    group_width: int = 64
    group_lr: float = 2.0
    group_steps: int = 300
    target_error: float = 0.05
    log_points: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = CRITERIA


def global_parity_margin(dim: int) -> float:
    """γ_gl = 1/(2√2·√d): the largest ℓ1-normalized margin of a two-layer ReLU network on 2-sparse parity.

    Telgarsky (2023, 2-sparse parity example): the measure putting +1/4 on the directions ±(e₁ + e₂)/√2 and −1/4
    on ±(e₁ − e₂)/√2 gives f(x) = (|x₁ + x₂| − |x₁ − x₂|)/(4√2) = y/(2√2·√d) on every x ∈ {±1/√d}^d.
    """
    check_scalar("dim", dim, int, low=2)
    return 1.0 / (2.0 * math.sqrt(2.0) * math.sqrt(dim))


def sparse_parity(dim: int, samples: int | None = None, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-sparse parity: X ∈ {±1/√d}^{N×d} (float64), labels y = 1 where x₁x₂ > 0 else 0.

    ``samples=None`` gives the whole cube (N = 2^d, in binary order); otherwise N = ``samples`` (a multiple of 4)
    points with each of the four signs of (x₁, x₂) exactly N/4 times and the other coordinates uniform, so both
    labels hold exactly N/2 points.
    """
    check_scalar("dim", dim, int, low=2)
    if samples is None:
        bits = (torch.arange(2**dim)[:, None] >> torch.arange(dim)) & 1
    else:
        check_scalar("samples", samples, int, low=4)
        if samples % 4:
            raise InvalidArgumentError(f"samples must be a multiple of 4 (balanced (x₁, x₂) signs), got {samples}")
        generator = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (samples, dim), generator=generator)
        pattern = torch.arange(samples) % 4
        bits[:, 0], bits[:, 1] = pattern & 1, pattern >> 1
    X = (2.0 * bits.to(torch.float64) - 1.0) / math.sqrt(dim)
    return X, (X[:, 0] * X[:, 1] > 0).long()


class ShallowReLU(nn.Module):
    """Φ(x; W) = (1/√m) Σ_j a_j σ(w_jᵀx): inner weights W (m × d) trained, outer signs a_j = ±1 fixed (a buffer)."""

    def __init__(self, weight: torch.Tensor, signs: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.register_buffer("signs", signs.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight.T) @ self.signs / math.sqrt(len(self.signs))  # (N,)


def _seed(*salt: int) -> int:
    """A seed derived from (experiment seed, part, sizes…), so that every random draw has its own stream."""
    return int(np.random.SeedSequence(list(salt)).generate_state(1)[0])


def _generator(*salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*salt))


def _outputs(X: torch.Tensor, W: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Φ_s(x_n) for S networks at once: X (S, N, d), W (S, m, d), signs (S, m) → (S, N)."""
    hidden = torch.relu(torch.bmm(X, W.transpose(1, 2)))  # (S, N, m)
    return torch.bmm(hidden, signs[:, :, None])[:, :, 0] / math.sqrt(signs.shape[1])


def _log_loss(outputs: torch.Tensor, labels: torch.Tensor, log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """log ℒ_s per network, ℒ_s the mean logistic loss (or Σ_n e^{log_weights} ℓ_n): outputs, labels (S, N) → (S,)."""
    terms = log_loss_terms(outputs.reshape(-1), labels.reshape(-1), "logistic", validate=False).view(outputs.shape)
    if log_weights is None:
        return torch.logsumexp(terms, dim=1) - math.log(outputs.shape[1])
    return torch.logsumexp(terms + log_weights, dim=1)


def _descend(
    parameters: list[torch.Tensor],
    log_loss,
    *,
    steps: int,
    lr: float,
    degree: float | None = None,
    record=None,
    log_points: int = 1,
) -> None:
    """GD θ_s ← θ_s − η∇ℒ_s on every network s at once (each parameter's leading dimension is s); with ``degree`` L
    normalized GD θ_s ← θ_s − η∇log ℒ_s/‖θ_s‖^{2(L−1)} (the ``normalized-gd`` rule of
    :mod:`~implicit_bias.dynamics.optimizers`, per network). ``record(step)`` runs at the
    :func:`~implicit_bias.dynamics.schedule.log_spaced_steps` of ``log_points``."""
    logged = set(log_spaced_steps(steps, log_points))
    for step in range(steps + 1):
        if record is not None and step in logged:
            with torch.no_grad():
                record(step)
        if step == steps:
            return
        value = log_loss()  # (S,): each network's loss depends on its own θ_s only
        gradients = torch.autograd.grad(value.sum() if degree is not None else value.exp().sum(), parameters)
        with torch.no_grad():
            scale = torch.full_like(value, lr)
            if degree is not None and degree != 1:
                squared = sum(p.flatten(1).pow(2).sum(dim=1) for p in parameters)
                scale = lr / squared ** (degree - 1)
            for parameter, gradient in zip(parameters, gradients):
                parameter -= scale.view(-1, *[1] * (parameter.ndim - 1)) * gradient
        if not all(torch.isfinite(p).all() for p in parameters):
            raise FloatingPointError(f"GD diverged at step {step} (lr {lr}): lower the learning rate")


def _signs(count: int, seeds: tuple[int, ...], part: int) -> torch.Tensor:
    """Balanced outer signs a_j = ±1 (half each, in random order), one row per seed."""
    rows = [torch.randperm(count, generator=_generator(seed, part, count)) % 2 for seed in seeds]
    return 2.0 * torch.stack(rows).to(torch.float64) - 1.0


def _near_initialization_at(config: Telgarsky2023Config, d: int) -> tuple[dict[str, list[float]], tuple]:
    """(A) at dimension d: γ_ntk(W₀) and GD's final normalized margin of every seed, trained as one batch."""
    S, m = len(config.seeds), config.ntk_width
    samples = None if 2**d <= config.ntk_samples else config.ntk_samples
    data = [sparse_parity(d, samples, seed=_seed(seed, 1, d)) for seed in config.seeds]
    X = torch.stack([x for x, _ in data])  # (S, N, d)
    labels = torch.stack([y for _, y in data])
    W0 = torch.stack(
        [torch.randn(m, d, generator=_generator(seed, 2, d), dtype=torch.float64) for seed in config.seeds]
    )
    signs = _signs(m, config.seeds, d)
    gamma_ntk = [ntk_margin(ShallowReLU(W0[s], signs[s]), X[s], labels[s]) for s in range(S)]
    W = W0.clone().requires_grad_(True)
    y_pm = 2.0 * labels - 1.0
    history: list[tuple[int, torch.Tensor]] = []

    def record(step: int) -> None:
        q_min = (y_pm * _outputs(X, W, signs)).min(dim=1).values
        history.append((step, q_min / W.flatten(1).norm(dim=1)))

    _descend(
        [W],
        lambda: _log_loss(_outputs(X, W, signs), labels),
        steps=config.ntk_steps,
        lr=config.ntk_lr,
        record=record,
        log_points=config.log_points,
    )
    final = history[-1][1].tolist()
    values = {
        "ntk_margin": gamma_ntk,
        "ntk_margin_times_d": [g * d for g in gamma_ntk],
        "gd_margin": final,
        "gd_over_ntk_margin": [f / g for f, g in zip(final, gamma_ntk)],
        "weight_motion_over_sqrt_m": ((W.detach() - W0).flatten(1).norm(dim=1) / math.sqrt(m)).tolist(),
    }
    return values, ([step for step, _ in history], [float(v[0]) for _, v in history], gamma_ntk[0])


def _near_initialization(config: Telgarsky2023Config) -> tuple[dict[str, list[float]], dict]:
    """(A) at every dimension, with the smallest GD/NTK margin ratio and the slope of log γ_ntk against log d."""
    per_seed: dict[str, list[float]] = {}
    curves = {}
    for d in config.ntk_dims:
        values, curves[d] = _near_initialization_at(config, d)
        per_seed |= {f"{key}_d{d}": value for key, value in values.items()}
    dims, S = list(config.ntk_dims), len(config.seeds)
    per_seed["gd_over_ntk_margin_min"] = [min(per_seed[f"gd_over_ntk_margin_d{d}"][s] for d in dims) for s in range(S)]
    per_seed["ntk_margin_log_slope"] = [
        log_log_slope(dims, [per_seed[f"ntk_margin_d{d}"][s] for d in dims], dims[0], dims[-1]) for s in range(S)
    ]
    return per_seed, curves


def _direction_margin(X: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> float:
    """max_{‖c‖₁ ≤ 1} min_n y_n Σ_j c_j σ(u_jᵀx_n) over the directions u_j = w_j/‖w_j‖ (the LP of
    :func:`~implicit_bias.metrics.l1_max_margin` on the features σ(u_jᵀx_n)); 0 when no combination separates the
    data (the maximum is then ≤ 0)."""
    try:
        return l1_max_margin(torch.relu(X @ (weights / weights.norm(dim=1, keepdim=True)).T), labels).margin
    except NotSeparatedError:
        return 0.0


def _norm_only(config: Telgarsky2023Config) -> tuple[dict[str, list[float]], dict]:
    """(B): LP margins over nested random directions at each width, and normalized GD on the scales (a, r)."""
    d, m = config.norm_only_dim, config.norm_only_width
    X, labels = sparse_parity(d)
    y_pm = 2.0 * labels - 1.0
    widths = sorted({*config.lp_widths, m})
    per_seed: dict[str, list[float]] = {}
    directions, lp = [], []
    gamma_gl = global_parity_margin(d)
    for seed in config.seeds:
        W0 = torch.randn(widths[-1], d, generator=_generator(seed, 3, d), dtype=torch.float64)
        directions.append(W0)
        margins = {w: _direction_margin(X, labels, W0[:w]) for w in widths}
        lp.append(margins[m])
        for w in config.lp_widths:
            per_seed.setdefault(f"lp_over_global_m{w}", []).append(margins[w] / gamma_gl)
        ratios = [margins[w] / gamma_gl for w in config.lp_widths]
        per_seed.setdefault("lp_over_global_max", []).append(max(ratios))
        per_seed.setdefault("lp_gap_ratio", []).append((1 - ratios[-1]) / (1 - ratios[0]))
    W0 = torch.stack([w[:m] for w in directions])  # (S, m, d): the training width's directions and scales
    scales = W0.norm(dim=2)
    features = torch.relu(torch.einsum("nd,sjd->snj", X, W0 / scales[:, :, None]))  # σ(u_jᵀx_n), (S, N, m)
    a = _signs(m, config.seeds, 4).requires_grad_(True)
    r = scales.clone().requires_grad_(True)
    targets = labels.expand(len(config.seeds), -1)
    history: list[tuple[int, torch.Tensor]] = []

    def outputs() -> torch.Tensor:
        return torch.bmm(features, (a * r)[:, :, None])[:, :, 0] / math.sqrt(m)

    def record(step: int) -> None:
        q_min = (y_pm * outputs()).min(dim=1).values
        history.append((step, q_min / ((a * r).abs().sum(dim=1) / math.sqrt(m))))

    _descend(
        [a, r],
        lambda: _log_loss(outputs(), targets),
        steps=config.norm_only_steps,
        lr=config.norm_only_lr,
        degree=config.norm_only_degree,
        record=record,
        log_points=config.log_points,
    )
    final = history[-1][1]

    def over_lp(margins: torch.Tensor) -> list[float]:
        return [float(g) / best if best > 0 else math.nan for g, best in zip(margins, lp)]

    per_seed["lp_margin"] = lp
    per_seed["norm_only_over_lp"] = over_lp(final)
    per_seed["norm_only_over_global"] = (final / gamma_gl).tolist()
    per_seed["norm_only_min_scale"] = r.detach().min(dim=1).values.tolist()
    return per_seed, {"steps": [s for s, _ in history], "ratios": [over_lp(v) for _, v in history]}


def _groups_data(k: int, d: int, n: int, seed: int, *, base_dim: int, noise: float, test_per_group: int) -> tuple:
    """k orthonormal centres in the first ``base_dim`` coordinates of ℝ^d (the same centres at every d ≥ base_dim:
    a rotation of random orthonormal centres in ℝ^d, which the Gaussian initialization cannot tell apart), balanced
    ±1 labels per group; n training points in i.i.d. uniform groups (the draws depend on (seed, k, n) only) and
    ``test_per_group`` test points per group; x = (μ + noise·z/√d)/‖·‖, z ~ N(0, I_d)."""
    if k > base_dim:
        raise InvalidArgumentError(
            f"group_counts must not exceed group_dims[0] (orthonormal centres), got k={k}, d={base_dim}"
        )
    basis = torch.linalg.qr(torch.randn(base_dim, k, generator=_generator(seed, 5, k), dtype=torch.float64))[0].T
    centres = torch.cat([basis, torch.zeros(k, d - base_dim, dtype=torch.float64)], dim=1)
    group_labels = (torch.randperm(k, generator=_generator(seed, 6, k)) % 2).long()
    train_groups = torch.randint(0, k, (n,), generator=_generator(seed, 7, k, n))
    test_groups = torch.arange(k).repeat_interleave(test_per_group)
    noise_generator = _generator(seed, 8, k, d, n)

    def points(groups: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(groups), d, generator=noise_generator, dtype=torch.float64)
        x = centres[groups] + noise * z / math.sqrt(d)
        return x / x.norm(dim=1, keepdim=True)

    return points(train_groups), group_labels[train_groups], points(test_groups), group_labels[test_groups]


def _groups_setting(config: Telgarsky2023Config, k: int, d: int) -> torch.Tensor:
    """(C) at k groups in ℝ^d: the test error of every (seed, sample size), shape (seeds, sizes); all trained as one
    batch, the padded samples of the smaller sizes with zero weight."""
    grid, m, d_base, d_max = config.group_samples, config.group_width, config.group_dims[0], max(config.group_dims)
    batches = [(seed, n) for seed in config.seeds for n in grid]
    X = torch.zeros(len(batches), max(grid), d, dtype=torch.float64)
    labels = torch.zeros(len(batches), max(grid), dtype=torch.long)
    log_weights = torch.full((len(batches), max(grid)), -math.inf, dtype=torch.float64)
    tests = []
    for b, (seed, n) in enumerate(batches):
        x, y, x_test, y_test = _groups_data(
            k, d, n, seed, base_dim=d_base, noise=config.group_noise, test_per_group=config.group_test_per_group
        )
        X[b, :n], labels[b, :n], log_weights[b, :n] = x, y, -math.log(n)
        tests.append((x_test, y_test))
    # one draw of m × max(d) weights per seed, its first d columns at dimension d: the base network is a slice of
    # the wider one, so the dimension comparison shares the initialization's guesses on unseen groups
    W = torch.stack(
        [torch.randn(m, d_max, generator=_generator(seed, 9), dtype=torch.float64)[:, :d] for seed, _ in batches]
    )
    W.requires_grad_(True)
    signs = _signs(m, tuple(seed for seed, _ in batches), 10)  # per seed, the same at every (k, d)
    _descend(
        [W],
        lambda: _log_loss(_outputs(X, W, signs), labels, log_weights),
        steps=config.group_steps,
        lr=config.group_lr,
        log_points=1,
    )
    X_test, y_test = torch.stack([x for x, _ in tests]), torch.stack([y for _, y in tests])
    with torch.no_grad():
        wrong = (_outputs(X_test, W, signs) > 0).long() != y_test
    return wrong.double().mean(dim=1).view(len(config.seeds), len(grid))


def _groups(config: Telgarsky2023Config) -> tuple[dict[str, list[float]], dict]:
    """(C): the samples needed for the target test error at (k, d), (4k, d) and (k, 4d), and their log₂ ratios."""
    (k1, k2), (d1, d2) = config.group_counts, config.group_dims
    per_seed: dict[str, list[float]] = {}
    curves = {}
    for name, (k, d) in {"base": (k1, d1), "groups": (k2, d1), "dimension": (k1, d2)}.items():
        errors = _groups_setting(config, k, d)
        needed = []
        for row in errors.tolist():
            reached = [n for n, error in zip(config.group_samples, row) if error <= config.target_error]
            needed.append(reached[0] if reached else math.inf)
        per_seed[f"samples_needed_{name}"] = needed
        curves[name] = (list(config.group_samples), errors.mean(dim=0).tolist(), k, d)
    for name in ("groups", "dimension"):
        per_seed[f"{name}_log2_sample_ratio"] = [
            math.log2(a / b) for a, b in zip(per_seed[f"samples_needed_{name}"], per_seed["samples_needed_base"])
        ]
    return per_seed, curves


def run_telgarsky_2023(config: Telgarsky2023Config, folder: Path, progress: bool) -> Outcome:
    ntk, ntk_curves = _near_initialization(config)
    norm_only, norm_curves = _norm_only(config)
    groups, group_curves = _groups(config)
    per_seed = ntk | norm_only | groups
    why = {
        key: f"the test error never reached {config.target_error} on the sample grid {list(config.group_samples)}"
        for key in groups
    }
    why["norm_only_over_lp"] = (
        f"no combination of the {config.norm_only_width} fixed directions separates the data (LP margin ≤ 0)"
    )
    unmeasured = {}
    for key, reason in why.items():  # a quantity some seed could not measure is reported with the reason
        missing = [seed for seed, value in zip(config.seeds, per_seed[key]) if not math.isfinite(value)]
        if missing:
            unmeasured[key] = f"{reason} for seed(s) {', '.join(map(str, missing))}"
            del per_seed[key]
    _plot(
        config,
        folder,
        ntk_curves,
        norm_curves,
        group_curves,
        {w: per_seed[f"lp_over_global_m{w}"] for w in config.lp_widths},
    )
    d_b = config.norm_only_dim
    numbers: dict[str, float | int | bool] = {"seeds": len(config.seeds), "global_margin": global_parity_margin(d_b)}
    notes = (
        "Conventions are ours (the paper's theorem numbers and constants are not checked here). "
        f"**(A)** Φ = (1/√m)Σ_j a_jσ(w_jᵀx), a_j = ±1 fixed and balanced, w_j ~ N(0, I), width {config.ntk_width}, "
        f"d ∈ {list(config.ntk_dims)}: the full cube when 2^d ≤ {config.ntk_samples}, else {config.ntk_samples} "
        f"balanced points (fewer constraints than the cube, so a sampled γ_ntk is at most slightly inflated); plain "
        f"GD (lr {config.ntk_lr}, {config.ntk_steps} steps) on the mean logistic loss. γ_ntk = metrics.ntk_margin, "
        "the SVM margin of the tangent features ∇_WΦ(x_n; W₀); GD's margin is min_n y_nΦ(x_n; W)/‖W‖ (Φ is "
        "1-homogeneous in W, so it never exceeds the NTK margin of the current W). ‖W − W₀‖/√m is reported "
        "(weight_motion_over_sqrt_m): the weights move O(√m), the paper's near-initialization range, far beyond "
        f"the NTK's O(1). **(B)** d = {d_b} on the full cube (the LP's training margin is the population margin). "
        "w_j = r_j u_j with the directions u_j = w_j/‖w_j‖ of the initialization fixed and r_j = ‖w_j‖, a_j "
        f"trained at width {config.norm_only_width} by normalized GD θ ← θ − η∇log ℒ/‖θ‖^{{2(L−1)}} (L = "
        f"{config.norm_only_degree:g}, η = {config.norm_only_lr:g}, {config.norm_only_steps} steps), which follows "
        "gradient flow of the 2-homogeneous Φ; its margin is min_n y_nΦ(x_n)/‖a ⊙ r/√m‖₁, and the scales stay "
        "positive (norm_only_min_scale), so Φ = Σ a_jσ(r_ju_jᵀx)/√m throughout. The LP margins use the first m of "
        f"one draw of {max(config.lp_widths)} directions per seed (nested, so they cannot decrease with m); "
        f"γ_gl = 1/(2√2·√{d_b}) = {numbers['global_margin']:.5f}. **(C)** k ∈ {list(config.group_counts)} "
        f"orthonormal centres, d ∈ {list(config.group_dims)}, noise {config.group_noise}, the (A) network at width "
        f"{config.group_width}, GD lr {config.group_lr}, {config.group_steps} steps; samples needed = the smallest "
        f"n of {list(config.group_samples)} with test error ≤ {config.target_error}. A group without a training "
        "point is labelled by the initialization's guess, so single seeds can be lucky at tiny n; the same seed "
        "uses the same group draws and the same initial weights (the d-dimensional slice of one draw) at both "
        "dimensions, so the dimension ratio isolates d. Pilot: γ_ntk·d ≈ 0.62 (d = 8, 16) and the norm-only run at "
        f"83–87% of the LP set the thresholds. Seeds {list(config.seeds)}; figures show seed {config.seeds[0]} "
        "(near initialization), every seed (B) or the seed mean (C)."
    )
    return Outcome(
        numbers=numbers,
        figures=["near_initialization.png", "norm_only.png", "lp_width.png", "groups.png"],
        notes=notes,
        unmeasured=unmeasured,
        per_seed=per_seed,
    )


def _plot(
    config: Telgarsky2023Config, folder: Path, ntk_curves: dict, norm_curves: dict, group_curves: dict, lp: dict
) -> None:
    series = {}
    for d, (steps, margins, gamma_ntk) in ntk_curves.items():
        series[f"GD min yΦ/‖W‖, d = {d}"] = (steps, margins)
        series[f"γ_ntk(W₀), d = {d}"] = (steps, [gamma_ntk] * len(steps))
    plot_series(
        folder / "near_initialization.png",
        series,
        title=f"(A) Near initialization, width {config.ntk_width}, seed {config.seeds[0]}",
        ylabel="normalized margin",
    )
    plot_series(
        folder / "norm_only.png",
        {
            f"seed {seed}": (norm_curves["steps"], [r[s] for r in norm_curves["ratios"]])
            for s, seed in enumerate(config.seeds)
        },
        title=f"(B) Norm-only GD, width {config.norm_only_width}: ℓ1 margin over the LP optimum",
        ylabel="margin / LP margin",
    )
    widths = list(config.lp_widths)
    plot_series(
        folder / "lp_width.png",
        {f"seed {seed}": (widths, [lp[w][s] for w in widths]) for s, seed in enumerate(config.seeds)},
        title=f"(B) LP margin over random directions / γ_gl, d = {config.norm_only_dim}",
        xlabel="width m",
        ylabel="LP margin / γ_gl",
    )
    plot_series(
        folder / "groups.png",
        {f"k = {k}, d = {d}": (n, errors) for n, errors, k, d in group_curves.values()},
        title="(C) Well-separated groups: test error against samples (seed mean)",
        xlabel="training samples n",
        ylabel="test error",
    )


register(
    Experiment(
        name="telgarsky-2023-low-rotation",
        claim="On 2-sparse parity, GD near initialization attains at least the NTK margin (Θ(1/d)); with inner "
        "directions fixed, GD reaches the LP-optimal ℓ1 margin over them, which approaches the global margin "
        "1/(2√2√d) as the width grows; on k well-separated groups the samples needed scale with k, not d "
        "(Telgarsky 2023).",
        quick=Telgarsky2023Config(),
        full=Telgarsky2023Config(
            ntk_dims=(8, 16, 32),
            ntk_samples=2048,
            ntk_steps=4000,
            lp_widths=(64, 256, 1024, 4096, 16384),
            norm_only_steps=10000,
            group_counts=(4, 16),
            group_dims=(16, 64),
            group_steps=600,
            log_points=60,
            seeds=(0, 1, 2, 3, 4),
        ),
        runner=run_telgarsky_2023,
        key_number="gd_over_ntk_margin_min_mean",
        reference="Telgarsky, M. (2023). Feature selection and low test error in shallow low-rotation ReLU "
        "networks. ICLR; arXiv 2208.02789.",
    )
)
