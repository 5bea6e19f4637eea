"""Steps per second of ``implicit_bias.train.fit`` against a hand-written PyTorch loop, measured in one run.

Both loops train the same model on the same data with the same optimizer and the same float64 log-space loss
(``implicit_bias.losses.log_loss``); ``fit`` also logs at log-spaced steps with the margin probe and checks the
loss for NaN/inf every step. A third column times the hand loop with PyTorch's native float64 cross-entropy,
to show what the log-space (terminal-phase safe) loss itself costs. Target: fit ≥ 0.9× the hand loop.

    python benchmarks/fit_overhead.py [--steps 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from implicit_bias.data import load
from implicit_bias.losses import log_loss
from implicit_bias.models import build
from implicit_bias.train import MarginProbe, fit

CASES = {
    "mlp on gaussians (tiny, overhead-bound)": (
        "gaussians",
        {"num_classes": 3, "dim": 2},
        "mlp:depth=2,width=50,bias=false",
        None,
    ),
    "mlp on digits (full batch)": ("digits", {}, "mlp:depth=3,width=256,bias=false", None),
    "cnn on digits (minibatch 128)": (
        "digits",
        {},
        "cnn:padding=same,bias=false,channels=[16,32],hidden=256",
        128,
    ),
}


def fit_loop(model, data, steps, batch_size):
    """The same training through ``fit`` (gradient descent at lr 0.01, cross-entropy, the margins probe logging)."""
    fit(
        model,
        data,
        loss="cross-entropy",
        optimizer="gd",
        steps=steps,
        lr=0.01,
        batch_size=batch_size,
        probes=[MarginProbe()],
        progress=False,
    )


def hand_loop(model, X, y, steps, lr, batch_size, native):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        if batch_size is None:
            xb, yb = X, y
        else:
            index = torch.randint(len(X), (batch_size,), generator=generator)
            xb, yb = X[index], y[index]
        outputs = model(xb)
        optimizer.zero_grad(set_to_none=True)
        if native:
            torch.nn.functional.cross_entropy(outputs, yb).backward()
        else:
            torch.exp(log_loss(outputs, yb, "cross-entropy", reduction="mean", validate=False)).backward()
        optimizer.step()


def measure(case, steps, repeats):
    dataset, options, spec, batch_size = CASES[case]
    data = load(dataset, **options).to(dtype=torch.float64)
    timings = {"hand loop": [], "fit": [], "hand loop, native CE": []}
    for _ in range(repeats):
        for name, times in timings.items():
            model = build(spec, data.input_shape, data.num_classes, seed=0).double()
            start = time.perf_counter()
            if name == "fit":
                fit_loop(model, data, steps, batch_size)
            else:
                hand_loop(model, data.X, data.y, steps, 0.01, batch_size, native=name.endswith("native CE"))
            times.append(time.perf_counter() - start)
    return {name: steps / min(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    table = Table(
        title=f"fit overhead: steps/s (best of {args.repeats}, {args.steps} steps, float64, "
        f"{torch.get_num_threads()} threads)"
    )
    for column in ("case", "hand loop", "fit", "fit / hand", "native CE loop", "log-space / native"):
        table.add_column(column, justify="right")
    for case in CASES:
        rates = measure(case, args.steps, args.repeats)
        table.add_row(
            case,
            f"{rates['hand loop']:.0f}",
            f"{rates['fit']:.0f}",
            f"{rates['fit'] / rates['hand loop']:.3f}",
            f"{rates['hand loop, native CE']:.0f}",
            f"{rates['hand loop'] / rates['hand loop, native CE']:.3f}",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
