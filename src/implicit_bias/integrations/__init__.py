"""Adapters to other libraries' interfaces; each submodule imports its library only when imported itself.

- :mod:`implicit_bias.integrations.torchmetrics`: :class:`NeuralCollapse` and :class:`NormalizedMargin` as
  ``torchmetrics.Metric`` s (``pip install implicit-bias[torchmetrics]``).
"""
