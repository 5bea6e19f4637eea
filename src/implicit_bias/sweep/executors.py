"""Where a sweep's jobs run, behind one small interface (``submit``, ``wait``, ``close``).

``local`` (a pool of worker processes on this machine, or the driver itself for one job at a time),
``submitit`` (Slurm job arrays through submitit; its ``local`` cluster runs each job as a process on this
machine through the same pickling and logs) and ``ray`` (Ray tasks on a running cluster, or on one started
here). Results never depend on the executor: every job writes its own folder of the job store, which alone
reports read.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import gc
import importlib
import multiprocessing
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from ..errors import InvalidArgumentError
from ..validation import check_choice, check_scalar

EXECUTORS = ("local", "submitit", "ray")
SUBMITIT_CLUSTERS = ("slurm", "local")
ENGINES = {"submitit": ("submitit", "slurm"), "ray": ("ray", "ray")}  # executor → (module, extra)
CONNECT_SECONDS = 10.0  # a Ray address that accepts no TCP connection within this is refused
POLL_SECONDS = {"slurm": 0.25, "local": 0.02}  # submitit: how often a job's state is read (locally, a waitpid)


class Executor(Protocol):
    """Runs picklable calls ``fn(*args)`` somewhere and hands back their futures as they complete."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]: ...

    def close(self) -> None: ...


def _engine(executor: str) -> Any:
    """The optional engine module of ``executor``, or a one-line error naming the extra that installs it."""
    module, extra = ENGINES[executor]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidArgumentError(
            f"--executor {executor} needs the {module} package: pip install 'implicit-bias[{extra}]'"
        ) from None


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


def skip_collection_at_exit() -> None:
    """Freeze the garbage collector when this process exits (``gc.freeze`` as the first exit handler).

    Python's finalization otherwise runs collection passes over every object still alive, and a process that
    has imported torch, ``torch._dynamo`` and matplotlib holds millions: 2.3–3.6 s of a job process's exit on 2
    busy cores, 0.2–0.6 s frozen (``benchmarks/sweep.py``). What it skips is collecting cycles at exit, whose ``__del__`` Python does not
    promise to run then anyway; files the jobs write are closed by then."""
    atexit.register(gc.freeze)


def _init_worker(devices: Any = None) -> None:
    """Worker initializer: the worker's GPU (``CUDA_VISIBLE_DEVICES`` from the ``devices`` queue, before torch
    can initialise CUDA), one torch thread per job, so ``--jobs`` workers use ``--jobs`` cores, a watchdog
    thread that ends the worker when the driver dies, so that no leftover worker goes on taking jobs (a job's
    lock would keep it harmless, but not idle), and a quick exit (:func:`skip_collection_at_exit`)."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()
    import torch

    torch.set_num_threads(1)
    skip_collection_at_exit()
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's own list when it is
    set, else ``0 … n−1`` for the n devices CUDA reports (none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def assign_gpus(workers: int, gpus: Sequence[str]) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` of each of ``workers`` workers: GPU ``i mod len(gpus)`` for worker ``i``, so
    workers share GPUs evenly only when there are more workers than GPUs; None without GPUs."""
    return [gpus[index % len(gpus)] for index in range(workers)] if gpus else None


class LocalExecutor:
    """A pool of ``workers`` processes started with ``spawn``: each worker is a fresh interpreter.

    Not ``fork``: a forked child inherits the driver's torch thread pools (OpenMP) without their threads and
    can deadlock on their first use. Not ``forkserver`` either: it costs the same imports per worker, and its
    server outlives a driver killed by SIGKILL (with the workers it forked); a spawned worker's parent is the
    driver itself, which its watchdog thread checks. As with any spawned pool, a script that uses it must
    guard its entry point with ``if __name__ == "__main__":`` (the ``implicit-bias`` command does).

    With GPUs (``gpus``, default :func:`visible_gpus`), worker ``i`` sees only GPU ``i mod len(gpus)``
    (``CUDA_VISIBLE_DEVICES``), so a job with ``device: cuda`` uses its worker's GPU. A worker that dies (killed,
    out of memory) breaks a ``ProcessPoolExecutor`` for good: the next ``submit`` builds a new pool.
    """

    def __init__(self, workers: int, *, gpus: Sequence[str] | None = None) -> None:
        self.workers = workers
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        devices = None
        assigned = assign_gpus(self.workers, self.gpus)
        if assigned is not None:
            devices = context.Queue()
            for entry in assigned:
                devices.put(entry)
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_init_worker, initargs=(devices,)
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died: its futures have failed; the jobs go to a new pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args)

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]:
        return concurrent.futures.as_completed(futures)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_with_threads(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with torch limited to the job's ``threads`` CPUs (a cluster job's allocation)."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


