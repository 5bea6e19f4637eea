"""``garrod-keating-2024``: deep neural collapse persists in the cross-entropy deep linear UFM although a lower-rank
structure beats it (Garrod & Keating 2024).

The model (:class:`~implicit_bias.dufm.DUFM` with ``loss="cross-entropy"``, ``activation="linear"``): logits
Z = W_L ⋯ W₁ H₁, objective (1/N)Σ_i CE(z_i, y_i) + (λ/2)(‖H₁‖²_F + Σ_l ‖W_l‖²_F), K classes, n per class. Garrod
& Keating claim that for K ≥ 6 and L = 2 (or K ≥ 4, L ≥ 3) DNC — class means a simplex ETF at every layer, logits
of rank K − 1 — is not a global minimum: a lower-rank structure has a lower loss; that DNC critical points have no
negative Hessian eigenvalue for small λ; and that GD nevertheless finds DNC more often as the width d grows and as
λ falls, because the DNC solution set is more degenerate. Their Fig. 1–2 setting: L = 2, d = 70, λ = 2⁻¹⁰, K = 10,
n = 5, GD with lr 0.5, 10 runs.

Measured here: L_DNC at its optimal scale (:func:`~implicit_bias.dufm.dnc_loss`, closed form up to a scalar
search) against the lowest loss GD reaches at a low-rank point; P(DNC) over seeds against d and against λ; the
Hessian spectrum (negative eigenvalues, nullity) at the DNC point and at a GD-found low-rank point after a Newton
polish, with the nullity the O(d)^L rotation symmetry predicts (:func:`~implicit_bias.dufm.rotation_nullity`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dufm import DUFM, dnc_loss, hessian_spectrum, newton_polish, rotation_nullity, set_dnc_point, train_dufm
from ..errors import InvalidArgumentError
from ..metrics.spectra import numerical_rank
from ..report import plot_series
from ..train.loop import resolve_device
from .analysis import key_part, order_violations
from .criteria import Criterion
from .registry import Experiment, Outcome, register

PAPER = "Garrod & Keating (2024, arXiv 2410.23169)"
LABELS = {"dnc": "DNC point", "low_rank": "low-rank point (GD, Newton-polished)"}
NULL_TOL = 1e-8  # |μ| ≤ NULL_TOL·max|μ| counts as zero; the pilot's gap: 1e−16 … 5e−13 below, ≥ λ/20 above

CRITERIA = (
    Criterion(
        "low_rank_beats_dnc",
        "low_rank_over_dnc",
        "<",
        1.0,
        f"{PAPER}, global-minimum analysis of the deep linear UFM: for K ≥ 6, L = 2 deep neural collapse is not a global minimum — a lower-rank "
        "structure has a lower loss (lowest loss GD reached at a low-rank point over L_DNC at its optimal scale).",
    ),
    Criterion(
        "dnc_found_more_often_when_wider",
        "p_dnc_width_rise",
        ">",
        0.0,
        f"{PAPER}, UFM experiments (their Fig. 1–2 setting): the fraction of GD runs ending at DNC grows with the width d (P(DNC) at the largest d "
        "minus at the smallest).",
    ),
    Criterion(
        "dnc_found_more_often_at_smaller_lambda",
        "p_dnc_lambda_rise",
        ">",
        0.0,
        f"{PAPER}, UFM experiments: the fraction of GD runs ending at DNC grows as λ falls (P(DNC) at the smallest λ minus "
        "at the largest, width d of the paper).",
    ),
    Criterion(
        "dnc_hessian_has_no_negative_eigenvalue",
        "dnc_min_eigenvalue_relative",
        ">=",
        -NULL_TOL,
        f"{PAPER}, loss-surface analysis: DNC critical points have a positive semi-definite Hessian for small λ (min over the Hessian "
        "widths of μ_min/max|μ|; −1e−8 is the null threshold).",
    ),
    Criterion(
        "low_rank_hessian_has_no_negative_eigenvalue",
        "low_rank_min_eigenvalue_relative",
        ">=",
        -NULL_TOL,
        f"{PAPER}, loss-surface analysis: the low-rank point GD finds is a minimum too (min over the Hessian widths of μ_min/max|μ|).",
    ),
    Criterion(
        "dnc_more_degenerate",
        "nullity_ratio_min",
        ">",
        1.0,
        f"{PAPER}, abstract: DNC is more prevalent in the landscape than other critical configurations — more degenerate (Hessian "
        "nullity at DNC over that at the low-rank point, smallest over the Hessian widths).",
    ),
)


@dataclass(frozen=True)
class GarrodKeatingConfig:
    num_classes: int = 10
    per_class: int = 5
    depth: int = 2
    width: int = 70  # the paper's d: the λ sweep runs here
    weight_decay: float = 2**-10  # the paper's λ (every term): the width sweep runs here
    lr: float = 0.5
    steps: int = 60_000  # at weight_decay; a run at λ takes steps·weight_decay/λ (GD's late rate is ∝ λ)
    widths: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70)
    weight_decays: tuple[float, ...] = (2**-8, 2**-10, 2**-12)
    seeds: int = 10
    init_scale: float = 1.0  # entries of H₁ and every W_l ~ N(0, init_scale²)
    small_init_control: bool = True  # also run width d from N(0, 1/d): the init scale decides
    hessian_widths: tuple[int, ...] = (10, 20, 30)  # ⊂ widths: the low-rank point is one of those runs
    rank_tol: float = 1e-3  # rank of the K×K class-mean logits: #{σ_i > tol σ_1}
    dnc_tol: float = 1e-4  # a run is at DNC when its rank is K − 1 and |ℒ/L_DNC − 1| ≤ dnc_tol
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = CRITERIA

    def __post_init__(self) -> None:
        missing = sorted({self.width, *self.hessian_widths} - set(self.widths))
        if missing:
            raise InvalidArgumentError(
                f"width and hessian_widths must be among widths {list(self.widths)} (their runs are reused), "
                f"got {missing} outside"
            )
        if min(self.widths) < self.num_classes:
            raise InvalidArgumentError(f"every width must be ≥ K = {self.num_classes}, got {min(self.widths)}")


@dataclass(frozen=True)
class Runs:
    """The members of one batched GD run: final losses, logit ranks, and the trained batch."""

    model: DUFM
    losses: list[float]
    ranks: list[int]
    l_dnc: float

    def at_dnc(self, config: GarrodKeatingConfig) -> list[bool]:
        return [
            rank == config.num_classes - 1 and abs(loss / self.l_dnc - 1) <= config.dnc_tol
            for loss, rank in zip(self.losses, self.ranks)
        ]

    def low_rank(self, config: GarrodKeatingConfig) -> list[bool]:
        return [rank < config.num_classes - 1 for rank in self.ranks]


def _logit_ranks(model: DUFM, tol: float) -> list[int]:
    """Rank of each member's K×K class-mean logit matrix (one entry for an unbatched model)."""
    with torch.no_grad():
        output = model.activations().output
        means = output.reshape(-1, model.num_classes, model.num_classes, model.per_class).mean(-1)
    return [numerical_rank(m, tol) for m in means.cpu()]


