"""Training dynamics: optimizers by name (including log-ℒ optimizers for the terminal phase) and the logging
schedule on log time."""

from .adam import LogAdam
from .base import LogLossOptimizer
from .dual_accelerated import DualAccelerated
from .loss_based import LossBasedLR
from .optimizers import OPTIMIZERS, make_optimizer, optimizer_options, steps_on_log_loss
from .schedule import log_spaced_steps
from .steepest import SteepestDescent

__all__ = [
    "OPTIMIZERS",
    "DualAccelerated",
    "LogAdam",
    "LogLossOptimizer",
    "LossBasedLR",
    "SteepestDescent",
    "log_spaced_steps",
    "make_optimizer",
    "optimizer_options",
    "steps_on_log_loss",
]