class SubmititExecutor:
    """Slurm through submitit's ``AutoExecutor``: the jobs submitted before a ``wait`` go out as one job array
    of at most ``parallelism`` running at a time (``slurm_array_parallelism``), each job a
    :class:`~implicit_bias.sweep.requeue.RequeuedJob`, requeued on preemption or timeout to resume its own
    run directory. ``cluster="local"`` is submitit's local mode: each job a process on this machine, through
    the same pickles and logs (``folder/<job id>_*``); the Slurm options are then ignored. That mode has no
    queue and ignores the array's cap (it starts every submitted job at once), so here the jobs are started
    as earlier ones end, at most ``parallelism`` (default ``os.cpu_count()``) processes at a time.

    The sweep folder must be on a filesystem that the driver and every node share.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        cluster: str = "slurm",
        partition: str | None = None,
        timeout_min: int = 60,
        gpus_per_node: int = 0,
        cpus_per_task: int = 1,
        mem_gb: float | None = None,
        parallelism: int | None = None,
    ) -> None:
        check_choice("--cluster", cluster, SUBMITIT_CLUSTERS)
        check_scalar("--timeout-min", timeout_min, int, low=1)
        check_scalar("--gpus-per-node", gpus_per_node, int, low=0)
        check_scalar("--cpus-per-task", cpus_per_task, int, low=1)
        if mem_gb is not None:
            check_scalar("--mem-gb", mem_gb, (int, float), low=0, low_inclusive=False)
        if parallelism is not None:
            check_scalar("--jobs", parallelism, int, low=1)
        submitit = _engine("submitit")
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if cluster == "slurm" and missing:
            raise InvalidArgumentError(
                f"--executor submitit submits to Slurm, but {' and '.join(f'`{c}`' for c in missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not on PATH: run the sweep on a Slurm login node, or use "
                "--executor local"
            )
        self.threads = cpus_per_task
        self._executor = submitit.AutoExecutor(folder=Path(folder), cluster=cluster)
        options = {
            "timeout_min": timeout_min,
            "gpus_per_node": gpus_per_node,
            "cpus_per_task": cpus_per_task,
            "mem_gb": mem_gb,
            "slurm_partition": partition,
            "slurm_array_parallelism": parallelism,
        }
        self._executor.update_parameters(**{k: v for k, v in options.items() if v is not None})
        # local mode: the most job processes running at once (None on Slurm: the array's own cap applies)
        self._running_cap = (parallelism or os.cpu_count() or 1) if cluster == "local" else None
        self._poll_seconds = POLL_SECONDS[cluster]
        self._queued: list[tuple[Future, Callable[..., Any], tuple[Any, ...]]] = []
        self._jobs: dict[Future, Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        future: Future = Future()
        self._queued.append((future, fn, args))
        return future

    def flush(self) -> None:
        """Submit the calls queued since the last ``flush``: on Slurm all of them as one job array
        (``executor.batch()``), locally as many as the cap on running processes leaves room for; ``wait``
        flushes first, and locally again whenever a job ends."""
        from .requeue import RequeuedJob

        room = len(self._queued) if self._running_cap is None else self._running_cap - len(self._jobs)
        starting, self._queued = self._queued[:room], self._queued[room:]
        if not starting:
            return
        with self._executor.batch():
            jobs = [self._executor.submit(RequeuedJob(fn, self.threads), *args) for _, fn, args in starting]
        self._jobs |= {future: job for (future, _, _), job in zip(starting, jobs)}

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]:
        """Yield each of ``futures`` as its job ends (every job's state read each ``POLL_SECONDS``)."""
        self.flush()
        queued = {future for future, _, _ in self._queued}
        waiting = [future for future in futures if future in self._jobs or future in queued]
        yield from (future for future in futures if future.done())  # ended during an earlier wait
        while waiting:
            ended = [future for future, job in self._jobs.items() if job.done()]  # each frees a place
            for future in ended:
                job = self._jobs.pop(future)
                try:
                    future.set_result(job.result())
                except Exception as error:  # noqa: BLE001 (the job's process itself failed: see its submitit logs)
                    future.set_exception(error)
            if ended:
                self.flush()  # locally: the freed places go to queued jobs before the results are handed back
            for future in [future for future in waiting if future.done()]:
                waiting.remove(future)
                yield future
            if waiting and not ended:
                time.sleep(self._poll_seconds)

    def close(self) -> None:
        """Nothing to stop: jobs still queued on Slurm run on, and a rerun of the sweep collects them."""


def _probe(address: str) -> None:
    """Refuse, within :data:`CONNECT_SECONDS`, a ``host:port`` or ``ray://host:port`` that takes no connection
    (``ray.init`` itself retries an unreachable cluster for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgumentError(f"--address must be auto, local, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise InvalidArgumentError(
            f"--address {address!r}: no Ray cluster answers there ({error.strerror or error}); start one with "
            "`ray start --head` or check the address"
        ) from None


class RayExecutor:
    """Each job a Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs (torch uses ``num_cpus`` threads).

    ``address``: ``auto`` (the cluster this machine belongs to, as ``ray start`` left it), ``host:port`` or
    ``ray://host:port`` (Ray client), or ``local`` — a Ray instance started here with ``local_cpus`` CPUs and
    shut down by :meth:`close`. A Ray session already open in this process (``ray.init`` called by the user)
    is used as it is. Workers must be able to import ``implicit_bias`` and reach the sweep folder.
    """

    def __init__(
        self, address: str = "auto", *, num_cpus: int = 1, num_gpus: int = 0, local_cpus: int | None = None
    ) -> None:
        check_scalar("--cpus-per-task", num_cpus, int, low=1)
        check_scalar("--gpus-per-node", num_gpus, int, low=0)
        ray = _engine("ray")
        self._owned = False
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address == "local":
                ray.init(num_cpus=local_cpus or os.cpu_count() or 1, **quiet)
            else:
                if address != "auto":
                    _probe(address)
                try:
                    ray.init(address=address, **quiet)
                except ConnectionError as error:
                    first = str(error).strip().split("\n")[0]
                    raise InvalidArgumentError(f"--address {address!r}: {first}") from None
            self._owned = True
        self._ray = ray
        self._task = ray.remote(run_with_threads).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.threads = num_cpus

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        return self._task.remote(self.threads, fn, *args).future()

    def wait(self, futures: Sequence[Future]) -> Iterator[Future]:
        return concurrent.futures.as_completed(futures)

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()
            self._owned = False


def make_executor(
    name: str = "local",
    *,
    jobs: int | None = None,
    folder: str | Path | None = None,
    cluster: str = "slurm",
    partition: str | None = None,
    timeout_min: int = 60,
    gpus_per_node: int = 0,
    cpus_per_task: int = 1,
    mem_gb: float | None = None,
    address: str = "auto",
) -> Executor:
    """The executor ``name`` with ``jobs`` jobs at a time.

    ``local``: ``jobs`` workers (default ``os.cpu_count()``; 1 runs in this process). ``submitit``: the
    array's parallelism cap (default none; on the ``local`` cluster the most job processes at once, default
    ``os.cpu_count()``), job logs under ``folder``, and the Slurm options (``cluster`` is
    ``slurm`` or submitit's ``local`` mode). ``ray``: ``address``, ``cpus_per_task`` / ``gpus_per_node`` per
    task (a job is one task on one node), and ``jobs`` the CPUs of a Ray started here (``address="local"``).
    """
    check_choice("executor", name, EXECUTORS)
    if jobs is not None:
        check_scalar("jobs", jobs, int, low=1)
    if name == "submitit":
        if folder is None:
            raise InvalidArgumentError("the submitit executor needs a folder for its logs and pickles")
        return SubmititExecutor(
            folder,
            cluster=cluster,
            partition=partition,
            timeout_min=timeout_min,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            mem_gb=mem_gb,
            parallelism=jobs,
        )
    if name == "ray":
        return RayExecutor(address, num_cpus=cpus_per_task, num_gpus=gpus_per_node, local_cpus=jobs)
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    return SerialExecutor() if jobs == 1 else LocalExecutor(jobs)
