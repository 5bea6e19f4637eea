"""Steps per second of ``implicit_bias.train.fit`` against a hand-written PyTorch loop, measured in one run.

Both loops train the same model on the same data with the same optimizer and the same float64 log-space loss
(``implicit_bias.losses.log_loss``); ``fit`` also logs at log-spaced steps with the margin probe and checks the
loss for NaN/inf every step. A third column times the hand loop with PyTorch's native float64 cross-entropy,
to show what the log-space (terminal-phase safe) loss itself costs. Targets: fit ≥ 0.9× the hand loop;
log-space / native ≥ 0.8 on the tiny MLP and ≥ 0.95 on the larger cases.

Each loop is warmed up first (a short run of every loop, untimed); then ``--repeats`` rounds run the three loops
one after the other, in an order rotated every round, so that contention on a shared machine hits all of them
alike. A rate is the median over rounds, and each ratio is the median of the per-round ratios.

    python benchmarks/fit_overhead.py [--steps 3000] [--repeats 5] [--warmup 100] [--threads 1] [--case tiny]

``--threads`` (default 1, as each experiment of ``reproduce --all`` runs): with torch's default of one thread per
core the loops' small operations are split over OpenMP threads that share the two cores with everything else, and
the steps vary with the load (2026-12-04, 2 threads: one digits-MLP loop 18–25 ms per step between repetitions,
its log-space / native ratio 0.88 in a run where one thread gave 1.02 the day before).
"""

from __future__ import annotations

import argparse
import statistics
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
            objective = log_loss(outputs, yb, "cross-entropy", reduction="mean", validate=False)
            objective.backward(torch.exp(objective.detach()))  # ∇ℒ = ℒ ∇log ℒ, as fit back-propagates it
        optimizer.step()


def run_loop(name, spec, data, steps, batch_size):
    """Seconds for ``steps`` steps of loop ``name`` on a freshly built model."""
    model = build(spec, data.input_shape, data.num_classes, seed=0).double()
    start = time.perf_counter()
    if name == "fit":
        fit_loop(model, data, steps, batch_size)
    else:
        hand_loop(model, data.X, data.y, steps, 0.01, batch_size, native=name.endswith("native CE"))
    return time.perf_counter() - start


def measure(case, steps, repeats, warmup):
    """Median steps/s of each loop and the median of the per-round ratios fit / hand and log-space / native."""
    dataset, options, spec, batch_size = CASES[case]
    data = load(dataset, **options).to(dtype=torch.float64)
    names = ["hand loop", "fit", "hand loop, native CE"]
    for name in names:
        run_loop(name, spec, data, warmup, batch_size)
    rounds = []
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        rounds.append({name: steps / run_loop(name, spec, data, steps, batch_size) for name in order})
    rates = {name: statistics.median(row[name] for row in rounds) for name in names}
    rates["fit / hand"] = statistics.median(row["fit"] / row["hand loop"] for row in rounds)
    rates["log-space / native"] = statistics.median(row["hand loop"] / row["hand loop, native CE"] for row in rounds)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--case", action="append", help="run only the cases whose name contains this (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(
        title=f"fit overhead: steps/s (median of {args.repeats} interleaved rounds, {args.steps} steps, float64, "
        f"{torch.get_num_threads()} threads)"
    )
    for column in ("case", "hand loop", "fit", "fit / hand", "native CE loop", "log-space / native"):
        table.add_column(column, justify="right")
    for case in [c for c in CASES if not args.case or any(part in c for part in args.case)]:
        rates = measure(case, args.steps, args.repeats, args.warmup)
        table.add_row(
            case,
            f"{rates['hand loop']:.0f}",
            f"{rates['fit']:.0f}",
            f"{rates['fit / hand']:.3f}",
            f"{rates['hand loop, native CE']:.0f}",
            f"{rates['log-space / native']:.3f}",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
