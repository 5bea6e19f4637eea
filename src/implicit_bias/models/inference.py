"""Evaluation-mode forward passes that never record gradients and never disturb the model's mode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call


@contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block, the previous train/eval mode restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 for a model without parameters)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(
    model: nn.Module,
    X: torch.Tensor,
    *,
    batch_size: int | None = None,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Outputs Φ(θ; X) in evaluation mode, in chunks of ``batch_size`` samples (all at once by default).

    ``X`` is cast to the model's dtype and device. ``parameters`` (name → tensor) replace the model's own for
    this call only (``torch.func.functional_call``), which lets callers evaluate Φ at a rescaled θ without
    touching the model.
    """
    X = X.to(device=model_device(model), dtype=model_dtype(model))
    size = batch_size or X.shape[0]
    with evaluation(model):
        chunks = [
            model(chunk) if parameters is None else functional_call(model, dict(parameters), (chunk,))
            for chunk in X.split(size)
        ]
    return torch.cat(chunks)
