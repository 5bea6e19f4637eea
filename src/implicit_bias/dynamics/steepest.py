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
        """One step, on the device: no host sync (the norms, the sign and the coordinate stay tensors)."""
        pairs = list(parameters_with_grad(self))
        if not pairs:
            return
        group = self.param_groups[0]
        scale = group["lr"] * (1.0 if group["normalize"] else math.exp(log_loss))
        if scale == 0.0:
            return
        parameters = [p for _, p in pairs]
        grads = [p.grad for p in parameters]
        factor: float | torch.Tensor = scale
        if group["degree"] != 1.0:  # η/‖θ‖^{2(L−1)}; 0 at θ = 0, where an L-homogeneous model's gradient is 0
            power = global_norm(parameters) ** (2 * (group["degree"] - 1))
            factor = torch.where(power > 0, scale / power, 0.0)
        norm = group["norm"]
        if norm == "l2":
            if isinstance(factor, float):
                torch._foreach_add_(parameters, grads, alpha=-factor)
            else:
                torch._foreach_sub_(parameters, torch._foreach_mul(grads, factor))
        elif norm == "linf":  # −η ‖g‖₁ sign(g)
            signs = torch._foreach_sign(grads)
            torch._foreach_mul_(signs, global_norm(grads, 1.0) * factor)
            torch._foreach_sub_(parameters, signs)
        else:  # −η g_i e_i at the first coordinate i of largest |g_i|, all parameters taken as one vector
            flat = torch.cat([g.reshape(-1) for g in grads])
            position = flat.abs().argmax().reshape(1)
            update = torch.zeros_like(flat).index_copy_(0, position, flat.index_select(0, position) * factor)
            torch._foreach_sub_(
                parameters, [u.view_as(p) for u, p in zip(update.split([p.numel() for p in parameters]), parameters)]
            )
