"""`implicit-bias diagnose`: the example CNN end to end, and every bad input as one line with exit code 2 and no
report folder (never a traceback, never a half-written report)."""

import csv
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.diagnosis import command
from implicit_bias.models import build

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn.py"
runner = CliRunner()
SMALL = ("--data", "digits", "--data-option", "per_class=12", "--no-progress")  # 120 training images


def invoke(*args):
    return runner.invoke(app, ["diagnose", *[str(a) for a in args]])


def assert_user_error(result, fragment, out):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left


def user_file(tmp_path, text):
    path = tmp_path / "user_model.py"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The example's CNN after 30 steps of its own training loop, its weights as safetensors."""
    spec = importlib.util.spec_from_file_location("digits_cnn_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = tmp_path_factory.mktemp("weights") / "digits_cnn.safetensors"
    save_file(example.train(steps=30).state_dict(), path)
    return path


@pytest.mark.slow  # trains the example 30 steps and diagnoses it twice: ~12 CPU-seconds
def test_the_example_cnn_is_diagnosed_into_a_complete_report_folder(trained, tmp_path):
    out = tmp_path / "report"
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", trained, *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    html = (out / "report.html").read_text()
    assert "Diagnosis of DigitsCNN" in html and "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing external
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    sections = {row["section"] for row in rows}
    assert {"architecture", "rates", "margins", "collapse", "weight spectra", "feature spectra"} <= sections
    assert {row["layer"] for row in rows if row["metric"] == "nc1"} >= {"conv1", "pool2", "relu3"}
    for stem in ("nc1_by_layer", "ncc_accuracy_by_layer", "weight_singular_values"):
        assert (out / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    # the CNN has biases: not homogeneous, the reason recorded
    skipped = (out / "skipped.txt").read_text()
    assert "architecture: homogeneity degree: the model is not homogeneous" in skipped
    # a second run replaces the report in place
    again = invoke("--model", f"{EXAMPLE}:make_model", "--weights", trained, *SMALL, "--out", out, "--layers", "fc1")
    assert again.exit_code == 0, again.output
    assert {row["layer"] for row in csv.DictReader((out / "metrics.csv").open()) if row["metric"] == "nc1"} == {"fc1"}


def test_a_factory_that_raises_is_one_line(tmp_path):
    path = user_file(tmp_path, "def make_model():\n    raise ValueError('width must be even')\n")
    result = invoke("--model", f"{path}:make_model", *SMALL, "--out", tmp_path / "out")
    assert_user_error(result, "the factory raised ValueError: width must be even", tmp_path / "out")


def test_a_missing_factory_names_the_callables_there(tmp_path):
    path = user_file(tmp_path, "def build_net():\n    pass\n")
    result = invoke("--model", f"{path}:make_model", *SMALL, "--out", tmp_path / "out")
    assert_user_error(result, "has no callable 'make_model'; callables there: build_net", tmp_path / "out")


def test_weights_of_another_architecture_list_the_keys(tmp_path):
    weights = tmp_path / "mlp.safetensors"
    save_file(build("mlp:depth=2,width=8", (1, 8, 8), 10, seed=0).state_dict(), weights)
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", weights, *SMALL, "--out", tmp_path / "out")
    assert_user_error(result, "does not fit the DigitsCNN model: 8 missing: conv1.weight", tmp_path / "out")
    assert "unexpected:" in result.output


def test_a_dataset_whose_inputs_do_not_fit_the_model(tmp_path):
    result = invoke(
        "--model", f"{EXAMPLE}:make_model", "--data", "gaussians", "--data-option", "dim=5", "--out", tmp_path / "out"
    )
    assert_user_error(result, "cannot take inputs of shape (N, 5)", tmp_path / "out")


@pytest.mark.slow
def test_a_checkpoint_with_the_state_dict_nested_under_model_loads(trained, tmp_path):
    from safetensors.torch import load_file

    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": load_file(trained), "step": 30, "optimizer": {"lr": 0.05}}, checkpoint)
    out = tmp_path / "out"
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", checkpoint, *SMALL, "--out", out, "--no-kkt")
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()


def test_a_checkpoint_with_pickled_code_is_refused_by_weights_only(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": build("mlp", (1, 8, 8), 10)}, checkpoint)  # a whole module: needs unpickling code
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", checkpoint, *SMALL, "--out", tmp_path / "out")
    assert_user_error(result, "loadable with weights_only=True", tmp_path / "out")


def test_data_from_a_tensors_file_with_a_test_split(tmp_path):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()  # 3 classes
    path = tmp_path / "mine.safetensors"
    save_file({"X": X[:30], "y": y[:30], "X_test": X[30:], "y_test": y[30:]}, path)
    out = tmp_path / "out"
    result = invoke("--model", "mlp:depth=2,width=8", "--data", path, "--out", out, "--no-progress", "--no-kkt")
    assert result.exit_code == 0, result.output
    assert "mine.safetensors (train 30, test 10, 3 classes)" in (out / "report.html").read_text()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["variant"] for r in rows if r["metric"] == "accuracy"} == {"train", "test"}
    save_file({"inputs": X}, path)
    result = invoke("--model", "mlp", "--data", path, "--out", out, "--no-progress")
    assert result.exit_code == 2 and "lacks ['X', 'y']" in result.output


def test_a_damaged_weights_file_and_a_missing_one_are_one_line(tmp_path):
    damaged = tmp_path / "cut.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", damaged, *SMALL, "--out", tmp_path / "out")
    assert_user_error(result, "is not a readable safetensors file", tmp_path / "out")
    result = invoke(
        "--model", f"{EXAMPLE}:make_model", "--weights", tmp_path / "nope.pt", *SMALL, "--out", tmp_path / "out"
    )
    assert_user_error(result, "nope.pt' does not exist", tmp_path / "out")


def test_weights_saved_from_distributed_data_parallel_load_without_the_module_prefix(tmp_path):
    from implicit_bias.models.loading import load_weights

    source = build("mlp:depth=2,width=8", (4,), 3, seed=1)
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = load_weights(build("mlp:depth=2,width=8", (4,), 3, seed=2), path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_a_model_without_a_linear_classifier_reports_the_collapse_section_skipped_in_part(tmp_path):
    path = user_file(
        tmp_path,
        "from torch import nn\n"
        "def make_model(input_shape, num_classes):\n"
        "    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(32, num_classes), nn.Tanh())\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), head)\n",
    )
    out = tmp_path / "out"
    result = invoke("--model", f"{path}:make_model", *SMALL, "--out", out, "--no-kkt")
    assert result.exit_code == 0, result.output
    assert "collapse: NC3 (self-duality), NC4" in (out / "skipped.txt").read_text()
    assert "no linear classifier" in (out / "report.html").read_text()
    assert any(row["metric"] == "nc1" for row in csv.DictReader((out / "metrics.csv").open()))


def test_a_failure_while_writing_leaves_no_report_and_keeps_the_old_one(trained, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("the earlier report")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("implicit_bias.diagnosis.page.write_report", broken)
    with pytest.raises(OSError, match="disk full"):
        command.diagnose_to_folder(
            model=f"{EXAMPLE}:make_model", weights=trained, data="digits", data_options={"per_class": 3}, out=out
        )
    assert (out / "report.html").read_text() == "the earlier report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_folder_with_other_files_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = invoke("--model", "mlp:depth=2,width=8", *SMALL, "--out", out)
    assert result.exit_code == 2 and "holds files other than a diagnosis report" in result.output
    assert (out / "thesis.tex").read_text() == "precious"


@pytest.mark.slow  # starts headless Chromium: 5–13 s on 2 busy cores
def test_the_diagnosis_page_opens_cleanly_in_chromium(trained, tmp_path):
    from browser import artifact_folder, check_page_in_browser

    out = tmp_path / "report"
    result = invoke("--model", f"{EXAMPLE}:make_model", "--weights", trained, *SMALL, "--out", out, "--no-kkt")
    assert result.exit_code == 0, result.output
    shot = artifact_folder(tmp_path) / "diagnosis_digits_cnn.png"
    check_page_in_browser(out / "report.html", shot, min_images=3)  # NC1, NCC accuracy, singular values
    print(f"screenshot: {shot}")
