"""``sukenik-2023``, ``sukenik-2024``, ``rank-vs-weight-decay``: deep neural collapse and its defeat by the low-rank
bias in the deep unconstrained features model (Súkeník, Mondelli & Lampert 2023, 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dufm import DUFM, dnc_loss, dnc_measures, refined_srg_loss, srg_loss, srg_vertices, train_dufm
from ..report import plot_series
from ..train.loop import resolve_device
from .analysis import key_part, order_violations
from .criteria import Criterion
from .registry import Experiment, Outcome, register

REFERENCE_2023 = (
    "Súkeník, P., Mondelli, M. & Lampert, C. (2023). Deep neural collapse is provably optimal for the deep "
    "unconstrained features model. NeurIPS."
)
REFERENCE_2024 = (
    "Súkeník, P., Mondelli, M. & Lampert, C. (2024). Neural collapse versus low-rank bias: is deep neural collapse "
    "really optimal? NeurIPS."
)


@dataclass(frozen=True)
class DUFMConfig:
    num_classes: int = 10
    per_class: int = 1
    depths: tuple[int, ...] = (4,)
    width: int = 30
    weight_decay: float = 0.004  # every λ (λ_H1 and each λ_Wl)
    init_scale: float = 0.1
    lr: float = 0.5
    steps: int = 20_000
    seeds: int = 5
    rank_tol: float = 1e-2  # relative: #{σ_i > tol σ_1} of the class-mean matrices
    sweep_steps: int = 2000  # GD steps of each refined L_SRG in the L_SRG/L_DNC sweep over r
    device: str = "cpu"


SUKENIK_2023_CRITERIA = (
    Criterion(
        "most_seeds_collapse",
        "min_fraction_collapsed",
        ">=",
        0.6,
        "Súkeník, Mondelli & Lampert (2023), main theorem: for two classes deep neural collapse is the optimum of "
        "the L-DUFM; GD reaches it from most random starts (lowest fraction of seeds over the depths).",
    ),
)

SUKENIK_2024_CRITERIA = (
    Criterion(
        "every_seed_below_dnc",
        "seeds_not_below_dnc",
        "==",
        0,
        "Súkeník, Mondelli & Lampert (2024): with several layers and many classes deep neural collapse is not "
        "optimal — GD ends below L_DNC (seeds that do not).",
    ),
    Criterion(
        "loss_near_srg",
        "loss_over_srg_refined_mean",
        "in",
        (0.9, 1.1),
        "Súkeník et al. (2024): GD ends near the low-rank SRG solution (mean final loss over the refined L_SRG).",
    ),
    Criterion(
        "rank_near_srg",
        "rank_before_last_relu_offset",
        "<=",
        1.5,
        "Súkeník et al. (2024), SRG construction: class means of rank r before the last ReLU, K = r(r−1)/2 (|mean "
        "rank − r|; DNC would give rank K).",
    ),
    *(
        Criterion(
            f"srg_below_dnc_L{depth}",
            f"L{depth}_first_r_srg_below_dnc",
            ">",
            0,
            f"Súkeník et al. (2024), SRG versus DNC: for L = {depth} the SRG loss falls below L_DNC past some r ≤ 10 (that "
            "r; −1 if none).",
        )
        for depth in (3, 4, 5)
    ),
)

RANK_SWEEP_CRITERIA = (
    Criterion(
        "rank_never_rises_with_weight_decay",
        "rank_increases_with_lambda",
        "==",
        0,
        "Súkeník et al. (2024): a larger weight decay favours lower-rank solutions (consecutive λ where the "
        "average rank rises).",
    ),
    Criterion(
        "rank_falls_with_weight_decay",
        "rank_drop",
        ">",
        0.0,
        "Súkeník et al. (2024): the average rank at the largest λ is below the one at the smallest.",
    ),
)


@dataclass(frozen=True)
class Sukenik2023Config(DUFMConfig):
    # what counts as one run reaching DNC (the per-seed verdict behind min_fraction_collapsed)
    collapse_loss_gap: float = 1e-3  # loss within this fraction of L_DNC
    collapse_nc1: float = 1e-6  # NC1 below this at every layer
    collapse_cosine: float = 0.05  # post-ReLU class means orthogonal: max |cos| below this
    criteria: tuple[Criterion, ...] = SUKENIK_2023_CRITERIA


@dataclass(frozen=True)
class Sukenik2024Config(DUFMConfig):
    criteria: tuple[Criterion, ...] = SUKENIK_2024_CRITERIA


def _train(config: DUFMConfig, depth: int, seed: int, weight_decay: float | None = None) -> DUFM:
    model = DUFM(
        config.num_classes,
        config.per_class,
        depth=depth,
        width=config.width,
        lambdas=config.weight_decay if weight_decay is None else weight_decay,
        init_scale=config.init_scale,
        seed=seed,
    ).to(resolve_device(config.device))
    train_dufm(model, steps=config.steps, lr=config.lr, log_every=max(1, config.steps // 10))
    return model


def _setting(config: DUFMConfig) -> str:
    return (
        f"MSE L-DUFM, K = {config.num_classes}, n = {config.per_class} per class, width {config.width}, all λ = "
        f"{config.weight_decay}, entries of H₁ and W_l initialized N(0, {config.init_scale}²), full-batch GD "
        f"(float64) with lr {config.lr} for {config.steps} steps, {config.seeds} seeds"
    )


def run_sukenik_2023(config: Sukenik2023Config, folder: Path, progress: bool) -> Outcome:
    numbers: dict[str, float | int | bool] = {}
    fractions = []
    curves = {}
    for depth in config.depths:
        reached = 0
        for seed in range(config.seeds):
            model = _train(config, depth, seed)
            loss = float(model.loss().detach())
            reference = dnc_loss(model).loss
            layers = dnc_measures(model, tol=config.rank_tol)
            gap = loss / reference - 1
            worst_nc1 = max(m.nc1 for m in layers)
            worst_cosine = max(m.max_cosine for m in layers[1:])  # post-ReLU layers
            collapsed = (
                gap < config.collapse_loss_gap
                and worst_nc1 < config.collapse_nc1
                and worst_cosine < config.collapse_cosine
            )
            reached += collapsed
            numbers.update(
                {
                    f"L{depth}_seed{seed}_loss_over_dnc": loss / reference,
                    f"L{depth}_seed{seed}_max_nc1": worst_nc1,
                    f"L{depth}_seed{seed}_max_post_relu_cosine": worst_cosine,
                }
            )
            if seed == 0:
                curves[f"L = {depth}"] = (list(range(1, depth + 1)), [max(m.nc1, 1e-40) for m in layers])
        numbers[f"L{depth}_dnc_loss"] = reference
        numbers[f"L{depth}_fraction_collapsed"] = reached / config.seeds
        fractions.append(reached / config.seeds)
    numbers["min_fraction_collapsed"] = min(fractions)
    plot_series(folder / "nc1_by_layer.png", curves, title="NC1 of every layer after training (seed 0)",
                xlabel="layer l (input of W_l)", ylabel="NC1", logx=False, logy=True)  # fmt: skip
    notes = (
        f"{_setting(config)}; depths {list(config.depths)}. A run reaches deep neural collapse when its loss is within "
        f"{config.collapse_loss_gap:g} of L_DNC relative (the closed-form DNC optimum, see "
        f"implicit_bias.dufm.structures), NC1 < {config.collapse_nc1:g} at every layer and the post-ReLU class means "
        f"are orthogonal (max |cos| < {config.collapse_cosine:g}; the three are config fields). Most seeds should do, "
        "at every depth "
        "(GD from a random start can also stall at the zero point or at other critical points)."
    )
    return Outcome(numbers, ["nc1_by_layer.png"], notes)


def run_sukenik_2024(config: DUFMConfig, folder: Path, progress: bool) -> Outcome:
    depth = config.depths[0]
    losses, ranks_pre, ranks_post, spectra = [], [], [], {}
    layer_ranks: dict[str, list[int]] = {}
    for seed in range(config.seeds):
        model = _train(config, depth, seed)
        losses.append(float(model.loss().detach()))
        layers = dnc_measures(model, tol=config.rank_tol)
        ranks_pre.append(layers[-1].rank_pre_relu)
        ranks_post.append(layers[-1].rank)
        for layer in layers:
            layer_ranks.setdefault(f"rank_layer{layer.layer}_mean", []).append(layer.rank)
            if layer.rank_pre_relu is not None:
                layer_ranks.setdefault(f"rank_pre_relu_layer{layer.layer}_mean", []).append(layer.rank_pre_relu)
        if seed == 0:
            for layer in layers:
                values = layer.singular_values / layer.singular_values[0]
                spectra[f"layer {layer.layer}"] = (list(range(1, len(values) + 1)), values.tolist())
    reference = DUFM(config.num_classes, config.per_class, depth=depth, width=config.width,
                     lambdas=config.weight_decay)  # fmt: skip
    l_dnc, l_srg = dnc_loss(reference).loss, srg_loss(reference).loss
    l_srg_refined = refined_srg_loss(reference, steps=config.steps // 4, lr=config.lr)
    numbers: dict[str, float | int | bool] = {
        "loss_mean": float(np.mean(losses)),
        "loss_std": float(np.std(losses)),
        "loss_min": float(np.min(losses)),
        "l_dnc": l_dnc,
        "l_srg": l_srg,
        "l_srg_refined": l_srg_refined,
        "loss_over_srg_refined_mean": float(np.mean(losses)) / l_srg_refined,
        "loss_over_dnc_mean": float(np.mean(losses)) / l_dnc,
        "loss_over_srg_mean": float(np.mean(losses)) / l_srg,
        "seeds_below_dnc": int(sum(loss < l_dnc for loss in losses)),
        "seeds_not_below_dnc": int(sum(not loss < l_dnc for loss in losses)),
        "rank_before_last_relu_mean": float(np.mean(ranks_pre)),
        "rank_before_last_relu_std": float(np.std(ranks_pre)),
        "rank_after_last_relu_mean": float(np.mean(ranks_post)),
        "srg_rank_r": srg_vertices(config.num_classes),
        **{key: float(np.mean(values)) for key, values in layer_ranks.items()},
    }
    ratios = {}
    for sweep_depth in (3, 4, 5):
        rs, scalar, refined = list(range(3, 11)), [], []
        for r in rs:
            classes = r * (r - 1) // 2
            probe = DUFM(classes, config.per_class, depth=sweep_depth, width=classes, lambdas=config.weight_decay)
            l_dnc_probe = dnc_loss(probe).loss
            scalar.append(srg_loss(probe).loss / l_dnc_probe)
            refined.append(refined_srg_loss(probe, steps=config.sweep_steps, lr=config.lr) / l_dnc_probe)
        ratios[f"L = {sweep_depth}"] = (rs, refined)
        ratios[f"L = {sweep_depth}, scalar family"] = (rs, scalar)
        below = [r for r, v in zip(rs, refined) if v < 1]
        numbers[f"L{sweep_depth}_first_r_srg_below_dnc"] = below[0] if below else -1
        numbers[f"L{sweep_depth}_srg_over_dnc_at_r10"] = refined[-1]
    plot_series(folder / "singular_values.png", spectra, title="Class-mean singular values σ_i/σ_1 (seed 0)",
                xlabel="i", ylabel="σ_i / σ_1", logx=False, logy=True)  # fmt: skip
    plot_series(folder / "srg_over_dnc.png", ratios, title="L_SRG / L_DNC against r (K = r(r−1)/2)",
                xlabel="r", ylabel="ratio", logx=False)  # fmt: skip
    r = numbers["srg_rank_r"]
    numbers["rank_before_last_relu_offset"] = abs(numbers["rank_before_last_relu_mean"] - r)
    notes = (
        f"{_setting(config)}, depth {depth}. L_DNC and L_SRG are the optima over the DNC- and SRG-structured families "
        "(implicit_bias.dufm.structures: closed form up to a scalar search); `l_srg_refined` is the loss GD reaches "
        "from the SRG point while kept on its S_r symmetry (a larger structured family, a lower loss). Ranks: "
        "#{σ_i > "
        f"{config.rank_tol} σ_1}} of the class-mean matrices. Every seed should end below L_DNC, the mean "
        "final loss near the refined L_SRG, the rank before the last ReLU near "
        f"r = {r} on average (DNC would give K), and the refined L_SRG/L_DNC (GD on the S_r-symmetric family, "
        f"{config.sweep_steps} steps, width K) fall below 1 past some r ≤ 10 for each L ∈ {{3, 4, 5}}; the scalar "
        "family alone stays above 1 for L = 3 (both curves in the figure)."
    )
    return Outcome(numbers, ["singular_values.png", "srg_over_dnc.png"], notes)


@dataclass(frozen=True)
class RankSweepConfig(DUFMConfig):
    weight_decays: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016)
    seeds: int = 3
    criteria: tuple[Criterion, ...] = RANK_SWEEP_CRITERIA


def run_rank_vs_weight_decay(config: RankSweepConfig, folder: Path, progress: bool) -> Outcome:
    depth = config.depths[0]
    averages, spreads = [], []
    numbers: dict[str, float | int | bool] = {}
    for weight_decay in config.weight_decays:
        per_seed = []
        for seed in range(config.seeds):
            layers = dnc_measures(_train(config, depth, seed, weight_decay), tol=config.rank_tol)
            ranks = [m.rank for m in layers] + [m.rank_pre_relu for m in layers[1:]]
            per_seed.append(float(np.mean(ranks)))
        averages.append(float(np.mean(per_seed)))
        spreads.append(float(np.std(per_seed)))
        numbers[f"average_rank_lambda_{key_part(weight_decay)}"] = averages[-1]
        numbers[f"average_rank_std_lambda_{key_part(weight_decay)}"] = spreads[-1]
    plot_series(folder / "rank_vs_weight_decay.png", {"average rank": (list(config.weight_decays), averages)},
                title="Average class-mean rank at the end of training", xlabel="λ", ylabel="rank")  # fmt: skip
    numbers["rank_drop"] = averages[0] - averages[-1]
    numbers["rank_increases_with_lambda"] = order_violations(averages[::-1], strict=False)
    notes = (
        f"{_setting(config)}, depth {depth}, λ ∈ {list(config.weight_decays)}. Average rank = mean over the "
        "class-mean matrices of every layer (before and after each ReLU) of #{σ_i > "
        f"{config.rank_tol} σ_1}}, then over seeds; a layer that decayed to zero has rank 0. The average rank "
        "should never increase with λ and end below where it started."
    )
    return Outcome(numbers, ["rank_vs_weight_decay.png"], notes)


register(
    Experiment(
        name="sukenik-2023",
        claim="With two classes, GD on the deep unconstrained features model reaches deep neural collapse at every "
        "layer, at the loss of the DNC optimum.",
        quick=Sukenik2023Config(num_classes=2, per_class=5, depths=(3, 4), width=10, init_scale=0.3, seeds=3),
        full=Sukenik2023Config(
            num_classes=2, per_class=5, depths=(3, 4, 5), width=20, init_scale=0.3, seeds=10, steps=100_000
        ),
        runner=run_sukenik_2023,
        key_number="L3_fraction_collapsed",
        reference=REFERENCE_2023,
    )
)

register(
    Experiment(
        name="sukenik-2024",
        claim="With 4 layers and 10 classes, GD ends below the loss of deep neural collapse, near the low-rank SRG "
        "solution, with class means of rank ≈ r = 5 before the last ReLU.",
        quick=Sukenik2024Config(steps=10_000),
        full=Sukenik2024Config(steps=100_000, seeds=10),
        runner=run_sukenik_2024,
        key_number="loss_over_dnc_mean",
        reference=REFERENCE_2024,
    )
)

register(
    Experiment(
        name="rank-vs-weight-decay",
        claim="In the 4-layer DUFM with 10 classes, the average rank of the class means at convergence falls as "
        "the weight decay grows.",
        quick=RankSweepConfig(steps=5000),
        full=RankSweepConfig(steps=100_000, seeds=5, weight_decays=(0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.016)),
        runner=run_rank_vs_weight_decay,
        key_number="rank_drop",
        reference=REFERENCE_2024,
    )
)
