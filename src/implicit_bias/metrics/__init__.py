"""Metrics of implicit bias. Each cites its paper and formula in its docstring."""

from .asymmetric import asymmetric_margin, empirical_rates, lambda_seminorm, rate_group_norms, rate_shares
from .collapse import CollapseAccumulator, CollapseReport
from .direction import alignment, direction_cosine, flat_parameters, layer_norms
from .effective_depth import DepthBound, EffectiveDepth, MinimalDepth, depth_bound, effective_depth, minimal_ncc_depth
from .homogenization import Homogenization, Residual, activation_gap, homogenization, homogenization_gap_bound
from .kkt import KKTCertificate, KKTResidual, kkt_certificate, kkt_residual, support_count
from .layerwise import FeatureReducer, LayerCollapse, collapse_by_layer
from .margins import homogeneity_degree, margins, normalized_margin, parameter_norm, smoothed_margin
from .ntk import ntk_margin, tangent_features
from .spectra import (
    FeatureSpectra,
    Spectrum,
    effective_rank,
    feature_spectra,
    layer_spectra,
    numerical_rank,
    participation_ratio,
    singular_values,
    stable_rank,
)
from .svm import MaxMargin, SVMSolution, hard_margin_svm, l1_max_margin, linf_max_margin

__all__ = [
    "CollapseAccumulator",
    "CollapseReport",
    "DepthBound",
    "EffectiveDepth",
    "FeatureReducer",
    "FeatureSpectra",
    "Homogenization",
    "KKTCertificate",
    "KKTResidual",
    "LayerCollapse",
    "MaxMargin",
    "MinimalDepth",
    "Residual",
    "SVMSolution",
    "Spectrum",
    "activation_gap",
    "alignment",
    "asymmetric_margin",
    "collapse_by_layer",
    "depth_bound",
    "direction_cosine",
    "effective_depth",
    "effective_rank",
    "empirical_rates",
    "feature_spectra",
    "flat_parameters",
    "hard_margin_svm",
    "homogeneity_degree",
    "homogenization",
    "homogenization_gap_bound",
    "kkt_certificate",
    "kkt_residual",
    "l1_max_margin",
    "lambda_seminorm",
    "layer_norms",
    "layer_spectra",
    "linf_max_margin",
    "margins",
    "minimal_ncc_depth",
    "normalized_margin",
    "ntk_margin",
    "numerical_rank",
    "parameter_norm",
    "participation_ratio",
    "rate_group_norms",
    "rate_shares",
    "singular_values",
    "smoothed_margin",
    "stable_rank",
    "support_count",
    "tangent_features",
]
