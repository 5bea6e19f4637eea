"""Time of ``infer_rates`` on a ResNet-18-size model written in user style, against forward passes measured in
the same run.

The model is the CIFAR ResNet-18 (3×3 stem, BasicBlocks [2, 2, 2, 2] of widths 64–512 with projection
shortcuts, BatchNorm, 11.2M parameters in 62 tensors), float32, in training and in evaluation mode, on a batch of 2
images 3×32×32. ``infer_rates`` traces the graph (one float32 forward), solves the constraints, and checks its
own answer on a float64 copy (the definition at two α and the Euler identity: about four float64 forwards).
Reported: median seconds of ``infer_rates`` (the first call, which pays for torch's one-time set-up, is
excluded), the split into tracing, solving and checking, and the ratio to one float32 and one float64 forward
of the same batch. Target: ≤ 1 s on 2 cores.

    python benchmarks/rates.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from implicit_bias.symmetry import infer_rates
from implicit_bias.symmetry.check import check_rates
from implicit_bias.symmetry.graph import trace_constraints
from implicit_bias.symmetry.rates import SELF_CHECK_ALPHAS


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, width = [], 64
        for outputs, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            stages.append(nn.Sequential(BasicBlock(width, outputs, stride), BasicBlock(outputs, outputs, 1)))
            width = outputs
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(mode: str, X: torch.Tensor, repeats: int) -> list[str]:
    """One table row: infer_rates and its parts against a float32 and a float64 forward, in ``mode``."""
    model = ResNet18().train(mode == "train")
    twin64 = copy.deepcopy(model).double()
    with torch.no_grad():
        forward32 = median_seconds(lambda: model(X), repeats)
        forward64 = median_seconds(lambda: twin64(X.double()), repeats)
    rates = infer_rates(model, X)  # warm-up: torch's forward-mode set-up, fx's first trace
    total = median_seconds(lambda: infer_rates(model, X), repeats)
    trace = median_seconds(lambda: trace_constraints(model, X), repeats)
    check = median_seconds(lambda: check_rates(model, rates, X, alphas=SELF_CHECK_ALPHAS), repeats)
    size = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M / {len(rates)}"
    return [mode, size, f"{total:.3f}", f"{trace:.3f}", f"{check:.3f}", f"{total / forward32:.1f}",
            f"{total / forward64:.1f}", ", ".join(rates.top)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    X = torch.randn(2, 3, 32, 32)
    table = Table(title=f"infer_rates on ResNet-18 (batch 2, 3×32×32), {torch.get_num_threads()} threads")
    for column in ("mode", "parameters", "infer_rates s", "trace s", "check s", "÷ f32 forward", "÷ f64 forward",
                   "top"):  # fmt: skip
        table.add_column(column)
    for mode in ("train", "eval"):
        table.add_row(*measure(mode, X, args.repeats))
    Console().print(table)


if __name__ == "__main__":
    main()
