"""Figures and markdown reports for runs and experiments."""

from .figures import plot_bars, plot_heatmap, plot_history, plot_series
from .markdown import experiment_report, index_report

__all__ = ["experiment_report", "index_report", "plot_bars", "plot_heatmap", "plot_history", "plot_series"]
