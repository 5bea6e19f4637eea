"""Where a sweep's jobs run, behind one small interface (``submit``, ``wait``, ``close``).

Only ``local`` exists for now: a pool of worker processes on this machine (or the driver itself for one
job at a time). A cluster executor (submitit, ray) implements the same three methods.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from ..errors import InvalidArgumentError
from ..validation import check_choice, check_scalar

EXECUTORS = ("local",)
PLANNED_EXECUTORS = ("submitit", "ray")


class Executor(Protocol):
    """Runs picklable calls ``fn(*args)`` somewhere and hands back their futures as they complete."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs each call in the driver process when it is submitted (``--jobs 1``: no worker start-up cost)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # noqa: BLE001 (delivered through the future, as a pool would)
            future.set_exception(error)
        return future

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]:
        return iter(futures)

    def close(self) -> None:
        pass


def _one_thread() -> None:
    """Worker initializer: one torch thread per job, so ``--jobs`` workers use ``--jobs`` cores."""
    import torch

    torch.set_num_threads(1)


class LocalExecutor:
    """A pool of ``workers`` processes started with ``forkserver`` (``spawn`` where it does not exist).

    Not ``fork``: a forked child inherits a copy of the driver's torch thread pools (OpenMP) without their
    threads, and can deadlock on their first use; ``forkserver`` forks workers from a fresh single-threaded
    server process, and ``spawn`` starts a fresh interpreter.
    """

    def __init__(self, workers: int) -> None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=_one_thread
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        return self._pool.submit(fn, *args)

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]:
        return concurrent.futures.as_completed(futures)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_executor(name: str = "local", *, jobs: int | None = None) -> Executor:
    """The executor ``name`` with ``jobs`` parallel jobs (default: ``os.cpu_count()``)."""
    if name in PLANNED_EXECUTORS:
        raise InvalidArgumentError(f"executor {name!r} is not yet available: only local")
    check_choice("executor", name, EXECUTORS)
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    check_scalar("jobs", jobs, int, low=1)
    return SerialExecutor() if jobs == 1 else LocalExecutor(jobs)
