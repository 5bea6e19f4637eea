"""Progressive Rescaling Gradient Descent (Wang, Min & Wu 2024) for margin maximization."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import NumericalError
from ..validation import check_scalar
from .base import LogLossOptimizer, global_norm, parameters_with_grad, require_single_group


class ProgressiveRescaling(LogLossOptimizer):
    """PRGD: projected normalized gradient steps on spheres ‖θ‖ = R_k whose radius grows geometrically.

    Stage k runs ``stage_steps`` steps θ ← R_k (θ − η ĝ)/‖θ − η ĝ‖ with ĝ = ∇ℒ/‖∇ℒ‖ (the direction of ∇ log ℒ),
    then rescales θ ← θ·``growth`` (R_{k+1} = growth·R_k). On the sphere of radius R the loss is a soft-min of
    margins at temperature 1/R, whose minimizer's margin is within log N / R of the maximum; growing R
    geometrically while keeping a non-vanishing centripetal velocity is what gives PRGD its exponential rate
    on linearly separable data (Wang, Min & Wu 2024, "Achieving margin maximization exponentially fast via
    progressive norm rescaling", ICML), against O(1/log t) for GD and O(1/t) for normalized GD.
    ``radius`` is R_0 (default: ‖θ‖ at the first step, or 1 if θ = 0).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        growth: float = 2.0,
        stage_steps: int = 5,
        radius: float | None = None,
    ) -> None:
        check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
        check_scalar("growth", growth, (int, float), low=1.0)
        check_scalar("stage_steps", stage_steps, int, low=1)
        if radius is not None:
            check_scalar("radius", radius, (int, float), low=0.0, low_inclusive=False)
        defaults = {"lr": float(lr), "growth": float(growth), "stage_steps": stage_steps, "radius": radius, "steps": 0}
        super().__init__(params, defaults)
        require_single_group(self)

    @torch.no_grad()
    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        group = self.param_groups[0]
        parameters = [p for _, p in parameters_with_grad(self)]
        if not parameters:
            return
        if group["radius"] is None:
            norm = float(global_norm(parameters))
            group["radius"] = norm if norm > 0 else 1.0
        grad_norm = float(global_norm([p.grad for p in parameters]))
        if grad_norm == 0.0:
            raise NumericalError("PRGD met a zero gradient: the loss is flat here, so there is no direction to follow")
        torch._foreach_add_(parameters, [p.grad for p in parameters], alpha=-group["lr"] / grad_norm)
        torch._foreach_mul_(parameters, group["radius"] / float(global_norm(parameters)))
        group["steps"] += 1
        if group["steps"] % group["stage_steps"] == 0:
            group["radius"] *= group["growth"]
            torch._foreach_mul_(parameters, group["growth"])
