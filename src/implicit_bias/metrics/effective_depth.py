"""Effective depth: the first layer whose nearest-class-centre classifier fits the training set
(Galanti, Galanti & Ben-Shaul 2022, "On the implicit bias towards minimal depth of deep neural networks")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..errors import InvalidArgumentError
from ..validation import check_scalar
from .layerwise import LayerCollapse, _batches, collapse_by_layer, first_batch, resolve_layers


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
    return depth_of(measured, eps)


def depth_of(measured: Mapping[str, LayerCollapse], eps: float = 0.01) -> EffectiveDepth:
    """The ε-effective depth from layer-wise collapse reports already measured by :func:`collapse_by_layer`
    (layers in forward order), without another pass over the data."""
    check_scalar("eps", eps, (int, float), low=0.0, high=1.0)
    names = list(measured)
    train_error = [1.0 - measured[name].ncc_train_accuracy for name in names]
    test_error = None
    if all(measured[name].ncc_test_accuracy is not None for name in names):
        test_error = [1.0 - float(measured[name].ncc_test_accuracy) for name in names]
    depth = next((index + 1 for index, error in enumerate(train_error) if error <= eps), None)
    return EffectiveDepth(
        depth, float(eps), names, train_error, test_error, [measured[name].train.cdnv for name in names]
    )


@dataclass(frozen=True)
class MinimalDepth:
    """d^ε_min(G, S): the smallest depth whose trained network NCC-fits S, and each tried depth's NCC error at
    its last feature layer."""

    depth: int | None
    eps: float
    errors: dict[int, float]


def minimal_ncc_depth(
    train: Callable[[int], nn.Module],
    data: Dataset | tuple[torch.Tensor, torch.Tensor] | Iterable,
    depths: Sequence[int],
    *,
    eps: float = 0.01,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> MinimalDepth:
    """Minimal NCC depth (Galanti, Galanti & Ben-Shaul 2022, §3): over ``depths`` in increasing order,
    ``train(depth)`` returns a network of the family G trained on ``data`` (e.g. with a fraction p of corrupted
    labels); the first depth whose last feature layer's NCC classifier errs on at most ``eps`` of ``data`` is
    d^ε_min(G, S). Stops at the first depth that fits."""
    check_scalar("eps", eps, (int, float), low=0.0, high=1.0)
    errors: dict[int, float] = {}
    for depth in sorted(depths):
        model = train(depth)
        try:
            layers = resolve_layers(model, first_batch(_batches(data, batch_size, num_classes))[0], None)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"the depth-{depth} network: {error}") from None
        measured = collapse_by_layer(model, data, [layers[-1]], num_classes=num_classes, batch_size=batch_size)
        errors[depth] = 1.0 - measured[layers[-1]].ncc_train_accuracy
        if errors[depth] <= eps:
            return MinimalDepth(depth, float(eps), errors)
    return MinimalDepth(None, float(eps), errors)


@dataclass(frozen=True)
class DepthBound:
    """The leading terms of Galanti, Galanti & Ben-Shaul's bound on the expected test error (their Prop. 1):
    E err ≤ P[d^ε(f trained on S₁) ≥ d^ε_min(G, S₁ ∪ S̃₂)] + (1 + α) p (+ δ terms, not estimated here)."""

    probability: float
    noise_term: float
    bound: float
    runs: int


def depth_bound(
    effective_depths: Sequence[int | None], minimal_depth_noisy: int, noise: float, *, alpha: float = 0.0
) -> DepthBound:
    """Estimate the bound's probability term as the fraction of independent runs on clean data S₁ whose
    ε-effective depth is at least d^ε_min on S₁ ∪ S̃₂ (a fraction ``noise`` = p of S̃₂'s labels corrupted); a run
    with no effective depth counts as deep. Returns it with (1 + α)p and their sum, to set beside the measured
    test error."""
    check_scalar("noise", noise, (int, float), low=0.0, high=1.0)
    check_scalar("alpha", alpha, (int, float), low=0.0)
    if not effective_depths:
        raise InvalidArgumentError("depth_bound needs the effective depths of at least one run")
    deep = [d is None or d >= minimal_depth_noisy for d in effective_depths]
    probability = sum(deep) / len(deep)
    noise_term = (1 + alpha) * noise
    return DepthBound(probability, noise_term, probability + noise_term, len(deep))
