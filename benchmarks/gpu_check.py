"""GPU check: speed and numerics of implicit-bias on one CUDA device, in one run of a few minutes.

Four sections, one rich table each, then one PASS/FAIL line per check:

1. collapse — ``CollapseAccumulator`` (``update`` over every batch, then ``compute``) against the bare GEMM floor
   S += HᵀH per batch (the work no exact method avoids), on the benchmark's shapes (D, K, N) = (512, 100, 100 000)
   and (2 048, 1 000, 20 000) in batches of 1 024 (``benchmarks/collapse.py``), float32 and float64, features
   already on the device; "of which compute" is the share of the final ``compute`` (timed alone). Target:
   accumulator time ≤ 1.2× the floor's (``--collapse-target``), the CPU benchmark's. On a GPU the D = 512 floor
   is a ~10 µs GEMM per batch, so per-batch launches and host syncs (input validation, first-seen classes) may
   dominate there: the ratio says by how much.
2. fit — steps/s of ``implicit_bias.train.fit`` against a hand-written PyTorch loop on the device, the cases and
   hand loop of ``benchmarks/fit_overhead.py``, float64 (each timed call builds its model: the same few ms for
   both). Target: fit ≥ 0.9× the hand loop (``--fit-target``).
3. terminal — a float64 run on the device deep into the terminal phase: linearly separable data (planted margin
   0.2), bias-free linear model, exponential loss, normalized GD. Targets: min log ℒ ≤ −10⁴, every logged value
   and the weights finite, normalized margin within 2 % of the hard-margin SVM's (``hard_margin_svm``, an
   independent solver; 5 % with ``--quick``).
4. agreement — the same model / features on CPU and on the device, and both against an independent brute-force
   NumPy float64 computation: a hand forward pass for the margins (the terminal-phase linear model, ‖θ‖ ~ 6e5,
   and a random bias-free ReLU MLP on 20 000 points) and the normalized margin; class means, within-class
   scatter and a pseudo-inverse for NC1, NC1 trace ratio, cdnv, NC2, ETF distance and self-duality on the first
   collapse shape (512, 100, 100 000). Relative differences ‖a − b‖_∞/‖b‖_∞: float64 ≤ 1e−10 (rounding of O(N)
   sums; ≤ 3e−15 measured on CPU); float32 ≤ 1e−4 (the float32 inputs are the reference's inputs, so only
   float32 accumulation and forward rounding count: ≤ 2e−7 measured on CPU; 1e−4 leaves room for other GEMM
   summation orders and atomic scatter-adds). With ``--device cpu`` the CPU-vs-device rows are skipped and the
   brute-force rows remain real checks.

Timings: CUDA is synchronized before and after each timed call (a no-op on CPU), every method runs once before
timing, repeats are interleaved across the compared methods and the median is reported.

On the device machine (one GPU; estimated 1–2 minutes, well under 5: each section's seconds are printed)::

    python benchmarks/gpu_check.py --json gpu.json

Smoke run on CPU (every shape ~50× smaller, 10 fit steps, one thread; ~10 s; the timing checks are then
overhead-bound and not meaningful, the numerical ones are)::

    python benchmarks/gpu_check.py --device cpu --quick --json cpu.json

Exit code 0 if every check passes, 1 otherwise, 2 (one line) when CUDA is asked for but absent.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collapse import BATCH, make_batches  # benchmarks/collapse.py
from fit_overhead import CASES, fit_loop, hand_loop  # benchmarks/fit_overhead.py

from implicit_bias.data import load
from implicit_bias.metrics import CollapseAccumulator, hard_margin_svm, margins, normalized_margin
from implicit_bias.models import build
from implicit_bias.train import MarginProbe, fit

SHAPES = [(512, 100, 100_000), (2048, 1000, 20_000)]
GAMMA = "normalized margin, terminal linear model"
NC_FIELDS = ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance", "self_duality")
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
console = Console(width=200)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device synchronized on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each method over ``repeats`` rounds, after one warm-up call each; the methods alternate
    within every round, so drift of the machine hits them all alike."""
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


def relative(a: object, b: object) -> float:
    """‖a − b‖_∞ / ‖b‖_∞ of two arrays (or numbers), in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max()) / scale if scale > 0 else float(np.abs(a - b).max())


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Checks:
    """PASS/FAIL lines, each with its measured value and target."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def add(self, section: str, name: str, value: float, target: str, passed: bool) -> None:
        self.rows.append({"section": section, "name": name, "value": value, "target": target, "passed": bool(passed)})


