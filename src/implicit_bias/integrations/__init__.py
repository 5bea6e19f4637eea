"""Adapters to other libraries' interfaces; each submodule imports its library only when imported itself.

- :mod:`implicit_bias.integrations.torchmetrics`: :class:`NeuralCollapse` and :class:`NormalizedMargin` as
  ``torchmetrics.Metric`` s (``pip install implicit-bias[torchmetrics]``).
- :mod:`implicit_bias.integrations.lightning`: :class:`ImplicitBiasCallback`, per-layer neural collapse and the
  normalized margin of the validation data logged by a ``lightning.Callback`` (``pip install implicit-bias[lightning]``).
"""
