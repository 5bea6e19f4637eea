"""poggio-liao-2020: ρ, the init rescaling, batch norm's scale invariance, population statistics and the
stacked SGD, each against a hand computation or PyTorch's own per-network modules."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from implicit_bias.errors import InvalidArgumentError
from implicit_bias.experiments.poggio_liao_2020 import (
    StackedMLP,
    normalized_margins,
    rescale_weights,
    rho,
    rho_factors,
    set_population_statistics,
)
from implicit_bias.models import build


def _tiny_bn_network() -> nn.Sequential:
    """x ↦ w₂ᵀ ReLU(BN(W₁x)) with W₁ = [[1, 2], [3, 4]], γ = (2, 0.5), running variance (4, 1), ε = 0,
    w₂ = (3, 4)."""
    model = nn.Sequential(
        nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2, eps=0.0), nn.ReLU(), nn.Linear(2, 1, bias=False)
    ).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([2.0, 0.5]))
        model[1].running_var.copy_(torch.tensor([4.0, 1.0]))
        model[3].weight.copy_(torch.tensor([[3.0, 4.0]]))
    return model.eval()


def test_rho_of_a_hand_built_bn_network_is_the_hand_product() -> None:
    # γ/σ = (2/2, 0.5/1): rows (1, 2) and (1.5, 2), ‖·‖_F² = 1 + 4 + 2.25 + 4 = 11.25; ‖w₂‖ = 5
    model = _tiny_bn_network()
    assert rho_factors(model) == pytest.approx({"0": math.sqrt(11.25), "3": 5.0}, rel=1e-15)
    assert rho(model) == pytest.approx(5.0 * math.sqrt(11.25), rel=1e-15)
    plain = nn.Sequential(model[0], nn.ReLU(), model[3])  # no batch norm: Π‖W_k‖_F = √30 · 5
    assert rho(plain) == pytest.approx(math.sqrt(30.0) * 5.0, rel=1e-15)


def test_rescale_weights_gives_every_layer_frobenius_norm_s() -> None:
    model = build("mlp:depth=3,width=7,norm=batchnorm,bias=false", (5,), 2, seed=3)
    with torch.no_grad():
        model.layer1[1].weight.fill_(1.7)  # a batch-norm gain that must stay
    rescale_weights(model, 0.3)
    weights = [model.layer1[0].weight, model.layer2[0].weight, model.head.weight]
    for weight in weights:
        assert float(torch.linalg.matrix_norm(weight.detach().double())) == pytest.approx(0.3, rel=1e-6)
    assert torch.equal(model.layer1[1].weight.detach(), torch.full((7,), 1.7))
    with pytest.raises(InvalidArgumentError, match="scale"):
        rescale_weights(model, 0.0)


def test_population_statistics_make_eval_equal_a_full_batch_training_pass() -> None:
    model = build("mlp:depth=3,width=6,norm=batchnorm,bias=false", (4,), 2, seed=1).double()
    X = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(model).train()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.track_running_stats, module.running_mean, module.running_var = False, None, None
    set_population_statistics(model, X)
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(X), reference(X), rtol=1e-12, atol=1e-12)
        z = (X @ model.layer1[0].weight.T).numpy()  # layer 1's pre-BN activations
    np.testing.assert_allclose(model.layer1[1].running_var.numpy(), z.var(axis=0), rtol=1e-12)  # biased variance
    np.testing.assert_allclose(model.layer1[1].running_mean.numpy(), z.mean(axis=0), rtol=1e-12, atol=1e-15)


def test_normalized_margin_is_invariant_to_rescaling_a_layer_before_batch_norm() -> None:
    model = build("mlp:depth=3,width=8,norm=batchnorm,bias=false", (4,), 2, seed=2).double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eps = 1e-200  # scale invariance to float64 rounding (ε breaks it by O(ε/var); 0 is refused)
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 2, (40,), generator=generator)
    set_population_statistics(model, X)
    with torch.no_grad():
        before, margin, norm = model(X), normalized_margins(model, X, y), rho(model)
        model.layer2[0].weight.mul_(7.3)
        set_population_statistics(model, X)
        torch.testing.assert_close(model(X), before, rtol=1e-12, atol=1e-12)  # f unchanged
        torch.testing.assert_close(normalized_margins(model, X, y), margin, rtol=1e-12, atol=1e-12)
    assert rho(model) == pytest.approx(norm, rel=1e-12)


def test_sgd_step_on_a_scale_invariant_layer_grows_its_norm_by_eta_squared_gradient() -> None:
    # ∇_W ℒ ⊥ W for a weight before batch norm (ε → 0), so ‖W − ηg‖² = ‖W‖² + η²‖g‖² exactly
    model = build("mlp:depth=2,width=5,norm=batchnorm,bias=false", (3,), 2, seed=4).double()
    model.layer1[1].eps = 1e-200
    X = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = 0.5 * (model(X)[:, 0] - torch.linspace(-1, 1, 16, dtype=torch.float64)).square().mean()
    loss.backward()
    weight, gradient, eta = model.layer1[0].weight.detach(), model.layer1[0].weight.grad, 0.7
    assert float((weight * gradient).sum()) == pytest.approx(0.0, abs=1e-14)
    after = float((weight - eta * gradient).norm() ** 2)
    assert after == pytest.approx(float(weight.norm() ** 2 + eta**2 * gradient.norm() ** 2), rel=1e-13)


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_stacked_networks_match_each_network_trained_alone(norm: str) -> None:
    models = [build(f"mlp:depth=3,width=6,norm={norm},bias=false", (4,), 2, seed=s).double() for s in range(3)]
    alone = copy.deepcopy(models)
    stack = StackedMLP(models)
    generator = torch.Generator().manual_seed(5)
    X = torch.randn(3, 10, 4, dtype=torch.float64, generator=generator)  # a different batch for each network
    targets = torch.randn(3, 10, dtype=torch.float64, generator=generator)
    options = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}
    stacked = torch.optim.SGD(list(stack.params.values()), **options)
    singles = [torch.optim.SGD(m.parameters(), **options) for m in alone]
    for _ in range(3):
        outputs = stack.outputs(X)
        for r, model in enumerate(alone):
            torch.testing.assert_close(outputs[r], model.train()(X[r])[:, 0].detach(), rtol=1e-12, atol=1e-12)
        stacked.zero_grad()
        (0.5 * (outputs - targets).square().mean(dim=1).sum()).backward()
        stacked.step()
        for r, (model, optimizer) in enumerate(zip(alone, singles)):
            optimizer.zero_grad()
            (0.5 * (model(X[r])[:, 0] - targets[r]).square().mean()).backward()
            optimizer.step()
    for r, model in enumerate(stack.write_back(X[0])):
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(parameter, dict(alone[r].named_parameters())[name], rtol=1e-12, atol=1e-14)


def test_rho_refuses_a_batch_norm_without_running_statistics() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(InvalidArgumentError, match="running statistics"):
        rho(model)


def test_stacked_mlp_refuses_networks_it_would_not_reproduce() -> None:
    with pytest.raises(InvalidArgumentError, match="bias-free ReLU MLPs"):
        StackedMLP([build("mlp:depth=2,width=4,bias=true", (3,), 2, seed=0)])  # its biases would be dropped
    for spec in (
        "mlp:depth=2,width=4,bias=false,activation=leaky_relu",
        "mlp:depth=2,width=4,bias=false,head_norm=batchnorm",
    ):
        with pytest.raises(InvalidArgumentError, match="bias-free ReLU MLPs"):
            StackedMLP([build(spec, (3,), 2, seed=0)])
    with pytest.raises(InvalidArgumentError, match="one architecture"):
        StackedMLP([build(f"mlp:depth=2,width={w},bias=false", (3,), 2, seed=0) for w in (4, 5)])


@pytest.mark.parametrize(("weight_decay", "monotone"), [(0.0, True), (0.5, False)])
def test_momentum_sgd_never_shrinks_a_scale_invariant_weight_without_weight_decay(weight_decay, monotone) -> None:
    # With g_t ⊥ W_t and v_(t+1) = μ v_t + g_t, a_t = ⟨W_(t−1), v_t⟩ obeys a_(t+1) = μ(a_t − η‖v_t‖²), a_1 = 0, so
    # a_t ≤ 0 and ‖W_(t+1)‖² = ‖W_t‖² − 2η a_(t+1) + η²‖v_(t+1)‖² ≥ ‖W_t‖²; weight decay adds −2ηλ‖W‖² and can shrink it
    model = build("mlp:depth=2,width=6,norm=batchnorm,bias=false", (3,), 2, seed=5).double()
    model.layer1[1].eps = 1e-200
    generator = torch.Generator().manual_seed(3)
    X = torch.randn(64, 3, dtype=torch.float64, generator=generator)
    y = torch.sign(X[:, 0] * X[:, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=weight_decay)
    norms = [float(model.layer1[0].weight.detach().norm())]
    for _ in range(40):
        batch = torch.randperm(64, generator=generator)[:16]
        optimizer.zero_grad()
        (0.5 * (model(X[batch])[:, 0] - y[batch]).square().mean()).backward()
        optimizer.step()
        norms.append(float(model.layer1[0].weight.detach().norm()))
    relative_drops = -np.diff(norms) / np.asarray(norms[:-1])
    assert (relative_drops.max() <= 1e-14) == monotone
