"""Building blocks shared by the model families: activations, normalization layers, convolution by input rank."""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from ..errors import InvalidArgumentError
from ..validation import check_choice

Activation = Literal["relu", "leaky_relu", "identity"]
Norm = Literal["none", "batchnorm", "layernorm", "groupnorm"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
NORMS: tuple[str, ...] = get_args(Norm)


def make_activation(name: Activation, negative_slope: float = 0.01) -> nn.Module:
    """ReLU, leaky ReLU (with ``negative_slope``) or the identity — all positively 1-homogeneous."""
    check_choice("activation", name, ACTIVATIONS)
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return nn.Identity()


def norm_layer(name: Norm, channels: int, *, spatial_dims: int, affine: bool = True) -> nn.Module | None:
    """A normalization layer over ``channels`` features of vectors (``spatial_dims`` 0) or of 1-D / 2-D conv
    feature maps, with or without its affine gain and shift, or None for "none".

    LayerNorm on conv maps normalizes over all channels and positions (GroupNorm with one group).
    """
    check_choice("norm", name, NORMS)
    if name == "none":
        return None
    if name == "batchnorm":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm1d)(channels, affine=affine)
    if name == "groupnorm":
        groups = 8 if channels % 8 == 0 else 1
        return nn.GroupNorm(groups, channels, affine=affine)
    if spatial_dims:
        return nn.GroupNorm(1, channels, affine=affine)
    return nn.LayerNorm(channels, elementwise_affine=affine)


def conv(dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, bias: bool) -> nn.Module:
    """A 1-D or 2-D convolution."""
    return (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, kernel, stride=stride, padding=padding, bias=bias)


def max_pool(dims: int) -> nn.Module:
    """2× max pooling in 1-D or 2-D."""
    return (nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(2)


def signal_layout(input_shape: tuple[int, ...], model: str) -> tuple[int, int, nn.Module | None]:
    """(convolution dims, input channels, reshaping module or None) for a conv net on ``input_shape``.

    (L,) is read as a one-channel 1-D signal, (C, L) as a C-channel signal and (C, H, W) as an image.
    """
    if len(input_shape) == 1:
        return 1, 1, nn.Unflatten(1, (1, input_shape[0]))
    if len(input_shape) == 2:
        return 1, input_shape[0], None
    if len(input_shape) == 3:
        return 2, input_shape[0], None
    raise InvalidArgumentError(
        f"model {model!r} needs inputs of shape (L,), (C, L) or (C, H, W), got {tuple(input_shape)}"
    )
