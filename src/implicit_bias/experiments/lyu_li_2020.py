"""``lyu-li-2020``: gradient descent maximizes the margin of homogeneous networks (Lyu & Li 2020).

Bias-free MLP and CNN (homogeneous of degree 2 and 4) on scikit-learn's digits, exponential and cross-entropy
losses. Each network is first fit with the loss-based schedule (the warm-up; its rollback keeps it stable where
constant-lr GD on the exponential loss diverges), then continued from that same point for the same number of
steps with constant-lr GD and with Lyu & Li's loss-based learning rate η_t = α_t/ℒ (with rollback).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from ..data import load
from ..models import build
from ..report import plot_series
from ..train import MarginProbe, make_probe
from .analysis import key_part, largest_relative_drop
from .criteria import Criterion
from .registry import Experiment, Outcome, register
from .trial import trial

MODELS = {
    "mlp": ("mlp:depth=2,width={width},bias=false", 2),
    "cnn": ("cnn:padding=same,bias=false,channels=[{channels},{channels2}],hidden={width}", 4),
}


CRITERIA = (
    Criterion(
        "gd_smoothed_margin_never_decreases",
        "gd_smoothed_margin_max_drop",
        "<=",
        1e-9,
        "Lyu & Li (2020), Theorem 4.1 (GD: Theorem E.2): once every point is fit, constant-lr GD never decreases "
        "the smoothed margin (largest relative drop between logged steps over all GD runs).",
        over="each",
    ),
    Criterion(
        "loss_based_larger_margin",
        "smallest_margin_ratio",
        ">",
        1.0,
        "Lyu & Li (2020), experiments: the loss-based learning rate reaches a larger normalized margin than "
        "constant lr in the same steps (≈ 7× on MNIST after 10 000 epochs); the smallest ratio over models and "
        "losses.",
        over="each",
    ),
)


@dataclass(frozen=True)
class LyuLiConfig:
    per_class: int = 20
    width: int = 64
    cnn_channels: int = 8
    mlp_losses: tuple[str, ...] = ("exponential", "cross-entropy")
    cnn_losses: tuple[str, ...] = ("exponential", "cross-entropy")
    warmup_steps: int = 1000
    steps: int = 1500
    gd_lr_mlp_exponential: float = 0.1  # constant lr on the mean loss, each the largest stable one found
    gd_lr_mlp_cross_entropy: float = 0.5
    gd_lr_cnn_exponential: float = 0.01  # 0.1 diverges within 5 steps after the warm-up
    gd_lr_cnn_cross_entropy: float = 0.5
    initial_alpha: float = 0.01
    log_points: int = 25
    seed: int = 0  # the first seed; the registry runs seed … seed + seeds − 1 (fans_out_seeds)
    seeds: int = 3
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = CRITERIA


def run_lyu_li(config: LyuLiConfig, folder: Path, progress: bool) -> Outcome:
    data = load("digits", per_class=config.per_class, seed=config.seed)
    numbers: dict[str, float | int | bool] = {}
    gd_drops, ratios, kkt_falls = [], [], []
    figures = []
    for model_name, (template, degree) in MODELS.items():
        spec = template.format(width=config.width, channels=config.cnn_channels, channels2=2 * config.cnn_channels)
        curves = {}
        for loss in config.mlp_losses if model_name == "mlp" else config.cnn_losses:
            gd_lr = getattr(config, f"gd_lr_{model_name}_{loss.replace('-', '_')}")
            warm = build(spec, data.input_shape, data.num_classes, seed=config.seed)
            trial(
                config,
                warm,
                data,
                progress=progress,
                log_points=5,
                loss=loss,
                optimizer="loss-based",
                steps=config.warmup_steps,
                lr=config.initial_alpha,
                dtype="float64",
            )
            final = {}
            for schedule, lr in (("gd", gd_lr), ("loss-based", config.initial_alpha)):
                tag = f"{model_name}_{key_part(loss)}_{key_part(schedule)}"
                model = copy.deepcopy(warm)
                history = trial(
                    config,
                    model,
                    data,
                    progress=progress,
                    loss=loss,
                    optimizer=schedule,
                    steps=config.steps,
                    lr=lr,
                    probes=[MarginProbe(degree=degree), make_probe("kkt")],
                    dtype="float64",
                )
                smoothed = history.column("smoothed_margin")[1]
                margin_steps, margin = history.column("normalized_margin")
                epsilon = history.column("kkt_epsilon")[1]
                final[schedule] = margin[-1] if margin_steps and margin_steps[-1] == config.steps else math.nan
                numbers[f"{tag}_normalized_margin"] = final[schedule]
                drop = largest_relative_drop(smoothed)
                numbers[f"{tag}_smoothed_margin_max_drop"] = drop
                if schedule == "gd":  # the theorem's setting; the loss-based runs log points later rolled back
                    gd_drops.append(drop)
                if epsilon:
                    numbers[f"{tag}_kkt_epsilon_first"] = epsilon[0]
                    numbers[f"{tag}_kkt_epsilon_final"] = epsilon[-1]
                    kkt_falls.append(epsilon[-1] < epsilon[0])
                curves[f"{loss} {schedule}"] = (margin_steps, margin)
            if math.isnan(final["loss-based"]):  # the loss-based run never fit: no margin to compare
                ratio = math.nan
            else:  # a GD run that never fits has no margin and counts as smaller
                ratio = final["loss-based"] / final["gd"] if not math.isnan(final["gd"]) else math.inf
            numbers[f"{model_name}_{key_part(loss)}_margin_ratio_loss_based_over_gd"] = ratio
            ratios.append(ratio)
        plot_series(
            folder / f"{model_name}_margins.png",
            curves,
            title=f"Bias-free {model_name.upper()} on digits",
            ylabel=f"q_min / ‖θ‖^{degree}",
            logy=True,
        )
        figures.append(f"{model_name}_margins.png")
    unmeasured = {}
    if ratios and not any(map(math.isnan, ratios)):
        numbers["smallest_margin_ratio"] = min(ratios)
    else:
        unmeasured["smallest_margin_ratio"] = "a loss-based run never fit its data (or no model and loss ran)"
    if gd_drops:
        numbers["gd_smoothed_margin_max_drop"] = max(gd_drops)
    else:
        unmeasured["gd_smoothed_margin_max_drop"] = "no constant-lr GD run (empty loss lists)"
    numbers["runs_kkt_residual_fell"] = sum(kkt_falls)
    numbers["runs_with_kkt_residual"] = len(kkt_falls)
    notes = (
        "Checks (i) every constant-lr GD run's smoothed margin, once all points are fit, never decreases "
        "between logged "
        "steps (up to the criterion's relative tolerance); (ii) for each model and loss the loss-based schedule "
        "ends with a larger normalized margin than constant-lr GD after the same number of steps from the same "
        "warm start (a GD run that "
        "never fits has no margin and counts as smaller; Lyu & Li report ≈ 7× on MNIST after 10 000 epochs); "
        "The KKT residual ε/‖θ̃‖ is reported for every run (first and last measurement after fitting) but is not "
        "a pass criterion: over quick runs it stays near 1 and moves little; it needs the full setting."
    )
    return Outcome(numbers=numbers, figures=figures, notes=notes, unmeasured=unmeasured)


register(
    Experiment(
        name="lyu-li-2020",
        claim="On homogeneous networks GD's smoothed margin never decreases after fitting, and the loss-based "
        "learning rate reaches a larger normalized margin than constant lr in the same steps (KKT residuals "
        "reported).",
        # 1 500 steps: at 1 000 (20 per class), seed 2 of 3 ends with a smaller loss-based margin (0.69×); 10 per
        # class (2026-12-03): smallest ratio 1.20, 1.18, 1.21 on seeds 0-2, every GD drop 0, 0.65× the time of 20;
        # with the compiled loss kernel (last-bit rounding differs) 1.17, 1.15, 1.19
        quick=LyuLiConfig(per_class=10),
        full=LyuLiConfig(seeds=5, per_class=100, width=256, cnn_channels=16, warmup_steps=5000, steps=20_000, log_points=60),
        runner=run_lyu_li,
        fans_out_seeds=True,
        key_number="smallest_margin_ratio",
        reference="Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks.",
    )
)
