"""A small CNN trained with a plain PyTorch loop on scikit-learn's 8×8 digits, then diagnosed.

Train (about 30 s on 2 CPU cores) and save the weights as safetensors::

    python examples/digits_cnn.py --out runs/digits_cnn.safetensors

Then measure every implicit bias of the trained network::

    implicit-bias diagnose --model examples/digits_cnn.py:make_model --weights runs/digits_cnn.safetensors \\
        --data digits --out runs/digits_cnn_report

``--data digits`` is the toolkit's loader for the same data with the same split (``test_fraction=0.25``,
``seed=0``) that this script trains on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class DigitsCNN(nn.Module):
    """conv(1→16) → ReLU → max-pool → conv(16→32) → ReLU → max-pool → flatten → linear(128→64) → ReLU → linear(64→10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)  # (B, 16, 8, 8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)  # (B, 16, 4, 4)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)  # (B, 32, 4, 4)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)  # (B, 32, 2, 2)
        self.flatten = nn.Flatten()  # (B, 128)
        self.fc1 = nn.Linear(128, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


def make_model() -> nn.Module:
    """The factory `implicit-bias diagnose --model examples/digits_cnn.py:make_model` calls."""
    return DigitsCNN()


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[torch.Tensor, ...]:
    """sklearn's digits as (N, 1, 8, 8) floats in [0, 1], with a stratified split (the one `--data digits` uses)."""
    from implicit_bias.data import load

    data = load("digits", seed=seed, test_fraction=test_fraction)
    return data.X, data.y, data.test.X, data.test.y


def train(steps: int = 600, batch_size: int = 128, lr: float = 0.05, seed: int = 0) -> nn.Module:
    """SGD with momentum on cross-entropy, minibatches drawn with ``seed``; prints train/test accuracy."""
    torch.manual_seed(seed)
    X, y, X_test, y_test = digits_split()
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        batch = torch.randint(len(X), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(X[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 5) == 0 or step == steps:
            with torch.no_grad():
                train_accuracy = (model(X).argmax(1) == y).float().mean().item()
                test_accuracy = (model(X_test).argmax(1) == y_test).float().mean().item()
            print(f"step {step}: loss {loss.item():.4f}, train accuracy {train_accuracy:.4f}, test {test_accuracy:.4f}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/digits_cnn.safetensors"), help="weights file")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    args = parser.parse_args()
    start = time.perf_counter()
    model = train(args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), args.out)
    print(f"trained in {time.perf_counter() - start:.1f} s; weights written to {args.out}")


if __name__ == "__main__":
    main()
