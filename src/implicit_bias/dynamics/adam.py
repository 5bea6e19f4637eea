"""Adam kept in a log-scale frame, so that it runs with ℒ far below 1e−308 (and with ε = 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..validation import check_scalar
from .base import LogLossOptimizer, parameters_with_grad


class LogAdam(LogLossOptimizer):
    """Adam (Kingma & Ba 2015) on the true gradient g = ℒ ∇ log ℒ, with its moments stored relative to running
    log-scales: m = e^s m̃ and v = e^{2r} ṽ. It receives ∇ log ℒ and log ℒ, so it never forms g itself:

        s' = max(s + log β₁, log ℒ),   m̃ ← β₁ e^{s−s'} m̃ + (1−β₁) e^{log ℒ − s'} ∇log ℒ
        r' = max(r + ½ log β₂, log ℒ), ṽ ← β₂ e^{2(r−r')} ṽ + (1−β₂) e^{2(log ℒ − r')} (∇log ℒ)²
        θ ← θ − η e^{s−r} (m̃/(1−β₁^t)) / (√(ṽ/(1−β₂^t)) + ε e^{−r})

    This is exactly Adam's update (the same as ``torch.optim.Adam`` up to rounding while ℒ is representable).
    With ε = 0 the step is scale-free and Adam tracks sign descent (ℓ∞ geometry); with ε > 0, once the
    gradients fall far below ε, it turns into gradient descent with rate η/ε (ℓ2 geometry) — the two limits of
    Tsilivis, Vardi & Kempe (2024). ``weight_decay`` is decoupled (AdamW, Loshchilov & Hutter 2019):
    θ ← θ(1 − ηλ). Coordinates whose gradient has always been zero do not move (where ε = 0 makes 0/0).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] | list[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
        check_scalar("eps", eps, (int, float), low=0.0)
        check_scalar("weight_decay", weight_decay, (int, float), low=0.0)
        beta1, beta2 = (float(b) for b in betas)
        check_scalar("betas[0]", beta1, float, low=0.0, high=1.0, high_inclusive=False)
        check_scalar("betas[1]", beta2, float, low=0.0, high=1.0, high_inclusive=False)
        super().__init__(
            params,
            {
                "lr": float(lr),
                "betas": (beta1, beta2),
                "eps": float(eps),
                "weight_decay": float(weight_decay),
            },
        )

    @torch.no_grad()
    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        for group, parameter in parameters_with_grad(self):
            beta1, beta2 = group["betas"]
            state = self.state[parameter]
            grad = parameter.grad
            if not state:
                state.update(
                    step=0,
                    frame_m=log_loss,
                    frame_v=log_loss,
                    exp_avg=torch.zeros_like(parameter),
                    exp_avg_sq=torch.zeros_like(parameter),
                )
            state["step"] += 1
            frame_m = max(state["frame_m"] + _log(beta1), log_loss)
            frame_v = max(state["frame_v"] + 0.5 * _log(beta2), log_loss)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.mul_(beta1 * math.exp(state["frame_m"] - frame_m)).add_(
                grad, alpha=(1 - beta1) * math.exp(log_loss - frame_m)
            )
            v.mul_(beta2 * math.exp(2 * (state["frame_v"] - frame_v))).addcmul_(
                grad, grad, value=(1 - beta2) * math.exp(2 * (log_loss - frame_v))
            )
            state["frame_m"], state["frame_v"] = frame_m, frame_v
            if group["weight_decay"]:
                parameter.mul_(1 - group["lr"] * group["weight_decay"])
            correction1 = 1 - beta1 ** state["step"]
            correction2 = 1 - beta2 ** state["step"]
            eps_in_frame = group["eps"] * _exp(-frame_v)
            denominator = (v / correction2).sqrt_().add_(eps_in_frame)
            update = (m / correction1).div_(denominator).nan_to_num_(nan=0.0)
            parameter.add_(update, alpha=-group["lr"] * math.exp(frame_m - frame_v))


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf
