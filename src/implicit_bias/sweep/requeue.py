"""The callable submitit pickles for one sweep job (a module of its own: it imports submitit, an optional extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from submitit.helpers import Checkpointable

from .executors import run_with_threads, skip_collection_at_exit


class RequeuedJob(Checkpointable):
    """``fn(*args)`` with torch limited to ``threads`` CPUs (the job's allocation).

    On preemption or timeout submitit calls ``checkpoint``, whose inherited form requeues this same call: the
    job's folder already holds its training checkpoint, which the next attempt resumes exactly
    (:func:`~implicit_bias.sweep.run_job`). The job's process, which ends when submitit has pickled the
    result, exits without collecting its garbage (:func:`~implicit_bias.sweep.executors.skip_collection_at_exit`).
    """

    def __init__(self, fn: Callable[..., Any], threads: int) -> None:
        self.fn, self.threads = fn, threads

    def __call__(self, *args: Any) -> Any:
        skip_collection_at_exit()
        return run_with_threads(self.threads, self.fn, *args)
