"""fit(..., snapshots="log") and `implicit-bias diagnose RUN_DIR`: snapshots at log-spaced steps that survive an
interruption bit for bit, and the diagnosis of every snapshot as trends over steps."""

import csv

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_resume import DATA, Interrupt, Stop  # the resume tests' data and interrupting probe
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.dynamics import log_spaced_steps
from implicit_bias.errors import InvalidArgumentError
from implicit_bias.models import build
from implicit_bias.train import fit
from implicit_bias.train.snapshots import SNAPSHOT_POINTS, list_snapshots

runner = CliRunner()


def train(run_dir, *, stop=None, resume=False, steps=60):
    model = build("mlp:depth=2,width=8,bias=false", DATA.input_shape, 3, seed=0)
    fit(model, DATA, steps=steps, lr=0.1, batch_size=20, optimizer_options={"momentum": 0.9}, run_dir=run_dir,
        snapshots="log", probes=[Stop(stop)], checkpoint_seconds=0.0, log_points=12, progress=False, resume=resume)  # fmt: skip
    return model


def test_snapshots_are_written_at_the_log_spaced_steps_and_hold_the_weights(tmp_path):
    model = train(tmp_path / "run")
    snapshots = list_snapshots(tmp_path / "run")
    assert list(snapshots) == log_spaced_steps(60, SNAPSHOT_POINTS)  # 0, 1, 2, …, 60
    assert snapshots[60].name == "step_000060.safetensors"
    final = load_file(snapshots[60])
    assert all(torch.equal(final[name], value) for name, value in model.state_dict().items())
    first = load_file(snapshots[0])
    initial = build("mlp:depth=2,width=8,bias=false", DATA.input_shape, 3, seed=0).state_dict()
    assert all(torch.equal(first[name], value) for name, value in initial.items())
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["snapshots"] == "log"
    assert not list((tmp_path / "run" / "snapshots").glob(".*"))  # no temporary file left


def test_a_resumed_run_writes_the_snapshots_of_an_uninterrupted_one_bit_for_bit(tmp_path):
    train(tmp_path / "a")
    with pytest.raises(Interrupt):
        train(tmp_path / "b", stop=20)
    assert max(list_snapshots(tmp_path / "b")) < 20
    train(tmp_path / "b", resume=True)
    expected, resumed = list_snapshots(tmp_path / "a"), list_snapshots(tmp_path / "b")
    assert list(expected) == list(resumed)
    for step in expected:
        assert expected[step].read_bytes() == resumed[step].read_bytes(), step


def test_snapshots_need_a_run_directory_and_a_known_schedule():
    model = build("mlp:depth=2,width=8,bias=false", DATA.input_shape, 3, seed=0)
    with pytest.raises(InvalidArgumentError, match="pass run_dir= too"):
        fit(model, DATA, steps=2, snapshots="log", progress=False)
    with pytest.raises(InvalidArgumentError, match="snapshots"):
        fit(model, DATA, steps=2, snapshots="linear", progress=False)


@pytest.mark.slow  # trains and diagnoses ~12 snapshots: several seconds
def test_diagnose_run_dir_writes_trends_over_the_steps(tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--dataset", "gaussians", "--data-option", "num_classes=3",
                                  "--data-option", "dim=3", "--data-option", "n_per_class=20", "--model",
                                  "mlp:depth=2,width=8,bias=false", "--loss", "cross-entropy", "--steps", "4",
                                  "--lr", "0.5", "--snapshots", "log", "--run-dir", str(run), "--no-progress"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["diagnose", str(run), "--no-progress", "--no-kkt"])
    assert result.exit_code == 0, result.output
    out = run / "diagnosis"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert list(rows[0]) == ["step", "section", "layer", "metric", "value", "variant"]
    steps = sorted({int(row["step"]) for row in rows})
    assert steps == list(list_snapshots(run))
    accuracy = {
        int(r["step"]): float(r["value"]) for r in rows if r["metric"] == "accuracy" and r["variant"] == "train"
    }
    logged = {int(float(r["step"])): float(r["accuracy"]) for r in csv.DictReader((run / "metrics.csv").open())}
    assert accuracy == pytest.approx({step: logged[step] for step in steps})  # the training loop's own accuracy
    assert (out / "figures" / "nc1_by_layer.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "nc1_by_layer.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "figures" / "trends.png").read_bytes()[:4] == b"\x89PNG"
    assert "Trends over training" in (out / "report.html").read_text()


def test_diagnose_run_dir_without_snapshots_or_with_a_model_is_one_line(tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--steps", "3", "--run-dir", str(run), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["diagnose", str(run)])
    assert (
        result.exit_code == 2 and "has no weight snapshots in snapshots/; train with --snapshots log" in result.output
    )
    result = runner.invoke(app, ["diagnose", str(run), "--model", "mlp"])
    assert result.exit_code == 2 and "RUN_DIR brings its own model" in result.output
    assert not (run / "diagnosis").exists()
