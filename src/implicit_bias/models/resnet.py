"""A small residual network (He et al. 2016) for 1-D signals and 2-D images, with or without normalization."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..validation import check_scalar
from .layers import Norm, conv, norm_layer, signal_layout


def _conv_norm(dims: int, cin: int, cout: int, kernel: int, stride: int, bias: bool, norm: str) -> list[nn.Module]:
    modules = [conv(dims, cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)]
    normalization = norm_layer(norm, cout, spatial_dims=dims)
    if normalization is not None:
        modules.append(normalization)
    return modules


class BasicBlock(nn.Module):
    """relu(main(x) + shortcut(x)), main = conv3 → norm → relu → conv3 → norm; the shortcut is the identity, or
    a strided 1×1 conv (→ norm) when the shape changes."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, *, bias: bool, norm: str) -> None:
        super().__init__()
        self.main = nn.Sequential(
            *_conv_norm(dims, cin, cout, 3, stride, bias, norm),
            nn.ReLU(),
            *_conv_norm(dims, cout, cout, 3, 1, bias, norm),
        )
        changes = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(*_conv_norm(dims, cin, cout, 1, stride, bias, norm)) if changes else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.main(x) + self.shortcut(x))


class ResNet(nn.Sequential):
    """A small ResNet: ``stem`` (conv3 → norm → relu) → ``stage1`` … ``stage{stages}`` (``blocks`` basic blocks
    each; width doubles and resolution halves from stage 2 on) → ``pool`` (global average) → ``flatten`` →
    ``head``."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        width: int = 16,
        stages: int = 3,
        blocks: int = 1,
        bias: bool = True,
        norm: Norm = "batchnorm",
    ) -> None:
        check_scalar("width", width, int, low=1)
        check_scalar("stages", stages, int, low=1)
        check_scalar("blocks", blocks, int, low=1)
        dims, cin, reshape = signal_layout(input_shape, "resnet")
        layers: dict[str, nn.Module] = {} if reshape is None else {"reshape": reshape}
        layers["stem"] = nn.Sequential(*_conv_norm(dims, cin, width, 3, 1, bias, norm), nn.ReLU())
        cin = width
        for stage in range(1, stages + 1):
            cout = width * 2 ** (stage - 1)
            stage_blocks = [
                BasicBlock(
                    dims,
                    cin if b == 0 else cout,
                    cout,
                    2 if (b == 0 and stage > 1) else 1,
                    bias=bias,
                    norm=norm,
                )
                for b in range(blocks)
            ]
            layers[f"stage{stage}"] = nn.Sequential(*stage_blocks)
            cin = cout
        layers["pool"] = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(cin, num_outputs, bias=bias)
        super().__init__(OrderedDict(layers))
        self.feature_names: tuple[str, ...] = (
            "stem",
            *(f"stage{s}" for s in range(1, stages + 1)),
            "flatten",
        )
