"""Directional convergence and gradient alignment (Ji & Telgarsky 2020), and parameter norms."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import InvalidArgumentError
from ..losses import log_loss
from ..models.inference import evaluation, model_device, model_dtype
from ..validation import check_features_labels


def flat_parameters(source: nn.Module | Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """θ as one float64 vector, from a model (its parameters, in order), a name → tensor mapping, or a tensor."""
    if isinstance(source, nn.Module):
        tensors = [p.detach() for p in source.parameters()]
    elif isinstance(source, Mapping):
        tensors = [t.detach() for t in source.values()]
    elif isinstance(source, torch.Tensor):
        tensors = [source.detach()]
    else:
        raise InvalidArgumentError(f"expected a model, a mapping of tensors or a tensor, got {type(source).__name__}")
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])


def _cosine(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    norms = a.norm() * b.norm()
    if not norms > 0:
        raise InvalidArgumentError(f"{what} is undefined: one of the vectors is zero")
    return float(torch.dot(a, b) / norms)


def direction_cosine(
    theta_a: nn.Module | Mapping[str, torch.Tensor] | torch.Tensor,
    theta_b: nn.Module | Mapping[str, torch.Tensor] | torch.Tensor,
) -> float:
    """cos(θ_a, θ_b) = ⟨θ_a, θ_b⟩/(‖θ_a‖‖θ_b‖), all parameters as one vector.

    Along a training run, cos(θ_t, θ_{t'}) → 1 over log-spaced t < t' is the directional convergence of
    Ji & Telgarsky (2020, Thm 3.1): θ_t/‖θ_t‖ converges for homogeneous networks on exponential-type losses.
    """
    a, b = flat_parameters(theta_a), flat_parameters(theta_b)
    if a.shape != b.shape:
        raise InvalidArgumentError(f"parameter vectors differ in size: {a.numel()} and {b.numel()}")
    return _cosine(a, b, "the direction cosine")


def alignment(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str = "exponential") -> float:
    """cos(θ, −∇ℒ(θ)), the alignment of the parameters with the negative gradient (Ji & Telgarsky 2020, Thm 4.1:
    → 1 for homogeneous networks under gradient flow on exponential-type losses).

    Computed from ∇ log ℒ = ∇ℒ/ℒ (same direction), so it stays exact when ℒ underflows float64.
    """
    check_features_labels(X, y)
    parameters = [p for p in model.parameters() if p.requires_grad]
    X = X.to(device=model_device(model), dtype=model_dtype(model))
    with evaluation(model), torch.enable_grad():
        value = log_loss(model(X), y.to(X.device), loss)
        grads = torch.autograd.grad(value, parameters, allow_unused=True)
    gradient = torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64) for g, p in zip(grads, parameters)]
    )
    theta = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in parameters])
    return _cosine(theta, -gradient, "the alignment")


def layer_norms(model: nn.Module) -> dict[str, float]:
    """‖W‖_F of every parameter tensor, by name (float64)."""
    return {name: float(p.detach().to(torch.float64).norm()) for name, p in model.named_parameters()}