# ------------------------------------------------------------------------------------------ 1. collapse
def accumulate(batches, K: int, D: int, dtype: torch.dtype, device: torch.device, weight=None):
    accumulator = CollapseAccumulator(K, D, dtype=dtype, device=device)
    for H, y in batches:
        accumulator.update(H, y)
    return accumulator.compute(weight)


def gemm_floor(batches, D: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    scatter = torch.zeros(D, D, dtype=dtype, device=device)
    for H, _ in batches:
        scatter.addmm_(H.T, H)
    return scatter


def shrink(D: int, K: int, N: int, quick: bool) -> tuple[int, int, int]:
    """The benchmark's shape, or with ``quick`` ~50× less work: D/8, K/10, N/50 (at least 20 samples a class)."""
    if not quick:
        return D, K, N
    D, K = D // 8, K // 10
    return D, K, max(N // 50, 20 * K)


def on(batches, device: torch.device, dtype: torch.dtype):
    return [(H.to(device=device, dtype=dtype), y.to(device)) for H, y in batches]


def collapse_section(args, device: torch.device, checks: Checks) -> list[dict[str, object]]:
    table = Table(
        title=f"1. CollapseAccumulator vs the bare GEMM floor on {device}, batches of {BATCH}, median of {args.repeats}"
    )
    for column in ("D, K, N", "dtype", "ours samples/s", "floor samples/s", "ours / floor time", "of which compute"):
        table.add_column(column, justify="right")
    results = []
    for shape in SHAPES:
        D, K, N = shrink(*shape, args.quick)
        host = make_batches(D, K, N, torch.float64)
        for dtype in (torch.float32, torch.float64):
            batches = on(host, device, dtype)
            seconds = interleaved(
                {
                    "ours": functools.partial(accumulate, batches, K, D, dtype, device),
                    "floor": functools.partial(gemm_floor, batches, D, dtype, device),
                },
                args.repeats,
                device,
            )
            filled = CollapseAccumulator(K, D, dtype=dtype, device=device)
            for H, y in batches:
                filled.update(H, y)
            compute = interleaved({"compute": filled.compute}, args.repeats, device)["compute"]  # the final step alone
            ratio = seconds["ours"] / seconds["floor"]
            row = {
                "D": D,
                "K": K,
                "N": N,
                "dtype": dtype_name(dtype),
                "seconds": seconds,
                "ratio": ratio,
                "compute_seconds": compute,
                "samples_per_s": {name: N / s for name, s in seconds.items()},
            }
            results.append(row)
            table.add_row(
                f"{D}, {K}, {N}",
                dtype_name(dtype),
                f"{N / seconds['ours']:,.0f}",
                f"{N / seconds['floor']:,.0f}",
                f"{ratio:.2f}",
                f"{compute / seconds['ours']:.0%}",
            )
            checks.add(
                "collapse",
                f"accumulator / floor time, {D}×{K}×{N} {dtype_name(dtype)}",
                ratio,
                f"≤ {args.collapse_target}",
                ratio <= args.collapse_target,
            )
    console.print(table)
    return results


# ---------------------------------------------------------------------------------------------- 2. fit
def fresh_model(spec: str, data, device: torch.device) -> torch.nn.Module:
    return build(spec, data.input_shape, data.num_classes, seed=0).to(dtype=torch.float64, device=device)


def time_hand_loop(spec: str, data, steps: int, batch_size: int | None, device: torch.device) -> None:
    hand_loop(fresh_model(spec, data, device), data.X, data.y, steps, 0.01, batch_size, native=False)


def time_fit(spec: str, data, steps: int, batch_size: int | None, device: torch.device) -> None:
    fit_loop(fresh_model(spec, data, device), data, steps, batch_size)


def fit_section(args, device: torch.device, checks: Checks) -> list[dict[str, object]]:
    steps, repeats = (10, 1) if args.quick else (args.fit_steps, args.repeats)
    table = Table(title=f"2. fit vs a hand loop on {device}: steps/s (median of {repeats}, {steps} steps, float64)")
    for column in ("case", "hand loop", "fit", "fit / hand"):
        table.add_column(column, justify="right")
    results = []
    for case, (dataset, options, spec, batch_size) in CASES.items():
        subset = {"per_class": 20} if args.quick and dataset == "digits" else {}  # 200 of 1 347 samples
        data = load(dataset, **options, **subset).to(dtype=torch.float64, device=device)

        seconds = interleaved(
            {
                "hand loop": functools.partial(time_hand_loop, spec, data, steps, batch_size, device),
                "fit": functools.partial(time_fit, spec, data, steps, batch_size, device),
            },
            repeats,
            device,
        )
        rates = {name: steps / s for name, s in seconds.items()}
        ratio = rates["fit"] / rates["hand loop"]
        results.append({"case": case, "steps": steps, "steps_per_s": rates, "ratio": ratio})
        table.add_row(case, f"{rates['hand loop']:.0f}", f"{rates['fit']:.0f}", f"{ratio:.3f}")
        checks.add("fit", f"fit / hand loop steps/s, {case}", ratio, f"≥ {args.fit_target}", ratio >= args.fit_target)
    console.print(table)
    return results


# ---------------------------------------------------------------------------------------- 3. terminal
def terminal_data():
    return load("linear-separable", n=100, dim=5, margin=0.2, seed=4)


def trained_linear(device: torch.device, quick: bool):
    """The terminal-phase run: normalized GD, η = 1 000, on the model's device in float64."""
    data = terminal_data()
    model = build("linear:bias=false", data.input_shape, data.num_classes, seed=0)
    start = time.perf_counter()
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer="normalized-gd",
        steps=300 if quick else 3000,
        lr=1000.0,
        dtype=torch.float64,
        device=device,
        probes=[MarginProbe(degree=1)],
        log_points=30,
        progress=False,
    )
    return data, model, history, time.perf_counter() - start


def terminal_section(args, device: torch.device, checks: Checks):
    data, model, history, seconds = trained_linear(device, args.quick)
    log_losses = [row["log_loss"] for row in history]
    finite = all(math.isfinite(v) for row in history for v in row.values() if isinstance(v, float)) and bool(
        torch.isfinite(model.head.weight).all()
    )
    gamma = normalized_margin(model, data.X, data.y, degree=1)
    svm = hard_margin_svm(data.X, data.y).margin
    error = abs(gamma - svm) / svm
    tolerance = 0.05 if args.quick else 0.02
    result = {
        "steps": history.last["step"],
        "seconds": seconds,
        "min_log_loss": min(log_losses),
        "final_log_loss": log_losses[-1],
        "finite": finite,
        "normalized_margin": gamma,
        "svm_margin": svm,
        "margin_rel_error": error,
        "param_norm": history.last["param_norm"],
    }
    table = Table(
        title=f"3. Terminal phase on {device}: linear-separable (n=100, dim=5, margin 0.2), exponential "
        "loss, normalized GD η=1000, float64"
    )
    for column in ("steps", "seconds", "min log ℒ", "‖θ‖", "all finite", "γ̄", "SVM margin", "γ̄ rel. error"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result["steps"]),
        f"{seconds:.2f}",
        f"{min(log_losses):.4g}",
        f"{result['param_norm']:.4g}",
        str(finite),
        f"{gamma:.6f}",
        f"{svm:.6f}",
        f"{error:.1e}",
    )
    console.print(table)
    checks.add("terminal", "min log ℒ", min(log_losses), "≤ −1e4", min(log_losses) <= -1e4)
    checks.add("terminal", "every logged value and weight finite", float(finite), "1", finite)
    checks.add("terminal", "normalized margin vs SVM margin, rel.", error, f"≤ {tolerance}", error <= tolerance)
    return result, model, data


