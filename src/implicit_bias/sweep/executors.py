"""Where a sweep's jobs run, behind one small interface (``submit``, ``wait``, ``close``).

Only ``local`` exists for now: a pool of worker processes on this machine (or the driver itself for one
job at a time). A cluster executor (submitit, ray) implements the same three methods.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
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


ORPHAN_POLL_SECONDS = 0.2


def _exit_when_orphaned(parent: int) -> None:
    """Poll the parent's pid: a worker whose driver was killed (even by SIGKILL) ends too, at once."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(1)


def _init_worker() -> None:
    """Worker initializer: one torch thread per job, so ``--jobs`` workers use ``--jobs`` cores, and a watchdog
    thread that ends the worker when the driver dies, so that no leftover worker goes on taking jobs (a job's
    lock would keep it harmless, but not idle)."""
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


class LocalExecutor:
    """A pool of ``workers`` processes started with ``spawn``: each worker is a fresh interpreter.

    Not ``fork``: a forked child inherits the driver's torch thread pools (OpenMP) without their threads and
    can deadlock on their first use. Not ``forkserver`` either: it costs the same imports per worker, and its
    server outlives a driver killed by SIGKILL (with the workers it forked); a spawned worker's parent is the
    driver itself, which its watchdog thread checks. As with any spawned pool, a script that uses it must
    guard its entry point with ``if __name__ == "__main__":`` (the ``implicit-bias`` command does).
    """

    def __init__(self, workers: int) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
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
