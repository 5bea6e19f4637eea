"""``weight-decay-low-rank`` and ``square-loss-normalization``: weight decay makes SGD-trained networks low-rank
(Galanti et al. 2022; Chen, Yi & Yang 2024), and with the square loss and normalization it brings neural collapse
(Xu, Rangamani, Liao, Galanti & Poggio 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import load
from ..metrics import collapse_by_layer, layer_spectra, numerical_rank
from ..models import build
from ..report import plot_bars, plot_series
from .criteria import Criterion
from .registry import Experiment, Outcome, register
from .trial import trial

LOW_RANK_CRITERIA = (
    Criterion(
        "weight_decay_rank_low",
        "with_wd_rank_rel_1e_2",
        "<=",
        3,
        "Chen, Yi & Yang (2024): SGD with weight decay, sufficiently trained, leaves the first layer ≈ rank two "
        "(numerical rank, σ_i > 1e−2 σ_1); Galanti et al. (2022) observe the same.",
        over="each",
    ),
    Criterion(
        "weight_decay_fits",
        "with_wd_train_accuracy",
        ">=",
        0.95,
        "Chen, Yi & Yang (2024) state the low-rank bias for a trained network: the weight-decay run fits the "
        "training set (strong weight decay trades a little fit).",
        over="each",
    ),
    Criterion(
        "no_weight_decay_rank_high",
        "without_wd_rank_share",
        ">=",
        0.5,
        "Galanti et al. (2022): without weight decay the first layer stays high-rank (numerical rank over full "
        "rank min(width, inputs)).",
        over="each",
    ),
)

SQUARE_LOSS_CRITERIA = (
    Criterion(
        "weight_decay_interpolates",
        "with_wd_train_accuracy",
        ">=",
        0.99,
        "Xu et al. (2023) study the close-to-interpolating regime: the weight-decay run fits ≥ 99% of the training "
        "set at the last SGD iterate.",
        over="each",
    ),
    Criterion(
        "nc1_larger_without_wd",
        "nc1_ratio",
        ">=",
        5.0,
        "Xu et al. (2023): with the square loss and normalization, weight decay brings neural collapse (NC1 "
        "without over with weight decay).",
        over="each",
    ),
    Criterion(
        "etf_distance_larger_without_wd",
        "etf_distance_ratio",
        ">=",
        2.0,
        "Xu et al. (2023): weight decay drives the class means toward a simplex ETF (ratio without / with).",
        over="each",
    ),
    Criterion(
        "stable_rank_larger_without_wd",
        "mean_hidden_stable_rank_ratio",
        ">=",
        1.5,
        "Xu et al. (2023): weight decay makes the hidden weights low-rank (mean stable rank without / with).",
        over="each",
    ),
)


@dataclass(frozen=True)
class LowRankConfig:
    classes: tuple[int, ...] = (3, 8)
    width: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.05
    batch_size: int = 1  # the setting of Chen, Yi & Yang's theorem: one rank-one gradient per step
    steps: int = 20_000
    seed: int = 0  # the first seed; the registry runs seed … seed + seeds − 1 (fans_out_seeds)
    seeds: int = 3
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = LOW_RANK_CRITERIA


def run_weight_decay_low_rank(config: LowRankConfig, folder: Path, progress: bool) -> Outcome:
    data = load("digits", classes=list(config.classes), standardize=True, seed=config.seed)
    numbers: dict[str, float | int | bool] = {}
    spectra = {}
    for label, weight_decay in (("with_wd", config.weight_decay), ("without_wd", 0.0)):
        model = build(f"mlp:depth=2,width={config.width}", data.input_shape, data.num_classes, seed=config.seed)
        history = trial(
            config, model, data, progress=progress, log_points=10,
            loss="logistic" if data.num_classes == 2 else "cross-entropy", optimizer="sgd", lr=config.lr,
            steps=config.steps, batch_size=config.batch_size, dtype="float32",
            optimizer_options={"momentum": config.momentum, "weight_decay": weight_decay},
        )  # fmt: skip
        first = layer_spectra(model, tol=1e-2)["layer1.0.weight"]
        sigma = (first.singular_values / first.singular_values[0]).tolist()
        spectra[f"λ = {weight_decay:g}"] = (list(range(1, len(sigma) + 1)), sigma)
        numbers.update(
            {
                f"{label}_rank_rel_1e_2": first.rank_relative,
                f"{label}_rank_rel_1e_1": numerical_rank(None, 0.1, sigma=first.singular_values),
                f"{label}_rank_frobenius_1e_2": first.rank_frobenius,
                f"{label}_stable_rank": first.stable_rank,
                f"{label}_effective_rank": first.effective_rank,
                f"{label}_train_accuracy": history.last["accuracy"],
                f"{label}_test_accuracy": history.last.get("test_accuracy", float("nan")),
            }
        )
    plot_series(folder / "first_layer_spectrum.png", spectra, title="First-layer singular values σ_i/σ_1",
                xlabel="i", ylabel="σ_i / σ_1", logx=False, logy=True)  # fmt: skip
    full = min(config.width, int(np.prod(data.input_shape)))
    numbers["without_wd_rank_share"] = numbers["without_wd_rank_rel_1e_2"] / full
    notes = (
        f"A two-layer ReLU MLP (width {config.width}, biases) on standardized digits classes {list(config.classes)}, "
        f"SGD (batch {config.batch_size}, lr {config.lr}, momentum {config.momentum}) for {config.steps} steps, "
        f"with weight decay {config.weight_decay} and without. Ranks of the first layer's weight "
        f"({int(np.prod(data.input_shape))} inputs): #{{σ_i > tol σ_1}} (relative) and #{{σ_i > tol ‖W‖_F}} "
        "(Galanti et al. 2022), stable and effective rank. Chen, Yi & Yang (2024) prove the weight ≈ rank two once "
        "SGD with weight decay is sufficiently trained (each step adds a rank-one per-sample gradient; weight decay "
        "forgets the rest at rate lr·λ per step). The weight-decay run should reach a low numerical rank (tol "
        "1e−2) while fitting most of the training set, the run without weight decay stay near full rank."
    )
    return Outcome(numbers, ["first_layer_spectrum.png"], notes)


@dataclass(frozen=True)
class SquareLossConfig:
    per_class: int = 50
    depth: int = 4
    width: int = 64
    norm: str = "batchnorm"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-3
    batch_size: int = 64
    steps: int = 5000
    seed: int = 0  # the first seed; the registry runs seed … seed + seeds − 1 (fans_out_seeds)
    seeds: int = 3
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = SQUARE_LOSS_CRITERIA
    fails_at_this_scale: Mapping[str, str] = field(default_factory=dict)  # criterion → measured reason


def run_square_loss_normalization(config: SquareLossConfig, folder: Path, progress: bool) -> Outcome:
    data = load("digits", per_class=config.per_class, standardize=True, seed=config.seed)
    layer = f"layer{config.depth - 1}"
    numbers: dict[str, float | int | bool] = {}
    table = {}
    for label, weight_decay in (("with_wd", config.weight_decay), ("without_wd", 0.0)):
        spec = f"mlp:depth={config.depth},width={config.width},norm={config.norm},bias=false"
        model = build(spec, data.input_shape, data.num_classes, seed=config.seed)
        history = trial(
            config, model, data, progress=progress, log_points=10, loss="mse", optimizer="sgd", lr=config.lr,
            steps=config.steps, batch_size=config.batch_size, dtype="float32",
            optimizer_options={"momentum": config.momentum, "weight_decay": weight_decay},
        )  # fmt: skip
        report = collapse_by_layer(model, data, [layer])[layer].train
        hidden = [s for name, s in layer_spectra(model).items() if name != "head.weight"]
        numbers.update(
            {
                f"{label}_nc1": report.nc1,
                f"{label}_etf_distance": report.etf_distance,
                f"{label}_self_duality": report.self_duality,
                f"{label}_mean_hidden_stable_rank": float(np.mean([s.stable_rank for s in hidden])),
                f"{label}_train_accuracy": history.last["accuracy"],
                f"{label}_test_accuracy": history.last.get("test_accuracy", float("nan")),
            }
        )
        table[f"λ = {weight_decay:g}"] = {
            "NC1": report.nc1,
            "ETF distance": report.etf_distance,
            "stable rank / 10": numbers[f"{label}_mean_hidden_stable_rank"] / 10,
        }
    plot_bars(folder / "collapse_and_rank.png", table, title="MSE + normalization, with and without weight decay",
              logy=True)  # fmt: skip
    for key in ("nc1", "etf_distance", "mean_hidden_stable_rank"):
        numbers[f"{key}_ratio"] = numbers[f"without_wd_{key}"] / numbers[f"with_wd_{key}"]
    notes = (
        f"A bias-free {config.depth}-layer MLP with {config.norm} (width {config.width}) on standardized digits, "
        f"square loss on one-hot targets, SGD (batch {config.batch_size}, lr {config.lr}, momentum "
        f"{config.momentum}) for {config.steps} steps, with weight decay {config.weight_decay} and without. "
        f"Collapse at {layer} (the classifier's input), stable rank averaged over the hidden weights. The "
        "weight-decay run should (nearly) interpolate — the close-to-interpolating regime of Xu et al. — and, "
        "without weight decay, NC1, the ETF distance and the mean hidden stable rank be larger."
    )
    return Outcome(numbers, ["collapse_and_rank.png"], notes)


register(
    Experiment(
        name="weight-decay-low-rank",
        claim="SGD with weight decay leaves a two-layer ReLU network with a low-rank first layer; without weight "
        "decay the first layer stays high-rank.",
        quick=LowRankConfig(steps=8000),
        full=LowRankConfig(seeds=5, steps=50_000, width=256),
        runner=run_weight_decay_low_rank,
        fans_out_seeds=True,
        key_number="with_wd_stable_rank",
        reference="Chen, F., Yi, D. & Yang, J. (2024); Galanti, T., Siegel, Z., Gupte, A. & Poggio, T. (2022). SGD "
        "and weight decay secretly minimize the rank of your neural network.",
    )
)

register(
    Experiment(
        name="square-loss-normalization",
        claim="With the square loss and normalization layers, weight decay brings neural collapse and low-rank "
        "weights; without weight decay, not.",
        quick=SquareLossConfig(
            fails_at_this_scale={
                "stable_rank_larger_without_wd": (
                    "Over 3 seeds of 5 000 steps the mean hidden stable rank without weight decay is 1.70×, 1.64× "
                    "and 1.497× the one with it on one machine and 1.59×, 1.68×, 1.59× on another (both 2026-12-02, "
                    "one torch thread each): the same seeded SGD runs differ between the two machines (cause not "
                    "isolated), and seed 2 sits at the ≥ 1.5× threshold, so the criterion holds on one and fails on "
                    "the other; the threshold stays (the full preset measured 3.5× on seed 0). At 7 000 steps seed 2 "
                    "measured 1.4976× again (2026-12-03): the ratio has settled, more steps do not move it. A third machine "
                    "(2026-12-03) measured 1.59×, 1.68×, 1.59×, and 1.70×, 1.62×, 1.64× with the compiled loss "
                    "kernel (its float64 rounding differs from the torch operations' in the last bits)."
                )
            }
        ),
        full=SquareLossConfig(seeds=5, per_class=130, width=256, lr=0.02, steps=20_000),
        runner=run_square_loss_normalization,
        fans_out_seeds=True,
        key_number="nc1_ratio",
        reference="Xu, M., Rangamani, A., Liao, Q., Galanti, T. & Poggio, T. (2023). Dynamics in deep classifiers "
        "trained with the square loss: normalization, low rank, neural collapse and generalization bounds.",
    )
)
