"""Probes: callbacks that compute metrics at the logged steps of a run.

A probe is any callable ``probe(context) -> {name: value}``. It returns only the values that are defined at
that step (a margin before the data is fit is simply absent from the row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NotHomogeneousError, NotSeparatedError
from ..losses import MARGIN_LOSSES, output_margins
from ..metrics.margins import homogeneity_degree, parameter_norm, require_fit_loss, require_separated
from ..validation import check_choice


@dataclass(frozen=True)
class ProbeContext:
    """What a probe sees at a logged step.

    Attributes
    ----------
    step : int
        Number of optimizer steps taken.
    model : nn.Module
    X, y : Tensor
        The full training set, on the training device and in the training dtype.
    outputs : Tensor
        Φ(θ; X) in evaluation mode, float64.
    log_loss : float
        log ℒ with ℒ = Σ_n ℓ(q_n) over the training set (Lyu & Li's sum convention).
    loss : str
        The loss name.
    optimizer : torch.optim.Optimizer
    """

    step: int
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    outputs: torch.Tensor
    log_loss: float
    loss: str
    optimizer: torch.optim.Optimizer

    @property
    def margins(self) -> torch.Tensor:
        """Per-sample margins q_n, float64."""
        return output_margins(self.outputs, self.y)


Probe = Callable[[ProbeContext], Mapping[str, float]]

logger = logging.getLogger("implicit_bias.train")


class MarginProbe:
    """Logs ``q_min``, ``param_norm`` ‖θ‖₂ and, once every point is fit, the ``normalized_margin``
    q_min/‖θ‖^L and (for margin losses) the ``smoothed_margin`` ℓ^{−1}(ℒ)/‖θ‖^L of Lyu & Li (2020, §3–4).

    The homogeneity degree L is detected on the first call unless given. For a model that is not homogeneous
    the normalized quantities are undefined: the probe says so once in the run's log and logs q_min and ‖θ‖.
    """

    def __init__(self, degree: float | None = None) -> None:
        self.degree = degree
        self.homogeneous = True

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        q = context.margins
        norm = parameter_norm(context.model)
        row = {"q_min": float(q.min()), "param_norm": norm}
        if self.degree is None and self.homogeneous:
            try:
                self.degree = homogeneity_degree(context.model, context.X)
            except NotHomogeneousError as error:
                self.homogeneous = False
                logger.warning("margins probe: no normalized margins for this model: %s", error)
        if self.degree is None:
            return row
        try:
            row["normalized_margin"] = require_separated(q) / norm**self.degree
            if context.loss in MARGIN_LOSSES:
                row["smoothed_margin"] = require_fit_loss(context.loss, context.log_loss) / norm**self.degree
        except NotSeparatedError:
            pass
        return row


PROBES: dict[str, Callable[[], Probe]] = {"margins": MarginProbe}


def make_probe(name: str) -> Probe:
    """A fresh probe registered under ``name`` (see :data:`PROBES`)."""
    check_choice("probe", name, PROBES)
    return PROBES[name]()
