"""Sweep throughput: an 8-job sweep of a quick experiment through the local executor against the same jobs run
one after another in this process, and the per-job overhead of each executor, in one table from one run.

Jobs: ``homogeneous-margin --quick`` at seeds 0..7 (each a real reproduction: training, figures, report). Three
ways to run them, each into a fresh folder:

(i)   sequential — ``SerialExecutor`` in this process with torch's default threads (what ``--jobs 1`` does);
(ii)  sequential, one thread — the same with ``torch.set_num_threads(1)``, the per-job setting of the pool;
(iii) local — ``LocalExecutor`` with ``--workers`` spawned processes (one torch thread each), the pool's
      start-up and close included.

Reported: wall seconds and the speed-up of (iii) over (i) and (ii) (target ≥ 1.7× on 2 cores), and each
executor's overhead per job (target < 2 s): its time for 8 near-empty jobs (``steps=1``), from its start-up to
its ``close``, minus (ii)'s for the same jobs, divided by 8 — for local (the pool's start and its workers'
exit), submitit's local cluster (each job its own process through submitit's pickles, ``--workers`` processes at
a time) and Ray (``ray.init`` of a local instance with ``--workers`` CPUs included; also shown without it). The sequential baseline runs in a warm
process (one untimed job first has imported the experiments and ``torch._dynamo``), so every cold start of a
worker or job process counts as the executor's.

Where a submitit job's overhead goes is measured too, in one fresh interpreter doing what a submitit job
process does (``start_up_pieces``): start, submitit's own imports, unpickling the job (imports
``implicit_bias.sweep`` and torch), the experiment registry, ``torch._dynamo`` (``torch.optim`` imports it at
the first optimizer), the first job against the same job again, and the interpreter's exit — with the garbage
collector frozen at exit, as a job process now does (``skip_collection_at_exit``), and without. These are the
costs of a fresh Python process running torch, as each job of a real Slurm array pays them too.

    python benchmarks/sweep.py [--workers 2] [--seeds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from implicit_bias.sweep import LocalExecutor, RayExecutor, SerialExecutor, SubmititExecutor, expand, run_sweep

EXPERIMENT = "homogeneous-margin"


def timed(jobs, make_executor, *, threads: int | None = None) -> float:
    """Wall seconds of ``run_sweep(jobs)`` on ``make_executor(folder)`` into a fresh folder, from the executor's
    start-up to its ``close`` (the pool's workers exit; every job must end done)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            executor = make_executor(folder)
            try:
                results = run_sweep(jobs, folder, executor, retries=0)
            finally:
                executor.close()
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    failed = [r["key"] for r in results if r["status"] != "done"]
    if failed:
        raise SystemExit(f"benchmark jobs failed: {failed}")
    print(f"{len(jobs)} jobs ({jobs[0].config['steps']} steps) in {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


START_UP = """
import json, sys, tempfile, time
marks = [("interpreter start", time.time())]
import numpy, submitit.core.submission
marks.append(("numpy, submitit (the job entry's imports)", time.time()))
import implicit_bias.sweep.requeue
marks.append(("implicit_bias.sweep and torch (unpickling the job)", time.time()))
if sys.argv[2] == "freeze":
    implicit_bias.sweep.executors.skip_collection_at_exit()
import implicit_bias.experiments
marks.append(("the experiment registry (run_job)", time.time()))
import torch._dynamo
marks.append(("torch._dynamo (torch.optim, first optimizer)", time.time()))
import torch
from implicit_bias.sweep import expand, run_job
torch.set_num_threads(1)
first, again = expand(sys.argv[1], ["seed=0..1"], quick=True, overrides={"steps": 1})
folder = tempfile.mkdtemp()
run_job(first.record(), folder)
marks.append(("first job (steps=1)", time.time()))
run_job(again.record(), folder)
marks.append(("the same job again (warm: the job's own work)", time.time()))
print(json.dumps(marks))
"""


def start_up_pieces(freeze: bool) -> list[tuple[str, float]]:
    """Seconds of each piece of a fresh job process (``START_UP``), ending with its interpreter's exit (with the
    garbage collector frozen at exit if ``freeze``)."""
    command = [sys.executable, "-c", START_UP, EXPERIMENT, "freeze" if freeze else "collect"]
    launched = time.time()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    exited = time.time()
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    stamps = [launched] + [stamp for _, stamp in marks] + [exited]
    names = [name for name, _ in marks] + ["interpreter exit"]
    return [(name, stamps[k + 1] - stamps[k]) for k, name in enumerate(names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    grid = [f"seed=0..{args.seeds - 1}"]
    jobs = expand(EXPERIMENT, grid, quick=True)
    empty = expand(EXPERIMENT, grid, quick=True, overrides={"steps": 1})

    serial, local = (lambda folder: SerialExecutor()), (lambda folder: LocalExecutor(args.workers))
    ray_start: list[float] = []

    def ray(folder):
        start = time.perf_counter()
        executor = RayExecutor("local", local_cpus=args.workers)
        ray_start.append(time.perf_counter() - start)
        return executor

    def submitit(folder):
        return SubmititExecutor(Path(folder) / "submitit", cluster="local", parallelism=args.workers)

    pieces = {freeze: start_up_pieces(freeze) for freeze in (True, False)}
    print(f"a fresh job process: {pieces}", file=sys.stderr, flush=True)
    # the overheads first: they take seconds, the quick jobs minutes
    cold = timed(empty[:1], serial, threads=1)  # warms this process: the baseline below is the jobs' own work
    empty_serial = timed(empty, serial, threads=1)
    overheads = {"local": timed(empty, local), "submitit": timed(empty, submitit), "ray": timed(empty, ray)}
    overhead = {name: (seconds - empty_serial) / len(empty) for name, seconds in overheads.items()}
    print(f"overhead per job: {overhead}", file=sys.stderr, flush=True)
    sequential = timed(jobs, serial)
    sequential_one = timed(jobs, serial, threads=1)
    pooled = timed(jobs, local)

    table = Table(title=f"{len(jobs)} jobs of {EXPERIMENT} --quick, {os.cpu_count()} cores")
    for column in ("run", "seconds", "local speed-up", "overhead per job (s)"):
        table.add_column(column, justify="right" if column != "run" else "left")
    table.add_row(
        f"sequential ({torch.get_num_threads()} threads)", f"{sequential:.1f}", f"{sequential / pooled:.2f}×", ""
    )
    table.add_row("sequential (1 thread)", f"{sequential_one:.1f}", f"{sequential_one / pooled:.2f}×", "")
    table.add_row(f"local, {args.workers} workers", f"{pooled:.1f}", "", f"{overhead['local']:.2f}")
    table.add_row(f"submitit, local cluster ({args.workers} processes at once)", "", "", f"{overhead['submitit']:.2f}")
    table.add_row(f"ray, local instance ({args.workers} CPUs)", "", "", f"{overhead['ray']:.2f}")
    after_init = overhead["ray"] - ray_start[0] / len(empty)
    table.add_row("ray, after ray.init", "", "", f"{after_init:.2f}")
    Console().print(table)
    Console().print(
        f"overhead: {len(empty)} jobs with steps=1 on the executor (its start-up and close included) minus the same run "
        f"sequentially in this warm process ({empty_serial:.1f} s; its first job, cold, took {cold:.1f} s), per "
        f"job; ray.init alone took {ray_start[0]:.1f} s"
    )
    start_up = Table(title="a fresh job process (what each submitit job pays), one at a time: seconds")
    start_up.add_column("piece")
    start_up.add_column("gc frozen at exit (now)", justify="right")
    start_up.add_column("collected at exit", justify="right")
    for (name, frozen), (_, collected) in zip(pieces[True], pieces[False]):
        start_up.add_row(name, f"{frozen:.2f}", f"{collected:.2f}")
    overheads = [sum(s for _, s in run) - 2 * run[-2][1] for run in (pieces[True], pieces[False])]  # less 2 warm jobs
    start_up.add_row("one job process, less the job's own work", *(f"{seconds:.2f}" for seconds in overheads))
    Console().print(start_up)


if __name__ == "__main__":
    main()
