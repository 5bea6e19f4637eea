"""Optimizers by name, as plain ``torch.optim`` optimizers.

An optimizer whose class sets ``steps_on_log_loss = True`` is meant to receive the gradient of log ℒ instead of
ℒ: normalized gradient descent θ ← θ − η ∇ℒ/ℒ is exactly gradient descent on log ℒ, and ∇ log ℒ stays finite
when ℒ is far below the smallest float64. :func:`implicit_bias.train.fit` backpropagates the right one.

=================  ==============================================================================
name               update
=================  ==============================================================================
``gd``             θ ← θ − η g (constant learning rate; ``weight_decay`` adds λθ to g)
``sgd``            ``torch.optim.SGD``: ``momentum``, ``nesterov``, ``weight_decay``, ``dampening``
``adam``           ``torch.optim.Adam``: ``betas``, ``eps``, ``weight_decay``, ``amsgrad``
``normalized-gd``  θ ← θ − η ∇ log ℒ = θ − η ∇ℒ/ℒ (Ji & Telgarsky 2021; Nacson et al. 2019)
=================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..validation import check_choice, check_keys, check_scalar


class NormalizedGD(torch.optim.SGD):
    """Gradient descent on log ℒ: θ ← θ − η ∇ℒ(θ)/ℒ(θ), the loss-normalized step of Nacson et al. (2019) and
    Ji & Telgarsky (2021), whose normalized margin on separable data converges at rate O(1/t) instead of GD's
    O(1/log t). Feed it the gradient of log ℒ (``steps_on_log_loss``)."""

    steps_on_log_loss = True

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)


def _gd(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def _sgd(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
    )


def _adam(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
    )


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "gd": _gd,
    "sgd": _sgd,
    "adam": _adam,
    "normalized-gd": NormalizedGD,
}


def optimizer_options(name: str) -> list[str]:
    """The keyword options optimizer ``name`` accepts besides ``lr``."""
    import inspect

    check_choice("optimizer", name, OPTIMIZERS)
    return [k for k in inspect.signature(OPTIMIZERS[name]).parameters if k not in ("self", "params", "lr")]


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], *, lr: float, **options: Any
) -> torch.optim.Optimizer:
    """Construct optimizer ``name`` (see :data:`OPTIMIZERS`) over ``params`` with learning rate ``lr``."""
    check_choice("optimizer", name, OPTIMIZERS)
    check_keys(f"optimizer {name!r}", options, optimizer_options(name))
    check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
    return OPTIMIZERS[name](params, lr=float(lr), **options)


def steps_on_log_loss(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer`` expects gradients of log ℒ rather than of ℒ."""
    return bool(getattr(optimizer, "steps_on_log_loss", False))