# --------------------------------------------------------------------------------------- 4. agreement
def hand_margins(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """q_n = s_n Φ(x_n), s_n = 2y_n − 1, for a bias-free single-output MLP (Linear layers with ReLU between),
    by a NumPy float64 forward pass over the weights."""
    weights = [m.weight.detach().cpu().double().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    h = X.reshape(len(X), -1)
    for W in weights[:-1]:
        h = np.maximum(h @ W.T, 0.0)
    return (2.0 * y - 1.0) * (h @ weights[-1].T)[:, 0]


def brute_force_collapse(H: np.ndarray, y: np.ndarray, K: int, W: np.ndarray) -> dict[str, float]:
    """Every compared CollapseReport field from its definition (Papyan et al. 2020; Galanti et al. 2022), NumPy
    float64, two passes: class means μ_c, Σ_W = Σ_i (h_i − μ_{y_i})(…)ᵀ/N, M̃ = [μ_c − μ_G], Σ_B = M̃M̃ᵀ/K."""
    means = np.stack([H[y == c].mean(0) for c in range(K)])
    centred_h = H - means[y]
    sigma_w = centred_h.T @ centred_h / len(H)
    M = means - means.mean(0)  # rows μ_c − μ_G (unweighted global mean)
    sigma_b = M.T @ M / K
    norms = np.linalg.norm(M, axis=1)
    off = ~np.eye(K, dtype=bool)
    cosines = (M @ M.T / np.outer(norms, norms))[off]
    variances = np.array([np.square(centred_h[y == c]).sum(1).mean() for c in range(K)])
    distances = np.square(means[:, None, :] - means[None, :, :]).sum(-1)
    etf = (np.eye(K) - np.ones((K, K)) / K) / math.sqrt(K - 1)
    G = M @ M.T
    return {
        "nc1": float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / K),
        "nc1_trace": float(np.trace(sigma_w) / np.trace(sigma_b)),
        "cdnv": float(((variances[:, None] + variances[None, :]) / 2 / np.where(off, distances, 1.0))[off].mean()),
        "equinorm": float(norms.std(ddof=1) / norms.mean()),
        "equiangularity": float(cosines.std(ddof=1)),
        "max_angle": float(np.abs(cosines + 1 / (K - 1)).mean()),
        "etf_distance": float(np.linalg.norm(G / np.linalg.norm(G) - etf)),
        "self_duality": float(np.square(W / np.linalg.norm(W) - M / np.linalg.norm(M)).sum()),
    }


def agreement_section(args, device: torch.device, checks: Checks, trained, data) -> list[dict[str, object]]:
    table = Table(
        title=f"4. Agreement on {device}: relative difference ‖a − b‖_∞/‖b‖_∞ (float64 ≤ 1e−10, float32 ≤ 1e−4)"
    )
    for column in ("quantity", "dtype", "compared", "rel. difference", "tolerance"):
        table.add_column(column, justify="right")
    rows: list[dict[str, object]] = []

    def record(quantity: str, dtype: torch.dtype, compared: str, difference: float) -> None:
        tolerance = TOLERANCE[dtype]
        rows.append(
            {
                "quantity": quantity,
                "dtype": dtype_name(dtype),
                "compared": compared,
                "rel_difference": difference,
                "tolerance": tolerance,
            }
        )
        table.add_row(quantity, dtype_name(dtype), compared, f"{difference:.1e}", f"{tolerance:g}")
        checks.add(
            "agreement",
            f"{quantity} {dtype_name(dtype)}, {compared}",
            difference,
            f"≤ {tolerance:g}",
            difference <= tolerance,
        )

    cpu = torch.device("cpu")
    compare_devices = device != cpu
    # margins: the terminal-phase linear model (‖θ‖ ~ 1e5) and a random bias-free ReLU MLP, on wider data
    wide = load("linear-separable", n=200 if args.quick else 20_000, dim=20, margin=0.1, seed=1)
    mlp = build("mlp:depth=2,width=64,bias=false", wide.input_shape, wide.num_classes, seed=0)
    cases = [("margins, random ReLU MLP", mlp, wide.X, wide.y, None)]
    if trained is not None:  # None: the terminal section failed (reported there)
        cases.insert(0, ("margins, terminal linear model", trained, data.X, data.y, 1))
    for label, model, X, y, degree in cases:
        for dtype in (torch.float64, torch.float32):
            X_typed = X.to(dtype)
            host = copy.deepcopy(model).to(device=cpu, dtype=dtype)
            truth = hand_margins(host, X_typed.double().numpy(), y.numpy())
            values, gammas = {}, {}
            for where in (cpu, device) if compare_devices else (cpu,):
                placed = copy.deepcopy(host).to(where)
                values[str(where)] = margins(placed, X_typed.to(where), y.to(where)).cpu().numpy()
                record(label, dtype, f"{where} vs NumPy", relative(values[str(where)], truth))
                if degree is not None:  # separated: the normalized margin q_min/‖θ‖^L too
                    gammas[str(where)] = normalized_margin(placed, X_typed.to(where), y.to(where), degree=degree)
                    norm = math.sqrt(
                        sum(float(np.square(p.detach().double().numpy()).sum()) for p in host.parameters())
                    )
                    record(GAMMA, dtype, f"{where} vs NumPy", relative(gammas[str(where)], truth.min() / norm**degree))
            if compare_devices:
                record(label, dtype, f"{device} vs cpu", relative(values[str(device)], values["cpu"]))
                if gammas:
                    record(GAMMA, dtype, f"{device} vs cpu", relative(gammas[str(device)], gammas["cpu"]))

    # neural collapse: the first benchmark shape, a random classifier W for self-duality
    D, K, N = shrink(*SHAPES[0], args.quick)
    host_batches = make_batches(D, K, N, torch.float64, seed=1)
    W = torch.randn(K, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        typed = on(host_batches, cpu, dtype)
        H = torch.cat([h for h, _ in typed]).double().numpy()
        labels = torch.cat([c for _, c in typed]).numpy()
        truth = brute_force_collapse(H, labels, K, W.to(dtype).double().numpy())
        reports = {}
        for where in (cpu, device) if compare_devices else (cpu,):
            report = accumulate(on(typed, where, dtype), K, D, dtype, where, W.to(device=where, dtype=dtype))
            reports[str(where)] = {field: getattr(report, field) for field in NC_FIELDS}
            for field in NC_FIELDS:
                record(
                    f"NC {field} ({D}×{K}×{N})",
                    dtype,
                    f"{where} vs NumPy",
                    relative(reports[str(where)][field], truth[field]),
                )
        if compare_devices:
            for field in NC_FIELDS:
                record(
                    f"NC {field} ({D}×{K}×{N})",
                    dtype,
                    f"{device} vs cpu",
                    relative(reports[str(device)][field], reports["cpu"][field]),
                )
    console.print(table)
    return rows


# --------------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
        )
    return info


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="every shape ~50× smaller (CPU smoke run, < 20 s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per method (median)")
    parser.add_argument("--fit-steps", type=int, default=2000, help="steps per timed fit / hand loop")
    parser.add_argument("--collapse-target", type=float, default=1.2, help="max accumulator / floor time")
    parser.add_argument("--fit-target", type=float, default=0.9, help="min fit / hand loop steps/s")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's; 1 with --quick, "
        "where small shapes on a shared CPU otherwise lose ~30× to oversubscription)",
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available on this machine; pass --device cpu for a CPU smoke run", file=sys.stderr
        )
        return 2
    if args.quick:
        args.repeats = min(args.repeats, 3)
    threads = args.threads if args.threads is not None else 1 if args.quick else None
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        results = run_all(args, device)
    finally:
        torch.set_num_threads(previous)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if any(not row["passed"] for row in results["checks"]) else 0


