"""Sweep throughput: an 8-job sweep of a quick experiment through the local executor against the same jobs run
one after another in this process, in one run.

Jobs: ``homogeneous-margin --quick`` at seeds 0..7 (each a real reproduction: training, figures, report). Three
ways to run them, each into a fresh folder:

(i)   sequential — ``SerialExecutor`` in this process with torch's default threads (what ``--jobs 1`` does);
(ii)  sequential, one thread — the same with ``torch.set_num_threads(1)``, the per-job setting of the pool;
(iii) local — ``LocalExecutor`` with ``--workers`` spawned processes (one torch thread each), pool start-up
      included.

Reported: wall seconds and the speed-up of (iii) over (i) and (ii) (target ≥ 1.7× on 2 cores), and the local
executor's overhead per job: (iii)'s time for 8 near-empty jobs (``steps=1``) minus (ii)'s for the same jobs,
divided by 8 (target < 2 s).

    python benchmarks/sweep.py [--workers 2] [--seeds 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from implicit_bias.sweep import LocalExecutor, SerialExecutor, expand, run_sweep

EXPERIMENT = "homogeneous-margin"


def timed(jobs, executor, *, threads: int | None = None) -> float:
    """Wall seconds of ``run_sweep(jobs)`` on ``executor`` into a fresh folder (every job must end done)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            results = run_sweep(jobs, folder, executor, retries=0)
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
        executor.close()
    failed = [r["key"] for r in results if r["status"] != "done"]
    if failed:
        raise SystemExit(f"benchmark jobs failed: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    grid = [f"seed=0..{args.seeds - 1}"]
    jobs = expand(EXPERIMENT, grid, quick=True)
    empty = expand(EXPERIMENT, grid, quick=True, overrides={"steps": 1})

    sequential = timed(jobs, SerialExecutor())
    sequential_one = timed(jobs, SerialExecutor(), threads=1)
    local = timed(jobs, LocalExecutor(args.workers))
    overhead = (timed(empty, LocalExecutor(args.workers)) - timed(empty, SerialExecutor(), threads=1)) / len(empty)

    table = Table(title=f"{len(jobs)} jobs of {EXPERIMENT} --quick, {os.cpu_count()} cores")
    for column in ("run", "seconds", "local speed-up"):
        table.add_column(column, justify="right" if column != "run" else "left")
    table.add_row(f"sequential ({torch.get_num_threads()} threads)", f"{sequential:.1f}", f"{sequential / local:.2f}×")
    table.add_row("sequential (1 thread)", f"{sequential_one:.1f}", f"{sequential_one / local:.2f}×")
    table.add_row(f"local, {args.workers} workers", f"{local:.1f}", "")
    Console().print(table)
    Console().print(f"local executor overhead per job (steps=1 jobs, pool start-up included): {overhead:.2f} s")


if __name__ == "__main__":
    main()
