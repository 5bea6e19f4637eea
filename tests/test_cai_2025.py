"""cai-2025-near-homogeneous: its probe against hand-computed margins, and a run too short for the premise.

The quick preset itself runs in tests/test_experiments.py (a parametrized row per registered experiment).
"""

import math

import numpy as np
import torch

from implicit_bias.data import load
from implicit_bias.experiments import reproduce
from implicit_bias.experiments.cai_2025 import NearHomogeneousProbe, two_layer_silu
from implicit_bias.metrics.homogenization import SILU_GAP
from implicit_bias.train import fit


def test_probe_margins_match_a_hand_computed_relu_network_and_bound_each_other():
    data = load("xor", n_per_cluster=5, test_per_cluster=0, noise=0.2, seed=0)
    data = data.replace(X=3 * data.X)
    model = two_layer_silu(16, seed=0)
    kappa = SILU_GAP * 4 + 1
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer="gd",
        lr=0.5,
        steps=60,
        dtype=torch.float64,
        log_points=8,
        probes=[NearHomogeneousProbe(kappa)],
        progress=False,
    )
    for row in history.rows:
        # log(1/Σe^{−q}) ≤ q_min, and q_H,n ≥ q_n − κ‖θ‖ (|f − f_H| ≤ κ‖θ‖): each margin bounds the next
        assert row["smoothed_margin"] <= row["raw_margin"]
        assert row["corrected_margin"] <= row["homogenized_margin"]
        assert abs(row["corrected_margin"] - (row["smoothed_margin"] - kappa / row["theta_norm"])) < 1e-12
    W, b = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    a, c = model[2].weight.detach().numpy()[0], float(model[2].bias.detach())
    X, signs = data.X.numpy(), 2.0 * data.y.numpy() - 1.0
    norm = math.sqrt((W**2).sum() + (b**2).sum() + (a**2).sum() + c**2)
    q_h = signs * (np.maximum(X @ W.T + b, 0.0) @ a)  # f_H = Σ a_j ReLU(w_jᵀx + b_j), no c
    q = signs * ((X @ W.T + b) / (1 + np.exp(-(X @ W.T + b))) @ a + c)
    last = history.last
    assert abs(last["theta_norm"] - norm) < 1e-12 * norm
    assert abs(last["homogenized_margin"] - q_h.min() / norm**2) < 1e-12
    assert abs(last["raw_margin"] - q.min() / norm**2) < 1e-12
    assert abs(last["output_bias_ratio"] - abs(c) / norm) < 1e-15
    assert abs(last["smoothed_margin"] + np.log(np.exp(-q).sum()) / norm**2) < 1e-12


def test_a_run_too_short_for_a_positive_corrected_margin_fails_its_criteria_with_the_reason(tmp_path):
    result = reproduce(
        "cai-2025-near-homogeneous",
        tmp_path / "run",
        quick=True,
        overrides={"gd_steps": 20, "normalized_steps": 20, "log_points": 5, "n_per_cluster": 3, "seeds": [4]},
        progress=False,
    )
    assert not result["passed"]
    outcomes = {c["name"]: c for c in result["criteria"]}
    for name in ("corrected_margin_never_decreases", "homogenized_margin_rises", "kkt_of_homogenized_problem"):
        assert outcomes[name]["measured"] is None and not outcomes[name]["passed"]
        assert "never turned positive for seed(s) 4" in outcomes[name]["reason"]
    assert all(math.isfinite(v) for v in result["numbers"].values())  # no NaN, no inf
