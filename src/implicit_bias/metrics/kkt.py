"""KKT residuals of the max-margin problem and support counts (Lyu & Li 2020, Def. of (ε, δ)-KKT points)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn
from torch.func import functional_call, grad, vmap

from ..losses import canonical_labels, output_margins
from ..models.inference import model_device, model_dtype, predict
from ..validation import check_features_labels, check_scalar
from .margins import homogeneity_degree, margins, require_separated


class KKTResidual(NamedTuple):
    """(ε/‖θ̃‖, δ): how far θ̃ = θ/q_min^{1/L} is from a KKT point of min ½‖θ‖² s.t. q_n(θ) ≥ 1."""

    epsilon: float
    delta: float


@dataclass(frozen=True)
class KKTCertificate:
    """The full NNLS solution behind :func:`kkt_residual`.

    Attributes
    ----------
    epsilon : float
        ‖θ̃ − Σ_n μ_n ∇q_n(θ̃)‖ / ‖θ̃‖.
    delta : float
        Σ_n μ_n (q_n(θ̃) − 1) ≥ 0.
    support : ndarray of int
        Indices of the samples the multipliers range over (q_n(θ̃) ≤ 1 + slack).
    multipliers : ndarray
        μ ≥ 0 over ``support``.
    theta_norm : float
        ‖θ̃‖.
    """

    epsilon: float
    delta: float
    support: np.ndarray
    multipliers: np.ndarray
    theta_norm: float


def kkt_certificate(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    degree: float | None = None,
    slack: float = 0.2,
    max_points: int = 512,
) -> KKTCertificate:
    """Multipliers μ ≥ 0 making θ̃ = θ/q_min^{1/L} as close as possible to a KKT point (Lyu & Li 2020, §4).

    θ̃ satisfies q_n(θ̃) ≥ 1 with equality at the worst sample. Over the samples with q_n(θ̃) ≤ 1 + ``slack``
    (at most ``max_points`` of the smallest), μ minimizes ‖θ̃ − Σ_n μ_n ∇q_n(θ̃)‖² + (δ/‖θ̃‖)², a
    non-negative least squares (the δ row picks, among multipliers that fit θ̃ equally well, those on the
    tightest constraints) solved on the Gram matrix of the per-sample gradients, so memory is
    |support| × #parameters; the residual is then recomputed directly. ε = residual/‖θ̃‖ and
    δ = Σ μ_n (q_n(θ̃) − 1).

    Raises
    ------
    NotSeparatedError
        If some sample has q_n ≤ 0.
    """
    check_features_labels(X, y)
    check_scalar("slack", slack, (int, float), low=0.0)
    check_scalar("max_points", max_points, int, low=1)
    outputs = predict(model, X)
    labels = canonical_labels(outputs, y.to(outputs.device))
    q = output_margins(outputs, labels, validate=False)
    q_min = require_separated(q)
    degree = homogeneity_degree(model, X) if degree is None else degree
    scale = q_min ** (-1.0 / degree)
    normalized = q / q_min
    candidates = torch.nonzero(normalized <= 1 + slack).flatten()
    support = candidates[torch.argsort(normalized[candidates])][:max_points]

    names = [name for name, p in model.named_parameters()]
    theta = {name: p.detach() * scale for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    device, dtype = model_device(model), model_dtype(model)
    X_s = X.to(device=device, dtype=dtype)[support.to(device)]
    y_s = labels[support.to(labels.device)]

    def margin_of(params: dict[str, torch.Tensor], x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x[None],))
        return output_margins(out, label[None], validate=False)[0]

    was_training = model.training
    model.eval()
    try:
        per_sample = vmap(grad(margin_of), in_dims=(None, 0, 0))(theta, X_s, y_s)
    finally:
        model.train(was_training)
    jacobian = torch.cat([per_sample[name].reshape(len(support), -1).to(torch.float64) for name in names], dim=1)
    theta_flat = torch.cat([theta[name].reshape(-1).to(torch.float64) for name in names])

    theta_norm = float(theta_flat.norm())
    gaps = normalized[support].cpu().numpy() - 1.0  # q_n(θ̃) − 1 ≥ 0
    gram = (jacobian @ jacobian.T).cpu().numpy()
    target = (jacobian @ theta_flat).cpu().numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    keep = eigenvalues > eigenvalues.max() * 1e-13
    root = np.sqrt(eigenvalues[keep])
    factor = root[:, None] * eigenvectors[:, keep].T  # gram = factorᵀ factor
    projected = (eigenvectors[:, keep].T @ target) / root  # ‖factor μ − projected‖ = ‖θ̃ − Jᵀμ‖ + const
    # one more row penalizes δ = Σ μ_n (q_n − 1) at the scale where δ/‖θ̃‖² and ε/‖θ̃‖ weigh alike
    factor = np.vstack([factor, gaps[None, :] / theta_norm])
    projected = np.append(projected, 0.0)
    mu, _ = nnls(factor, projected, maxiter=50 * len(support) + 100)

    residual = theta_flat - jacobian.T @ torch.as_tensor(mu, dtype=torch.float64, device=jacobian.device)
    delta = float(np.dot(mu, gaps))
    return KKTCertificate(float(residual.norm()) / theta_norm, delta, support.cpu().numpy(), mu, theta_norm)


def kkt_residual(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    degree: float | None = None,
    slack: float = 0.2,
    max_points: int = 512,
) -> KKTResidual:
    """(ε/‖θ̃‖, δ) of the (ε, δ)-KKT condition of Lyu & Li (2020, Def. C.4) at θ̃ = θ/q_min^{1/L}.

    Both → 0 along gradient flow on a homogeneous network (their Thm 4.4). See :func:`kkt_certificate` for
    the multipliers and the parameters.
    """
    certificate = kkt_certificate(model, X, y, degree=degree, slack=slack, max_points=max_points)
    return KKTResidual(certificate.epsilon, certificate.delta)


def support_count(model: nn.Module, X: torch.Tensor, y: torch.Tensor, k: float = 3.0) -> int:
    """Number of samples with q_n − q_min ≤ k·log 10: those whose exponential-loss term e^{−q_n} is within a
    factor 10^k of the largest — the points that still steer the gradient (the support vectors in the limit)."""
    return support_size(margins(model, X, y), k)


def support_size(q: torch.Tensor, k: float = 3.0) -> int:
    """:func:`support_count` from the margins q_n themselves."""
    check_scalar("k", k, (int, float), low=0.0)
    return int((q - q.min() <= k * math.log(10)).sum())
