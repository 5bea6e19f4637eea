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
from ..losses import MARGIN_LOSSES, inverse_loss, log_loss, output_margins
from ..models.inference import predict
from ..validation import check_choice, check_features_labels


def margins(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Per-sample margins q_n(θ), float64, shape (N,).

    q_n = y_n Φ(θ; x_n) with y_n ∈ {±1} for a single-output model, q_n = Φ_{y_n} − max_{j≠y_n} Φ_j for K
    outputs ([1], §3). The model runs in evaluation mode in its own dtype.
    """
    check_features_labels(X, y)
    return output_margins(predict(model, X, batch_size=batch_size), y.to(X.device))


def parameter_norm(model: nn.Module, p: float = 2) -> float:
    """‖θ‖_p over all parameters of ``model`` taken as one vector (p = 1, 2 or ∞), in float64."""
    flat = torch.cat([param.detach().reshape(-1).to(torch.float64) for param in model.parameters()])
    return float(torch.linalg.vector_norm(flat, ord=p))


def homogeneity_degree(
    model: nn.Module, X: torch.Tensor, *, scales: tuple[float, ...] = (0.5, 3.0), rtol: float = 1e-6
) -> float:
    """The degree L with Φ(cθ; x) = c^L Φ(θ; x) for all c > 0, detected numerically ([1], Def. of homogeneity).

    L is estimated from c = 2 (an exact scaling in floating point) and checked at every c in ``scales``:
    the worst error max|Φ(cθ) − c^L Φ(θ)| / max|c^L Φ(θ)| must stay below ``rtol`` (loose enough for float32
    models). A degree within 1e−6 of an integer is returned as that integer.

    Raises
    ------
    NotHomogeneousError
        If no single L fits, e.g. for networks with biases or normalization layers. Such networks are often
        quasi-homogeneous: measure them with the asymmetric margin instead.
    """
    named = dict(model.named_parameters())
    if not named:
        raise InvalidArgumentError("the model has no parameters, so it has no homogeneity degree")
    base = predict(model, X).to(torch.float64)
    if not bool(base.abs().max() > 0):
        raise InvalidArgumentError("the model outputs are all zero on X; the homogeneity degree is undefined")

    def scaled(c: float) -> torch.Tensor:
        return predict(model, X, parameters={k: v * c for k, v in named.items()}).to(torch.float64)

    degree = math.log2(float(scaled(2.0).abs().sum() / base.abs().sum()))
    if abs(degree - round(degree)) < 1e-6:
        degree = float(round(degree))
    for c in scales:
        expected = c**degree * base
        error = float((scaled(c) - expected).abs().max() / expected.abs().max())
        if not error <= rtol:
            raise NotHomogeneousError(
                f"the model is not homogeneous: Φ(cθ) differs from c^L Φ(θ) (best L = {degree:.4g}) by a relative "
                f"{error:.2e} at c = {c}; networks with biases or normalization layers may be quasi-homogeneous "
                "(Kunin et al. 2023), whose margin is normalized by the Λ-seminorm instead"
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
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, p: float = 2, degree: float | None = None
) -> float:
    """γ̄_p = q_min / ‖θ‖_p^L, the normalized margin of an L-homogeneous network ([1] §3; p = ∞, 1: [2]).

    Invariant under θ → cθ. ``degree`` L is detected with :func:`homogeneity_degree` when not given.

    Raises
    ------
    NotSeparatedError
        If some sample has q_n ≤ 0.
    """
    if p not in (1, 2, math.inf):
        raise InvalidArgumentError(f"p must be 1, 2 or inf, got {p!r}")
    q_min = require_separated(margins(model, X, y))
    degree = homogeneity_degree(model, X) if degree is None else degree
    return normalize_by_norm(q_min, parameter_norm(model, p), degree)


def smoothed_margin(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "exponential",
    degree: float | None = None,
    p: float = 2,
) -> float:
    """γ̃ = ℓ^{−1}(ℒ) / ‖θ‖_p^L with ℒ = Σ_n ℓ(q_n) ([1] §4.1, eq. (5); p = ∞, 1: [2]).

    Exponential loss: γ̃ = log(1/ℒ)/‖θ‖^L; logistic and cross-entropy: log(1/(e^ℒ − 1))/‖θ‖^L. For the
    exponential loss γ̄ − ‖θ‖^{−L} log N ≤ γ̃ ≤ γ̄; under gradient flow γ̃ is non-decreasing once ℒ < ℓ(0).

    Raises
    ------
    NotSeparatedError
        If ℒ ≥ ℓ(0), i.e. ℓ^{−1}(ℒ) ≤ 0 (some sample is not fit yet).
    """
    check_choice("loss", loss, MARGIN_LOSSES)
    check_features_labels(X, y)
    outputs = predict(model, X)
    log_value = float(log_loss(outputs, y.to(outputs.device), loss, reduction="sum"))
    numerator = require_fit_loss(loss, log_value)
    degree = homogeneity_degree(model, X) if degree is None else degree
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
