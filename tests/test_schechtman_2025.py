"""schechtman-2025-sgd-late-stage: the normalized step, the KKT residual at hand-built points, the minibatch order
and the batched SGD step against hand-derived gradients, the warm start, and a run whose premise fails.

The quick preset itself runs in tests/test_experiments.py (a parametrized row per registered experiment).
"""

import math

import numpy as np
import pytest
import torch

from implicit_bias.data import load
from implicit_bias.experiments import reproduce
from implicit_bias.experiments.schechtman_2025 import (
    Schechtman2025Config,
    StackedNetworks,
    _warm_start,
    normalized_steps,
    run_sgd,
    sgd_order,
    two_layer_relu,
)
from implicit_bias.metrics import margins, normalized_margin
from implicit_bias.metrics.direction import flat_parameters
from implicit_bias.metrics.kkt import kkt_residual
from implicit_bias.train import fit


def test_normalized_step_is_the_chord_between_directions_whatever_the_norms():
    angles = np.array([0.0, 0.0, 0.3, 1.3, -2.0])
    radii = np.array([1.0, 5.0, 0.2, 7.0, 3.0])
    thetas = torch.tensor(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1))
    expected = 2 * np.abs(np.sin(np.diff(angles) / 2))  # chord of the unit circle between consecutive angles
    assert np.allclose(normalized_steps(thetas).numpy(), expected, atol=1e-15)
    assert np.allclose(normalized_steps(torch.stack([thetas, 2 * thetas])).numpy(), [expected, expected])


def _two_neuron_net(x_plus: np.ndarray, x_minus: np.ndarray, imbalance: float) -> torch.nn.Sequential:
    """Neuron 1 along x₊ with a₁ > 0, neuron 2 along x₋ with a₂ < 0, each with q = 1 on its point; neuron 1's
    layers scaled by (1/imbalance, imbalance), which leaves q unchanged."""
    model = two_layer_relu(2, 2, 0)
    rows, outer = [], []
    for x, sign, c in ((x_plus, 1.0, imbalance), (x_minus, -1.0, 1.0)):
        alpha = np.linalg.norm(x) ** -1.5  # w = αx, |a| = α‖x‖: q = a wᵀx = α²‖x‖³ = 1
        rows.append(alpha * x / c)
        outer.append(sign * alpha * np.linalg.norm(x) * c)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(np.array(rows)))
        model[2].weight.copy_(torch.tensor([outer]))
    return model


def test_kkt_residual_vanishes_at_a_hand_built_kkt_point_and_matches_the_closed_form_off_it():
    # x₊ᵀx₋ < 0, so each neuron is inactive on the other point: ∇q₊ lives on neuron 1, ∇q₋ on neuron 2, and
    # θ = μ₊∇q₊ + μ₋∇q₋ with μ = 1/‖x‖ exactly when each neuron is balanced (‖w_j‖ = |a_j|). x₃ = 2x₊ has q = 2,
    # outside the support.
    x_plus, x_minus = np.array([1.0, -0.5]), np.array([-0.7, 1.4])
    X = torch.tensor(np.stack([x_plus, x_minus, 2 * x_plus]))
    y = torch.tensor([1, 0, 1])
    residual = kkt_residual(_two_neuron_net(x_plus, x_minus, 1.0), X, y, degree=2)
    assert residual.epsilon < 1e-12 and abs(residual.delta) < 1e-12

    # Unbalanced neuron 1, (wᵀx̂₊, a₁) = p(1, c²): its gradient block ‖x₊‖(a₁, wᵀx̂₊) points along (c², 1), and
    # the best μ₊ leaves the distance of p(1, c²) from that ray; neuron 2 still fits exactly.
    c = math.sqrt(2.0)
    model = _two_neuron_net(x_plus, x_minus, c)
    p = np.linalg.norm(x_plus) ** -0.5 / c
    v, g = p * np.array([1.0, c**2]), np.array([c**2, 1.0])
    off = np.linalg.norm(v - max(0.0, v @ g / (g @ g)) * g)
    theta_norm = math.sqrt(sum(float(w.detach().square().sum()) for w in model.parameters()))
    residual = kkt_residual(model, X, y, degree=2)
    assert abs(residual.epsilon - off / theta_norm) < 1e-12
    assert residual.epsilon > 0.2


