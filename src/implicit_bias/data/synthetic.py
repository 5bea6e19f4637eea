"""Synthetic datasets with known geometry: Gaussian clusters, XOR, and linearly separable data with a planted
max-margin direction."""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError
from ..validation import check_scalar
from .dataset import Dataset


def _bounded_clusters(
    means: torch.Tensor, n_per_cluster: int, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """Points μ_k + z with z ~ N(0, noise²I) radially clipped to 0.45 × the smallest distance between means,
    so that the clusters lie in disjoint balls. Returns shape (K·n, d), cluster-major."""
    k, d = means.shape
    gaps = torch.cdist(means, means).fill_diagonal_(math.inf)
    radius = 0.45 * float(gaps.min())
    z = noise * torch.randn(k, n_per_cluster, d, generator=generator, dtype=torch.float64)
    norms = z.norm(dim=-1, keepdim=True)
    z = z * torch.clamp(radius / norms.clamp_min(1e-300), max=1.0)
    return (means[:, None, :] + z).reshape(k * n_per_cluster, d)


def gaussians(
    *,
    seed: int = 0,
    num_classes: int = 3,
    dim: int = 2,
    n_per_class: int = 50,
    test_per_class: int = 50,
    separation: float = 4.0,
    noise: float = 1.0,
) -> Dataset:
    """K clusters in d dimensions with means at distance ``separation`` from the origin (random directions,
    spread evenly on a circle when d = 2) and Gaussian noise clipped to keep the clusters disjoint, hence
    separable."""
    check_scalar("num_classes", num_classes, int, low=2)
    check_scalar("dim", dim, int, low=1)
    check_scalar("n_per_class", n_per_class, int, low=1)
    check_scalar("test_per_class", test_per_class, int, low=0)
    check_scalar("separation", separation, (int, float), low=0.0, low_inclusive=False)
    check_scalar("noise", noise, (int, float), low=0.0)
    generator = torch.Generator().manual_seed(seed)
    if dim == 2:
        angles = 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
        directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    elif dim == 1:
        if num_classes > 2:
            raise InvalidArgumentError("gaussians in dim=1 hold at most 2 classes; raise dim")
        directions = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    else:
        directions = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
        directions = directions / directions.norm(dim=1, keepdim=True)
    means = separation * directions

    def split(n: int) -> Dataset:
        X = _bounded_clusters(means, n, noise, generator)
        y = torch.arange(num_classes).repeat_interleave(n)
        order = torch.randperm(len(y), generator=generator)
        return Dataset(X[order], y[order], num_classes, "gaussians")

    train = split(n_per_class)
    test = split(test_per_class) if test_per_class > 0 else None
    return train.replace(test=test, info={"means": means})


def xor(*, seed: int = 0, n_per_cluster: int = 25, test_per_cluster: int = 25, noise: float = 0.3) -> Dataset:
    """The XOR problem: four clusters at (±1, ±1); label 1 where the coordinates have the same sign."""
    check_scalar("n_per_cluster", n_per_cluster, int, low=1)
    check_scalar("test_per_cluster", test_per_cluster, int, low=0)
    check_scalar("noise", noise, (int, float), low=0.0)
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([1, 1, 0, 0])

    def split(n: int) -> Dataset:
        X = _bounded_clusters(means, n, noise, generator)
        y = labels.repeat_interleave(n)
        order = torch.randperm(len(y), generator=generator)
        return Dataset(X[order], y[order], 2, "xor")

    test = split(test_per_cluster) if test_per_cluster > 0 else None
    return split(n_per_cluster).replace(test=test)


def linear_separable(
    *,
    seed: int = 0,
    n: int = 200,
    dim: int = 10,
    margin: float = 0.1,
    support_pairs: int = 2,
    n_test: int = 200,
) -> Dataset:
    """Binary data whose hard-margin SVM (no intercept) is known in closed form.

    Inputs z ~ N(0, I_d) get their component along a random unit vector w* pushed out to y(γ + |⟨w*, z⟩|), so
    every point has y⟨w*, x⟩ > γ. Then ``support_pairs`` pairs x± = ±γw* + v (v ⊥ w*, labels ±1) are planted.
    Each pair contributes y₊x₊ + y₋x₋ = 2γw*, so w* lies in the cone of the active constraints: by the KKT
    conditions w_svm = w*/γ is the unique solution of min ½‖w‖² s.t. y_n⟨w, x_n⟩ ≥ 1, the max-margin
    direction is w* and the geometric margin is exactly γ. ``info`` holds ``w_star`` and ``margin``.
    """
    check_scalar("n", n, int, low=2 * support_pairs + 1)
    check_scalar("dim", dim, int, low=2)
    check_scalar("margin", margin, (int, float), low=0.0, low_inclusive=False)
    check_scalar("support_pairs", support_pairs, int, low=1)
    check_scalar("n_test", n_test, int, low=0)
    generator = torch.Generator().manual_seed(seed)
    w_star = torch.randn(dim, generator=generator, dtype=torch.float64)
    w_star = w_star / w_star.norm()

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        along = z @ w_star
        sign = torch.where(along >= 0, 1.0, -1.0).to(torch.float64)
        z = z + ((sign * (margin + along.abs())) - along)[:, None] * w_star
        return z, (sign > 0).long()

    X, y = sample(n)
    v = torch.randn(support_pairs, dim, generator=generator, dtype=torch.float64)
    v = v - (v @ w_star)[:, None] * w_star
    X[: 2 * support_pairs : 2] = margin * w_star + v
    X[1 : 2 * support_pairs : 2] = -margin * w_star + v
    y[: 2 * support_pairs : 2] = 1
    y[1 : 2 * support_pairs : 2] = 0
    order = torch.randperm(n, generator=generator)
    test = None
    if n_test > 0:
        X_test, y_test = sample(n_test)
        test = Dataset(X_test, y_test, 2, "linear-separable")
    return Dataset(X[order], y[order], 2, "linear-separable", test, {"w_star": w_star, "margin": float(margin)})
