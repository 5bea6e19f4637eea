"""The command line: happy paths and every user error as one line with exit code 2."""

import json

import pytest
from typer.testing import CliRunner

from implicit_bias import __version__
from implicit_bias.cli import app

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
        "--run-dir",
        run_dir,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "metrics.csv", "checkpoint.safetensors", "train.log"} <= {p.name for p in run_dir.iterdir()}
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
        "--out",
        tmp_path,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "homogeneous-margin"
    payload = json.loads((folder / "result.json").read_text())
    assert set(payload) >= {"name", "claim", "passed", "numbers", "figures"}
    assert payload["passed"] is True and payload["numbers"]["normalized_margin_growth"] > 1
    assert all((folder / f).stat().st_size > 1000 for f in payload["figures"])
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
