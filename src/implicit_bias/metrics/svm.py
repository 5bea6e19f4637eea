"""The hard-margin linear SVM without intercept: the reference every linear margin is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog, minimize

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
    check_features_labels(X, y)
    signs = torch.as_tensor(canonical_labels(torch.zeros(len(y), 1), y), dtype=torch.float64) * 2 - 1
    Z = (X.reshape(len(X), -1).to(torch.float64) * signs[:, None]).cpu().numpy()
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
class L1MaxMargin:
    """β = argmax_{‖β‖₁ ≤ 1} min_n y_n⟨β, x_n⟩ and that margin γ₁*."""

    weight: np.ndarray
    margin: float


def l1_max_margin(X: torch.Tensor, y: torch.Tensor) -> L1MaxMargin:
    """The ℓ1 max-margin linear separator without intercept, as a linear program (HiGHS):
    max t s.t. y_n⟨β⁺ − β⁻, x_n⟩ ≥ t, Σ(β⁺ + β⁻) = 1, β^± ≥ 0.

    The limit direction of coordinate descent on linear models (Gunasekar et al. 2018) and of gradient flow on
    the depth-2 diagonal network β = u ⊙ v (Woodworth et al. 2020; Kunin et al. 2023, §5.1).

    Raises
    ------
    NotSeparatedError
        If no direction separates the data (γ₁* ≤ 0).
    """
    check_features_labels(X, y)
    signs = torch.as_tensor(canonical_labels(torch.zeros(len(y), 1), y), dtype=torch.float64) * 2 - 1
    Z = (X.reshape(len(X), -1).to(torch.float64) * signs[:, None]).cpu().numpy()
    n, d = Z.shape
    objective = np.zeros(2 * d + 1)
    objective[-1] = -1.0
    result = linprog(
        objective,
        A_ub=np.hstack([-Z, Z, np.ones((n, 1))]),
        b_ub=np.zeros(n),
        A_eq=np.concatenate([np.ones(2 * d), [0.0]])[None],
        b_eq=[1.0],
        bounds=[(0, None)] * (2 * d) + [(None, None)],
        method="highs",
    )
    if result.status != 0 or not result.x[-1] > 1e-12:
        raise NotSeparatedError("no linear separator exists: the ℓ1 max-margin problem has margin ≤ 0")
    return L1MaxMargin(result.x[:d] - result.x[d : 2 * d], float(result.x[-1]))
