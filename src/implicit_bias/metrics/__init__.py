"""Metrics of implicit bias. Each cites its paper and formula in its docstring."""

from .margins import homogeneity_degree, margins, normalized_margin, parameter_norm, smoothed_margin

__all__ = ["homogeneity_degree", "margins", "normalized_margin", "parameter_norm", "smoothed_margin"]
