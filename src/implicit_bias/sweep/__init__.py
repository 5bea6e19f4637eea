"""Sweeps: a grid of configurations (``expand``), run as jobs into a resumable store (``run_sweep``) on an
executor (local, submitit, ray), all in one call by ``run``."""

from .driver import run
from .executors import (
    EXECUTORS,
    Executor,
    LocalExecutor,
    RayExecutor,
    SerialExecutor,
    SubmititExecutor,
    make_executor,
)
from .grid import Job, expand, job_key, parse_grid
from .store import job_folder, job_status, read_result, run_job, run_sweep

__all__ = [
    "EXECUTORS",
    "Executor",
    "Job",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "SubmititExecutor",
    "expand",
    "job_folder",
    "job_key",
    "job_status",
    "make_executor",
    "parse_grid",
    "read_result",
    "run",
    "run_job",
    "run_sweep",
]