def test_each_epoch_visits_every_sample_once_in_a_new_order():
    for n, batch_size in ((7, 1), (7, 3), (8, 8)):
        batches = sgd_order(n, batch_size, seed=3, epochs=4)
        per_epoch = len(batches) // 4
        assert per_epoch == (n if batch_size == 1 else 2 if batch_size == 3 else 1)
        epochs = [torch.cat(batches[e * per_epoch : (e + 1) * per_epoch]).tolist() for e in range(4)]
        assert all(sorted(order) == list(range(n)) for order in epochs)
        if batch_size < n:
            assert len({tuple(order) for order in epochs}) > 1
    first = [b.tolist() for b in sgd_order(7, 1, seed=3, epochs=1)]
    assert first != [b.tolist() for b in sgd_order(7, 1, seed=4, epochs=1)]  # each seed draws its own batches


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batched_sgd_step_matches_hand_derived_exponential_loss_gradients(batch_size):
    seeds, lr = (0, 1), 0.3
    datasets = [load("xor", n_per_cluster=1, test_per_cluster=0, noise=0.2, seed=s) for s in seeds]
    models = [two_layer_relu(2, 3, s) for s in seeds]
    expected = []
    for model, data, seed in zip(models, datasets, seeds):
        W, a = model[0].weight.detach().numpy().copy(), model[2].weight.detach().numpy()[0].copy()
        X, signs = data.X.numpy(), 2.0 * data.y.numpy() - 1.0
        for batch in sgd_order(len(X), batch_size, seed, epochs=2):
            gW, ga = np.zeros_like(W), np.zeros_like(a)
            for n in batch.tolist():
                pre = W @ X[n]
                weight = -signs[n] * math.exp(-signs[n] * (a @ np.maximum(pre, 0)))  # dℓ/df for ℓ = e^{−y f}
                ga += weight * np.maximum(pre, 0)
                gW += weight * np.outer(a * (pre > 0), X[n])
            W, a = W - lr * gW, a - lr * ga
        expected.append(np.concatenate([W.ravel(), a]))
    networks = StackedNetworks(models)
    run = run_sgd(
        networks, datasets, batch_size=batch_size, lr=lr, epochs=2, seeds=seeds, loss="exponential", log_epochs=[0, 2]
    )
    assert np.allclose(networks.flat().numpy(), np.array(expected), atol=1e-13)
    final = [networks.model(s) for s in range(2)]
    for s, data in enumerate(datasets):
        q = margins(final[s], data.X, data.y)
        norm = float(networks.flat()[s].norm())
        assert abs(run["theta_norm"][1, s] - norm) < 1e-13
        assert abs(run["margin"][1, s] - float(q.min()) / norm**2) < 1e-13
        assert abs(run["log_loss"][1, s] - math.log(float(torch.exp(-q).sum()))) < 1e-12
    assert np.isnan(run["step"][0]).all() and (run["step"][1] > 0).all()


def test_warm_start_rescales_to_the_start_margin_without_changing_the_direction():
    config = Schechtman2025Config(warmup_steps=150, start_margin=2.5)
    data = load("xor", n_per_cluster=5, test_per_cluster=0, noise=0.2, seed=1)
    model, margin = _warm_start(config, 1, data, progress=False)
    gd = two_layer_relu(2, config.width, 1)
    fit(gd, data, loss="exponential", optimizer="gd", steps=150, lr=config.warmup_lr, seed=1, progress=False)
    q_min = float(margins(gd, data.X, data.y).min())
    assert q_min > 0
    scale = math.sqrt(2.5 / q_min)  # q is 2-homogeneous: c·θ has margins c²·q
    assert np.allclose(flat_parameters(model).numpy(), scale * flat_parameters(gd).numpy(), rtol=1e-12, atol=0)
    assert abs(float(margins(model, data.X, data.y).min()) - 2.5) < 1e-12
    assert abs(margin - normalized_margin(gd, data.X, data.y, degree=2)) < 1e-12


def test_a_warm_start_that_does_not_separate_fails_every_criterion_with_the_reason(tmp_path):
    result = reproduce(
        "schechtman-2025-sgd-late-stage",
        tmp_path / "run",
        quick=True,
        overrides={"warmup_steps": 0, "epochs": 2, "seeds": [0]},
        progress=False,
    )
    assert not result["passed"]
    assert all(not c["passed"] and "did not separate" in c["reason"] for c in result["criteria"])
