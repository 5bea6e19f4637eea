"""Models: ``build(spec, input_shape, num_classes)`` and intermediate features by layer name.

========  ===================================================================================================
name      options (defaults)
========  ===================================================================================================
linear    bias (True)
mlp       depth (2), width (100), bias (True), activation (relu | leaky_relu | identity), negative_slope
          (0.01), norm (none | batchnorm | layernorm), head_norm (none | batchnorm | layernorm: a normalization
          without affine parameters before the classifier)
cnn       bias (True), padding (valid | same), channels ([32, 64]), hidden (1024), activation, negative_slope
resnet    width (16), stages (3), blocks (1), bias (True), norm (batchnorm | none | layernorm | groupnorm)
========  ===================================================================================================

Every model also takes ``outputs`` (default: 1 for two classes, so binary data gets a single score and
margins y·Φ with y ∈ {±1}; K otherwise) and ``init_scale`` (multiplies every initial parameter; default 1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..validation import check_choice, check_options, check_scalar
from .cnn import CNN
from .features import LayerTrace, capture_features, feature_names, trace_layers
from .mlp import MLP, linear
from .quasi import SplitLinear, WithOutputBias
from .resnet import ResNet
from .spec import format_spec, parse_spec

BUILDERS: dict[str, Callable[..., nn.Module]] = {"linear": linear, "mlp": MLP, "cnn": CNN, "resnet": ResNet}
COMMON_OPTIONS: dict[str, type] = {"outputs": int, "init_scale": float}

__all__ = [
    "BUILDERS",
    "CNN",
    "MLP",
    "LayerTrace",
    "ResNet",
    "SplitLinear",
    "WithOutputBias",
    "build",
    "builder_options",
    "capture_features",
    "feature_names",
    "format_spec",
    "parse_spec",
    "trace_layers",
]


def builder_options(name: str) -> dict[str, Any]:
    """The options of model family ``name`` with their defaults."""
    check_choice("model", name, BUILDERS)
    parameters = inspect.signature(BUILDERS[name]).parameters
    return {k: p.default for k, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(
    spec: str | Mapping[str, Any],
    input_shape: tuple[int, ...] | torch.Size,
    num_classes: int,
    *,
    seed: int | None = None,
) -> nn.Module:
    """Build a model from ``spec`` for inputs of ``input_shape`` (one sample) and ``num_classes`` classes.

    ``seed`` makes the initialization reproducible without touching the global RNG.

    >>> model = build("mlp:depth=3,width=32,bias=false", (10,), 4, seed=0)
    >>> model(torch.zeros(5, 10)).shape
    torch.Size([5, 4])
    """
    name, options = parse_spec(spec)
    check_choice("model", name, BUILDERS)
    options = check_options(
        f"model {name!r}", options, BUILDERS[name], COMMON_OPTIONS, exclude=("input_shape", "num_outputs")
    )
    check_scalar("num_classes", num_classes, int, low=2)
    outputs = check_scalar("outputs", options.pop("outputs", 1 if num_classes == 2 else num_classes), int, low=1)
    init_scale = check_scalar("init_scale", options.pop("init_scale", 1.0), (int, float), low=0.0)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = BUILDERS[name](tuple(int(s) for s in input_shape), outputs, **options)
    if init_scale != 1.0:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(init_scale)
    return model
