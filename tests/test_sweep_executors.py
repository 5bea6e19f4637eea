"""The sweep's executors: submitit (its local cluster: real pickles, processes and requeue), Ray (a local
``ray.init``), the local pool's GPUs and its rebuild after a worker is killed. Results never depend on the
executor: the same jobs give the same result files on each."""

import json
import os
import signal
import sys
import threading
import time

import pytest
import yaml
from test_sweep import TINY  # the sweep tests' tiny training config
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.sweep import (
    LocalExecutor,
    SerialExecutor,
    SubmititExecutor,
    expand,
    job_folder,
    make_executor,
    run_sweep,
)
from implicit_bias.sweep.executors import assign_gpus, visible_gpus

LONGER = {**TINY, "steps": 400, "checkpoint_seconds": 0.02, "log_points": 20}  # checkpoints along the way
QUICK = {"steps": 60, "log_points": 5, "n_per_class": 5}  # homogeneous-margin --quick, made small
GRID = ["width=4,5", "seed=0..2"]  # 2 values × 3 seeds (each submitit-local job is a fresh interpreter: ~5–10 s)


@pytest.fixture
def longer_yaml(tmp_path):
    path = tmp_path / "longer.yaml"
    path.write_text(yaml.safe_dump(LONGER))
    return path


def log_lines(root, key, name="job.log"):
    return (job_folder(root, key) / name).read_text().splitlines()


def stop_first_started(root, sig, seconds=120):
    """A thread that waits until some job has started and written a checkpoint, then sends ``sig`` to the
    process running it (its pid is in the job's log); ``thread.killed`` is that job's key."""

    def watch():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for log in sorted(root.glob("jobs/*/job.log")):
                if (log.parent / "run" / "checkpoint.safetensors").exists() and not (log.parent / "DONE").exists():
                    pid = int(log.read_text().split("(pid ")[1].split(")")[0])
                    os.kill(pid, sig)
                    thread.killed = log.parent.name
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.killed = None
    thread.start()
    return thread


def resumed_from(root, key):
    """The step of each start of the job's training run: ``starting at step 0``, ``resuming at step N`` (``train.log``)."""
    lines = log_lines(root, key, "run/train.log")
    return [int(line.split("ing at step ")[1].split()[0]) for line in lines if "ing at step " in line]


def test_gpus_are_assigned_round_robin_and_read_from_cuda_visible_devices(monkeypatch):
    assert assign_gpus(3, ["0", "1"]) == ["0", "1", "0"]
    assert assign_gpus(2, ["4", "6", "7"]) == ["4", "6"]  # fewer workers than GPUs: one each
    assert assign_gpus(4, []) is None  # no GPU: CUDA_VISIBLE_DEVICES is left alone
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")  # the physical ids a scheduler gave this process
    assert visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def device_of_worker(seconds):
    time.sleep(seconds)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.slow  # spawns two workers
def test_each_local_worker_sees_only_its_own_gpu():
    pool = LocalExecutor(2, gpus=["7", "9"])
    try:
        seen = [future.result() for future in pool.wait([pool.submit(device_of_worker, 0.5) for _ in range(6)])]
    finally:
        pool.close()
    devices = dict(seen)  # pid → device
    assert all(devices[pid] == device for pid, device in seen)  # a worker keeps its device
    assert set(devices.values()) <= {"7", "9"} and len(set(devices.values())) == len(devices)  # one worker each


@pytest.mark.slow  # two pools of two spawned workers, three 400-step runs
def test_a_killed_worker_is_replaced_and_its_job_resumed_within_retries(longer_yaml, tmp_path):
    jobs = expand(longer_yaml, ["seed=0..2"])
    root = tmp_path / "sweep"
    killer = stop_first_started(root, signal.SIGKILL)
    pool = LocalExecutor(2)
    try:
        results = run_sweep(jobs, root, pool, retries=1)
    finally:
        pool.close()
    killer.join()
    assert killer.killed is not None
    clean = run_sweep(jobs, tmp_path / "clean", SerialExecutor())
    for job, result, expected in zip(jobs, results, clean):
        assert result["status"] == "done" and result["numbers"] == expected["numbers"]
        assert sum(line.endswith(" finished") for line in log_lines(root, job.key)) == 1
    killed = next(result for result in results if result["key"] == killer.killed)
    assert killed["attempt"] == 2  # the pool was rebuilt and the job ran again, once
    assert all(result["attempt"] <= 2 for result in results)  # a job queued then ran once, one running twice
    starts = resumed_from(root, killer.killed)
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0  # resumed from its checkpoint, not from scratch


