"""Optimizers by name: all are ``torch.optim.Optimizer`` subclasses usable outside :func:`fit`.

Those marked "log ℒ" are :class:`~implicit_bias.dynamics.base.LogLossOptimizer`: they take the gradient of
log ℒ and ``step(log_loss=...)``, which lets them run with ℒ far below the smallest float64.

====================  =====  ===================================================================================
name                  log ℒ  update
====================  =====  ===================================================================================
``gd``                       θ ← θ − η ∇ℒ (constant learning rate; ``weight_decay`` adds λθ)
``sgd``                      ``torch.optim.SGD``: ``momentum``, ``nesterov``, ``dampening``, ``weight_decay``
``adam``              yes    Adam in a log-scale frame (:class:`LogAdam`): ``betas``, ``eps`` (0 allowed),
                             decoupled ``weight_decay``
``normalized-gd``     yes    θ ← θ − η ∇ℒ/ℒ (Nacson et al. 2019; Ji & Telgarsky 2021); ``degree`` L: also
                             ÷‖θ‖^{2(L−1)}, which follows gradient flow on L-homogeneous networks
``loss-based``        yes    η_t = α_t/ℒ with growth and rollback (Lyu & Li 2020)
``sign``              yes    ℓ∞ steepest descent θ ← θ − η ‖g‖₁ sign(g); ``normalize``: g = ∇ log ℒ
``coordinate``        yes    ℓ1 steepest (greedy coordinate) descent; ``normalize``: g = ∇ log ℒ
``dual-accelerated``  yes    Nesterov on the max-margin dual (Ji, Srebro & Telgarsky 2021), for linear models
====================  =====  ===================================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import InvalidArgumentError
from ..validation import check_choice, check_options, check_scalar
from .adam import LogAdam
from .dual_accelerated import DualAccelerated
from .loss_based import LossBasedLR
from .steepest import SteepestDescent


def _gd(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _sgd(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    if nesterov and (momentum <= 0 or dampening != 0):
        raise InvalidArgumentError(
            f"sgd: nesterov needs momentum > 0 and dampening 0, got momentum={momentum} and dampening={dampening}"
        )
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
        foreach=True,  # one fused update over all parameters (torch picks it on CUDA only): bitwise the same, fewer calls
    )  # fmt: skip


def _normalized_gd(params: Iterable[torch.nn.Parameter], lr: float, degree: float = 1.0) -> SteepestDescent:
    return SteepestDescent(params, lr, norm="l2", normalize=True, degree=degree)


def _sign(
    params: Iterable[torch.nn.Parameter], lr: float, normalize: bool = False, degree: float = 1.0
) -> SteepestDescent:
    return SteepestDescent(params, lr, norm="linf", normalize=normalize, degree=degree)


def _coordinate(
    params: Iterable[torch.nn.Parameter], lr: float, normalize: bool = False, degree: float = 1.0
) -> SteepestDescent:
    return SteepestDescent(params, lr, norm="l1", normalize=normalize, degree=degree)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "gd": _gd,
    "sgd": _sgd,
    "adam": LogAdam,
    "normalized-gd": _normalized_gd,
    "loss-based": LossBasedLR,
    "sign": _sign,
    "coordinate": _coordinate,
    "dual-accelerated": DualAccelerated,
}


def optimizer_options(name: str) -> list[str]:
    """The keyword options optimizer ``name`` accepts besides ``lr``."""
    check_choice("optimizer", name, OPTIMIZERS)
    return [k for k in inspect.signature(OPTIMIZERS[name]).parameters if k not in ("self", "params", "lr")]


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], *, lr: float, **options: Any
) -> torch.optim.Optimizer:
    """Construct optimizer ``name`` (see :data:`OPTIMIZERS`) over ``params`` with learning rate ``lr``."""
    check_choice("optimizer", name, OPTIMIZERS)
    options = check_options(f"optimizer {name!r}", options, OPTIMIZERS[name], exclude=("params", "lr"))
    check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
    try:
        return OPTIMIZERS[name](params, lr=float(lr), **options)
    except ValueError as error:  # torch's own range checks, e.g. "Invalid momentum value: -1.0"
        raise InvalidArgumentError(f"optimizer {name!r}: {error}") from None


def steps_on_log_loss(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer`` expects gradients of log ℒ and ``step(log_loss=...)``."""
    return bool(getattr(optimizer, "steps_on_log_loss", False))
