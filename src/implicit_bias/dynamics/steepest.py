"""Steepest descent with respect to the ℓ2, ℓ∞ and ℓ1 norms (gradient, sign and greedy coordinate descent).

For a norm ‖·‖ with dual ‖·‖_*, steepest descent moves by Δθ = −η ‖g‖_* · argmax_{‖u‖ ≤ 1} ⟨u, g⟩ (Gunasekar et
al. 2018): Δθ = −η g for ℓ2, −η ‖g‖₁ sign(g) for ℓ∞ (sign descent), and −η ‖g‖_∞ sign(g_i) e_i at the
coordinate i of largest |g_i| for ℓ1 (greedy coordinate descent), all parameters taken as one vector. On
homogeneous networks each converges to a KKT point of the max-margin problem in its own norm (Tsilivis, Vardi &
Kempe 2024), so each maximizes its own flavour of normalized margin q_min/‖θ‖_p^L.

With ``normalize=True`` the gradient is that of log ℒ, i.e. the learning rate is η/ℒ (Nacson et al. 2019;
Ji & Telgarsky 2021): the same trajectory direction, reached in far fewer steps, and able to run with ℒ far
below 1e−308. ``normalize=False`` uses the true gradient g = ℒ ∇ log ℒ.

``degree`` L > 1 further divides the step by ‖θ‖₂^{2(L−1)}. On an L-homogeneous network the curvature of
log ℒ grows like ‖θ‖^{2(L−1)}, so this keeps every step equally small relative to it: the iterates then follow
the gradient flow (whose trajectory does not depend on how time is counted) deep into the terminal phase,
where η/ℒ alone makes ‖θ‖ explode geometrically and the iterates leave the flow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..validation import check_choice, check_scalar
from .base import LogLossOptimizer, global_norm, parameters_with_grad, require_single_group

NORMS = {"l2": 2.0, "linf": math.inf, "l1": 1.0}


class SteepestDescent(LogLossOptimizer):
    """Steepest descent in the ``norm`` ("l2", "linf" or "l1") on ℒ, or on log ℒ when ``normalize``, with
    steps divided by ‖θ‖₂^{2(degree−1)}."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        norm: str = "l2",
        normalize: bool = False,
        degree: float = 1.0,
    ) -> None:
        check_choice("norm", norm, NORMS)
        check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
        check_scalar("degree", degree, (int, float), low=1.0)
        super().__init__(params, {"lr": float(lr), "norm": norm, "normalize": bool(normalize), "degree": float(degree)})
        require_single_group(self)

    @torch.no_grad()
    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        pairs = list(parameters_with_grad(self))
        if not pairs:
            return
        group = self.param_groups[0]
        scale = group["lr"] * (1.0 if group["normalize"] else math.exp(log_loss))
        if group["degree"] != 1.0:
            scale /= float(global_norm([p for _, p in pairs])) ** (2 * (group["degree"] - 1))
        if scale == 0.0:
            return
        grads = [p.grad for _, p in pairs]
        norm = group["norm"]
        if norm == "l2":
            torch._foreach_add_([p for _, p in pairs], grads, alpha=-scale)
        elif norm == "linf":
            dual = float(global_norm(grads, 1.0))
            for (_, parameter), grad in zip(pairs, grads):
                parameter.add_(torch.sign(grad), alpha=-scale * dual)
        else:
            largest = [g.abs().max() for g in grads]
            index = int(torch.stack(largest).argmax())
            grad = grads[index].reshape(-1)
            position = int(grad.abs().argmax())
            pairs[index][1].view(-1)[position] -= scale * float(grad[position])  # −η ‖g‖_∞ sign(g_i)
