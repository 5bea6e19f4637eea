"""``homogeneous-margin``: gradient descent increases the margin of a homogeneous network (Lyu & Li 2020).

A bias-free two-layer ReLU MLP is 2-homogeneous. Trained on separable Gaussian clusters with the exponential
loss (full batch, float64), Lyu & Li's Theorem 4.1 says that once ℒ < ℓ(0) = 1 the smoothed margin
γ̃ = log(1/ℒ)/‖θ‖² never decreases, and the normalized margin γ̄ = q_min/‖θ‖² (which γ̃ bounds from below)
grows toward a KKT value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..report import plot_series
from ..train import TrainConfig, run
from .criteria import Criterion
from .registry import Experiment, Outcome, register

CRITERIA = (
    Criterion(
        "smoothed_margin_never_decreases",
        "max_relative_decrease",
        "<=",
        1e-12,
        "Lyu & Li (2020), Theorem 4.1 (GD: Theorem E.2): once ℒ < 1 the smoothed margin γ̃ never decreases "
        "(largest relative decrease between logged steps; 1e−12 allows rounding).",
        over="each",
    ),
    Criterion(
        "normalized_margin_grows",
        "normalized_margin_growth",
        ">",
        1.0,
        "Lyu & Li (2020), Theorem 4.1: the normalized margin γ̄ rises toward a KKT value (final γ̄ over γ̄ at the "
        "first step with ℒ < 1).",
        over="each",
    ),
)


@dataclass(frozen=True)
class HomogeneousMarginConfig:
    num_classes: int = 3
    dim: int = 2
    n_per_class: int = 50
    separation: float = 4.0
    width: int = 50
    lr: float = 0.05
    steps: int = 5000
    log_points: int = 150
    seed: int = 0  # the first seed; the registry runs seed … seed + seeds − 1 (fans_out_seeds)
    seeds: int = 3
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = CRITERIA


def run_homogeneous_margin(config: HomogeneousMarginConfig, folder: Path, progress: bool) -> Outcome:
    train = TrainConfig(
        dataset="gaussians",
        data_options={
            "num_classes": config.num_classes,
            "dim": config.dim,
            "n_per_class": config.n_per_class,
            "separation": config.separation,
        },
        model=f"mlp:depth=2,width={config.width},bias=false",
        loss="exponential",
        optimizer="gd",
        steps=config.steps,
        lr=config.lr,
        dtype="float64",
        device=config.device,
        seed=config.seed,
        log_points=config.log_points,
        probes=["margins"],
    )
    history = run(train, folder / "run", progress=progress)
    smooth_steps, smooth = history.column("smoothed_margin")
    margin_steps, margin = history.column("normalized_margin")
    numbers: dict[str, float | int | bool] = {
        "final_log_loss": history.last["log_loss"],
        "final_accuracy": history.last["accuracy"],
    }
    unmeasured = {}
    if not smooth_steps:  # the theorem's premise, ℒ < ℓ(0) = 1, was never reached
        why = "ℒ never fell below ℓ(0) = 1 (the theorem's premise: every point fit)"
        unmeasured = dict.fromkeys(("max_relative_decrease", "normalized_margin_growth"), why)
    else:
        smooth_array = np.asarray(smooth)
        relative_drops = -np.diff(smooth_array) / np.abs(smooth_array[:-1]) if len(smooth) > 1 else np.zeros(1)
        margin_at_fit = dict(zip(margin_steps, margin))[smooth_steps[0]]
        numbers.update(
            step_all_fit=smooth_steps[0],
            smoothed_margin_at_fit=smooth[0],
            smoothed_margin_final=smooth[-1],
            max_relative_decrease=float(max(relative_drops.max(), 0.0)),
            normalized_margin_at_fit=margin_at_fit,
            normalized_margin_final=margin[-1],
            normalized_margin_growth=margin[-1] / margin_at_fit,
        )
    figures = []
    loss_steps, log_losses = history.column("log_loss")
    plot_series(
        folder / "margins.png",
        {
            "smoothed margin γ̃ = log(1/ℒ)/‖θ‖²": (smooth_steps, smooth),
            "normalized margin γ̄ = q_min/‖θ‖²": (margin_steps, margin),
        },
        title="Bias-free 2-layer ReLU MLP, exponential loss, GD",
        ylabel="margin",
        marks={"ℒ < 1": smooth_steps[0]} if smooth_steps else None,
    )
    figures.append("margins.png")
    plot_series(folder / "loss.png", {"log ℒ": (loss_steps, log_losses)}, title="Training loss", ylabel="log ℒ")
    figures.append("loss.png")
    notes = (
        "Every logged smoothed margin after the first step with ℒ < 1 should be at least the previous one (up to "
        "the relative tolerance of the criterion) and the final normalized margin exceed the one at that step. "
        "Lyu & Li (2020), Theorem 4.1 (gradient flow) and its GD version, Theorem E.2."
    )
    return Outcome(numbers=numbers, figures=figures, notes=notes, unmeasured=unmeasured)


register(
    Experiment(
        name="homogeneous-margin",
        claim="Once a homogeneous network fits its data, GD never decreases its smoothed margin and increases "
        "its normalized margin (Lyu & Li 2020, Thm 4.1).",
        quick=HomogeneousMarginConfig(),
        full=HomogeneousMarginConfig(seeds=5, num_classes=5, dim=10, n_per_class=100, width=200, steps=200_000, log_points=300),
        runner=run_homogeneous_margin,
        fans_out_seeds=True,
        key_number="normalized_margin_growth",
        reference="Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks.",
    )
)
