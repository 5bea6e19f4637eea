"""Directional convergence and gradient alignment (Ji & Telgarsky 2020), and parameter norms."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgumentError
from ..losses import LOSSES, log_loss
from ..models.inference import evaluation, sample_slices, to_model
from ..validation import check_choice, check_features_labels
from .margins import model_labels


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


def alignment(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str = "exponential", *, batch_size: int | None = None
) -> float:
    """cos(θ, −∇ℒ(θ)), the alignment of the parameters with the negative gradient (Ji & Telgarsky 2020, Thm 4.1:
    → 1 for homogeneous networks under gradient flow on exponential-type losses).

    Computed from ∇ log ℒ = ∇ℒ/ℒ (same direction), so it stays exact when ℒ underflows float64. With
    ``batch_size`` the gradient is accumulated over batches b in log space: ∇ log ℒ = Σ_b e^{s_b − S} ∇s_b,
    s_b = log ℒ_b, S = log Σ_b e^{s_b}, rescaled as S grows (one pass; gradients summed in float64).
    """
    check_features_labels(X, y)
    check_choice("loss", loss, LOSSES)
    labels = model_labels(model, X, y)
    parameters = [p for p in model.parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in parameters])
    gradient, total = torch.zeros_like(theta), -math.inf  # Σ_b e^{s_b − S} ∇s_b and S over the batches so far
    with evaluation(model), torch.enable_grad():
        for s in sample_slices(X.shape[0], batch_size):
            outputs = model(to_model(model, X[s]))
            value = log_loss(outputs, labels[s].to(outputs.device), loss, validate=False)
            log_value = float(value.detach())
            if log_value == -math.inf:  # ℒ_b = 0 (an exact mse fit): no part of ∇ℒ
                continue
            grads = torch.autograd.grad(value, parameters, allow_unused=True)
            step = torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
                    for g, p in zip(grads, parameters)
                ]
            )
            joined = float(np.logaddexp(total, log_value))
            gradient = gradient * math.exp(total - joined) + step * math.exp(log_value - joined)
            total = joined
    return _cosine(theta, -gradient, "the alignment")


def layer_norms(model: nn.Module) -> dict[str, float]:
    """‖W‖_F of every parameter tensor, by name (float64)."""
    return {name: float(p.detach().to(torch.float64).norm()) for name, p in model.named_parameters()}
