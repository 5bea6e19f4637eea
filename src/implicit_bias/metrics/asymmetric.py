"""The Λ-seminorm and the asymmetric margin of quasi-homogeneous networks, and the rates a run actually follows.

References
----------
.. [1] Kunin, D., Yamamura, A., Ma, C. & Ganguli, S. (2023). The asymmetric maximum margin bias of
       quasi-homogeneous neural networks. ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgumentError
from ..symmetry.rates import Rates
from .direction import layer_norms
from .margins import margins, normalize_by_norm, require_separated


def _squared_norms(model: nn.Module) -> dict[str, float]:
    return {name: norm**2 for name, norm in layer_norms(model).items()}


def _as_rates(rates: Mapping[str, float]) -> Rates:
    return rates if isinstance(rates, Rates) else Rates(rates)


def lambda_seminorm(model: nn.Module, rates: Mapping[str, float]) -> float:
    """‖θ‖_{Λmax} = (Σ_{i : λ_i = λ_max} θ_i²)^{1/2}, the norm over the highest-rate parameters only ([1], Thm 4.1:
    gradient flow converges to KKT points of min ½‖θ‖²_{Λmax} s.t. q_n(θ) ≥ 1)."""
    squared = _squared_norms(model)
    return math.sqrt(sum(squared[name] for name in _as_rates(rates).top))


def rate_group_norms(model: nn.Module, rates: Mapping[str, float]) -> dict[float, float]:
    """‖θ_g‖ for each group g of parameters sharing a rate λ_g (highest rate first): the norms that grow like
    e^{λ_g α} along a characteristic curve ψ_α ([1], §3)."""
    squared = _squared_norms(model)
    return {rate: math.sqrt(sum(squared[n] for n in names)) for rate, names in _as_rates(rates).groups().items()}


def rate_shares(model: nn.Module, rates: Mapping[str, float]) -> dict[float, float]:
    """Each positive-rate group's share of the output scale: s_g = ‖θ_g‖^{1/λ_g} / Σ_h ‖θ_h‖^{1/λ_h}.

    ‖θ_g‖^{1/λ_g} is in units of the output (it scales like e^α under ψ_α, [1] §3), so the shares are invariant
    under ψ_α and compare groups of different rates fairly. A group whose share → 0 along training is being
    discarded by the asymmetric norm minimization ([1], §5, the sparsity conjecture). Groups of rate 0 do not
    scale with the output and are left out.
    """
    powered = {rate: norm ** (1.0 / rate) for rate, norm in rate_group_norms(model, rates).items() if rate > 0}
    total = sum(powered.values())
    if not total > 0:
        raise InvalidArgumentError("every positive-rate parameter is zero; the shares are undefined")
    return {rate: value / total for rate, value in powered.items()}


def asymmetric_margin(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, rates: Mapping[str, float], *, batch_size: int | None = None
) -> float:
    """γ_Λ = q_min / ‖θ‖_{Λmax}^{1/λ_max}, the asymmetric normalized margin ([1], §4; SCIENCE.md §3).

    Invariant under ψ_α (q_min → e^α q_min, ‖θ‖_{Λmax} → e^{αλ_max}‖θ‖_{Λmax}); equals the normalized margin
    q_min/‖θ‖^L when Λ = I/L.

    Raises
    ------
    NotSeparatedError
        If some sample has q_n ≤ 0.
    """
    rates = _as_rates(rates)
    q_min = require_separated(margins(model, X, y, batch_size=batch_size))
    norm = lambda_seminorm(model, rates)
    if not norm > 0:
        raise InvalidArgumentError(f"the highest-rate parameters {list(rates.top)} are all zero; γ_Λ is undefined")
    return normalize_by_norm(q_min, norm, 1.0 / rates.lambda_max)


def empirical_rates(
    history: object, *, scale: str = "output_rms", tail: float = 0.5, prefix: str = "norm/"
) -> dict[str, float]:
    """The rate each parameter tensor follows along a run: the slope of log ‖θ_p‖ against log of the output scale
    over the last ``tail`` fraction of logged steps ([1], §3: along a characteristic curve ‖θ_p‖ ∝ e^{λ_p α} while
    Φ ∝ e^α, so the slope is λ_p).

    ``history`` is a :class:`~implicit_bias.train.History` (or any object with ``column(name)``) that logged
    ``norm/<parameter>`` and ``scale`` — the ``norms`` probe logs both (``output_rms`` = RMS of Φ over the
    training set). A least-squares slope per parameter; parameters whose norm stays at 0 are left out.

    Raises
    ------
    InvalidArgumentError
        If the run logged neither, or the output scale did not change over the tail.
    """
    if not 0 < tail <= 1:
        raise InvalidArgumentError(f"tail must be in (0, 1], got {tail!r}")
    steps, scales = history.column(scale)
    if len(steps) < 3:
        raise InvalidArgumentError(
            f"the run logged {scale!r} at {len(steps)} steps; need at least 3 (log the norms probe)"
        )
    start = int(len(steps) * (1 - tail))
    start = min(start, len(steps) - 3)
    by_step = dict(zip(steps, scales))
    rates = {}
    for name in history.columns:
        if not name.startswith(prefix):
            continue
        points = [(by_step[s], v) for s, v in zip(*history.column(name)) if s in by_step and s >= steps[start]]
        if len(points) < 3 or any(v <= 0 or s <= 0 for s, v in points):
            continue
        x, z = np.log([p[0] for p in points]), np.log([p[1] for p in points])
        if not np.ptp(x) > 0:
            raise InvalidArgumentError(f"{scale!r} is constant over the tail of the run; no growth to measure")
        rates[name[len(prefix) :]] = float(np.polyfit(x, z, 1)[0])
    if not rates:
        raise InvalidArgumentError(f"the run logged no {prefix}<parameter> columns (log the norms probe)")
    return rates
