"""Reference solutions of the L-DUFM: deep neural collapse (DNC) and, for MSE, the strongly-regular-graph (SRG)
solution of Súkeník, Mondelli & Lampert (2024), as points and as loss values.

Derivation. Both structures keep every sample at its class mean and fix, at each layer, the *shape* of the
class-mean matrix; only one scale x_j per factor (H₁, W₁ … W_L) is free. Writing the loss on the family as

    ℒ(x) = ½(1 − P)² + Σ_j (μ_j/2) x_j²,   P = ∏_j x_j  (the output is P·I_K on the class means),

with μ_j = λ_j × (squared Frobenius norm of the unit-scale factor), the AM–GM balance μ_j x_j² = t (all j) is
optimal for fixed P, giving t = (P² ∏μ_j)^{1/(L+1)} and

    ℒ(P) = ½(1 − P)² + ((L+1)/2) m P^{2/(L+1)},   m = (∏_j μ_j)^{1/(L+1)},

minimized over P ∈ [0, 1] by a bounded scalar search (P = 0, ℒ = ½, when the regularization wins).

- **DNC** (every layer's class means orthogonal, equal norms): H₁ = a·[e_c], W_l = b_l·(I_K embedded), W_L =
  b_L [I_K 0]: μ = (λ_{H₁} N, λ_{W₁} K, …, λ_{W_L} K). Width d ≥ K.
- **SRG** for K = C(r, 2) (classes ↔ edges {i, j} of the complete graph K_r; B ∈ {0,1}^{r×K} its incidence matrix):
  H₁ = a·B (class {i,j} at e_i + e_j, rank r), inner maps W_l = b_l·(I_r embedded) for l ≤ L − 2 (the features
  stay non-negative, rank r), then W_{L−1} = g·Z B⁺ with Z = I + y A₁ + (2y − 1) A₀ (A₁: edges sharing one vertex,
  A₀: disjoint edges; y ≤ 0 so that σ(Z) = I_K, and the coefficient 2y − 1 puts Z in the row space of B:
  the eigenvalue of Z on the (K − r)-dimensional eigenspace of the triangular graph is 1 − 2y + (2y − 1) = 0),
  so that the class means before the last ReLU have rank r and after it are orthogonal; W_L = c [I_K 0].
  μ = (2λ_{H₁} N, λ_{W₁} r, …, λ_{W_{L−2}} r, λ_{W_{L−1}}‖Z B⁺‖²_F, λ_{W_L} K), minimized over y too (‖Z B⁺‖²_F is
  quadratic in y). Width d ≥ K.
- **Cross-entropy DNC** of the linear DUFM (Garrod & Keating 2024): every layer's class means form a simplex
  ETF. With C = I_K − 11ᵀ/K (CᵀC = C, ‖C‖²_F = K − 1): H₁ = a·[C e_c], W_l = b_l·(C embedded), W_L = b_L [C 0], so
  the logits are P·C — correct class P(1 − 1/K), the others −P/K — and the fit term is log(1 + (K − 1)e^{−P}) in
  place of ½(1 − P)²: μ = (λ_{H₁} n(K − 1), λ_{W₁}(K − 1), …, λ_{W_L}(K − 1)), P ∈ [0, ∞). The logits' gradient
  softmax(PC) − Y is a multiple of C, so the point is critical in the whole parameter space, not only in the family.

The SRG point is invariant under the vertex permutations S_r (acting on classes, samples and features), and so is
the loss: gradient descent started there keeps the symmetry (:func:`symmetrize_srg` measures and restores it),
but the point is not stationary. :func:`refined_srg_loss` runs GD inside that symmetric family — which contains
the scalar family above — and returns the lower loss it reaches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .model import DUFM, train_dufm


@dataclass(frozen=True)
class StructuredOptimum:
    """The best loss over a structured family, its output scale P and the per-factor scales x_j."""

    loss: float
    output_scale: float
    scales: tuple[float, ...]


def squared_gap(p: float) -> float:
    """The MSE fit term ½(1 − P)² of an output P·I_K."""
    return 0.5 * (1 - p) ** 2


def simplex_cross_entropy(num_classes: int) -> Callable[[float], float]:
    """The cross-entropy log(1 + (K − 1)e^{−P}) of logits P·(I_K − 11ᵀ/K) (Garrod & Keating 2024)."""
    return lambda p: float(np.logaddexp(0.0, math.log(num_classes - 1) - p))


def product_family_optimum(
    mus: Sequence[float], *, fit: Callable[[float], float] = squared_gap, upper: float = 1.0
) -> StructuredOptimum:
    """min over x of fit(∏x_j) + Σ_j (μ_j/2) x_j² (module docstring), exactly up to a scalar search over
    P ∈ [0, ``upper``]: ℒ(P) = fit(P) + ((L+1)/2) m P^{2/(L+1)}, m = (∏μ_j)^{1/(L+1)}, on a grid of 2001 points,
    then refined by a bounded Brent search between the best point's neighbours."""
    mus = np.asarray(mus, dtype=float)
    if (mus <= 0).any():
        raise InvalidArgumentError("every λ must be positive for the structured optimum to exist")
    factors = len(mus)
    m = float(np.exp(np.log(mus).mean()))

    def loss(p: float) -> float:
        return fit(p) + factors / 2 * m * p ** (2 / factors)

    grid = np.linspace(0.0, upper, 2001)
    best = int(np.argmin([loss(p) for p in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    from scipy.optimize import minimize_scalar  # here, not at import: scipy.optimize takes ~1 s to import

    result = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-14 * max(1, upper)})
    p = min((float(result.x), float(grid[best])), key=loss)
    t = (p * p * np.prod(mus)) ** (1 / factors)
    return StructuredOptimum(loss(p), p, tuple(float(x) for x in np.sqrt(t / mus)))


DNC_LOGIT_BOUND = 200.0  # the cross-entropy DNC search covers P ∈ [0, 200]: P* ≈ 7 at λ = 2⁻¹⁰, ≈ 9.5 at 2⁻¹²


def _dnc_shape(model: DUFM) -> np.ndarray:
    """The unit-scale class-mean shape of every DNC layer: I_K (MSE, orthogonal) or I_K − 11ᵀ/K (cross-entropy,
    a simplex ETF)."""
    K = model.num_classes
    if model.loss_name == "mse":
        return np.eye(K)
    if model.activation != "linear":
        raise InvalidArgumentError(
            "the cross-entropy DNC point is derived for linear layers (activation='linear'), got activation='relu'"
        )
    return np.eye(K) - np.full((K, K), 1 / K)


def dnc_loss(model: DUFM) -> StructuredOptimum:
    """L_DNC: the least loss over deep-neural-collapse points of ``model``'s DUFM (module docstring)."""
    norm = float(np.square(_dnc_shape(model)).sum())  # K (MSE) or K − 1 (cross-entropy)
    lam = model.lambdas
    mus = [lam[0] * model.per_class * norm] + [lam[l] * norm for l in range(1, model.depth + 1)]
    if model.loss_name == "mse":
        return product_family_optimum(mus)
    return product_family_optimum(mus, fit=simplex_cross_entropy(model.num_classes), upper=DNC_LOGIT_BOUND)


def edges(r: int) -> list[tuple[int, int]]:
    """The C(r, 2) edges of the complete graph K_r, one per class."""
    return list(itertools.combinations(range(r), 2))


def srg_vertices(num_classes: int) -> int:
    """r with C(r, 2) = K, or an error when K is not a triangular number."""
    r = round((1 + math.sqrt(1 + 8 * num_classes)) / 2)
    if r * (r - 1) // 2 != num_classes or r < 3:
        raise InvalidArgumentError(
            f"the SRG solution needs K = C(r, 2) with r ≥ 3 (3, 6, 10, 15 …), got K = {num_classes}"
        )
    return r


def _srg_shape(r: int, y: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, Z) for the triangular graph T(r) with off-diagonal coefficients y (one shared vertex) and 2y − 1."""
    pairs = edges(r)
    incidence = np.zeros((r, len(pairs)))
    for column, (i, j) in enumerate(pairs):
        incidence[[i, j], column] = 1.0
    shared = incidence.T @ incidence  # 2 on the diagonal, 1 for edges sharing a vertex, 0 for disjoint ones
    Z = np.where(shared == 2, 1.0, np.where(shared == 1, y, 2 * y - 1))
    return incidence, Z


def _srg_map_norm(r: int, y: float) -> float:
    incidence, Z = _srg_shape(r, y)
    return float(np.square(Z @ np.linalg.pinv(incidence)).sum())


def _best_shape(r: int) -> float:
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda y: _srg_map_norm(r, y), bounds=(-2.0, 0.0), method="bounded",
                             options={"xatol": 1e-12})  # fmt: skip
    return float(result.x)


def _srg_mus(model: DUFM, r: int, y: float) -> list[float]:
    lam = model.lambdas
    inner = [lam[l] * r for l in range(1, model.depth - 1)]
    return [2 * lam[0] * model.size, *inner, lam[model.depth - 1] * _srg_map_norm(r, y),
            lam[model.depth] * model.num_classes]  # fmt: skip


def srg_loss(model: DUFM) -> StructuredOptimum:
    """L_SRG: the least loss over SRG-structured points of ``model``'s DUFM, K = C(r, 2) (module docstring)."""
    r = srg_vertices(model.num_classes)
    return product_family_optimum(_srg_mus(model, r, _best_shape(r)))


def _embed(matrix: np.ndarray, rows: int, cols: int) -> torch.Tensor:
    out = torch.zeros(rows, cols, dtype=torch.float64)
    out[: matrix.shape[0], : matrix.shape[1]] = torch.as_tensor(matrix)
    return out


def _require_width(model: DUFM) -> None:
    if model.width < model.num_classes:
        raise InvalidArgumentError(f"the structured points need width ≥ K = {model.num_classes}, got {model.width}")


@torch.no_grad()
def set_dnc_point(model: DUFM) -> StructuredOptimum:
    """Put ``model`` at its best DNC point (in place; every member of a batch) and return that optimum."""
    _require_width(model)
    optimum = dnc_loss(model)
    shape, d, n = _dnc_shape(model), model.width, model.per_class
    scale_h, *scales = optimum.scales
    model.features.copy_(scale_h * _embed(shape, d, model.num_classes).repeat_interleave(n, dim=1))
    for weight, scale in zip(model.weights, scales):
        weight.copy_(scale * _embed(shape, *weight.shape[-2:]))
    return optimum


@torch.no_grad()
def set_srg_point(model: DUFM) -> StructuredOptimum:
    """Put ``model`` at its best SRG point (in place) and return that optimum."""
    _require_width(model)
    r = srg_vertices(model.num_classes)
    y = _best_shape(r)
    optimum = product_family_optimum(_srg_mus(model, r, y))
    incidence, Z = _srg_shape(r, y)
    d, n, depth = model.width, model.per_class, model.depth
    scale_h, *scales = optimum.scales
    model.features.copy_(scale_h * _embed(incidence, d, model.num_classes).repeat_interleave(n, dim=1))
    for index, (weight, scale) in enumerate(zip(model.weights, scales)):
        if index < depth - 2:
            shape = np.eye(r)
        elif index == depth - 2:
            shape = Z @ np.linalg.pinv(incidence)
        else:
            shape = np.eye(model.num_classes)
        weight.copy_(scale * _embed(shape, *weight.shape))
    return optimum


def _orbit_labels(row_maps: list[torch.Tensor], col_maps: list[torch.Tensor]) -> torch.Tensor:
    """Label every entry (a, b) of a matrix with the smallest flat index in its orbit under the group generated by
    the index maps (a, b) ↦ (R_g[a], C_g[b]): the minimum is pulled along generator edges until nothing changes
    (in a finite group the forward images of a point reach its whole orbit)."""
    rows, cols = len(row_maps[0]), len(col_maps[0])
    labels = torch.arange(rows * cols).view(rows, cols)
    while True:
        pulled = labels
        for row_map, col_map in zip(row_maps, col_maps):
            pulled = torch.minimum(pulled, labels[row_map][:, col_map])
        if torch.equal(pulled, labels):
            return labels
        labels = pulled


def _srg_orbits(model: DUFM) -> list[torch.Tensor]:
    """Orbit labels of every parameter of ``model`` under the SRG point's S_r symmetry (:func:`symmetrize_srg`),
    from the two generators of S_r: the transposition (0 1) and the cycle (0 1 … r−1)."""
    r = srg_vertices(model.num_classes)
    pairs = edges(r)
    index = {pair: k for k, pair in enumerate(pairs)}
    d, K, n = model.width, model.num_classes, model.per_class
    maps: dict[str, list[torch.Tensor]] = {"vertex": [], "edge": [], "class": [], "sample": []}
    for pi in ([1, 0, *range(2, r)], [*range(1, r), 0]):
        edge_map = [index[tuple(sorted((pi[i], pi[j])))] for i, j in pairs]
        maps["vertex"].append(torch.tensor(pi + list(range(r, d))))
        maps["edge"].append(torch.tensor(edge_map + list(range(K, d))))
        maps["class"].append(torch.tensor(edge_map))
        maps["sample"].append((torch.tensor(edge_map)[:, None] * n + torch.arange(n)).flatten())
    layouts = [("vertex", "sample")]  # H₁: vertex coordinates × samples
    for k in range(model.depth):
        into = "vertex" if k < model.depth - 2 else ("edge" if k == model.depth - 2 else "class")
        layouts.append((into, "vertex" if k < model.depth - 1 else "edge"))
    return [_orbit_labels(maps[rows], maps[cols]) for rows, cols in layouts]


@torch.no_grad()
def symmetrize_srg(model: DUFM) -> float:
    """Project the parameters onto the SRG point's symmetry (in place) and return the relative distance moved.

    The SRG point is invariant under every vertex permutation π ∈ S_r acting on vertex coordinates (H₁ and the
    inner layers), edge coordinates (the last hidden layer, the outputs) and the samples of the permuted
    classes; the loss is invariant under these maps, so exact gradient descent keeps the invariance and only
    rounding errors break it. The projection is the average over the group, which for a group permuting
    entries is the mean over each orbit of entries — computed from the orbits, not from the r! elements."""
    moved = 0.0
    for parameter, labels in zip(model.parameters(), _srg_orbits(model)):
        flat = labels.flatten().to(parameter.device)
        sizes = torch.bincount(flat, minlength=flat.numel()).clamp(min=1).to(parameter.dtype)
        means = torch.zeros(flat.numel(), dtype=parameter.dtype, device=parameter.device)
        means.index_add_(0, flat, parameter.detach().flatten())
        average = (means / sizes)[flat].view_as(parameter)
        moved = max(moved, float((parameter - average).norm() / parameter.norm().clamp_min(1e-300)))
        parameter.copy_(average)
    return moved


def refined_srg_loss(model: DUFM, *, steps: int = 5000, lr: float = 0.5, every: int = 250) -> float:
    """The loss GD reaches from the best SRG point of ``model``'s DUFM while kept on the SRG symmetry
    (:func:`symmetrize_srg` every ``every`` steps): the optimum of the S_r-invariant family that contains the
    SRG family, found by gradient descent (≤ :func:`srg_loss`). ``model`` is not modified."""
    twin = DUFM(model.num_classes, model.per_class, depth=model.depth, width=model.width, lambdas=model.lambdas,
                loss=model.loss_name)  # fmt: skip
    set_srg_point(twin)
    for _ in range(0, steps, every):
        train_dufm(twin, steps=every, lr=lr, log_every=every)
        symmetrize_srg(twin)
    return float(twin.loss().detach())
