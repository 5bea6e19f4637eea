"""``ji-telgarsky-2020``: gradient flow on a homogeneous network converges in direction, and its parameters
align with the negative gradient (Ji & Telgarsky 2020, "Directional convergence and alignment in deep learning",
Thms 3.1 and 4.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..data import load
from ..models import build
from ..report import plot_series
from ..train import make_probe
from .analysis import key_part
from .criteria import Criterion
from .registry import Experiment, Outcome, register
from .trial import trial

CRITERIA = (
    Criterion(
        "flow_aligned",
        "normalized_gd_final_alignment",
        ">",
        0.99,
        "Ji & Telgarsky (2020), Theorem 4.1: along gradient flow the parameters align with the negative gradient, "
        "cos(θ, −∇ℒ) → 1.",
        over="each",
    ),
    Criterion(
        "flow_alignment_rising",
        "normalized_gd_alignment_rise",
        ">",
        0.0,
        "Ji & Telgarsky (2020), Theorem 4.1: the alignment still rises over the last decade of steps (final minus "
        "a decade earlier).",
        over="each",
    ),
    Criterion(
        "flow_direction_converges",
        "normalized_gd_final_one_minus_cosine",
        "<",
        1e-3,
        "Ji & Telgarsky (2020), Theorem 3.1: θ/‖θ‖ converges (1 − cos between the last two logged directions).",
        over="each",
    ),
)


@dataclass(frozen=True)
class JiTelgarskyConfig:
    num_classes: int = 3
    dim: int = 5
    n_per_class: int = 30
    separation: float = 3.0
    depth: int = 2
    width: int = 20
    steps: int = 20_000
    lr_flow: float = 0.2
    lr_gd: float = 0.05
    log_points: int = 40
    seed: int = 0  # the first seed; the registry runs seed … seed + seeds − 1 (fans_out_seeds)
    seeds: int = 3
    device: str = "cpu"
    criteria: tuple[Criterion, ...] = CRITERIA
    fails_at_this_scale: Mapping[str, str] = field(default_factory=dict)  # criterion → measured reason


def run_ji_telgarsky(config: JiTelgarskyConfig, folder: Path, progress: bool) -> Outcome:
    data = load(
        "gaussians",
        num_classes=config.num_classes,
        dim=config.dim,
        n_per_class=config.n_per_class,
        separation=config.separation,
        seed=config.seed,
    )
    spec = f"mlp:depth={config.depth},width={config.width},bias=false"
    runs = {
        "flow (normalized-gd, degree L)": ("normalized-gd", {"degree": config.depth}, config.lr_flow),
        "gd (constant lr)": ("gd", {}, config.lr_gd),
    }
    numbers: dict[str, float | int | bool] = {}
    alignment_curves, direction_curves = {}, {}
    for label, (optimizer, options, lr) in runs.items():
        model = build(spec, data.input_shape, data.num_classes, seed=config.seed)
        history = trial(
            config,
            model,
            data,
            progress=progress,
            loss="exponential",
            optimizer=optimizer,
            optimizer_options=options,
            steps=config.steps,
            lr=lr,
            probes=[make_probe("alignment"), make_probe("direction")],
            dtype="float64",
        )
        steps, alignments = history.column("alignment")
        direction_steps, cosines = history.column("direction_cosine")
        alignment_curves[label] = (steps, alignments)
        direction_curves[label] = (direction_steps, [max(1 - c, 1e-17) for c in cosines])
        key = key_part(optimizer)
        numbers[f"{key}_final_alignment"] = alignments[-1]
        numbers[f"{key}_alignment_decade_earlier"] = dict(zip(steps, alignments))[
            min(steps, key=lambda s: abs(s - config.steps / 10))
        ]
        numbers[f"{key}_final_one_minus_cosine"] = 1 - cosines[-1]
        numbers[f"{key}_final_log_loss"] = history.last["log_loss"]
    flow = "normalized_gd"
    numbers[f"{flow}_alignment_rise"] = numbers[f"{flow}_final_alignment"] - numbers[f"{flow}_alignment_decade_earlier"]
    plot_series(folder / "alignment.png", alignment_curves, title="Alignment cos(θ, −∇ℒ)", ylabel="alignment")
    plot_series(
        folder / "direction.png",
        direction_curves,
        title="1 − cos(θ_t, θ_prev) between logged steps",
        ylabel="1 − cos",
        logy=True,
    )
    notes = (
        "Bias-free ReLU MLP (L-homogeneous), exponential loss. The flow run takes steps η∇log ℒ/‖θ‖^{2(L−1)}, a "
        "time change of gradient flow that keeps each step small against the loss curvature, so it follows the "
        "flow to log ℒ ≪ 0; the constant-lr GD run shows the same trend on GD's slow clock. The criteria read the "
        "flow run: its alignment near 1 and still rising over the last decade, consecutive logged directions "
        "nearly equal."
    )
    return Outcome(
        numbers=numbers,
        figures=["alignment.png", "direction.png"],
        notes=notes,
    )


register(
    Experiment(
        name="ji-telgarsky-2020",
        claim="On a homogeneous network, gradient flow's parameters converge in direction and align with the "
        "negative gradient: cos(θ, −∇ℒ) → 1.",
        quick=JiTelgarskyConfig(
            steps=10_000,
            fails_at_this_scale={
                "flow_aligned": (
                    "After 10 000 flow steps the final alignment exceeds 0.99 on seeds 0 and "
                    "2 (0.9970, 0.9908) but not on seed 1 (0.9856; measured 2026-12-02), and running seed 1 for 20 000 steps "
                    "gives 0.9721 — the alignment still rises over the last decade on every seed (that criterion holds) but "
                    "is not monotone over the run, and cos(θ, −∇ℒ) → 1 is asymptotic (Ji & Telgarsky 2020, Theorem 4.1); "
                    "the threshold stays."
                )
            },
        ),
        full=JiTelgarskyConfig(
            depth=3, width=100, dim=20, num_classes=5, n_per_class=100, steps=200_000, log_points=80, lr_flow=20.0,
            seeds=5,
        ),
        runner=run_ji_telgarsky,
        fans_out_seeds=True,
        key_number="normalized_gd_final_alignment",
        reference="Ji, Z. & Telgarsky, M. (2020). Directional convergence and alignment in deep learning. NeurIPS.",
    )
)
