"""Neural-collapse accumulation: throughput, memory and NC1 accuracy of four ways to stream features, in one run.

Features are streamed in batches of 1 024 for (D, K, N) = (512, 100, 100 000) and (2 048, 1 000, 20 000), in
float32 and float64:

(i)   ours — ``CollapseAccumulator``: one pass (shifted scatter, scatter-adds), then ``compute``;
(ii)  naive — a Papyan-style two-pass accumulator with a Python loop over the classes in each batch;
(iii) one-hot — a two-pass accumulator built on one-hot GEMMs (class sums, then centred scatter);
(iv)  floor — one bare D×D GEMM update S += HᵀH per batch: the work no exact method can avoid.

Reported: samples/s including the final NC1 (median of ``--repeats``), the streaming pass(es) and the total
relative to the floor (which computes no NC1; repeats interleaved across methods), throughput relative to (iii), the
persistent state each method keeps (bytes), and NC1's relative error against a float64 two-pass reference on
the same features (the floor computes no NC1). Targets: (i) within 1.2× of (iv)'s time, ≥ 1.3× the throughput
of (iii), NC1 within 1e−6 in float64.

    python benchmarks/collapse.py [--repeats 3] [--quick]

``--scale``: features larger than memory — (D, K, N) = (4 096, 1 000, 200 000) float32 (3.3 GB of features) made
batch by batch by a generator and never stored, through (i) and (iv) each in its own process: the time inside the
update and compute calls (generation excluded, the same for both) over the floor's, and each process's resident
memory above its baseline over the method's state. The baseline is taken after a warm-up GEMM (OpenMP threads and
MKL started) with the first batch in hand; the generator makes each batch in place (no batch-sized temporary) and
the loop releases a batch before the next is made, so the one batch held at a time — the benchmark's own data
source, the same for both — stays inside the baseline. A thread samples the resident set every ~0.5 ms, so the
peak is split by phase: generating a batch, inside the update calls, inside compute; "process peak" is the whole
run's (getrusage). Targets: time ≤ 1.2× the floor, peak ≤ 1.5× the state.

glibc's malloc raises its mmap threshold to the largest block freed so far (here the 16 MB batches), so freed
blocks below it stay in the heap and in the resident set, up to its trim threshold and beyond through
fragmentation; ``MALLOC_MMAP_THRESHOLD_=1048576`` (a glibc tunable) fixes the threshold at 1 MiB, so large blocks are
returned when freed and the resident set follows the live memory. The table's title names the setting in use.

    python benchmarks/collapse.py --scale [--samples 200000]
    MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/collapse.py --scale
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import statistics
import threading
import time
from collections.abc import Iterator

import torch
from rich.console import Console
from rich.table import Table

from implicit_bias.metrics import CollapseAccumulator
from implicit_bias.metrics.collapse import STATE

BATCH = 1024


def make_batches(D: int, K: int, N: int, dtype: torch.dtype, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Gaussian class clusters, collapse-like (means of norm ~10, spread 1), split into batches of 1 024."""
    g = torch.Generator().manual_seed(seed)
    means = 10 * torch.randn(K, D, generator=g, dtype=torch.float64) / D**0.5
    batches = []
    for start in range(0, N, BATCH):
        y = torch.randint(K, (min(BATCH, N - start),), generator=g)
        H = means[y] + torch.randn(len(y), D, generator=g, dtype=torch.float64)
        batches.append((H.to(dtype), y))
    return batches


def nc1_from(scatter: torch.Tensor, means: torch.Tensor, N: int) -> float:
    """tr(Σ_W Σ_B^†)/K from a within-class scatter and the class means (float64, SVD pseudo-inverse)."""
    means = means.double()  # centre in float64 (as the accumulator does), so M̃'s columns sum to 0 to 1e−16
    centred = (means - means.mean(0)).T
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    keep = s > 1e-10 * s.max()
    u, s = u[:, keep], s[keep]
    return float(((u.T @ (scatter.double() / N)) * u.T).sum(1).div(s.square()).sum())


def reference(batches, K: int) -> float:
    sums = torch.zeros(K, batches[0][0].shape[1], dtype=torch.float64)
    counts = torch.zeros(K, dtype=torch.float64)
    for H, y in batches:
        sums.index_add_(0, y, H.double())
        counts += torch.bincount(y, minlength=K)
    means = sums / counts[:, None]
    scatter = torch.zeros(sums.shape[1], sums.shape[1], dtype=torch.float64)
    for H, y in batches:
        centred = H.double() - means[y]
        scatter += centred.T @ centred
    return nc1_from(scatter, means, int(counts.sum()))


def ours(batches, K: int, dtype: torch.dtype) -> tuple[float, int, float]:
    start = time.perf_counter()
    acc = CollapseAccumulator(K, batches[0][0].shape[1], dtype=dtype)
    for H, y in batches:
        acc.update(H, y)
    streamed = time.perf_counter() - start
    state = sum(t.numel() * t.element_size() for t in acc.state_dict().values())
    return acc.compute().nc1, state, streamed


