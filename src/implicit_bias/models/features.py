"""Intermediate features by layer name, through forward hooks (works for any ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidArgumentError


def feature_names(model: nn.Module) -> tuple[str, ...]:
    """The model's canonical feature layers: ``model.feature_names`` for models built here, otherwise the
    names of its top-level children except the last."""
    names = getattr(model, "feature_names", None)
    if names is not None:
        return tuple(names)
    return tuple(name for name, _ in model.named_children())[:-1]


def capture_features(
    model: nn.Module, X: torch.Tensor, layers: Sequence[str] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model(X)`` once and return (outputs, {layer name: that module's output}).

    ``layers`` are names from ``model.named_modules()`` (default: :func:`feature_names`).
    """
    modules = dict(model.named_modules())
    layers = feature_names(model) if layers is None else tuple(layers)
    missing = [name for name in layers if name not in modules]
    if missing:
        raise InvalidArgumentError(
            f"model has no layer(s) {missing}; available: {', '.join(n for n in modules if n) or '(none)'}"
        )
    captured: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, output, name=name: captured.__setitem__(name, output))
        for name in layers
    ]
    try:
        outputs = model(X)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, {name: captured[name] for name in layers}
