"""One training trial of a reproduction, with the settings every experiment shares handled in one place."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..train import History, fit

_UNSET = object()


def trial(
    config: Any,
    model: nn.Module,
    data: Any,
    *,
    progress: bool,
    seed: int | None = None,
    log_points: int | None = None,
    **options: Any,
) -> History:
    """``fit(model, data, **options)`` with the experiment's shared settings: ``device=config.device``,
    ``seed=config.seed`` and ``log_points=config.log_points`` unless ``seed`` / ``log_points`` are given (a
    multi-seed experiment passes its seed; a config without the field must pass it), and ``progress``.
    ``model`` is trained in place; returns its :class:`~implicit_bias.train.History`."""
    settings = {"seed": seed, "log_points": log_points}
    for key, value in settings.items():
        if value is None:
            settings[key] = getattr(config, key, _UNSET)
            if settings[key] is _UNSET:
                raise TypeError(f"{type(config).__name__} has no field {key!r}: pass {key}= to trial()")
    return fit(model, data, device=config.device, progress=progress, **settings, **options)
