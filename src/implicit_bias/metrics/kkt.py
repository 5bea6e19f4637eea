"""KKT residuals of the max-margin problem and support counts (Lyu & Li 2020, Def. of (ε, δ)-KKT points)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..losses import output_margins
from ..models.inference import evaluation, model_device, model_dtype, sample_slices, to_model
from ..validation import check_features_labels, check_scalar
from .margins import homogeneity_degree, margins, margins_of, model_labels, require_separated


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


KKT_MEMORY = 2**30  # bytes of per-sample gradients kkt_certificate holds at a time by default


def kkt_certificate(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    degree: float | None = None,
    slack: float = 0.2,
    max_points: int = 512,
    batch_size: int | None = None,
    max_memory: int = KKT_MEMORY,
) -> KKTCertificate:
    """Multipliers μ ≥ 0 making θ̃ = θ/q_min^{1/L} as close as possible to a KKT point (Lyu & Li 2020, §4).

    θ̃ satisfies q_n(θ̃) ≥ 1 with equality at the worst sample. Over the samples with q_n(θ̃) ≤ 1 + ``slack``
    (at most ``max_points`` of the smallest), μ minimizes ‖θ̃ − Σ_n μ_n ∇q_n(θ̃)‖² + (δ/‖θ̃‖)², a
    non-negative least squares (the δ row picks, among multipliers that fit θ̃ equally well, those on the
    tightest constraints) solved on the Gram matrix G = J Jᵀ of the per-sample gradients J (|support| × P);
    the residual is then recomputed directly. ε = residual/‖θ̃‖ and δ = Σ μ_n (q_n(θ̃) − 1).

    J is never formed whole: G is assembled block by block from chunks of B rows, B = max_memory // (P (16 +
    itemsize)) (at least 1, at most ``batch_size``), two chunks alive at a time, so memory is O(B·P) — the
    price is recomputing chunks, about (|support|/B)²/2 chunk gradients. The forward passes over X run
    ``batch_size`` samples at a time. Everything after the per-sample gradients is float64.

    Raises
    ------
    NotSeparatedError
        If some sample has q_n ≤ 0.
    """
    check_features_labels(X, y)
    check_scalar("slack", slack, (int, float), low=0.0)
    check_scalar("max_points", max_points, int, low=1)
    check_scalar("max_memory", max_memory, int, low=1)
    labels = model_labels(model, X, y)
    q = margins_of(model, X, labels, batch_size).cpu()
    q_min = require_separated(q)
    degree = homogeneity_degree(model, X, batch_size=batch_size) if degree is None else degree
    scale = q_min ** (-1.0 / degree)
    normalized = q / q_min
    candidates = torch.nonzero(normalized <= 1 + slack).flatten()
    support = candidates[torch.argsort(normalized[candidates])][:max_points]

    names = [name for name, p in model.named_parameters()]
    theta = {name: p.detach() * scale for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    theta_flat = torch.cat([theta[name].reshape(-1).to(torch.float64) for name in names])
    device = model_device(model)
    chunk = max(1, max_memory // (theta_flat.numel() * (16 + model_dtype(model).itemsize)))
    blocks = sample_slices(len(support), min(chunk, batch_size or chunk))

    def margin_of(params: dict[str, torch.Tensor], x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x[None],))
        return output_margins(out, label[None], validate=False)[0]

    per_sample_grad = vmap(grad(margin_of), in_dims=(None, 0, 0))

    def jacobian(block: slice) -> torch.Tensor:
        """The rows ∇q_n(θ̃)ᵀ of the samples support[block], float64, shape (len, P), on the model's device."""
        rows = support[block]
        inputs, targets = to_model(model, X[rows.to(X.device)]), labels[rows.to(labels.device)].to(device)
        grads = per_sample_grad(theta, inputs, targets)
        return torch.cat([grads[name].reshape(len(rows), -1).to(torch.float64) for name in names], dim=1)

    gram = torch.empty(len(support), len(support), dtype=torch.float64)
    target = torch.empty(len(support), dtype=torch.float64)
    with evaluation(model):
        following = jacobian(blocks[0])
        for a, rows in enumerate(blocks):
            current, following = following, None
            target[rows] = (current @ theta_flat).cpu()
            gram[rows, rows] = (current @ current.T).cpu()
            for b in range(len(blocks) - 1, a, -1):  # downwards: the last chunk formed, a + 1, is the next current
                following = None  # freed before the next chunk is formed: two chunks alive at a time
                following = jacobian(blocks[b])
                block = (current @ following.T).cpu()
                gram[rows, blocks[b]], gram[blocks[b], rows] = block, block.T

    theta_norm = float(theta_flat.norm())
    gaps = normalized[support].numpy() - 1.0  # q_n(θ̃) − 1 ≥ 0
    eigenvalues, eigenvectors = np.linalg.eigh(gram.numpy())
    keep = eigenvalues > eigenvalues.max() * 1e-13
    root = np.sqrt(eigenvalues[keep])
    factor = root[:, None] * eigenvectors[:, keep].T  # gram = factorᵀ factor
    projected = (eigenvectors[:, keep].T @ target.numpy()) / root  # ‖factor μ − projected‖ = ‖θ̃ − Jᵀμ‖ + const
    # one more row penalizes δ = Σ μ_n (q_n − 1) at the scale where δ/‖θ̃‖² and ε/‖θ̃‖ weigh alike
    factor = np.vstack([factor, gaps[None, :] / theta_norm])
    projected = np.append(projected, 0.0)
    from scipy.optimize import nnls  # here, not at import: scipy.optimize takes ~1 s to import

    mu, _ = nnls(factor, projected, maxiter=50 * len(support) + 100)

    weights = torch.as_tensor(mu, dtype=torch.float64, device=device)
    residual = theta_flat - current.T @ weights[blocks[-1]]  # current holds the last chunk
    current = None
    with evaluation(model):
        for rows in blocks[:-1]:
            residual -= jacobian(rows).T @ weights[rows]
    delta = float(np.dot(mu, gaps))
    return KKTCertificate(float(residual.norm()) / theta_norm, delta, support.numpy(), mu, theta_norm)


def kkt_residual(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    degree: float | None = None,
    slack: float = 0.2,
    max_points: int = 512,
    batch_size: int | None = None,
    max_memory: int = KKT_MEMORY,
) -> KKTResidual:
    """(ε/‖θ̃‖, δ) of the (ε, δ)-KKT condition of Lyu & Li (2020, Def. C.4) at θ̃ = θ/q_min^{1/L}.

    Both → 0 along gradient flow on a homogeneous network (their Thm 4.4). See :func:`kkt_certificate` for
    the multipliers and the parameters.
    """
    certificate = kkt_certificate(
        model,
        X,
        y,
        degree=degree,
        slack=slack,
        max_points=max_points,
        batch_size=batch_size,
        max_memory=max_memory,
    )
    return KKTResidual(certificate.epsilon, certificate.delta)


def support_count(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, k: float = 3.0, *, batch_size: int | None = None
) -> int:
    """Number of samples with q_n − q_min ≤ k·log 10: those whose exponential-loss term e^{−q_n} is within a
    factor 10^k of the largest — the points that still steer the gradient (the support vectors in the limit)."""
    return support_size(margins(model, X, y, batch_size=batch_size), k)


def support_size(q: torch.Tensor, k: float = 3.0) -> int:
    """:func:`support_count` from the margins q_n themselves."""
    check_scalar("k", k, (int, float), low=0.0)
    return int((q - q.min() <= k * math.log(10)).sum())