def busy_interval(seconds):
    """Sleep ``seconds`` in the job's process; its (start, end) wall-clock times."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def most_at_once(intervals):
    """The largest number of the (start, end) intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # an end sorts before a start at the same instant
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.slow  # five submitit-local job processes, two at a time
def test_submitit_local_runs_at_most_jobs_processes_at_once(tmp_path):
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job processes cannot import this module
    try:
        executor = make_executor("submitit", jobs=2, folder=tmp_path / "submitit", cluster="local")
        futures = [executor.submit(busy_interval, 2.0) for _ in range(5)]
        intervals = [future.result() for future in executor.wait(futures)]
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(intervals) == 5
    assert most_at_once(intervals) == 2  # uncapped, submitit's local mode would start all five at once


@pytest.mark.slow  # submitit's local cluster: a controller and a job process, started twice
def test_a_preempted_submitit_job_is_requeued_and_resumes_its_run(longer_yaml, tmp_path):
    jobs = expand(longer_yaml, ["seed=0"])
    root = tmp_path / "sweep"
    preempter = stop_first_started(root, signal.SIGUSR2)  # what Slurm sends before preemption or timeout
    (result,) = run_sweep(jobs, root, SubmititExecutor(root / "submitit", cluster="local"), retries=0)
    preempter.join()
    assert preempter.killed == jobs[0].key
    (expected,) = run_sweep(jobs, tmp_path / "clean", SerialExecutor())
    assert result["status"] == "done" and result["numbers"] == expected["numbers"] and result["attempt"] == 2
    starts = resumed_from(root, jobs[0].key)
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0
    logs = "\n".join(path.read_text() for path in (root / "submitit").glob("*_log.*"))
    assert "Requeued job" in logs  # submitit's own requeue, not a retry of ours


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s")
    yield ray
    ray.shutdown()


def numbers_by_key(root):
    return {
        folder.name: json.loads((folder / "result.json").read_text())["numbers"]
        for folder in sorted((root / "jobs").iterdir())
    }


@pytest.mark.slow  # six jobs (2 values × 3 seeds) of a quick experiment on each of the three executors
def test_a_quick_experiment_sweep_gives_the_same_result_files_on_every_executor(ray_session, tmp_path):
    jobs = expand("homogeneous-margin", GRID, quick=True, overrides=QUICK)
    assert len(jobs) == 6
    stores = {}
    for name in ("local", "submitit", "ray"):
        stores[name] = tmp_path / name
        executor = make_executor(name, jobs=2, folder=stores[name] / "submitit", cluster="local")
        try:
            results = run_sweep(jobs, stores[name], executor, retries=0)
        finally:
            executor.close()
        assert [result["status"] for result in results] == ["done"] * 6, results
    assert ray_session.is_initialized()  # a session opened by the caller is used, not shut down
    reference = numbers_by_key(stores["local"])
    assert set(reference) == {job.key for job in jobs}
    assert numbers_by_key(stores["submitit"]) == reference
    assert numbers_by_key(stores["ray"]) == reference


@pytest.mark.slow
def test_the_sweep_command_on_ray_reports_over_seeds(ray_session, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "sweep"
    args = ["sweep", str(path), "--grid", "lr=0.1,0.05", "--grid", "seed=0..2", "--executor", "ray", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "all 6 jobs done" in result.output
    manifest = yaml.safe_load((out / "sweep.yaml").read_text())
    assert (
        manifest["runs"][0]["executor"] == "ray" and manifest["runs"][0]["versions"]["ray"] == ray_session.__version__
    )
    assert (out / "figures" / "accuracy__lr.png").read_bytes()[:4] == b"\x89PNG"


def test_the_slurm_options_reach_sbatch_as_one_job_array(tmp_path, monkeypatch):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    sbatch = bin_folder / "sbatch"  # records the script it is given, answers as Slurm does
    sbatch.write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_folder / "srun").write_text("#!/bin/sh\n")  # submitit looks for srun too
    for command in (sbatch, bin_folder / "srun"):
        command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor(
        "submitit",
        jobs=2,
        folder=tmp_path / "submitit",
        partition="gpu",
        timeout_min=30,
        gpus_per_node=1,
        cpus_per_task=4,
        mem_gb=8,
    )
    futures = [executor.submit(len, [0] * n) for n in range(6)]
    executor.flush()
    lines = set((tmp_path / "submitted.sh").read_text().splitlines())
    expected = ["--array=0-5%2", "--partition=gpu", "--time=30", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=8GB"]
    assert {f"#SBATCH {option}" for option in expected} <= lines
    assert len(futures) == 6 and not any(future.done() for future in futures)  # results come from the job store