def naive(batches, K: int, dtype: torch.dtype) -> tuple[float, int, float]:
    start = time.perf_counter()
    D = batches[0][0].shape[1]
    sums, counts = torch.zeros(K, D, dtype=dtype), torch.zeros(K, dtype=dtype)
    for H, y in batches:
        for c in torch.unique(y).tolist():
            members = H[y == c]
            sums[c] += members.sum(0)
            counts[c] += len(members)
    means = sums / counts[:, None]
    scatter = torch.zeros(D, D, dtype=dtype)
    for H, y in batches:
        for c in torch.unique(y).tolist():
            centred = H[y == c] - means[c]
            scatter += centred.T @ centred
    streamed = time.perf_counter() - start
    state = (sums.numel() + counts.numel() + scatter.numel()) * sums.element_size()
    return nc1_from(scatter, means, int(counts.sum())), state, streamed


def one_hot(batches, K: int, dtype: torch.dtype) -> tuple[float, int, float]:
    start = time.perf_counter()
    D = batches[0][0].shape[1]
    sums, counts = torch.zeros(K, D, dtype=dtype), torch.zeros(K, dtype=dtype)
    for H, y in batches:
        onehot = torch.nn.functional.one_hot(y, K).to(dtype)
        sums.addmm_(onehot.T, H)
        counts += onehot.sum(0)
    means = sums / counts[:, None]
    scatter = torch.zeros(D, D, dtype=dtype)
    for H, y in batches:
        onehot = torch.nn.functional.one_hot(y, K).to(dtype)
        centred = H - onehot @ means
        scatter.addmm_(centred.T, centred)
    streamed = time.perf_counter() - start
    state = (sums.numel() + counts.numel() + scatter.numel()) * sums.element_size()
    return nc1_from(scatter, means, int(counts.sum())), state, streamed


def floor(batches, K: int, dtype: torch.dtype) -> tuple[float, int, float]:
    start = time.perf_counter()
    D = batches[0][0].shape[1]
    scatter = torch.zeros(D, D, dtype=dtype)
    for H, _ in batches:
        scatter.addmm_(H.T, H)
    return float("nan"), scatter.numel() * scatter.element_size(), time.perf_counter() - start


METHODS = {
    "(i) ours": ours,
    "(ii) naive per-class loops": naive,
    "(iii) one-hot GEMM, two-pass": one_hot,
    "(iv) floor: D×D GEMM per batch": floor,
}


SCALE = (4096, 1000, 200_000)


