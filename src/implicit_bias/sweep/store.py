"""The job store: one folder per job under ``DIR/jobs/<key>/``, a ``DONE`` marker written last.

A job folder holds ``config.yaml`` (the job's record), ``run/`` (a training config) or ``reproduction/`` (an
experiment), ``result.json``, ``job.log`` (one line per attempt started and finished), ``traceback.txt`` when
the last attempt raised, and ``DONE``. A worker holds an exclusive lock on the folder's ``.lock`` while it
runs the job, so a worker left over from a killed driver and a new driver's worker never run one job at the
same time: the second waits, then finds ``DONE`` and skips.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError
from ..train.rundir import CONFIG_FILE, atomic_write, write_yaml
from .executors import Executor
from .grid import Job, job_from_record

JOBS_FOLDER = "jobs"
DONE_FILE = "DONE"
RESULT_FILE = "result.json"
JOB_LOG = "job.log"
TRACEBACK_FILE = "traceback.txt"
LOCK_FILE = ".lock"


def job_folder(root: str | Path, key: str) -> Path:
    return Path(root) / JOBS_FOLDER / key


def read_result(folder: Path) -> dict[str, Any] | None:
    """The job's ``result.json``, or None if there is none yet."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:  # written atomically: only a hand edit gets here
        raise CorruptFileError(f"{str(path)!r} is not valid JSON: {error}") from None


def job_status(folder: Path) -> str:
    """``done`` (``DONE`` exists), ``failed`` (its last attempt raised), ``unfinished`` (started, stopped) or
    ``pending`` (never started)."""
    if (folder / DONE_FILE).exists():
        return "done"
    result = read_result(folder)
    if result is not None and result.get("status") == "failed":
        return "failed"
    return "unfinished" if (folder / JOB_LOG).exists() else "pending"


def _log(folder: Path, line: str, *, when: datetime.datetime | None = None) -> None:
    when = when or datetime.datetime.now()
    with open(folder / JOB_LOG, "a") as log:
        log.write(f"{when.isoformat(timespec='seconds')} {line}\n")
        log.flush()
        os.fsync(log.fileno())


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the job folder's exclusive lock (released when the process ends, however it ends)."""
    with open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _complete_log(folder: Path) -> None:
    """A worker killed between writing ``DONE`` and logging its attempt finished leaves ``job.log`` one line
    short: add that line, stamped with ``DONE``'s time, so the log agrees with the marker (under the lock)."""
    done = folder / DONE_FILE
    finished = f"{done.read_text().strip()} finished"  # DONE holds "attempt N"
    if not any(line.endswith(f" {finished}") for line in _read_log(folder)):
        _log(folder, finished, when=datetime.datetime.fromtimestamp(done.stat().st_mtime))


def _execute(job: Job, folder: Path) -> dict[str, Any]:
    """Run the job into ``folder``; returns the entries of its result (``numbers``, and ``passed`` for an
    experiment). A training run left unfinished is resumed from its checkpoint (bit-identical to a run that
    was never stopped); an unfinished reproduction starts over."""
    if job.kind == "train":
        from ..train import TrainConfig, resume_run, run

        run_dir = folder / "run"
        if (run_dir / CONFIG_FILE).exists():
            history = resume_run(run_dir, progress=False)
        else:
            history = run(TrainConfig.from_mapping(job.config, source=f"job {job.key}"), run_dir, progress=False)
        return {"numbers": {k: v for k, v in history.last.items() if k != "time"}}
    from ..experiments import EXPERIMENTS, reproduce

    reproduction = folder / "reproduction"
    result = reproduce(job.target, reproduction, quick=job.quick, overrides=job.config, progress=False, force=True)
    return {
        "numbers": result["numbers"],
        "passed": result["passed"],
        "key_number": EXPERIMENTS[job.target].key_number,
    }


