"""The command line: happy paths and every user error as one line with exit code 2."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner

from implicit_bias import __version__
from implicit_bias.cli import app
from implicit_bias.experiments import EXPERIMENTS, Criterion, Experiment, ExperimentError, Outcome, reproduce

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output


def test_version_and_list():
    assert __version__ in invoke("--version").output
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("gaussians", "cifar10", "resnet", "cross-entropy", "normalized-gd", "homogeneous-margin"):
        assert name in result.output


@pytest.mark.slow
def test_train_show_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(
        "train",
        "--dataset",
        "xor",
        "--model",
        "mlp:width=16",
        "--loss",
        "logistic",
        "--steps",
        50,
        "--lr",
        "0.1",
        "-d",
        "noise=0.2",
        "--eval-batch-size",
        64,
        "--run-dir",
        run_dir,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "metrics.csv", "checkpoint.safetensors", "train.log"} <= {p.name for p in run_dir.iterdir()}
    assert "eval_batch_size: 64\n" in (run_dir / "config.yaml").read_text()
    shown = invoke("show", run_dir, "--last", 3)
    assert shown.exit_code == 0 and "log_loss" in shown.output
    assert (run_dir / "figures" / "log_loss.png").stat().st_size > 1000
    resumed = invoke("resume", run_dir, "--no-progress")  # already complete: nothing changes
    assert resumed.exit_code == 0, resumed.output


def test_train_from_a_config_file_with_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: gaussians\ndata_options: {num_classes: 2}\nsteps: 20\nprobes: []\n")
    result = invoke(
        "train",
        "--config",
        config,
        "--steps",
        10,
        "-o",
        "momentum=0.9",
        "--optimizer",
        "sgd",
        "--run-dir",
        tmp_path / "r",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "momentum: 0.9" in (tmp_path / "r" / "config.yaml").read_text()
    assert "steps: 10" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.slow
def test_reproduce_writes_result_figures_and_report(tmp_path):
    result = invoke(
        "reproduce",
        "homogeneous-margin",
        "--quick",
        "--set",
        "steps=1500",
        "--set",
        "seeds=2",
        "--out",
        tmp_path,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "homogeneous-margin"
    payload = json.loads((folder / "result.json").read_text())
    assert set(payload) >= {"name", "claim", "passed", "numbers", "figures", "per_seed"}
    growth = payload["per_seed"]["normalized_margin_growth"]
    assert payload["passed"] is True and len(growth) == 2 and min(growth) > 1
    assert payload["numbers"]["normalized_margin_growth_mean"] == pytest.approx(sum(growth) / 2, rel=1e-12)
    assert all((folder / f).stat().st_size > 1000 for f in payload["figures"])
    assert all((folder / "seed_1" / f).stat().st_size > 1000 for f in payload["figures"])
    assert "PASSED" in (folder / "report.md").read_text()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--model", "mlp:depth=0", "--steps", "1"], "depth must be >= 1"),
        (["train", "--loss", "hinge"], "unknown loss 'hinge'"),
        (["train", "--optimizer", "sgd", "-o", "momentun=0.9"], "'momentun'"),
        (["train", "-d", "noise"], "must look like key=value"),
        (["train", "--config", "missing.yaml"], "no such file"),
        (["train", "--dataset", "mnist", "-d", "path=/nonexistent"], "does not exist"),
        (["show", "nowhere"], "not a run directory"),
        (["resume", "nowhere"], "no such file"),
        (["reproduce", "no-such-claim"], "unknown experiment 'no-such-claim'"),
        (["reproduce"], "either an experiment NAME or --all"),
        (["reproduce", "homogeneous-margin", "--set", "stepz=3"], "'stepz'"),
        (["reproduce", "homogeneous-margin", "--set", "steps=many"], "steps must be int"),
        (["train", "--device", "cuda:0"], "CUDA"),
        (["train", "--model", "mlp:bias=flase"], "option bias must be bool (true or false), got str 'flase'"),
        (["train", "-d", "standardize=flase"], "option standardize must be bool (true or false)"),
        (["train", "--optimizer", "sgd", "-o", "nesterov=ja"], "option nesterov must be bool (true or false)"),
        (["train", "--dtype", "float16"], "dtype must be float64 or float32, got 'float16'"),
        (["train", "--dtype", "bfloat16"], "dtype must be float64 or float32"),
        (["train", "--optimizer", "sgd", "-o", "nesterov=true"], "nesterov needs momentum > 0 and dampening 0"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_user_error(invoke(*args), fragment)


def test_malformed_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    assert_user_error(invoke("train", "--config", bad), "not valid YAML")
    bad.write_text("learning_rate: 0.1\n")
    assert_user_error(invoke("train", "--config", bad), "'learning_rate'")
    bad.write_text("dtype: float16\n")
    assert_user_error(invoke("train", "--config", bad), "dtype must be float64 or float32, got 'float16'")


def test_reproduce_refuses_to_overwrite(tmp_path):
    (tmp_path / "homogeneous-margin").mkdir()
    (tmp_path / "homogeneous-margin" / "result.json").write_text("{}")
    assert_user_error(invoke("reproduce", "homogeneous-margin", "--quick", "--out", tmp_path), "not empty")


def test_rates_prints_the_table_and_a_passing_check():
    result = invoke("rates", "mlp:depth=4,width=8,bias=false", "--data", "gaussians")
    assert result.exit_code == 0, result.output
    assert result.output.count("0.25  *") == 4 and "Euler identity" in result.output
    errors = [float(word.rstrip(",")) for word in result.output.split() if "e-" in word]
    assert errors and max(errors) < 1e-12


def test_rates_refuses_non_quasi_homogeneous_and_unknown_choices():
    assert_user_error(invoke("rates", "mlp:depth=2", "--choice", "largest"), "choice must be one of")
    assert_user_error(invoke("rates", "mlp:depth=2", "--mode", "test"), "mode")


def _above(threshold: float) -> tuple[Criterion, ...]:
    return (Criterion("value_above", "value", ">", threshold, "the fake claim: 1 > threshold"),)


@dataclass(frozen=True)
class TinyConfig:
    criteria: tuple[Criterion, ...] = _above(0.5)


def _claim_holds(config, folder, progress):
    return Outcome(numbers={"value": 1.0}, figures=[])


def _raises(config, folder, progress):
    raise RuntimeError("boom | from a fake experiment")


FAKES = {  # in this order: the one that raises runs first
    "fake-raises": Experiment("fake-raises", "raises", TinyConfig(), TinyConfig(), _raises, "value"),
    "fake-passes": Experiment("fake-passes", "1 > 0.5", TinyConfig(), TinyConfig(), _claim_holds, "value"),
    "fake-fails": Experiment(
        "fake-fails", "1 > 2", TinyConfig(_above(2.0)), TinyConfig(_above(2.0)), _claim_holds, "value"
    ),
}


@pytest.fixture
def fake_registry():
    """EXPERIMENTS holding only the three instant fakes (the real registry is restored afterwards)."""
    saved = dict(EXPERIMENTS)
    EXPERIMENTS.clear()
    EXPERIMENTS.update(FAKES)
    yield FAKES
    EXPERIMENTS.clear()
    EXPERIMENTS.update(saved)


def test_reproduce_exit_code_says_whether_the_claim_held(tmp_path, fake_registry):
    passed = invoke("reproduce", "fake-passes", "--quick", "--out", tmp_path, "--no-progress")
    assert passed.exit_code == 0 and "PASSED" in passed.output, passed.output
    failed = invoke("reproduce", "fake-fails", "--quick", "--out", tmp_path, "--no-progress")
    assert failed.exit_code == 1 and "FAILED" in failed.output, failed.output
    assert "holds value_above: value = 1 (> 0.5) — yes" in " ".join(passed.output.split())
    assert "fails value_above: value = 1 (> 2) — no" in " ".join(failed.output.split())
    assert json.loads((tmp_path / "fake-fails" / "result.json").read_text())["passed"] is False
    # the same experiment made to pass by an override exits 0: the code follows the verdict, not the name
    fixed = invoke(
        "reproduce", "fake-fails", "--set", "threshold.value_above=0.1", "--out", tmp_path / "b", "--no-progress"
    )
    assert fixed.exit_code == 0, fixed.output


def test_reproduce_that_raises_records_the_error_and_exits_1(tmp_path, fake_registry):
    result = invoke("reproduce", "fake-raises", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "RuntimeError: boom" in result.output
    folder = tmp_path / "fake-raises"
    payload = json.loads((folder / "result.json").read_text())
    assert payload["passed"] is False and payload["error"] == "RuntimeError: boom | from a fake experiment"
    trace = (folder / payload["traceback"]).read_text()
    assert trace.startswith("Traceback") and "in _raises" in trace
    assert "ERROR" in (folder / "report.md").read_text()
    with pytest.raises(ExperimentError, match="'fake-raises' raised RuntimeError: boom") as caught:
        reproduce("fake-raises", tmp_path / "python", progress=False)
    assert caught.value.result["error"] == payload["error"]


def test_reproduce_all_runs_past_an_error_writes_the_index_and_exits_1(tmp_path, fake_registry):
    result = invoke("reproduce", "--all", "--quick", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in fake_registry:  # the one that raised came first: the other two still ran
        assert "passed" in json.loads((tmp_path / name / "result.json").read_text())
    assert (tmp_path / "fake-raises" / "traceback.txt").is_file()
    rows = {
        line.split("]")[0].lstrip("| ["): line
        for line in (tmp_path / "index.md").read_text().splitlines()
        if line.startswith("| [")
    }
    assert set(rows) == set(fake_registry)
    assert "| error |" in rows["fake-raises"] and "boom \\| from" in rows["fake-raises"]  # the pipe escaped
    assert "| yes |" in rows["fake-passes"] and "| no |" in rows["fake-fails"]
    assert "1 of 3 claims reproduced; 1 experiment(s) raised an error." in (tmp_path / "index.md").read_text()


def test_reproduce_all_exits_0_when_every_claim_holds(tmp_path, fake_registry):
    del EXPERIMENTS["fake-raises"], EXPERIMENTS["fake-fails"]
    result = invoke("reproduce", "--all", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "1 of 1 claims reproduced." in (tmp_path / "index.md").read_text()


@dataclass(frozen=True)
class DeclaredConfig:
    criteria: tuple[Criterion, ...] = _above(2.0)
    fails_at_this_scale: Mapping[str, str] = field(default_factory=lambda: {"value_above": "1 is not above 2."})


def test_a_failure_the_config_declares_is_shown_failed_and_does_not_fail_reproduce_all(tmp_path, fake_registry):
    del EXPERIMENTS["fake-raises"], EXPERIMENTS["fake-fails"]
    EXPERIMENTS["fake-declared"] = Experiment(
        "fake-declared", "1 > 2", DeclaredConfig(), DeclaredConfig(), _claim_holds, "value"
    )
    result = invoke("reproduce", "--all", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "fake-declared" / "result.json").read_text())
    assert stored["passed"] is False and stored["fails_at_this_scale"] == {"value_above": "1 is not above 2."}  # still failed
    index = (tmp_path / "index.md").read_text()
    assert "1 of 2 claims reproduced; 1 failed only as declared at this scale (fake-declared)." in index
    assert "fails: value_above (declared at this scale)" in index
    report = (tmp_path / "fake-declared" / "report.md").read_text()
    assert "as its config declares at this scale" in report and "- `value_above`: 1 is not above 2." in report
    single = invoke("reproduce", "fake-declared", "--out", tmp_path / "one", "--no-progress")
    assert single.exit_code == 1 and "declares failing at this scale" in " ".join(single.output.split())
    # a declared preset that fails another criterion too is a regression: --all exits 1
    EXPERIMENTS["fake-declared"] = Experiment(
        "fake-declared", "1 > 2", DeclaredConfig(), DeclaredConfig(fails_at_this_scale={}), _claim_holds, "value"
    )
    assert invoke("reproduce", "--all", "--out", tmp_path / "full", "--no-progress").exit_code == 1


def test_a_declared_failure_must_name_a_criterion():
    from implicit_bias.experiments import register

    with pytest.raises(ValueError, match="fails_at_this_scale names nope, which are not its criteria"):
        register(Experiment("x", "x", DeclaredConfig(fails_at_this_scale={"nope": "?"}), TinyConfig(), _claim_holds, "v"))
    with pytest.raises(TypeError, match="fails_at_this_scale must map criterion names to reasons"):
        register(Experiment("x", "x", DeclaredConfig(fails_at_this_scale=("value_above",)), TinyConfig(), _claim_holds, "v"))
    with pytest.raises(TypeError, match="fails_at_this_scale must map criterion names to reasons"):
        register(Experiment("x", "x", DeclaredConfig(fails_at_this_scale={"value_above": " "}), TinyConfig(), _claim_holds, "v"))


def test_a_left_folder_needs_force_which_replaces_only_a_reproduction(tmp_path, fake_registry):
    assert invoke("reproduce", "fake-passes", "--out", tmp_path, "--no-progress").exit_code == 0
    stale = tmp_path / "fake-passes" / "stale.png"
    stale.write_text("from the killed run")
    assert_user_error(invoke("reproduce", "fake-passes", "--out", tmp_path), "--force")
    replaced = invoke("reproduce", "fake-passes", "--out", tmp_path, "--force", "--no-progress")
    assert replaced.exit_code == 0, replaced.output
    assert not stale.exists() and (tmp_path / "fake-passes" / "result.json").is_file()
    foreign = tmp_path / "fake-fails"  # non-empty, but not a reproduction of fake-fails: never deleted
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_user_error(invoke("reproduce", "fake-fails", "--out", tmp_path, "--force"), "will not delete")
    assert (foreign / "notes.txt").read_text() == "mine"
    # --all checks every folder before running anything
    assert_user_error(invoke("reproduce", "--all", "--out", tmp_path), "--force")
    assert not (tmp_path / "fake-raises").exists()
