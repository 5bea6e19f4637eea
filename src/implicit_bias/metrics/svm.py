"""The hard-margin linear SVM without intercept: the reference every linear margin is measured against."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NotSeparatedError
from ..losses import canonical_labels
from ..validation import check_features_labels


@dataclass(frozen=True)
class SVMSolution:
    """w = argmin ½‖w‖² s.t. y_n⟨w, x_n⟩ ≥ 1, its dual variables α (w = Σ α_n y_n x_n) and γ* = 1/‖w‖."""

    weight: np.ndarray
    dual: np.ndarray
    margin: float
    support: np.ndarray


def hard_margin_svm(X: torch.Tensor, y: torch.Tensor, *, support_tol: float = 1e-6) -> SVMSolution:
    """Solve the hard-margin SVM without intercept (Vapnik; the limit direction of GD on separable data,
    Soudry et al. 2018, Thm 3) to float64 precision.

    The dual max Σα − ½‖Σ α_n z_n‖², α ≥ 0 (z_n = y_n x_n, y ∈ {±1}) is solved with L-BFGS-B; then the
    support set S = {α_n > support_tol·max α} is polished by solving the equality system Gram_S α_S = 1 exactly,
    kept when it is dual-feasible (α_S ≥ 0) and primal-feasible (every margin ≥ 1 − 1e−9).

    Raises
    ------
    NotSeparatedError
        If no direction separates the data (the dual is unbounded).
    """
    from scipy.optimize import minimize  # here, not at import: scipy.optimize takes ~1 s to import

    Z = _signed_features(X, y)
    gram = Z @ Z.T

    def negative_dual(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        g = gram @ alpha
        return 0.5 * alpha @ g - alpha.sum(), g - 1.0

    result = minimize(
        negative_dual,
        np.zeros(len(Z)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * len(Z),
        options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 100_000, "maxcor": 30},
    )
    alpha = result.x
    if not np.isfinite(result.fun) or alpha.sum() > 1e12:
        raise NotSeparatedError("the hard-margin SVM has no solution: the data are not linearly separable")
    support = np.flatnonzero(alpha > support_tol * alpha.max())
    polished = np.linalg.lstsq(gram[np.ix_(support, support)], np.ones(len(support)), rcond=None)[0]
    weight = Z[support].T @ polished
    if polished.min() >= 0 and (Z @ weight).min() >= 1 - 1e-9:
        alpha = np.zeros(len(Z))
        alpha[support] = polished
    else:
        weight = Z.T @ alpha
    if (Z @ weight).min() <= 0:
        raise NotSeparatedError("the hard-margin SVM has no solution: the data are not linearly separable")
    margin = float((Z @ weight).min() / np.linalg.norm(weight))
    return SVMSolution(weight, alpha, margin, support)


@dataclass(frozen=True)
class MaxMargin:
    """β = argmax_{‖β‖_p ≤ 1} min_n y_n⟨β, x_n⟩ (one maximizer: it need not be unique) and that margin γ_p*."""

    weight: np.ndarray
    margin: float
    p: float


def _signed_features(X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """z_n = y_n x_n (y mapped to ±1, x flattened) in float64, after checking X and y."""
    check_features_labels(X, y)
    signs = torch.as_tensor(canonical_labels(torch.zeros(len(y), 1), y), dtype=torch.float64) * 2 - 1
    return (X.reshape(len(X), -1).to(torch.float64) * signs[:, None]).cpu().numpy()


def _max_margin_lp(A: np.ndarray, bounds: list, A_eq: np.ndarray | None, what: str) -> np.ndarray:
    """Solve max t s.t. A v ≥ t (one row per sample), [A_eq v = 1], v within ``bounds``; return (v, t)."""
    from scipy.optimize import linprog

    n, k = A.shape
    result = linprog(
        np.r_[np.zeros(k), -1.0],
        A_ub=np.hstack([-A, np.ones((n, 1))]),
        b_ub=np.zeros(n),
        A_eq=None if A_eq is None else np.r_[A_eq, 0.0][None],
        b_eq=None if A_eq is None else [1.0],
        bounds=[*bounds, (None, None)],
        method="highs",
    )
    if result.status != 0 or not result.x[-1] > 1e-12:
        raise NotSeparatedError(f"no linear separator exists: the {what} max-margin problem has margin ≤ 0")
    return result.x


def l1_max_margin(X: torch.Tensor, y: torch.Tensor) -> MaxMargin:
    """The ℓ1 max-margin linear separator without intercept, as a linear program (HiGHS):
    max t s.t. y_n⟨β⁺ − β⁻, x_n⟩ ≥ t, Σ(β⁺ + β⁻) = 1, β^± ≥ 0.

    The limit direction of coordinate descent on linear models (Gunasekar et al. 2018) and of gradient flow on
    the depth-2 diagonal network β = u ⊙ v (Woodworth et al. 2020; Kunin et al. 2023, §5.1).

    Raises
    ------
    NotSeparatedError
        If no direction separates the data (γ₁* ≤ 0).
    """
    Z = _signed_features(X, y)
    d = Z.shape[1]
    x = _max_margin_lp(np.hstack([Z, -Z]), [(0, None)] * (2 * d), np.ones(2 * d), "ℓ1")
    return MaxMargin(x[:d] - x[d : 2 * d], float(x[-1]), 1.0)


def linf_max_margin(X: torch.Tensor, y: torch.Tensor) -> MaxMargin:
    """The ℓ∞ max-margin linear separator without intercept, γ∞* = max_{‖w‖∞ ≤ 1} min_n y_n⟨w, x_n⟩, as a
    linear program (HiGHS): max t s.t. y_n⟨w, x_n⟩ ≥ t, −1 ≤ w_i ≤ 1.

    The limit direction of steepest descent w.r.t. ‖·‖∞ (sign descent) on separable linear classification with
    the exponential loss (Gunasekar, Lee, Soudry & Srebro 2018, "Characterizing implicit bias in terms of
    optimization geometry", ICML: steepest descent in a norm ‖·‖ → the ‖·‖ max-margin direction), and the
    ℓ∞ case of Tsilivis, Vardi & Kempe (2024, "Flavors of margin: implicit bias of steepest descent in
    homogeneous neural networks"), which Adam without ε tracks. By LP duality
    γ∞* = min_{α ∈ Δ} ‖Σ α_n y_n x_n‖₁, the ℓ1 distance from 0 to the convex hull of the y_n x_n. The margin
    is unique; the direction in general is not (every maximizer has ‖w‖∞ = 1 when γ∞* > 0).

    Raises
    ------
    NotSeparatedError
        If no direction separates the data (γ∞* ≤ 0).
    """
    Z = _signed_features(X, y)
    x = _max_margin_lp(Z, [(-1.0, 1.0)] * Z.shape[1], None, "ℓ∞")
    return MaxMargin(x[:-1], float(x[-1]), math.inf)
