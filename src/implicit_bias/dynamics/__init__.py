"""Training dynamics: optimizers by name and the logging schedule on log time."""

from .optimizers import OPTIMIZERS, NormalizedGD, make_optimizer, optimizer_options, steps_on_log_loss
from .schedule import log_spaced_steps

__all__ = [
    "OPTIMIZERS", "NormalizedGD", "log_spaced_steps", "make_optimizer", "optimizer_options", "steps_on_log_loss",
]
