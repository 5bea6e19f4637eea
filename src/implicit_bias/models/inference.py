"""Evaluation-mode forward passes that never record gradients and never disturb the model's mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn
from torch.func import functional_call

from ..validation import check_scalar

T = TypeVar("T")


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


def sample_slices(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of ``batch_size`` samples covering 0..n (one slice when ``batch_size`` is None).

    A single leftover sample joins the slice before it (which then holds ``batch_size`` + 1), so that no slice
    holds one sample out of several: BatchNorm computing batch statistics cannot normalize a batch of one.
    """
    if batch_size is not None:
        check_scalar("batch_size", batch_size, int, low=1)
    size = batch_size or max(n, 1)
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(start, stop) for start, stop in zip(starts, [*starts[1:], n])]


def to_model(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """``X`` cast to the model's device and floating dtype (a no-op when it already is)."""
    return X.to(device=model_device(model), dtype=model_dtype(model))


@torch.no_grad()
def map_outputs(
    model: nn.Module,
    X: torch.Tensor,
    fn: Callable[[torch.Tensor, slice], T],
    *,
    batch_size: int | None = None,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> list[T]:
    """[fn(Φ(θ; X[s]), s) for s in the consecutive slices of ``batch_size`` samples], in evaluation mode.

    Each chunk of ``X`` (which may live on any device, in any floating dtype) is cast to the model's dtype and
    device only when its turn comes, so the model's device holds one batch at a time. ``parameters``
    (name → tensor) replace the model's own for this call only (``torch.func.functional_call``), which lets
    callers evaluate Φ at a rescaled θ without touching the model.
    """
    with evaluation(model):
        return [
            fn(
                model(to_model(model, X[s]))
                if parameters is None
                else functional_call(model, dict(parameters), (to_model(model, X[s]),)),
                s,
            )
            for s in sample_slices(X.shape[0], batch_size)
        ]


def predict(
    model: nn.Module,
    X: torch.Tensor,
    *,
    batch_size: int | None = None,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Outputs Φ(θ; X) in evaluation mode on the model's device, in chunks of ``batch_size`` samples (all at once
    by default); see :func:`map_outputs`."""
    return torch.cat(map_outputs(model, X, lambda outputs, _: outputs, batch_size=batch_size, parameters=parameters))