def _train(config: GarrodKeatingConfig, width: int, weight_decay: float, init_scale: float) -> Runs:
    model = DUFM(config.num_classes, config.per_class, depth=config.depth, width=width, lambdas=weight_decay,
                 init_scale=init_scale, loss="cross-entropy", activation="linear",
                 seed=list(range(config.seeds))).to(resolve_device(config.device))  # fmt: skip
    steps = round(config.steps * config.weight_decay / weight_decay)
    train_dufm(model, steps=steps, lr=config.lr, log_every=max(1, steps // 10))
    losses = [float(v) for v in model.member_losses().detach().cpu()]
    return Runs(model, losses, _logit_ranks(model, config.rank_tol), dnc_loss(model).loss)


def _hessian_numbers(config: GarrodKeatingConfig, width: int, runs: Runs) -> tuple[dict[str, float | int], dict]:
    """Spectra at the DNC point and at the lowest-loss low-rank member of ``runs`` (Newton-polished), width d."""
    dnc = DUFM(config.num_classes, config.per_class, depth=config.depth, width=width, lambdas=config.weight_decay,
               loss="cross-entropy", activation="linear")  # fmt: skip
    set_dnc_point(dnc)
    spectra = {"dnc": hessian_spectrum(dnc, tol=NULL_TOL)}
    numbers: dict[str, float | int] = {}
    low = [(loss, i) for i, (loss, flag) in enumerate(zip(runs.losses, runs.low_rank(config))) if flag]
    if low:
        point = runs.model.member(min(low)[1]).cpu()
        numbers[f"low_rank_polished_gradient_d{width}"] = newton_polish(point, iterations=3, tol=NULL_TOL)
        numbers[f"low_rank_rank_d{width}"] = _logit_ranks(point, config.rank_tol)[0]
        numbers[f"low_rank_loss_over_dnc_d{width}"] = float(point.loss().detach()) / runs.l_dnc
        spectra["low_rank"] = hessian_spectrum(point, tol=NULL_TOL)
    ranks = {"dnc": config.num_classes - 1, "low_rank": numbers.get(f"low_rank_rank_d{width}")}
    for name, spectrum in spectra.items():
        numbers[f"{name}_nullity_d{width}"] = spectrum.nullity
        numbers[f"{name}_symmetry_nullity_d{width}"] = rotation_nullity(width, config.depth, ranks[name])
        numbers[f"{name}_min_eigenvalue_relative_d{width}"] = spectrum.min_relative
        numbers[f"{name}_smallest_nonzero_eigenvalue_d{width}"] = spectrum.smallest_nonzero
        numbers[f"{name}_parameters_d{width}"] = len(spectrum.eigenvalues)
    if "low_rank" in spectra:
        numbers[f"nullity_ratio_d{width}"] = spectra["dnc"].nullity / spectra["low_rank"].nullity
    return numbers, spectra


def run_garrod_keating_2024(config: GarrodKeatingConfig, folder: Path, progress: bool) -> Outcome:
    K = config.num_classes
    runs: dict[tuple[int, float], Runs] = {}
    for width in config.widths:
        runs[width, config.weight_decay] = _train(config, width, config.weight_decay, config.init_scale)
    for weight_decay in config.weight_decays:
        if (config.width, weight_decay) not in runs:
            runs[config.width, weight_decay] = _train(config, config.width, weight_decay, config.init_scale)
    numbers: dict[str, float | int | bool] = {}
    p_width = [float(np.mean(runs[d, config.weight_decay].at_dnc(config))) for d in config.widths]
    p_lambda = [float(np.mean(runs[config.width, lam].at_dnc(config))) for lam in config.weight_decays]
    for d, p in zip(config.widths, p_width):
        found = runs[d, config.weight_decay]
        numbers[f"p_dnc_d{d}"] = p
        numbers[f"p_low_rank_d{d}"] = float(np.mean(found.low_rank(config)))
        numbers[f"logit_rank_mean_d{d}"] = float(np.mean(found.ranks))
    for lam, p in zip(config.weight_decays, p_lambda):
        numbers[f"p_dnc_lambda_{key_part(lam)}"] = p
        numbers[f"l_dnc_lambda_{key_part(lam)}"] = runs[config.width, lam].l_dnc
    by_width = sorted(zip(config.widths, p_width))
    by_lambda = sorted(zip(config.weight_decays, p_lambda))
    numbers["p_dnc_width_rise"] = by_width[-1][1] - by_width[0][1]
    numbers["p_dnc_width_decreases"] = order_violations([p for _, p in by_width], strict=False)
    numbers["p_dnc_lambda_rise"] = by_lambda[0][1] - by_lambda[-1][1]

    # the lowest loss reached at a low-rank point, any width, at the paper's λ
    low_points = [(loss, rank) for d in config.widths for loss, rank, flag in
                  zip(runs[d, config.weight_decay].losses, runs[d, config.weight_decay].ranks,
                      runs[d, config.weight_decay].low_rank(config)) if flag]  # fmt: skip
    l_dnc = runs[config.widths[0], config.weight_decay].l_dnc
    numbers["l_dnc"] = l_dnc
    unmeasured: dict[str, str] = {}
    if low_points:
        best_loss, best_rank = min(low_points)
        numbers.update(l_low_rank=best_loss, low_rank_logit_rank=best_rank, low_rank_over_dnc=best_loss / l_dnc)
    else:
        unmeasured["low_rank_over_dnc"] = "no GD run ended at a logit rank below K − 1"

    paper = runs[config.width, config.weight_decay]
    per_seed = {"loss_over_dnc": [loss / l_dnc for loss in paper.losses], "logit_rank": list(map(float, paper.ranks))}
    if config.small_init_control:
        control = _train(config, config.width, config.weight_decay, 1 / math.sqrt(config.width))
        numbers["control_p_dnc"] = float(np.mean(control.at_dnc(config)))
        numbers["control_logit_rank_mean"] = float(np.mean(control.ranks))
        numbers["control_loss_over_dnc_mean"] = float(np.mean(control.losses)) / l_dnc

    spectra_at: dict[int, dict] = {}
    for width in config.hessian_widths:
        found, spectra_at[width] = _hessian_numbers(config, width, runs[width, config.weight_decay])
        numbers.update(found)
    for name in ("dnc", "low_rank"):
        values = [numbers[k] for d in config.hessian_widths if (k := f"{name}_min_eigenvalue_relative_d{d}") in numbers]
        if values:
            numbers[f"{name}_min_eigenvalue_relative"] = min(values)
        else:
            unmeasured[f"{name}_min_eigenvalue_relative"] = "no low-rank run at any Hessian width"
    ratios = [numbers[k] for d in config.hessian_widths if (k := f"nullity_ratio_d{d}") in numbers]
    if ratios:
        numbers["nullity_ratio_min"] = min(ratios)
    else:
        unmeasured["nullity_ratio_min"] = "no low-rank run at any Hessian width"

    pairs = [(numbers[f"{name}_nullity_d{d}"], numbers[f"{name}_symmetry_nullity_d{d}"])
             for d in config.hessian_widths for name in ("dnc", "low_rank") if f"{name}_nullity_d{d}" in numbers]  # fmt: skip
    numbers["nullity_minus_symmetry_count_max"] = max(abs(a - b) for a, b in pairs)
    figures = _figures(config, folder, p_width, p_lambda, numbers, spectra_at)
    notes = (
        f"Cross-entropy deep **linear** UFM, L = {config.depth}, K = {K}, n = {config.per_class}, every λ equal "
        f"(objective: mean CE + (λ/2)(‖H₁‖² + Σ‖W_l‖²), the H₁ term not divided by N); entries of H₁ and W_l "
        f"initialized N(0, {config.init_scale:g}²); full-batch GD in float64, lr {config.lr}, {config.steps} steps "
        f"at λ = {_lam(config.weight_decay)} and steps·{_lam(config.weight_decay)}/λ at other λ (GD's late "
        f"convergence rate is ∝ λ); {config.seeds} seeds per point, run as one batch. Width sweep d ∈ "
        f"{list(config.widths)} at λ = {_lam(config.weight_decay)}; λ sweep "
        f"{', '.join(map(_lam, config.weight_decays))} at d = {config.width}. A run is at DNC when its K×K "
        f"class-mean logits have rank K − 1 (σ_i > {config.rank_tol:g}σ₁) and its loss is within "
        f"{config.dnc_tol:g} (relative) of L_DNC, the ETF point at its optimal scale (closed form up to a scalar "
        "search); low rank when the rank is below K − 1 (GD also ends at intermediate ranks: the per-seed ranks "
        "at the paper's setting are in the numbers). The low-rank loss is the lowest final loss of a low-rank run "
        "at the paper's λ over all widths (a structure's loss does not depend on d ≥ its rank). **The "
        "initialization scale decides what GD finds**: "
        + (
            f"from N(0, 1/d) at d = {config.width} the fraction at DNC is {numbers['control_p_dnc']:.2f} (mean logit "
            f"rank {numbers['control_logit_rank_mean']:.1f}) against {numbers[f'p_dnc_d{config.width}']:.2f} from "
            f"N(0, {config.init_scale:g}²). "
            if config.small_init_control
            else "this preset does not run the N(0, 1/d) control (the full preset does). "
        )
        + f"Hessian by autograd (null: |μ| ≤ {NULL_TOL:g}·max|μ|) at d ∈ {list(config.hessian_widths)}, at the DNC "
        "point and at a GD-found low-rank point after a Newton polish (steps on the non-null eigenvectors). The "
        "O(d)^L rotation symmetry predicts a nullity of at least L·(r·d − r(r+1)/2), r the logit rank (K − 1 at "
        "DNC); the largest gap between the measured nullity and that count is "
        f"{numbers['nullity_minus_symmetry_count_max']}, and the DNC/low-rank nullity ratio, which that count makes "
        f"rise with d toward (K − 1)/r, measures {', '.join(f'{numbers[k]:.3f} at d = {d}' for d in config.hessian_widths if (k := f'nullity_ratio_d{d}') in numbers)}. "
        "Issue 16 relays the paper as calling this ratio below 1; the measured nullities are reported against "
        "that sentence, not encoded from it."
    )
    return Outcome(numbers, figures, notes, unmeasured=unmeasured, per_seed=per_seed)


def _lam(value: float) -> str:
    """λ as 2^k when it is a power of two, else in %g."""
    exponent = math.log2(value)
    return f"2^{exponent:.0f}" if exponent == round(exponent) else f"{value:g}"


def _figures(config: GarrodKeatingConfig, folder: Path, p_width: list[float], p_lambda: list[float],
             numbers: dict, spectra_at: dict[int, dict]) -> list[str]:  # fmt: skip
    plot_series(folder / "p_dnc_vs_width.png", {f"λ = {_lam(config.weight_decay)}": (list(config.widths), p_width)},
                title="Fraction of GD runs ending at DNC against the width d", xlabel="d", ylabel="P(DNC)",
                logx=False)  # fmt: skip
    plot_series(folder / "p_dnc_vs_lambda.png", {f"d = {config.width}": (list(config.weight_decays), p_lambda)},
                title="Fraction of GD runs ending at DNC against λ", xlabel="λ", ylabel="P(DNC)")  # fmt: skip
    widest = max(config.hessian_widths)
    plot_series(folder / "hessian_spectra.png",
                {LABELS[name]: (list(range(1, len(s.eigenvalues) + 1)), s.eigenvalues.abs().sort().values.clamp_min(1e-20)
                        .tolist()) for name, s in spectra_at[widest].items()},
                title=f"|Hessian eigenvalues|, sorted, d = {widest}", xlabel="index", ylabel="|μ|", logx=False,
                logy=True)  # fmt: skip
    widths = list(range(config.num_classes, max(config.widths) + 1))
    series = {"DNC, L·(r d − r(r+1)/2), r = K − 1": (widths, [rotation_nullity(d, config.depth, config.num_classes - 1)
                                                             for d in widths])}  # fmt: skip
    series["DNC, measured"] = (list(config.hessian_widths),
                               [numbers[f"dnc_nullity_d{d}"] for d in config.hessian_widths])  # fmt: skip
    measured = [d for d in config.hessian_widths if f"low_rank_nullity_d{d}" in numbers]
    if measured:
        r = numbers[f"low_rank_rank_d{measured[0]}"]
        series[f"low rank, formula, r = {r}"] = (widths, [rotation_nullity(d, config.depth, r) for d in widths])
        series["low rank, measured"] = (measured, [numbers[f"low_rank_nullity_d{d}"] for d in measured])
    plot_series(folder / "nullity_vs_width.png", series, title="Hessian nullity against the width d", xlabel="d",
                ylabel="nullity", logx=False)  # fmt: skip
    return ["p_dnc_vs_width.png", "p_dnc_vs_lambda.png", "hessian_spectra.png", "nullity_vs_width.png"]


register(
    Experiment(
        name="garrod-keating-2024",
        claim="In the cross-entropy deep linear UFM (L = 2, K = 10) a lower-rank structure beats deep neural "
        "collapse, yet DNC is a minimum with no negative Hessian eigenvalue and a more degenerate one, and GD finds "
        "it more often as the width grows and as λ falls.",
        quick=GarrodKeatingConfig(
            widths=(10, 70),
            weight_decays=(2**-8, 2**-10),
            seeds=4,
            steps=30_000,
            small_init_control=False,
            hessian_widths=(10,),
        ),
        full=GarrodKeatingConfig(),
        runner=run_garrod_keating_2024,
        key_number="low_rank_over_dnc",
        reference="Garrod, C. & Keating, J. P. (2024). The persistence of neural collapse despite low-rank bias: an "
        "analytic perspective through unconstrained features. arXiv 2410.23169; NeurIPS 2025.",
    )
)
