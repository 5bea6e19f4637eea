"""Effective depth: the first layer whose nearest-class-centre classifier fits the training set
(Galanti, Galanti & Ben-Shaul 2022, "On the implicit bias towards minimal depth of deep neural networks")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..validation import check_scalar
from .layerwise import collapse_by_layer


@dataclass(frozen=True)
class EffectiveDepth:
    """The ε-effective depth and the per-layer table behind it.

    Attributes
    ----------
    depth : int or None
        d^ε = min{i : err_S(h_i) ≤ ε}, 1-based over ``layers``; None when no layer's NCC classifier fits the
        training set to error ε.
    layers : list of str
    ncc_train_error, ncc_test_error : list of float
        err(h_i) of h_i(x) = argmin_c ‖f^i(x) − μ_c(f^i)‖ with the training class means (test: None without a
        test split).
    cdnv : list of float
        The class-distance normalized variance of each layer's training features.
    """

    depth: int | None
    eps: float
    layers: list[str]
    ncc_train_error: list[float]
    ncc_test_error: list[float] | None
    cdnv: list[float]


def effective_depth(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor] | Iterable,
    *,
    eps: float = 0.01,
    layers: Sequence[str] | None = None,
    num_classes: int | None = None,
    batch_size: int = 1024,
    reduction: str = "avgpool",
) -> EffectiveDepth:
    """ε-effective depth of ``model`` on ``data`` (Galanti, Galanti & Ben-Shaul 2022, Def. 1): the first of the
    model's feature layers (default: all of them, in order) whose NCC classifier errs on at most a fraction
    ``eps`` of the training samples. Streams the data with :func:`collapse_by_layer`."""
    check_scalar("eps", eps, (int, float), low=0.0, high=1.0)
    measured = collapse_by_layer(
        model, data, layers, num_classes=num_classes, batch_size=batch_size, reduction=reduction
    )
    names = list(measured)
    train_error = [1.0 - measured[name].ncc_train_accuracy for name in names]
    test_error = None
    if all(measured[name].ncc_test_accuracy is not None for name in names):
        test_error = [1.0 - float(measured[name].ncc_test_accuracy) for name in names]
    depth = next((index + 1 for index, error in enumerate(train_error) if error <= eps), None)
    return EffectiveDepth(
        depth, float(eps), names, train_error, test_error, [measured[name].train.cdnv for name in names]
    )
