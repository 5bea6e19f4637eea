"""Deep neural collapse and ranks, layer by layer, of a DUFM (Súkeník, Mondelli & Lampert 2023, Def. 3; 2024,
§4: the rank of the class-mean matrices before and after each ReLU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics.collapse import CollapseAccumulator
from ..metrics.spectra import numerical_rank
from .model import DUFM


@dataclass(frozen=True)
class LayerMeasures:
    """Measures of H_l, the input of W_l (l = 1: the free features; l ≥ 2: post-ReLU).

    ``nc1`` = tr(Σ_W Σ_B†)/K of H_l (Papyan et al. 2020); ``rank`` of the K×d class-mean matrix of H_l and
    ``rank_pre_relu`` of W_{l−1}H_{l−1}'s class means (None at l = 1), both #{σ_i > tol σ_1};
    ``max_cosine``: max_{c≠c'} |cos(μ_c, μ_c')| of the (uncentred) class means of H_l — 0 when they are
    orthogonal, as deep neural collapse requires after a ReLU.
    """

    layer: int
    nc1: float
    rank: int
    rank_pre_relu: int | None
    max_cosine: float
    singular_values: torch.Tensor


def _class_means(features: torch.Tensor, model: DUFM) -> torch.Tensor:
    return features.reshape(features.shape[0], model.num_classes, model.per_class).mean(dim=2).T  # (K, d)


def _max_cosine(means: torch.Tensor) -> float:
    norms = means.norm(dim=1, keepdim=True).clamp_min(torch.finfo(means.dtype).tiny)
    cosines = (means / norms) @ (means / norms).T
    cosines.fill_diagonal_(0.0)
    return float(cosines.abs().max())


@torch.no_grad()
def dnc_measures(model: DUFM, *, tol: float = 1e-3) -> list[LayerMeasures]:
    """:class:`LayerMeasures` for l = 1 … L."""
    acts = model.activations()
    measures = []
    for index, features in enumerate(acts.inputs):
        accumulator = CollapseAccumulator(model.num_classes, features.shape[0], device=features.device)
        accumulator.update(features.T, model.labels)
        means = _class_means(features, model)
        pre = _class_means(acts.pre[index - 1], model) if index > 0 else None
        nonzero = bool(means.abs().max() > 1e-10)  # below: the layer has decayed to the zero point
        measures.append(
            LayerMeasures(
                layer=index + 1,
                nc1=float(accumulator.compute().nc1) if nonzero else float("nan"),
                rank=numerical_rank(means, tol) if nonzero else 0,
                rank_pre_relu=(numerical_rank(pre, tol) if bool(pre.abs().max() > 1e-10) else 0)
                if pre is not None
                else None,
                max_cosine=_max_cosine(means),
                singular_values=torch.linalg.svdvals(means),
            )
        )
    return measures
