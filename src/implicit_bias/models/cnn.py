"""The convolutional network of Lyu & Li (2020) for MNIST, for 1-D signals and 2-D images."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

from ..errors import InvalidArgumentError
from ..validation import check_choice
from .layers import Activation, conv, make_activation, max_pool, signal_layout


class CNN(nn.Sequential):
    """``block1`` (conv 5×5, 32 ch → act → max-pool 2) → ``block2`` (conv 3×3, 64 ch → act → max-pool 2) →
    ``flatten`` → ``fc1`` (linear 1024 → act) → ``head`` (linear K).

    Lyu & Li (2020, §6) use this shape without biases, which makes it 4-homogeneous (max-pooling is
    1-homogeneous). ``padding="valid"`` is their layout (28×28 → 5×5 after block2); ``"same"`` keeps sizes
    until pooling, for small inputs such as 8×8 digits.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        bias: bool = True,
        padding: Literal["valid", "same"] = "valid",
        channels: tuple[int, int] | list[int] = (32, 64),
        hidden: int = 1024,
        activation: Activation = "relu",
        negative_slope: float = 0.01,
    ) -> None:
        check_choice("padding", padding, ("valid", "same"))
        if len(channels) != 2:
            raise InvalidArgumentError(f"cnn channels must list two widths, got {list(channels)}")
        dims, cin, reshape = signal_layout(input_shape, "cnn")
        layers: dict[str, nn.Module] = {} if reshape is None else {"reshape": reshape}
        for index, (cout, kernel) in enumerate(zip(map(int, channels), (5, 3)), start=1):
            pad = kernel // 2 if padding == "same" else 0
            layers[f"block{index}"] = nn.Sequential(
                conv(dims, cin, cout, kernel, padding=pad, bias=bias),
                make_activation(activation, negative_slope),
                max_pool(dims),
            )
            cin = cout
        trunk = nn.Sequential(*layers.values())
        with torch.no_grad():
            try:
                flat = trunk(torch.zeros(1, *input_shape)).numel()
            except RuntimeError:
                flat = 0
        if flat == 0:
            raise InvalidArgumentError(
                f"input shape {tuple(input_shape)} is too small for the cnn with padding={padding!r}; "
                "use padding='same'"
            )
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Sequential(nn.Linear(flat, hidden, bias=bias), make_activation(activation, negative_slope))
        layers["head"] = nn.Linear(hidden, num_outputs, bias=bias)
        super().__init__(OrderedDict(layers))
        self.feature_names: tuple[str, ...] = ("block1", "block2", "fc1")
