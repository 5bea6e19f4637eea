"""Margins of classifiers and the normalized / smoothed margins of homogeneous networks.

References
----------
.. [1] Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks. ICLR.
.. [2] Tsilivis, N., Vardi, G. & Kempe, J. (2024). Flavors of margin: implicit bias of steepest descent in
       homogeneous neural networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidArgumentError, NotHomogeneousError, NotSeparatedError
from ..losses import MARGIN_LOSSES, canonical_labels, inverse_loss, log_loss, logsumexp, output_margins
from ..models.inference import map_outputs, model_dtype, predict, sample_slices
from ..validation import check_choice, check_features, check_features_labels, check_model_input, check_scalar


def model_labels(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` as 0..K−1 (binary ±1 labels become 0/1), checked against the shape of the model's outputs.

    The output shape is read from one forward pass on ``X[:2]`` (two samples: BatchNorm computing batch
    statistics cannot take one), so the labels can be validated once for all batches. The labels stay on their
    own device.
    """
    first = check_model_input(model, X)
    canonical_labels(first, y[:2])  # outputs of shape (B,) or (B, K)
    return canonical_labels(first[:1].expand(len(y), *first.shape[1:]), y)


def margins_of(model: nn.Module, X: torch.Tensor, labels: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """q_n for canonical ``labels`` (see :func:`model_labels`), batch by batch, on the model's device."""
    return torch.cat(
        map_outputs(
            model,
            X,
            lambda outputs, s: output_margins(outputs, labels[s].to(outputs.device), validate=False),
            batch_size=batch_size,
        )
    )


def margins(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Per-sample margins q_n(θ), float64, shape (N,), on the model's device.

    q_n = y_n Φ(θ; x_n) with y_n ∈ {±1} for a single-output model, q_n = Φ_{y_n} − max_{j≠y_n} Φ_j for K
    outputs ([1], §3). The model runs in evaluation mode in its own dtype, on ``batch_size`` samples at a time
    (all at once by default); ``X`` and ``y`` may live on another device and ``X`` in another floating dtype.
    """
    check_features_labels(X, y)
    return margins_of(model, X, model_labels(model, X, y), batch_size)


def parameter_norm(model: nn.Module, p: float = 2) -> float:
    """‖θ‖_p over all parameters of ``model`` taken as one vector (p = 1, 2 or ∞), in float64."""
    flat = torch.cat([param.detach().reshape(-1).to(torch.float64) for param in model.parameters()])
    return float(torch.linalg.vector_norm(flat, ord=p))


HOMOGENEITY_SAFETY = 64.0  # rounding measured at ≤ 2.5 ε(1 + L): see homogeneity_degree
COARSEST_RTOL = 1e-3  # above it rounding alone hides whether biases contribute


def homogeneity_tolerance(dtype: torch.dtype, degree: float) -> float:
    """The default ``rtol`` of :func:`homogeneity_degree`: 64 ε(dtype) (1 + |L|)."""
    return HOMOGENEITY_SAFETY * torch.finfo(dtype).eps * (1 + abs(degree))


def homogeneity_degree(
    model: nn.Module,
    X: torch.Tensor,
    *,
    scales: tuple[float, ...] = (0.5, 3.0),
    rtol: float | None = None,
    batch_size: int | None = None,
) -> float:
    """The degree L with Φ(cθ; x) = c^L Φ(θ; x) for all c > 0, detected numerically ([1], Def. of homogeneity).

    L is estimated from c = 2 (an exact scaling in floating point) and checked at every c in ``scales``:
    the worst error max|Φ(cθ) − c^L Φ(θ)| / max|c^L Φ(θ)| over X must stay below ``rtol``. A degree within
    1e−6 of an integer is returned as that integer. The model runs in its own dtype, ``batch_size`` samples
    at a time; outputs are compared in float64.

    The default ``rtol`` is 64 ε (1 + |L|), ε the machine epsilon of the model's dtype: rescaling θ by c
    rounds every weight (a relative ε/2) and each of the L layers rounds again in both evaluations, so the
    error of an exactly homogeneous network grows like ε·L — measured at 0.4 to 2.5 ε(1 + L) for bias-free
    ReLU MLPs of depth 2–16 and width 16–1024 and for Lyu & Li's max-pool CNN, at c from 0.1 to 7.3, in
    float32 and float64 alike. The factor 64 leaves a 25-fold margin, while a randomly initialized depth-8
    MLP with biases misses by a relative 26. So float32 allows 6.9e−5 at L = 8, float64 1.3e−12. Half
    precision (64 ε > 1e−3) is refused: pass ``degree`` to the metric, or ``rtol`` here.

    Raises
    ------
    NotHomogeneousError
        If no single L fits, e.g. for networks with biases or normalization layers. Such networks are often
        quasi-homogeneous: measure them with the asymmetric margin instead.
    InvalidArgumentError
        If the model has no parameters, its outputs are all zero on X, or its dtype is too coarse.
    """
    check_features(X)
    named = dict(model.named_parameters())
    if not named:
        raise InvalidArgumentError("the model has no parameters, so it has no homogeneity degree")

    def scaled(c: float) -> dict[str, torch.Tensor]:
        return {k: v.detach() * c for k, v in named.items()}

    def abs_sum(outputs: torch.Tensor, _: slice) -> float:
        return float(outputs.to(torch.float64).abs().sum())

    base_sum = sum(map_outputs(model, X, abs_sum, batch_size=batch_size))
    if not base_sum > 0:
        raise InvalidArgumentError("the model outputs are all zero on X; the homogeneity degree is undefined")
    ratio = sum(map_outputs(model, X, abs_sum, batch_size=batch_size, parameters=scaled(2.0))) / base_sum
    degree = math.log2(ratio) if 0 < ratio < math.inf else math.nan
    if not math.isfinite(degree):
        raise NotHomogeneousError(f"the model is not homogeneous: Σ|Φ(2θ)| / Σ|Φ(θ)| = {ratio:.4g}")
    if abs(degree - round(degree)) < 1e-6:
        degree = float(round(degree))
    if rtol is None:
        dtype = model_dtype(model)
        rtol = homogeneity_tolerance(dtype, degree)
        if rtol > COARSEST_RTOL:
            raise InvalidArgumentError(
                f"the model's dtype {dtype} is too coarse to detect homogeneity (rounding alone reaches a relative "
                f"{rtol:.1e}); pass degree= to the metric, or an explicit rtol= here"
            )
    check_scalar("rtol", rtol, (int, float), low=0.0)

    rescaled = {c: scaled(c) for c in scales}
    worst, peak = dict.fromkeys(scales, 0.0), 0.0
    for s in sample_slices(X.shape[0], batch_size):
        base = predict(model, X[s]).to(torch.float64)
        peak = max(peak, float(base.abs().max()))
        for c in scales:
            gap = predict(model, X[s], parameters=rescaled[c]).to(torch.float64) - c**degree * base
            worst[c] = max(worst[c], float(gap.abs().max()))
    for c in scales:
        error = worst[c] / (c**degree * peak)
        if not error <= rtol:
            raise NotHomogeneousError(
                f"the model is not homogeneous: Φ(cθ) differs from c^L Φ(θ) (best L = {degree:.4g}) by a relative "
                f"{error:.2e} at c = {c} (tolerance {rtol:.1e} for {model_dtype(model)}); networks with biases or "
                "normalization layers may be quasi-homogeneous (Kunin et al. 2023), whose margin is normalized by "
                "the Λ-seminorm instead"
            )
    return degree


def normalize_by_norm(value: float, norm: float, degree: float) -> float:
    """value / norm^degree for value, norm > 0, formed in log space so that huge norms neither overflow nor
    turn the ratio into 0/inf before it underflows for real."""
    return math.exp(math.log(value) - degree * math.log(norm))


def require_separated(q: torch.Tensor) -> float:
    q_min = float(q.min())
    if not q_min > 0:
        wrong = int((q <= 0).sum())
        raise NotSeparatedError(
            f"the model does not fit the data: {wrong} of {len(q)} samples have margin <= 0 "
            f"(q_min = {q_min:.4g}); a normalized margin is only defined once every point is classified correctly"
        )
    return q_min


def normalized_margin(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    p: float = 2,
    degree: float | None = None,
    batch_size: int | None = None,
) -> float:
    """γ̄_p = q_min / ‖θ‖_p^L, the normalized margin of an L-homogeneous network ([1] §3; p = ∞, 1: [2]).

    Invariant under θ → cθ. ``degree`` L is detected with :func:`homogeneity_degree` when not given. The model
    runs on ``batch_size`` samples at a time (all at once by default).

    Raises
    ------
    NotSeparatedError
        If some sample has q_n ≤ 0.
    """
    if p not in (1, 2, math.inf):
        raise InvalidArgumentError(f"p must be 1, 2 or inf, got {p!r}")
    q_min = require_separated(margins(model, X, y, batch_size=batch_size))
    degree = homogeneity_degree(model, X, batch_size=batch_size) if degree is None else degree
    return normalize_by_norm(q_min, parameter_norm(model, p), degree)


def smoothed_margin(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "exponential",
    degree: float | None = None,
    p: float = 2,
    batch_size: int | None = None,
) -> float:
    """γ̃ = ℓ^{−1}(ℒ) / ‖θ‖_p^L with ℒ = Σ_n ℓ(q_n) ([1] §4.1, eq. (5); p = ∞, 1: [2]).

    Exponential loss: γ̃ = log(1/ℒ)/‖θ‖^L; logistic and cross-entropy: log(1/(e^ℒ − 1))/‖θ‖^L. For the
    exponential loss γ̄ − ‖θ‖^{−L} log N ≤ γ̃ ≤ γ̄; under gradient flow γ̃ is non-decreasing once ℒ < ℓ(0).
    With ``batch_size``, log ℒ = log Σ_b e^{log ℒ_b} joins the per-batch log-sums in log space, exactly.

    Raises
    ------
    NotSeparatedError
        If ℒ ≥ ℓ(0), i.e. ℓ^{−1}(ℒ) ≤ 0 (some sample is not fit yet).
    """
    check_choice("loss", loss, MARGIN_LOSSES)
    check_features_labels(X, y)
    labels = model_labels(model, X, y)
    log_sums = map_outputs(
        model,
        X,
        lambda outputs, s: log_loss(outputs, labels[s].to(outputs.device), loss, validate=False).cpu(),
        batch_size=batch_size,
    )
    numerator = require_fit_loss(loss, float(logsumexp(torch.stack(log_sums), dim=0)))
    degree = homogeneity_degree(model, X, batch_size=batch_size) if degree is None else degree
    return normalize_by_norm(numerator, parameter_norm(model, p), degree)


def require_fit_loss(loss: str, log_value: float) -> float:
    """ℓ^{−1}(ℒ) from log ℒ, or :class:`NotSeparatedError` when ℒ ≥ ℓ(0) (some sample is not fit yet)."""
    numerator = inverse_loss(loss, log_value)
    if not numerator > 0:
        raise NotSeparatedError(
            f"the {loss} loss ℒ = exp({log_value:.4g}) is not below ℓ(0), so ℓ^-1(ℒ) = {numerator:.4g} <= 0: "
            "the smoothed margin is only defined once every point is fit"
        )
    return numerator
