"""The protocol of optimizers that step on log ℒ, and helpers they share."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..errors import InvalidArgumentError


class LogLossOptimizer(torch.optim.Optimizer):
    """An optimizer that receives the gradient of log ℒ (not of ℒ) and the value log ℒ at each step.

    ∇ log ℒ = ∇ℒ/ℒ stays finite when ℒ is far below the smallest float64, so such an optimizer can run as
    deep into the terminal phase as the dynamics go. The true gradient is e^{log ℒ} ∇ log ℒ; an optimizer that
    needs it forms it itself (it underflows to 0 exactly when the real update would be negligible).
    :func:`implicit_bias.train.fit` backpropagates log ℒ and calls ``step(log_loss=value)``; by hand::

        log_value = implicit_bias.losses.log_loss(model(X), y, "exponential")
        optimizer.zero_grad(); log_value.backward(); optimizer.step(log_loss=float(log_value))
    """

    steps_on_log_loss = True
    steps_at_exact_fit = False  # whether step(log_loss=-inf) with zero gradients still moves θ (momentum, decay)

    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        raise NotImplementedError


def parameters_with_grad(optimizer: torch.optim.Optimizer) -> Iterable[tuple[dict, torch.Tensor]]:
    """(group, parameter) for every parameter that received a gradient."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                yield group, parameter


def global_norm(tensors: Iterable[torch.Tensor], p: float = 2) -> torch.Tensor:
    """‖(t₁, t₂, …)‖_p of several tensors taken as one vector (p = 1, 2 or ∞), as a 0-d tensor."""
    norms = torch.stack([torch.linalg.vector_norm(t, ord=p) for t in tensors])
    return norms.max() if p == math.inf else torch.linalg.vector_norm(norms, ord=p)


def require_single_group(optimizer: torch.optim.Optimizer) -> None:
    """Refuse several parameter groups: the optimizer treats all parameters as one vector."""
    if len(optimizer.param_groups) != 1:
        raise InvalidArgumentError(
            f"{type(optimizer).__name__} treats all parameters as one vector and takes a single parameter group, "
            f"got {len(optimizer.param_groups)}"
        )
