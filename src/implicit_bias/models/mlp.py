"""Fully connected networks: the linear model (depth 1) and multilayer perceptrons."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from ..validation import check_scalar
from .layers import Activation, Norm, make_activation, norm_layer


class MLP(nn.Sequential):
    """A multilayer perceptron with ``depth`` linear layers (``depth − 1`` hidden layers of ``width``):
    ``flatten → layer1 … layer{depth−1} → [normalize] → head``, each hidden ``layer_l`` = Linear → [norm] →
    activation; ``head_norm`` adds ``normalize``, a normalization without affine parameters right before the
    classifier (Kunin et al. 2023, §5: the classifier then sees features of fixed scale).

    Without biases and normalization, with a ReLU / leaky ReLU / identity activation, the network is
    ``depth``-homogeneous in its parameters (Lyu & Li 2020). ``feature_names`` lists the hidden layers whose
    outputs (post-activation) layer-wise metrics read.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        depth: int = 2,
        width: int = 100,
        bias: bool = True,
        activation: Activation = "relu",
        negative_slope: float = 0.01,
        norm: Norm = "none",
        head_norm: Norm = "none",
    ) -> None:
        check_scalar("depth", depth, int, low=1)
        check_scalar("width", width, int, low=1)
        layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
        fan_in = math.prod(input_shape)
        for index in range(1, depth):
            block = [nn.Linear(fan_in, width, bias=bias)]
            normalization = norm_layer(norm, width, spatial_dims=0)
            if normalization is not None:
                block.append(normalization)
            block.append(make_activation(activation, negative_slope))
            layers[f"layer{index}"] = nn.Sequential(*block)
            fan_in = width
        normalize = norm_layer(head_norm, fan_in, spatial_dims=0, affine=False)
        if normalize is not None:
            layers["normalize"] = normalize
        layers["head"] = nn.Linear(fan_in, num_outputs, bias=bias)
        super().__init__(OrderedDict(layers))
        self.feature_names: tuple[str, ...] = tuple(f"layer{i}" for i in range(1, depth)) + (
            ("normalize",) if normalize is not None else ()
        )


def linear(input_shape: tuple[int, ...], num_outputs: int, *, bias: bool = True) -> MLP:
    """The linear model Φ(x) = Wx (+ b): an MLP of depth 1 (1-homogeneous without bias)."""
    return MLP(input_shape, num_outputs, depth=1, bias=bias)