def run_job(record: Mapping[str, Any], root: str) -> dict[str, Any]:
    """Run one job (given as :meth:`Job.record`, picklable) in its folder under ``root``, unless it is done.

    Returns its result: ``{"key", "point", "status": "done" | "failed", "seconds", "attempt", ...}`` with
    ``numbers`` (and ``passed`` / ``key_number`` for an experiment) when done, ``error`` when failed. An
    exception of the job is recorded (``result.json``, ``traceback.txt``, ``job.log``), never raised.
    """
    job = job_from_record(record)
    folder = job_folder(root, job.key)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        if (folder / DONE_FILE).exists():
            result = read_result(folder)
            assert result is not None  # result.json is written before DONE
            _complete_log(folder)
            return result
        attempt = 1 + _attempts(folder)
        _log(folder, f"attempt {attempt} started (pid {os.getpid()})")
        if not (folder / CONFIG_FILE).exists():
            write_yaml(folder / CONFIG_FILE, job.record())
        (folder / TRACEBACK_FILE).unlink(missing_ok=True)
        result: dict[str, Any] = {"key": job.key, "point": job.point, "attempt": attempt}
        start = time.perf_counter()
        try:
            outcome = _execute(job, folder)
        except Exception as error:  # noqa: BLE001 (a job's failure is recorded; the sweep goes on)
            atomic_write(folder / TRACEBACK_FILE, traceback.format_exc())
            message = f"{type(error).__name__}: {error}".strip().split("\n")[0]
            result |= {"status": "failed", "error": message, "seconds": time.perf_counter() - start}
            atomic_write(folder / RESULT_FILE, json.dumps(result, indent=2))
            _log(folder, f"attempt {attempt} failed: {message}")
            return result
        result |= {"status": "done", "seconds": time.perf_counter() - start, **outcome}
        atomic_write(folder / RESULT_FILE, json.dumps(result, indent=2))
        atomic_write(folder / DONE_FILE, f"attempt {attempt}\n")
        _log(folder, f"attempt {attempt} finished")
        return result


def _read_log(folder: Path) -> list[str]:
    path = folder / JOB_LOG
    return path.read_text().splitlines() if path.exists() else []


def _attempts(folder: Path) -> int:
    return sum(" started" in line for line in _read_log(folder))


UNSTARTED_RESUBMITS = 2  # times a job lost with its worker before it started goes out again without using a retry


def run_sweep(
    jobs: Sequence[Job],
    root: str | Path,
    executor: Executor,
    *,
    retries: int = 1,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every job not yet done into ``root/jobs/<key>/`` on ``executor``; returns the results in job order.

    Done jobs are skipped (their stored result is returned); a failed or unfinished job runs again, and a job
    that fails is retried up to ``retries`` more times in this call. A job whose worker process died (killed,
    out of memory) failed too, and is retried the same way — on the local executor a dying worker takes the
    pool down, so every job running at that moment counts one failed attempt; a job lost before it started
    (queued) goes out again without using a retry, twice at most. ``on_result`` sees each final result.
    Killing the driver at any moment and calling again completes the sweep: a job is done exactly once
    (``DONE`` is written atomically after ``result.json``, and a job's lock keeps two workers off it).
    """
    from ..validation import check_scalar

    check_scalar("retries", retries, int, low=0)
    root = Path(root)
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for job in jobs:
        folder = job_folder(root, job.key)
        if job_status(folder) == "done":
            with _locked(folder):
                _complete_log(folder)
            results[job.key] = read_result(folder) | {"skipped": True}  # type: ignore[operator]
            if on_result is not None:
                on_result(results[job.key])
        else:
            pending.append(job)
    failures = dict.fromkeys((job.key for job in pending), 0)
    unstarted = dict.fromkeys(failures, 0)
    while pending:
        attempts = {job.key: _attempts(job_folder(root, job.key)) for job in pending}
        futures = {executor.submit(run_job, job.record(), str(root)): job for job in pending}
        pending = []
        for future in executor.wait(list(futures)):
            job = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 (the worker process itself died: recorded like a failure)
                if (
                    _attempts(job_folder(root, job.key)) == attempts[job.key]
                    and unstarted[job.key] < UNSTARTED_RESUBMITS
                ):
                    unstarted[job.key] += 1
                    pending.append(job)
                    continue
                result = {
                    "key": job.key,
                    "point": job.point,
                    "status": "failed",
                    "seconds": 0.0,
                    "error": f"the worker running the job died: {type(error).__name__}: {error}",
                }
            results[job.key] = result
            if result["status"] == "failed" and failures[job.key] < retries:
                failures[job.key] += 1
                pending.append(job)
            elif on_result is not None:
                on_result(result)
    return [results[job.key] for job in jobs]
