"""Sweeps: a grid of configurations (``expand``), run as jobs into a resumable store (``run_sweep``)."""

from .executors import EXECUTORS, Executor, LocalExecutor, SerialExecutor, make_executor
from .grid import Job, expand, job_key, parse_grid
from .store import job_folder, job_status, read_result, run_job, run_sweep

__all__ = [
    "EXECUTORS",
    "Executor",
    "Job",
    "LocalExecutor",
    "SerialExecutor",
    "expand",
    "job_folder",
    "job_key",
    "job_status",
    "make_executor",
    "parse_grid",
    "read_result",
    "run_job",
    "run_sweep",
]
