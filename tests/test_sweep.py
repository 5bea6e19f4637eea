"""Sweeps: grid expansion, the job store (skip done, retry failed, survive SIGKILL) and the ``sweep`` command."""

import csv
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch
import yaml
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.sweep import SerialExecutor, expand, job_folder, job_status, make_executor, parse_grid, run_sweep
from implicit_bias.sweep import run as sweep_run
from implicit_bias.sweep.report import errorbar_series, summarize
from implicit_bias.train import TrainConfig, run

runner = CliRunner()
TINY = {
    "dataset": "gaussians",
    "data_options": {"num_classes": 2, "dim": 2, "n_per_class": 10},
    "model": "linear",
    "steps": 5,
    "log_points": 3,
    "probes": [],
}


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def finished_attempts(root, key):
    return sum(line.endswith(" finished") for line in (job_folder(root, key) / "job.log").read_text().splitlines())


def test_parse_grid_lists_and_inclusive_ranges():
    grid = parse_grid(["lr=0.1,1e-2", "seed=0..2", "widths=[4,8],[16]", "bias=true,false", "offset=-1..0"])
    assert grid == {
        "lr": [0.1, 0.01],
        "seed": [0, 1, 2],  # both ends included
        "widths": [[4, 8], [16]],
        "bias": [True, False],
        "offset": [-1, 0],
    }


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("seed=0..x", "not a range"),
        ("seed=1...3", "not a range"),
        ("seed=3..1", "empty range"),
        ("seed=", "key=v1,v2"),
        ("lr=0.1,,0.2", "empty value"),
        ("noequals", "key=v1,v2"),
    ],
)
def test_parse_grid_refuses_malformed_items(item, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        parse_grid([item])


def test_parse_grid_refuses_a_key_given_twice():
    with pytest.raises(InvalidArgumentError, match="'seed' is given twice"):
        parse_grid(["seed=0", "seed=1"])


def test_expand_training_yaml_is_the_ordered_product_with_stable_keys(tiny_yaml):
    jobs = expand(tiny_yaml, ["lr=0.1,0.01", "seed=0..2"])
    assert [tuple(job.point.values()) for job in jobs] == [(lr, s) for lr in (0.1, 0.01) for s in (0, 1, 2)]
    for job in jobs:  # the YAML's values, the grid's values, TrainConfig's defaults for the rest
        assert job.config == {**TrainConfig().to_dict(), **TINY, **job.point}
        assert len(job.key) == 12 and int(job.key, 16) >= 0
    assert len({job.key for job in jobs}) == 6
    swapped = expand(tiny_yaml, ["seed=0..2", "lr=0.1,0.01"])  # the key depends on the config, not the option order
    assert {job.key for job in swapped} == {job.key for job in jobs}
    assert expand(tiny_yaml, {"lr": [0.1]})[0].key == next(
        job.key for job in jobs if job.point == {"lr": 0.1, "seed": 0}
    )


def test_expand_an_experiment_uses_its_config_fields(tmp_path):
    quick = expand("homogeneous-margin", ["seed=0..1"], quick=True)
    full = expand("homogeneous-margin", ["seed=0..1"], quick=False)
    assert [job.config["seed"] for job in quick] == [0, 1]
    assert quick[0].config["steps"] == 5000 and full[0].config["steps"] == 200_000  # the two presets
    assert {job.key for job in quick}.isdisjoint(job.key for job in full)
    with pytest.raises(UnknownNameError, match=r"'seedz'.*allowed: num_classes, .*seed, seeds"):
        expand("homogeneous-margin", ["seedz=0..1"], quick=True)


def test_expand_refuses_unknown_keys_bad_values_and_targets(tiny_yaml):
    with pytest.raises(UnknownNameError, match=r"unknown grid key\(s\) 'lrr'.*allowed: dataset, .*lr, "):
        expand(tiny_yaml, ["lrr=0.1"])
    with pytest.raises(UnknownNameError, match=r"unknown --set key\(s\) 'stpes'"):
        expand(tiny_yaml, ["lr=0.1"], overrides={"stpes": 3})
    with pytest.raises(InvalidArgumentError, match="steps"):
        expand(tiny_yaml, ["steps=5,2.5"])  # a value of the wrong type is refused before any job runs
    with pytest.raises(UnknownNameError, match="neither an experiment"):
        expand("no-such-experiment", ["seed=0"])
    with pytest.raises(InvalidArgumentError, match="--quick applies to an experiment"):
        expand(tiny_yaml, ["seed=0"], quick=True)


def test_sweep_results_equal_plain_runs_and_a_rerun_skips_them(tiny_yaml, tmp_path):
    jobs = expand(tiny_yaml, ["lr=0.1,0.01"])
    results = run_sweep(jobs, tmp_path / "sweep", SerialExecutor())
    for job, result in zip(jobs, results):
        plain = run(TrainConfig.from_mapping(job.config), tmp_path / f"plain-{job.key}", progress=False).last
        assert result["status"] == "done"
        assert result["numbers"] == {k: v for k, v in plain.items() if k != "time"}
        folder = job_folder(tmp_path / "sweep", job.key)
        assert {"config.yaml", "result.json", "job.log", "DONE", "run"} <= {p.name for p in folder.iterdir()}
        assert yaml.safe_load((folder / "config.yaml").read_text())["point"] == job.point
    again = run_sweep(jobs, tmp_path / "sweep", SerialExecutor())
    assert all(result["skipped"] for result in again)
    assert [finished_attempts(tmp_path / "sweep", job.key) for job in jobs] == [1, 1]
    stopped = job_folder(tmp_path / "sweep", jobs[0].key)  # as if killed after training, before result.json
    (stopped / "DONE").unlink()
    (stopped / "result.json").unlink()
    resumed = run_sweep(jobs, tmp_path / "sweep", SerialExecutor())
    assert resumed[0]["attempt"] == 2 and resumed[0]["numbers"] == results[0]["numbers"]
    assert resumed[1]["skipped"]
    cut = job_folder(tmp_path / "sweep", jobs[1].key)  # as if killed after DONE, before its log line
    log = cut / "job.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    assert finished_attempts(tmp_path / "sweep", jobs[1].key) == 0
    run_sweep(jobs, tmp_path / "sweep", SerialExecutor())
    assert log.read_text().splitlines()[-1].endswith(" attempt 1 finished")  # the skip restores the line, once
    assert [finished_attempts(tmp_path / "sweep", job.key) for job in jobs] == [2, 1]  # job 0 ran twice above


def test_a_failing_job_is_recorded_retried_and_the_sweep_goes_on(tiny_yaml, tmp_path):
    jobs = expand(tiny_yaml, ["model=linear,nosuchmodel"])  # the spec is only checked when the job builds it
    results = run_sweep(jobs, tmp_path, SerialExecutor(), retries=2)
    assert [result["status"] for result in results] == ["done", "failed"]
    failed = job_folder(tmp_path, jobs[1].key)
    assert "nosuchmodel" in results[1]["error"] and "Traceback" in (failed / "traceback.txt").read_text()
    log = (failed / "job.log").read_text()
    assert log.count(" started") == 3 and log.count(" failed: ") == 3  # the first try and two retries
    assert job_status(failed) == "failed" and not (failed / "DONE").exists()
    again = run_sweep(jobs, tmp_path, SerialExecutor(), retries=0)  # a rerun tries the failed job once more
    assert again[0]["skipped"] and again[1]["attempt"] == 4 and again[1]["status"] == "failed"


def test_sweep_command_exit_codes_and_summary(tiny_yaml, tmp_path):
    ok = runner.invoke(
        app, ["sweep", str(tiny_yaml), "--grid", "seed=0..1", "--out", str(tmp_path / "a"), "--jobs", "1"]
    )
    assert ok.exit_code == 0, ok.output
    assert "all 2 jobs done" in ok.output and "seed=1" in ok.output
    bad = runner.invoke(
        app, ["sweep", str(tiny_yaml), "--grid", "model=nosuchmodel", "--out", str(tmp_path / "b"), "--jobs", "1"]
    )
    key = expand(tiny_yaml, ["model=nosuchmodel"])[0].key
    assert bad.exit_code == 1 and f"1 of 1 jobs failed: {key}" in bad.output
    for extra, message in [
        (["--grid", "sed=0"], "unknown grid key(s) 'sed'"),
        (["--grid", "seed=0..x"], "not a range"),
        (["--grid", "seed=0", "--executor", "slurm"], "unknown executor 'slurm'"),
        (["--grid", "seed=0", "--executor", "submitit", "--cluster", "pbs"], "unknown --cluster 'pbs'"),
        (["--grid", "seed=0", "--executor", "ray", "--cpus-per-task", "0"], "--cpus-per-task must be >= 1"),
        (["--grid", "seed=0", "--executor", "ray", "--address", "nowhere"], "--address must be auto, local"),
    ]:
        result = runner.invoke(app, ["sweep", str(tiny_yaml), *extra, "--out", str(tmp_path / "c")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "c").exists()  # refused before any job started


def test_no_sbatch_and_an_unreachable_ray_address_are_refused_in_one_line_within_seconds(tiny_yaml, tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": str(tmp_path)}  # no sbatch on this PATH
    for extra, message in [
        (["--executor", "submitit"], "`sbatch` and `srun` are not on PATH"),
        (["--executor", "ray", "--address", f"127.0.0.1:{port}"], "no Ray cluster answers there"),
    ]:
        start = time.monotonic()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "environ", env)
            result = runner.invoke(
                app, ["sweep", str(tiny_yaml), "--grid", "seed=0", *extra, "--out", str(tmp_path / "d")]
            )
        assert time.monotonic() - start < 30
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("executor, extra", [("submitit", "slurm"), ("ray", "ray")])
def test_a_missing_engine_names_its_extra(executor, extra, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, executor, None)  # import fails as if the package were not installed
    with pytest.raises(InvalidArgumentError, match=rf"pip install 'implicit-bias\[{extra}\]'"):
        make_executor(executor, folder=tmp_path, cluster="local")


@pytest.mark.slow  # two driver processes, the first with two spawned workers: 15-40 s on 2 busy cores
def test_sigkill_of_the_driver_then_a_rerun_completes_each_job_once(tmp_path):
    longer = {**TINY, "steps": 400, "checkpoint_seconds": 0.02, "log_points": 20}
    config = tmp_path / "longer.yaml"
    config.write_text(yaml.safe_dump(longer))
    command = [sys.executable, "-m", "implicit_bias.cli", "sweep", str(config), "--grid", "seed=0..3"]
    sweep = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen([*command, "--jobs", "2", "--out", str(sweep)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # the loop ends at the first DONE; the bound only matters on a swamped machine
    while not list(sweep.glob("jobs/*/DONE")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    jobs = expand(config, ["seed=0..3"])
    assert 1 <= sum(job_status(job_folder(sweep, job.key)) == "done" for job in jobs) < len(jobs)
    rerun = subprocess.run(
        [*command, "--jobs", "1", "--out", str(sweep)], check=False, env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    clean = run_sweep(jobs, tmp_path / "clean", SerialExecutor())
    for job, expected in zip(jobs, clean):
        assert finished_attempts(sweep, job.key) == 1
        stored = json.loads((job_folder(sweep, job.key) / "result.json").read_text())
        assert stored["numbers"] == expected["numbers"]  # exact resume: bit-identical to a sweep never killed


def test_an_experiment_job_records_its_verdict_and_key_number(tmp_path):
    overrides = {"steps": 60, "log_points": 5, "n_per_class": 5, "width": 5}
    jobs = expand("homogeneous-margin", ["seed=0"], quick=True, overrides=overrides)
    (result,) = run_sweep(jobs, tmp_path, SerialExecutor())
    reproduction = job_folder(tmp_path, jobs[0].key) / "reproduction"
    stored = json.loads((reproduction / "result.json").read_text())
    assert result["status"] == "done" and result["key_number"] == "normalized_margin_growth"
    assert result["passed"] == stored["passed"] and result["numbers"] == stored["numbers"]
    assert yaml.safe_load((reproduction / "config.yaml").read_text())["steps"] == 60


def fake_job(root, key, point, numbers, *, done=True, **extra):
    """A job folder as the store writes it, with numbers chosen by hand."""
    folder = job_folder(root, key)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"key": key, "point": point}))
    (folder / "result.json").write_text(json.dumps({"key": key, "status": "done", "numbers": numbers, **extra}))
    if done:
        (folder / "DONE").write_text("attempt 1\n")


def test_sweep_report_mean_std_and_student_t_interval_per_grid_point(tmp_path):
    for seed, value in enumerate([1.0, 2.0, 3.0]):
        fake_job(tmp_path, f"a{seed}", {"lr": 0.1, "seed": seed}, {"margin": value}, passed=seed != 1)
    fake_job(tmp_path, "b0", {"lr": 0.01, "seed": 0}, {"margin": 5.0})
    fake_job(tmp_path, "b1", {"lr": 0.01, "seed": 1}, {"margin": float("inf")})
    fake_job(tmp_path, "c0", {"lr": 0.01, "seed": 2}, {"margin": 100.0}, done=False)  # unfinished: left out
    result = runner.invoke(app, ["sweep-report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "summary.csv") as file:
        rows = {(row["lr"], row["quantity"]): row for row in csv.DictReader(file)}
    margin = rows[("0.1", "margin")]
    half = 4.302652729749464 / math.sqrt(3)  # t_{0.975, 2} (Student's t table) · std 1 / √3
    assert (margin["n"], float(margin["mean"]), float(margin["std"])) == ("3", 2.0, 1.0)
    assert float(margin["ci95_low"]) == pytest.approx(2 - half, rel=1e-12)
    assert float(margin["ci95_high"]) == pytest.approx(2 + half, rel=1e-12)
    assert float(rows[("0.1", "passed")]["mean"]) == pytest.approx(2 / 3)  # the pass rate
    infinite = rows[("0.01", "margin")]  # a non-finite value: no statistic at all, and the count says why
    assert (infinite["n"], infinite["mean"], infinite["ci95_low"], infinite["non_finite"]) == ("2", "", "", "1")
    assert "non-finite" in result.output
    missing = runner.invoke(app, ["sweep-report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a sweep folder" in missing.output


def test_the_manifest_records_the_sweep_new_values_extend_it_and_another_sweep_is_refused(tiny_yaml, tmp_path):
    out = tmp_path / "sweep"
    sweep_run(tiny_yaml, ["seed=0..1"], out, jobs=1)
    manifest = yaml.safe_load((out / "sweep.yaml").read_text())
    assert (manifest["target"], manifest["quick"], manifest["set"]) == ("train", False, {})
    assert manifest["grid"] == {"seed": [0, 1]} and manifest["base"]["steps"] == 5 and "seed" not in manifest["base"]
    (first,) = manifest["runs"]
    assert first["executor"] == "local" and first["grid"] == {"seed": [0, 1]}
    assert first["versions"]["torch"] == torch.__version__ and first["versions"]["python"] == platform.python_version()
    sweep_run(tiny_yaml, ["seed=1..2"], out, jobs=1)  # new values of the same key: the sweep grows
    manifest = yaml.safe_load((out / "sweep.yaml").read_text())
    assert manifest["grid"] == {"seed": [0, 1, 2]}
    assert [run["grid"] for run in manifest["runs"]] == [{"seed": [0, 1]}, {"seed": [1, 2]}]
    assert len(list(out.glob("jobs/*/DONE"))) == 3  # seed 1 ran once
    with pytest.raises(InvalidArgumentError, match=r"grid keys \['seed'\], not \['lr'\]: use another --out"):
        sweep_run(tiny_yaml, ["lr=0.1"], out, jobs=1)
    with pytest.raises(InvalidArgumentError, match=r"set \{\}, not \{'steps': 6\}"):
        sweep_run(tiny_yaml, ["seed=0"], out, jobs=1, overrides={"steps": 6})
    tiny_yaml.write_text(yaml.safe_dump({**TINY, "steps": 7}))  # the YAML edited between two runs
    with pytest.raises(InvalidArgumentError, match=r"base \{'steps': 5\}, not \{'steps': 7\}"):
        sweep_run(tiny_yaml, ["seed=0"], out, jobs=1)
    assert len(yaml.safe_load((out / "sweep.yaml").read_text())["runs"]) == 2  # refusals change nothing
    assert len(list(out.glob("jobs/*"))) == 3


def test_sweep_report_figures_plot_each_key_number_against_each_grid_axis(tmp_path):
    for lr, width, low in [(0.1, 4, 1.0), (0.1, 8, 2.0), (0.01, 4, 5.0), (0.01, 8, 7.0)]:
        for seed, value in enumerate([low, low + 2]):  # mean low + 1, std √2
            point = {"lr": lr, "width": width, "seed": seed}
            numbers = {"margin": value, "other": 0.0}
            fake_job(tmp_path, f"j{lr}-{width}-{seed}", point, numbers, passed=True, key_number="margin")
    result = runner.invoke(app, ["sweep-report", str(tmp_path)])
    assert result.exit_code == 0 and "8 figure files (PNG, PDF)" in result.output, result.output
    keys, rows = summarize(tmp_path)
    half = 12.706204736174704 * math.sqrt(2) / math.sqrt(2)  # t_{0.975, 1} · std / √n
    series = errorbar_series(keys, rows, "margin", "lr")
    assert sorted(series) == ["width=4", "width=8"]
    for label, points in [("width=4", [(0.01, 6.0), (0.1, 2.0)]), ("width=8", [(0.01, 8.0), (0.1, 3.0)])]:
        assert sorted(series[label]) == [pytest.approx((*point, half, half), rel=1e-12) for point in points]
    by_width = errorbar_series(keys, rows, "margin", "width")
    assert sorted(by_width["lr=0.1"]) == [pytest.approx((w, m, half, half), rel=1e-12) for w, m in [(4, 2.0), (8, 3.0)]]
    figures = sorted(path.name for path in (tmp_path / "figures").iterdir())  # the key number and the pass rate
    assert figures == [f"{q}__{a}.{e}" for q in ("margin", "passed") for a in ("lr", "width") for e in ("pdf", "png")]
    assert (tmp_path / "figures" / "margin__lr.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figures" / "margin__lr.pdf").read_bytes()[:4] == b"%PDF"


class LosesJobs(SerialExecutor):
    """Hands back the first ``times`` futures of each job failed without running it, as a process pool does for
    the jobs queued behind a worker that died."""

    def __init__(self, times):
        self.times, self.submits = times, {}

    def submit(self, fn, /, *args):
        key = args[0]["key"]
        self.submits[key] = self.submits.get(key, 0) + 1
        if self.submits[key] <= self.times:
            future = Future()
            future.set_exception(BrokenProcessPool("a process in the pool was terminated abruptly"))
            return future
        return super().submit(fn, *args)


def test_a_job_lost_before_it_started_goes_out_again_without_using_a_retry(tiny_yaml, tmp_path):
    jobs = expand(tiny_yaml, ["seed=0..1"])
    lost_once = LosesJobs(1)
    results = run_sweep(jobs, tmp_path / "a", lost_once, retries=0)
    assert [(result["status"], result["attempt"]) for result in results] == [("done", 1), ("done", 1)]
    assert list(lost_once.submits.values()) == [2, 2]
    always = LosesJobs(100)  # a pool that never starts anything: given up after 2 free resubmits and the retries
    results = run_sweep(jobs, tmp_path / "b", always, retries=1)
    assert all(result["status"] == "failed" and "worker running the job died" in result["error"] for result in results)
    assert list(always.submits.values()) == [4, 4]  # 1 + 2 free + 1 retry
