"""Metrics of implicit bias. Each cites its paper and formula in its docstring."""

from .direction import alignment, direction_cosine, flat_parameters, layer_norms
from .kkt import KKTCertificate, KKTResidual, kkt_certificate, kkt_residual, support_count
from .margins import homogeneity_degree, margins, normalized_margin, parameter_norm, smoothed_margin

__all__ = [
    "KKTCertificate", "KKTResidual", "alignment", "direction_cosine", "flat_parameters", "homogeneity_degree",
    "kkt_certificate", "kkt_residual", "layer_norms", "margins", "normalized_margin", "parameter_norm",
    "smoothed_margin", "support_count",
]
