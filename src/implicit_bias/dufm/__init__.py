"""The deep unconstrained features model (Súkeník, Mondelli & Lampert 2023, 2024): a laboratory where the low-rank
bias of weight decay and deep neural collapse meet gradient descent."""

from .hessian import HessianSpectrum, hessian_spectrum, newton_polish, rotation_nullity
from .measures import LayerMeasures, dnc_measures
from .model import DUFM, Activations, train_dufm
from .structures import (
    StructuredOptimum,
    dnc_loss,
    product_family_optimum,
    refined_srg_loss,
    set_dnc_point,
    set_srg_point,
    srg_loss,
    srg_vertices,
    symmetrize_srg,
)

__all__ = [
    "DUFM",
    "Activations",
    "HessianSpectrum",
    "LayerMeasures",
    "StructuredOptimum",
    "dnc_loss",
    "dnc_measures",
    "hessian_spectrum",
    "newton_polish",
    "product_family_optimum",
    "refined_srg_loss",
    "rotation_nullity",
    "set_dnc_point",
    "set_srg_point",
    "srg_loss",
    "srg_vertices",
    "symmetrize_srg",
    "train_dufm",
]