def run_all(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """Every section, each timed; a section that raises is one FAIL check with its error (kept in the JSON under
    ``errors``), and the others still run, so one device session gives every number it can."""
    start = time.perf_counter()
    checks = Checks()
    results: dict[str, object] = {"environment": environment(device), "quick": args.quick, "errors": {}}
    sections: dict[str, float] = {}

    def section(name: str, run: Callable[[], object]):
        begin = time.perf_counter()
        try:
            return run()
        except Exception as error:  # noqa: BLE001  (reported as a failed check, never swallowed)
            results["errors"][name] = traceback.format_exc()
            console.print(f"[red]{name} raised[/red] {type(error).__name__}: {error}")
            checks.add(name, "section ran", math.nan, "no exception", False)
            return None
        finally:
            sections[name] = time.perf_counter() - begin

    results["collapse"] = section("collapse", lambda: collapse_section(args, device, checks))
    results["fit"] = section("fit", lambda: fit_section(args, device, checks))
    terminal = section("terminal", lambda: terminal_section(args, device, checks))
    results["terminal"], trained, data = terminal if terminal is not None else (None, None, None)
    results["agreement"] = section("agreement", lambda: agreement_section(args, device, checks, trained, data))
    results["section_seconds"] = sections
    results["checks"] = checks.rows
    results["seconds"] = time.perf_counter() - start
    for row in checks.rows:
        mark = "[green]PASS[/green]" if row["passed"] else "[red]FAIL[/red]"
        console.print(f"{mark} {row['section']}: {row['name']} = {row['value']:.4g} (target {row['target']})")
    failed = sum(not row["passed"] for row in checks.rows)
    timing = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sections.items())
    console.print(
        f"{len(checks.rows) - failed}/{len(checks.rows)} checks passed in {results['seconds']:.1f} s ({timing})"
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