def generated(D: int, K: int, N: int, dtype: torch.dtype, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`make_batches`'s clusters made one batch at a time (nothing kept): the same stream on every call. Each
    batch is its own noise tensor with the class means added in place, 128 rows at a time (the batch, plus a
    128-row temporary: no batch-sized temporaries)."""
    g = torch.Generator().manual_seed(seed)
    means = (10 * torch.randn(K, D, generator=g) / D**0.5).to(dtype)
    for start in range(0, N, BATCH):
        y = torch.randint(K, (min(BATCH, N - start),), generator=g)
        H = torch.randn(len(y), D, generator=g, dtype=dtype)
        for rows in range(0, len(y), 128):
            H[rows : rows + 128] += means[y[rows : rows + 128]]
        yield H, y
        del H, y  # the caller holds the only batch while the next one is made


class _RSSSampler:
    """Peak resident memory per phase: a thread reads /proc/self/statm every ~0.5 ms and keeps, for the phase the
    main thread last named, the largest value seen (getrusage's maxrss gives only the process-wide peak)."""

    def __init__(self) -> None:
        self.phase, self.peaks, self._running = "baseline", {}, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self._running:
            rss, phase = _current_rss(), self.phase
            self.peaks[phase] = max(self.peaks.get(phase, 0), rss)
            time.sleep(0.0005)

    def stop(self) -> dict[str, int]:
        self._running = False
        self._thread.join()
        return self.peaks


def _peak_rss() -> int:
    """This process's peak resident set size so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _scale_run(method: str, D: int, K: int, N: int, queue: multiprocessing.Queue) -> None:
    """One method over the generated stream, in a fresh process: (seconds in the updates and compute, NC1, state,
    peak RSS above the baseline while generating / updating / computing, and the process's peak above it).

    The baseline is taken after a warm-up GEMM (torch's OpenMP threads and MKL started) with the first batch in
    hand: the stream holds one batch at a time (the previous one is released before the next is made), so the
    batch — the benchmark's own data source, the same for both methods — is part of the baseline throughout."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    warm = torch.ones(64, 64)
    warm @ warm  # starts the BLAS threads before the baseline
    del warm
    stream = generated(D, K, N, torch.float32)
    H, y = next(stream)
    sampler = _RSSSampler()
    time.sleep(0.01)
    baseline = _current_rss()
    sampler.phase = "update"
    if method == "ours":
        acc = CollapseAccumulator(K, D, dtype=torch.float32)
        update = acc.update
        state = sum(getattr(acc, name).nbytes for name in STATE)  # the running totals (no state_dict copy)
    else:
        scatter = torch.zeros(D, D, dtype=torch.float32)
        state = scatter.numel() * scatter.element_size()

        def update(H: torch.Tensor, _y: torch.Tensor) -> None:
            scatter.addmm_(H.T, H)

    seconds = 0.0
    while H is not None:
        sampler.phase = "update"
        start = time.perf_counter()
        update(H, y)
        seconds += time.perf_counter() - start
        sampler.phase = "generate"
        H = y = None  # release this batch before the next is made
        H, y = next(stream, (None, None))
    sampler.phase = "compute"
    start = time.perf_counter()
    nc1 = acc.compute().nc1 if method == "ours" else math.nan
    seconds += time.perf_counter() - start
    sampler.phase = "done"
    time.sleep(0.01)
    peaks = {phase: peak - baseline for phase, peak in sampler.stop().items()}
    queue.put((seconds, nc1, state, peaks, max(_peak_rss(), _current_rss()) - baseline))


def scale(N: int) -> None:
    D, K, _ = SCALE
    context = multiprocessing.get_context("spawn")
    measured = {}
    for method in ("floor", "ours"):
        queue = context.Queue()
        process = context.Process(target=_scale_run, args=(method, D, K, N, queue))
        process.start()
        measured[method] = queue.get()
        process.join()
    table = Table(
        title=f"Streamed from a generator: D = {D}, K = {K}, N = {N:,} float32, batches of {BATCH}, "
        f"{os.environ.get('BENCH_THREADS', torch.get_num_threads())} threads; peak resident memory above the "
        "baseline (MB) by phase; glibc malloc: "
        + (f"MALLOC_MMAP_THRESHOLD_={threshold}" if (threshold := os.environ.get("MALLOC_MMAP_THRESHOLD_")) else
           "default (dynamic mmap threshold)")
    )  # fmt: skip
    columns = ("method", "seconds", "time / floor", "state MB", "generate", "update", "compute", "process peak")
    for column in (*columns, "peak / state", "NC1"):
        table.add_column(column, justify="right")
    floor_seconds = measured["floor"][0]
    for method, (seconds, nc1, state, peaks, peak) in measured.items():
        table.add_row(
            "(i) ours" if method == "ours" else "(iv) floor",
            f"{seconds:.1f}",
            f"{seconds / floor_seconds:.2f}",
            f"{state / 2**20:.0f}",
            *(f"{peaks[phase] / 2**20:.0f}" if phase in peaks else "—" for phase in ("generate", "update", "compute")),
            f"{peak / 2**20:.0f}",
            f"{peak / state:.2f}",
            "—" if math.isnan(nc1) else f"{nc1:.6g}",
        )
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the samples (for a smoke run)")
    parser.add_argument("--scale", action="store_true", help="features larger than memory, from a generator")
    parser.add_argument("--samples", type=int, default=SCALE[2], help="N of --scale")
    args = parser.parse_args()
    if args.scale:
        scale(args.samples)
        return
    settings = [(512, 100, 100_000), (2048, 1000, 20_000)]
    table = Table(
        title=f"Neural-collapse accumulation, batches of {BATCH}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    for column in (
        "D, K, N",
        "dtype",
        "method",
        "samples/s",
        "pass / floor",
        "total / floor",
        "throughput / (iii)",
        "state MB",
        "NC1 rel. error",
    ):
        table.add_column(column, justify="right")
    for D, K, N in settings:
        N = max(N // 10, 20 * K) if args.quick else N
        for dtype in (torch.float32, torch.float64):
            batches = make_batches(D, K, N, dtype)
            truth = reference(batches, K)
            runs: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in METHODS}
            for _ in range(args.repeats):  # repeats interleaved across methods, so machine drift hits all alike
                for name, method in METHODS.items():
                    start = time.perf_counter()
                    nc1, state, streamed = method(batches, K, dtype)
                    runs[name].append((time.perf_counter() - start, streamed, nc1, state))
            rows = {
                name: (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results),
                       *results[-1][2:])
                for name, results in runs.items()
            }  # fmt: skip
            floor_time = rows["(iv) floor: D×D GEMM per batch"][0]
            one_hot_time = rows["(iii) one-hot GEMM, two-pass"][0]
            for name, (seconds, streamed, nc1, state) in rows.items():
                error = abs(nc1 - truth) / abs(truth) if not math.isnan(nc1) else math.nan
                table.add_row(
                    f"{D}, {K}, {N}",
                    str(dtype).removeprefix("torch."),
                    name,
                    f"{N / seconds:,.0f}",
                    f"{streamed / floor_time:.2f}",
                    f"{seconds / floor_time:.2f}",
                    f"{one_hot_time / seconds:.2f}",
                    f"{state / 2**20:.1f}",
                    "—" if math.isnan(error) else f"{error:.1e}",
                )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
