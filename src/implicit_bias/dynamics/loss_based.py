"""The loss-based learning rate of Lyu & Li (2020) with rollback."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..validation import check_scalar
from .base import LogLossOptimizer, parameters_with_grad, require_single_group

GROW = 2 ** (1 / 5)
SHRINK = 2 ** (1 / 10)


class LossBasedLR(LogLossOptimizer):
    """Gradient descent with η_t = α_t / ℒ(θ_t), i.e. θ ← θ − α_t ∇ log ℒ (Lyu & Li 2020, Appendix; their code's
    ``LossBasedLR``).

    After a step that did not increase the loss, α ← α·2^{1/5}; after one that did, the step is undone
    (θ and its gradient restored) and α ← α/2^{1/10} before stepping again. Meant for full-batch training: each
    step is an "epoch". ``lr`` is the initial α; ``param_groups[0]["lr"]`` always holds the current α and
    ``"rejected"`` counts undone steps.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
        super().__init__(params, {"lr": float(lr), "previous_log_loss": None, "rejected": 0})
        require_single_group(self)

    @torch.no_grad()
    def step(self, closure: None = None, *, log_loss: float) -> None:  # type: ignore[override]
        group = self.param_groups[0]
        pairs = list(parameters_with_grad(self))
        previous = group["previous_log_loss"]
        if previous is not None and log_loss > previous:  # the last step raised the loss: undo it, shrink α
            group["lr"] /= SHRINK
            group["rejected"] += 1
            for _, parameter in pairs:
                parameter.copy_(self.state[parameter]["previous"])
        else:
            if previous is not None:
                group["lr"] *= GROW
            group["previous_log_loss"] = float(log_loss)
            for _, parameter in pairs:
                state = self.state[parameter]
                state["previous"] = parameter.detach().clone()
                state["previous_grad"] = parameter.grad.detach().clone()
        for _, parameter in pairs:
            parameter.add_(self.state[parameter]["previous_grad"], alpha=-group["lr"])
