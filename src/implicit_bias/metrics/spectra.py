"""Spectra and ranks of weights, features and class-mean matrices: the low-rank bias (SCIENCE.md §5).

References
----------
.. [1] Roy, O. & Vetterli, M. (2007). The effective rank: a measure of effective dimensionality. EUSIPCO.
.. [2] Galanti, T., Siegel, Z. S., Gupte, A. & Poggio, T. (2022). SGD and weight decay secretly minimize the
       rank of your neural network (numerical rank of W/‖W‖_F with an absolute tolerance 1e−3).
.. [3] Súkeník, P., Mondelli, M. & Lampert, C. (2024). Neural collapse versus low-rank bias: is deep neural
       collapse really optimal? (ranks of class-mean matrices layer by layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import InvalidArgumentError
from ..models.features import capture_features
from ..models.inference import evaluation, model_device, model_dtype
from ..validation import check_finite, check_labels
from .layerwise import Batches, FeatureReducer, _batches, _no_samples, first_batch, resolve_layers


def _matrix(A: torch.Tensor | np.ndarray) -> torch.Tensor:
    matrix = torch.as_tensor(A).detach().to(torch.float64)
    if matrix.ndim != 2:
        raise InvalidArgumentError(f"expected a matrix (2 dimensions), got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise InvalidArgumentError("the matrix has NaN or infinite entries; its spectrum is undefined")
    return matrix


def singular_values(A: torch.Tensor | np.ndarray) -> torch.Tensor:
    """σ_1 ≥ σ_2 ≥ … ≥ σ_min(m,n) of a matrix, in float64."""
    return torch.linalg.svdvals(_matrix(A))


Matrix = torch.Tensor | np.ndarray | None  # None is allowed where ``sigma=`` gives the singular values instead


def _spectrum(A: Matrix, sigma: torch.Tensor | None) -> torch.Tensor:
    if sigma is None:
        if A is None:
            raise InvalidArgumentError("pass a matrix, or its singular values as sigma=")
        sigma = singular_values(A)
    if not bool(sigma.max() > 0):
        raise InvalidArgumentError("the matrix is zero; its rank measures are undefined")
    return sigma


def numerical_rank(A: Matrix, tol: float = 1e-3, *, relative: bool = True, sigma: torch.Tensor | None = None) -> int:
    """The number of singular values above a threshold, in one of the two conventions of SCIENCE.md §5:

    - ``relative=True``: #{i : σ_i > tol · σ_1} (scale-free, relative to the largest);
    - ``relative=False``: #{i : σ_i / ‖A‖_F > tol}, the absolute tolerance on A/‖A‖_F of Galanti et al. ([2],
      tol = 1e−3).

    ``sigma`` (the singular values, when already computed) skips the SVD.
    """
    if not tol > 0:
        raise InvalidArgumentError(f"tol must be positive, got {tol!r}")
    sigma = _spectrum(A, sigma)
    reference = sigma[0] if relative else sigma.square().sum().sqrt()
    return int((sigma > tol * reference).sum())


def stable_rank(A: Matrix, *, sigma: torch.Tensor | None = None) -> float:
    """‖A‖²_F / ‖A‖²_2 = Σσ_i² / σ_1² (1 ≤ stable rank ≤ rank)."""
    sigma = _spectrum(A, sigma)
    return float(sigma.square().sum() / sigma[0] ** 2)


def effective_rank(A: Matrix, *, sigma: torch.Tensor | None = None) -> float:
    """exp(−Σ p_i log p_i) with p_i = σ_i / Σ_j σ_j, the effective rank of Roy & Vetterli ([1], Def. 1); n for
    any matrix with n equal non-zero singular values (e.g. the n×n identity)."""
    sigma = _spectrum(A, sigma)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def participation_ratio(A: Matrix, *, sigma: torch.Tensor | None = None) -> float:
    """(Σσ_i²)² / Σσ_i⁴, the participation ratio of the spectrum of AᵀA."""
    sigma = _spectrum(A, sigma)
    squares = sigma.square()
    return float(squares.sum() ** 2 / squares.square().sum())


@dataclass(frozen=True)
class Spectrum:
    """A matrix's singular values and every rank measure of this module (tolerance 1e−3 for both numerical
    ranks unless stated otherwise)."""

    name: str
    shape: tuple[int, int]
    singular_values: torch.Tensor
    rank_relative: int  # #{σ_i > 1e−3 σ_1}
    rank_frobenius: int  # #{σ_i > 1e−3 ‖A‖_F}, Galanti et al. (2022)
    stable_rank: float
    effective_rank: float
    participation_ratio: float

    @classmethod
    def of(cls, name: str, A: torch.Tensor | np.ndarray, tol: float = 1e-3) -> Spectrum:
        """The spectrum of matrix ``A``."""
        matrix = _matrix(A)
        return cls.from_singular_values(name, (matrix.shape[0], matrix.shape[1]), singular_values(matrix), tol)

    @classmethod
    def from_singular_values(
        cls, name: str, shape: tuple[int, int], sigma: torch.Tensor, tol: float = 1e-3
    ) -> Spectrum:
        """The spectrum of a matrix of ``shape`` with singular values ``sigma`` (descending)."""
        sigma = _spectrum(None, sigma)
        return cls(
            name=name,
            shape=shape,
            singular_values=sigma,
            rank_relative=numerical_rank(None, tol, sigma=sigma),
            rank_frobenius=numerical_rank(None, tol, relative=False, sigma=sigma),
            stable_rank=stable_rank(None, sigma=sigma),
            effective_rank=effective_rank(None, sigma=sigma),
            participation_ratio=participation_ratio(None, sigma=sigma),
        )

    def summary(self) -> dict[str, float]:
        """The scalar measures, keyed by name."""
        return {
            "rank": float(self.rank_relative),
            "rank_frobenius": float(self.rank_frobenius),
            "stable_rank": self.stable_rank,
            "effective_rank": self.effective_rank,
            "participation_ratio": self.participation_ratio,
        }


def layer_spectra(model: nn.Module, tol: float = 1e-3) -> dict[str, Spectrum]:
    """The spectrum of every weight tensor with ≥ 2 dimensions, by parameter name. A conv kernel of shape
    (out, in, k₁, …) is read as the (out, in·k₁⋯) matrix of its action on patches; zero tensors are left out."""
    result = {}
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2 and bool(parameter.detach().abs().max() > 0):
            result[name] = Spectrum.of(name, parameter.detach().reshape(parameter.shape[0], -1), tol)
    return result


@dataclass(frozen=True)
class FeatureSpectra:
    """A layer's feature matrix H (N×D) and class-mean matrix M (K×D, rows μ_c, not centred) spectra, and
    the centred class means M − 1μ_Gᵀ (μ_G the unweighted mean of the class means)."""

    features: Spectrum
    means: Spectrum
    centred_means: Spectrum


@torch.no_grad()
def feature_spectra(
    model: nn.Module,
    data: Batches,
    layers: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
    batch_size: int = 1024,
    reduction: str = "avgpool",
    tol: float = 1e-3,
) -> dict[str, FeatureSpectra]:
    """Spectra of the features and class means of ``layers`` (default: the model's feature layers), streamed
    in one pass: the feature spectrum comes from the D×D Gram HᵀH accumulated in float64 (σ_i = λ_i(HᵀH)^{1/2},
    resolving σ_i down to ~1e−8 σ_1), the class means from per-class sums. Conv maps are reduced as in
    :func:`~implicit_bias.metrics.collapse_by_layer` (global average pooling by default)."""
    if num_classes is None:
        if not isinstance(data, Dataset):
            raise InvalidArgumentError("pass num_classes= when data is not a Dataset")
        num_classes = data.num_classes
    example, batches = first_batch(_batches(data, batch_size, num_classes))
    layers = resolve_layers(model, example, layers)
    reducer = FeatureReducer(reduction)
    device, dtype = model_device(model), model_dtype(model)
    grams: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    offset = 0
    with evaluation(model):
        for X, y in batches:
            check_labels(y, num_classes=num_classes, name=f"labels of samples {offset}..{offset + len(y) - 1}")
            offset += len(y)
            y = y.to(device)
            _, captured = capture_features(model, X.to(device=device, dtype=dtype), layers)
            for name, output in captured.items():
                features = check_finite(f"features of layer {name!r}", reducer(name, output).to(torch.float64))
                if name not in grams:
                    grams[name] = torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64, device=device)
                    sums[name] = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=device)
                grams[name] += features.T @ features
                sums[name].index_add_(0, y, features)
            counts += torch.bincount(y, minlength=num_classes).to(torch.float64)
    _no_samples("data", offset)
    present = counts > 0
    result = {}
    for name in layers:
        eigenvalues = torch.linalg.eigvalsh(grams[name]).flip(0).clamp_min(0.0)
        sigma = eigenvalues.sqrt()
        means = sums[name][present] / counts[present, None]
        result[name] = FeatureSpectra(
            features=Spectrum.from_singular_values(
                f"{name}/features", (int(counts.sum()), grams[name].shape[0]), sigma, tol
            ),
            means=Spectrum.of(f"{name}/means", means, tol),
            centred_means=Spectrum.of(f"{name}/centred_means", means - means.mean(dim=0), tol),
        )
    return result
