"""Adam kept in log scale per coordinate, so that it runs with ℒ far below 1e−308 (and with ε = 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..validation import check_scalar
from .base import LogLossOptimizer, parameters_with_grad


class LogAdam(LogLossOptimizer):
    """Adam (Kingma & Ba 2015) on the true gradient g = e^{log ℒ} ∇log ℒ, which it never forms: it receives
    ∇log ℒ and log ℒ and keeps, per coordinate, the log of the root mean square ρ = log √v and the normalized
    momentum μ = m/√v (both float64):

        log|g| = log ℒ + log|∇log ℒ|
        ρ' = ½ log(β₂ e^{2ρ} + (1−β₂) e^{2 log|g|})                             (v' = β₂v + (1−β₂)g²)
        μ' = β₁ e^{ρ−ρ'} μ + (1−β₁) sign(g) e^{log|g| − ρ'}                      (m' = β₁m + (1−β₁)g)
        θ ← θ − η (√(1−β₂^t)/(1−β₁^t)) μ' · σ(ρ' − log ε − ½ log(1−β₂^t))

    The last factor, the logistic σ, is √v̂/(√v̂ + ε) (1 when ε = 0), so this is exactly Adam's step
    η m̂/(√v̂ + ε) — the same as ``torch.optim.Adam`` up to rounding while ℒ is representable, and the exact Adam
    step (to a relative |log ℒ|·1e−16, the precision of log ℒ itself) when it is not. ρ' is evaluated about the
    larger of its two terms, so nothing is squared but numbers in [0, 1] and nothing overflows or underflows,
    however small ℒ or any one gradient component is (e^{ρ−ρ'} ≤ β₂^{−½}, e^{log|g|−ρ'} ≤ (1−β₂)^{−½}).

    With ε = 0 the step is scale-free and Adam tracks sign descent (ℓ∞ geometry); with ε > 0, once √v̂ falls
    far below ε, it turns into gradient descent with rate η/ε (ℓ2 geometry) — the two limits of Tsilivis,
    Vardi & Kempe (2024) — and its steps become as small as that gradient descent's. ``weight_decay`` is
    decoupled (AdamW, Loshchilov & Hutter 2019): θ ← θ(1 − ηλ). A coordinate whose gradient has always been
    exactly zero does not move. β₂ must be > 0 (β₂ = 0 would need log 0).

    In the terminal phase with ε = 0, √v remembers earlier, larger gradients: once ℒ falls faster than √β₂ per
    step, Adam's steps shrink until log ℒ falls by ½|log β₂| a step (5e−4 for β₂ = 0.999), whatever η.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
        check_scalar("eps", eps, (int, float), low=0.0)
        check_scalar("weight_decay", weight_decay, (int, float), low=0.0)
        beta1, beta2 = (float(b) for b in betas)
        check_scalar("betas[0]", beta1, float, low=0.0, high=1.0, high_inclusive=False)
        check_scalar("betas[1]", beta2, float, low=0.0, low_inclusive=False, high=1.0, high_inclusive=False)
        super().__init__(
            params,
            {
                "lr": float(lr),
                "betas": (beta1, beta2),
                "eps": float(eps),
                "weight_decay": float(weight_decay),
            },
        )

    steps_at_exact_fit = True  # ℒ = 0 (an exact mse fit): the momentum and the weight decay still act

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but the moments stay float64: torch casts floating state to each parameter's dtype, which
        would round a float32 model's log-frame moments and break exact resume."""
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        parameters = [p for group in self.param_groups for p in group["params"]]
        for saved_id, parameter in zip(saved_ids, parameters):
            for key in ("log_rms", "normalized_momentum"):
                value = state_dict["state"].get(saved_id, {}).get(key)
                if value is not None:
                    self.state[parameter][key] = value.to(device=parameter.device, dtype=torch.float64)

    @torch.no_grad()
    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        for group, parameter in parameters_with_grad(self):
            beta1, beta2 = group["betas"]
            state = self.state[parameter]
            if not state:
                state.update(
                    step=0,
                    log_rms=torch.full_like(parameter, -math.inf, dtype=torch.float64),
                    normalized_momentum=torch.zeros_like(parameter, dtype=torch.float64),
                )
            state["step"] += 1
            log_rms, momentum = state["log_rms"], state["normalized_momentum"]
            log_grad = parameter.grad.abs().to(torch.float64).log_().add_(log_loss)
            # ρ' = h + log √(β₂ e^{2(ρ−h)} + (1−β₂) e^{2(log|g|−h)}) about h = the larger of the two terms, floored
            # so that nothing − (−inf) is formed: where ρ = log|g| = −inf, both weights are 0 and ρ' stays −inf
            high = torch.maximum(log_rms + 0.5 * math.log(beta2), log_grad + 0.5 * math.log1p(-beta2))
            high.clamp_(min=_FLOOR)
            old, new = torch.exp(log_rms - high), torch.exp(log_grad.sub_(high))  # e^{ρ−h}, e^{log|g|−h}
            rms = old.square().mul_(beta2).add_(new.square(), alpha=1 - beta2).sqrt_()  # √v'/e^h ∈ [1, √2], or 0
            momentum.mul_(old).mul_(beta1).add_(new.mul_(parameter.grad.sign()), alpha=1 - beta1)
            momentum.div_(rms.clamp(min=1.0))
            torch.add(high, rms.log_(), out=log_rms)
            if group["weight_decay"]:
                parameter.mul_(1 - group["lr"] * group["weight_decay"])
            correction1 = 1 - beta1 ** state["step"]
            correction2 = 1 - beta2 ** state["step"]
            direction = momentum * (math.sqrt(correction2) / correction1)
            if group["eps"] > 0:
                direction.mul_(torch.sigmoid(log_rms - (math.log(group["eps"]) + 0.5 * math.log(correction2))))
            parameter.sub_(direction.to(parameter.dtype), alpha=group["lr"])


_FLOOR = torch.finfo(torch.float64).min  # a finite stand-in for log 0: e^{x − _FLOOR} is 0 for x = −inf, not NaN
