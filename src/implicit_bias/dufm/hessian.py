"""The loss surface of a DUFM at a critical point: the Hessian spectrum, its nullity, and the null directions the
rotation symmetry of the linear model predicts (Garrod & Keating 2024, arXiv 2410.23169: deep neural collapse
persists because its solution set is more degenerate).

Symmetry count. In the linear DUFM, (W_{l+1}, W_l) ↦ (W_{l+1}Qᵀ, Q W_l) with Q ∈ O(d) (W₀ = H₁) leaves every
term of ℒ unchanged, at each of the L interfaces. At a point where the factors on both sides of an interface have
rank r, the stabilizer of that action is O(d − r), so the orbit — a manifold of equal-loss critical points — has
dimension dim O(d) − dim O(d − r) = r·d − r(r+1)/2, and the Hessian has at least L·(r·d − r(r+1)/2) zero
eigenvalues (:func:`rotation_nullity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, jacrev

from ..errors import InvalidArgumentError
from ..validation import check_scalar
from .model import DUFM


def flat_parameters(model: DUFM) -> torch.Tensor:
    """θ = (H₁, W₁, …, W_L), each flattened row-major, as one vector (the Hessian's coordinates)."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def flat_gradient(model: DUFM) -> torch.Tensor:
    """∇_θ ℒ (the hand-written :meth:`DUFM.gradients`) in :func:`flat_parameters` coordinates."""
    feature_grad, weight_grads = model.gradients()
    return torch.cat([feature_grad.flatten(), *[g.flatten() for g in weight_grads]])


def loss_hessian(model: DUFM) -> torch.Tensor:
    """∇²_θ ℒ of an unbatched ``model`` at its current point, by automatic differentiation (reverse over reverse, vectorized),
    in :func:`flat_parameters` coordinates."""
    if model.batch is not None:
        raise InvalidArgumentError("loss_hessian needs an unbatched DUFM; take one with model.member(i)")
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def objective(theta: torch.Tensor) -> torch.Tensor:
        pieces = {name: t.view(shape) for name, t, shape in zip(names, theta.split(sizes), shapes)}
        return functional_call(model, pieces, ())

    return jacrev(grad(objective))(flat_parameters(model))


@dataclass(frozen=True)
class HessianSpectrum:
    """Eigenvalues (ascending) of ∇²ℒ; ``nullity`` = #{|μ_i| ≤ tol·max|μ|}, ``min_relative`` = μ_min / max|μ|
    (negative when the point is a saddle)."""

    eigenvalues: torch.Tensor
    tol: float

    @property
    def scale(self) -> float:
        return float(self.eigenvalues.abs().max())

    @property
    def nullity(self) -> int:
        return int((self.eigenvalues.abs() <= self.tol * self.scale).sum())

    @property
    def min_relative(self) -> float:
        return float(self.eigenvalues[0]) / self.scale

    @property
    def smallest_nonzero(self) -> float:
        """The smallest |μ_i| above the null threshold (the gap the nullity count relies on)."""
        return float(self.eigenvalues.abs()[self.eigenvalues.abs() > self.tol * self.scale].min())


def hessian_spectrum(model: DUFM, *, tol: float = 1e-8) -> HessianSpectrum:
    """The :class:`HessianSpectrum` of ``model`` at its current point."""
    check_scalar("tol", tol, float, low=0.0, low_inclusive=False)
    return HessianSpectrum(torch.linalg.eigvalsh(loss_hessian(model)), tol)


def rotation_nullity(width: int, depth: int, rank: int) -> int:
    """L·(r·d − r(r+1)/2): the dimension of the O(d)^L orbit of a linear-DUFM point whose factors have rank r
    (module docstring) — a lower bound on the Hessian's nullity at a critical point."""
    check_scalar("rank", rank, int, low=0, high=width)
    return depth * (rank * width - rank * (rank + 1) // 2)


def newton_polish(model: DUFM, *, iterations: int = 5, tol: float = 1e-8) -> float:
    """Move an unbatched ``model`` (in place) onto the nearby critical point by Newton steps restricted to the
    Hessian's non-null eigenvectors (the null directions are the symmetry orbit: no step along them), and return
    the final gradient norm ‖∇ℒ‖. Meant for a point GD left close to a minimum."""
    check_scalar("iterations", iterations, int, low=0)
    for _ in range(iterations):
        theta, gradient = flat_parameters(model), flat_gradient(model)
        values, vectors = torch.linalg.eigh(loss_hessian(model))
        keep = values.abs() > tol * values.abs().max()
        step = vectors[:, keep] @ ((vectors[:, keep].T @ gradient) / values[keep])
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta - step, model.parameters())
    return float(flat_gradient(model).norm())
