"""Resumption: refused changes, extensions, probe state, RNG state, damaged checkpoints and SIGKILLed runs."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from implicit_bias.cli.app import app
from implicit_bias.data import load
from implicit_bias.errors import CorruptFileError, InvalidArgumentError
from implicit_bias.models import build
from implicit_bias.train import MarginProbe, TrainConfig, fit, load_checkpoint, norms_probe, resume_run, run
from implicit_bias.train.probes import DirectionProbe
from implicit_bias.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, PREVIOUS_CHECKPOINT_FILE

DATA = load("gaussians", num_classes=3, dim=3, n_per_class=30, seed=1)


class Interrupt(Exception):
    pass


class Stop:
    """A probe that interrupts the run at its first logged step ≥ ``at`` (never, for None)."""

    def __init__(self, at=None):
        self.at = at

    def __call__(self, context):
        if self.at is not None and context.step >= self.at:
            raise Interrupt
        return {}


def train(run_dir, *, resume=False, stop=None, optimizer="sgd", options=None, batch_size=20, **changes):
    """A small run with stateful probes, checkpointed after every step; returns (model, history)."""
    model = build("mlp:depth=3,width=16,bias=false", DATA.input_shape, 3, seed=0)
    settings = {
        "loss": "cross-entropy",
        "optimizer": optimizer,
        "optimizer_options": {"momentum": 0.9} if options is None else options,
        "steps": 60,
        "lr": 0.05,
        "batch_size": batch_size,
        "probes": [MarginProbe(), DirectionProbe(), norms_probe, Stop(stop)],
        "checkpoint_seconds": 0.0,
        "log_points": 12,
        "progress": False,
    }
    history = fit(model, DATA, run_dir=run_dir, resume=resume, **{**settings, **changes})
    return model, history


def logged(history):
    """Every logged value but the wall-clock time, as exact reprs (bit for bit, −0.0 ≠ 0.0)."""
    return [{k: repr(v) for k, v in row.items() if k != "time"} for row in history]


def assert_same_parameters(model, reference):
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    "optimizer,options,batch_size",
    [("adam", {"eps": 1e-10}, 16), ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}, 20), ("normalized-gd", {}, None)],
)
def test_a_resumed_run_logs_every_value_of_an_uninterrupted_one_bit_for_bit(tmp_path, optimizer, options, batch_size):
    kind = {"optimizer": optimizer, "options": options, "batch_size": batch_size}
    reference, expected = train(None, **kind)
    with pytest.raises(Interrupt):
        train(tmp_path / "b", stop=25, **kind)
    model, history = train(tmp_path / "b", resume=True, **kind)
    assert_same_parameters(model, reference)
    assert logged(history) == logged(expected)
    assert sum("direction_cosine" in row for row in history) == len(history) - 1  # all but step 0's


def test_resuming_with_other_settings_is_refused_in_one_line(tmp_path):
    train(tmp_path / "r")
    before = (tmp_path / "r" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(InvalidArgumentError) as caught:
        train(tmp_path / "r", resume=True, lr=5.0, loss="exponential")
    message = str(caught.value)
    assert "\n" not in message
    assert "loss: cross-entropy → exponential; lr: 0.05 → 5.0; only steps may change" in message
    with pytest.raises(InvalidArgumentError, match=r"steps=50: its checkpoint is already at step 60; pass steps >= 60"):
        train(tmp_path / "r", resume=True, steps=50)
    both = r"with other settings than it was trained with: lr: 0.05 → 0.1; probes: \[MarginProbe, DirectionProbe, "
    with pytest.raises(InvalidArgumentError, match=both + r"norms_probe, Stop\] → \[MarginProbe\]; only steps"):
        train(tmp_path / "r", resume=True, lr=0.1, probes=[MarginProbe()])
    assert (tmp_path / "r" / CHECKPOINT_FILE).read_bytes() == before
    assert yaml.safe_load((tmp_path / "r" / CONFIG_FILE).read_text())["steps"] == 60


def quick_config(**changes):
    values = {"dataset": "gaussians", "data_options": {"num_classes": 2, "dim": 3}, "model": "mlp:width=8,bias=false"}
    return TrainConfig(**{**values, "steps": 40, "lr": 0.05, "log_points": 8, "probes": ["margins"], **changes})


def test_an_edited_config_yaml_is_refused_by_the_cli_resume(tmp_path):
    run(quick_config(), tmp_path / "r", progress=False)
    path = tmp_path / "r" / CONFIG_FILE
    path.write_text(path.read_text().replace("lr: 0.05", "lr: 0.5"))
    with pytest.raises(InvalidArgumentError, match=r"config.yaml no longer matches .* at step 40: lr: 0.05 → 0.5;"):
        resume_run(tmp_path / "r", progress=False)
    result = CliRunner().invoke(app, ["resume", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 2 and "lr: 0.05 → 0.5" in result.output


def test_an_extension_keeps_the_logged_rows_and_follows_the_new_schedule_beyond_the_checkpoint(tmp_path):
    """Extending a 40-step run to 100 steps: the 40-step run's rows, then the 100-step run's rows after step 40
    (log-spaced over 100 steps), and the 100-step run's parameters."""
    short = run(quick_config(), tmp_path / "r", progress=False)
    straight = run(quick_config(steps=100), tmp_path / "straight", progress=False)
    result = CliRunner().invoke(app, ["resume", str(tmp_path / "r"), "--steps", "100", "--no-progress"])
    assert result.exit_code == 0, result.output
    extended = load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)
    expected = logged(short) + [row for row in logged(straight) if int(float(row["step"])) > 40]
    assert logged(extended.history) == expected
    reference = load_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE)
    assert all(torch.equal(extended.model[name], tensor) for name, tensor in reference.model.items())
    assert yaml.safe_load((tmp_path / "r" / CONFIG_FILE).read_text())["steps"] == 100
    assert "steps changed from 40 to 100 at step 40" in (tmp_path / "r" / LOG_FILE).read_text()


def test_fit_extends_a_run_with_steps_and_records_it(tmp_path):
    train(tmp_path / "r", steps=30)
    model, history = train(tmp_path / "r", resume=True, steps=60)
    reference, _ = train(None)
    assert_same_parameters(model, reference)
    assert yaml.safe_load((tmp_path / "r" / CONFIG_FILE).read_text())["steps"] == 60
    assert "steps changed from 30 to 60 at step 30" in (tmp_path / "r" / LOG_FILE).read_text()
    assert int(history.last["step"]) == 60


def flip_last_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # inside the tensor payload: safetensors parses it, only the digest notices
    path.write_bytes(bytes(raw))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [truncate, flip_last_byte])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    reference, expected = train(None)
    with pytest.raises(Interrupt):
        train(tmp_path / "b", stop=20)
    newest = tmp_path / "b" / CHECKPOINT_FILE
    damage(newest)
    with pytest.raises(CorruptFileError):
        load_checkpoint(newest)
    # checkpoints after every step: the previous one is one step older than the newest (at the 20th step)
    with pytest.warns(
        RuntimeWarning, match=rf"{CHECKPOINT_FILE}' is unreadable; .*{PREVIOUS_CHECKPOINT_FILE}', at step 19"
    ):
        model, history = train(tmp_path / "b", resume=True)
    assert_same_parameters(model, reference)
    assert logged(history) == logged(expected)
    assert "at step 19" in (tmp_path / "b" / LOG_FILE).read_text()


def test_the_cli_says_in_one_line_which_checkpoint_it_falls_back_to(tmp_path):
    run(quick_config(checkpoint_seconds=0.0), tmp_path / "r", progress=False)
    truncate(tmp_path / "r" / CHECKPOINT_FILE)
    result = CliRunner().invoke(app, ["resume", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    # saved after the 40th step, then again at the end with the last row: the previous one is at step 40 too
    assert len(warning) == 1 and warning[0].endswith(f"{PREVIOUS_CHECKPOINT_FILE}', at step 40"), result.output


def test_two_damaged_checkpoints_are_a_clear_error(tmp_path):
    with pytest.raises(Interrupt):
        train(tmp_path / "b", stop=10)
    truncate(tmp_path / "b" / CHECKPOINT_FILE)
    flip_last_byte(tmp_path / "b" / PREVIOUS_CHECKPOINT_FILE)
    both = (
        rf"no readable checkpoint: '.*{CHECKPOINT_FILE}' is not .*; and '.*{PREVIOUS_CHECKPOINT_FILE}' is not .*SHA-256"
    )
    with pytest.raises(CorruptFileError, match=both):
        train(tmp_path / "b", resume=True)


def test_a_format_1_checkpoint_is_refused_with_the_reason(tmp_path):
    path = tmp_path / CHECKPOINT_FILE
    save_file({"model/w": torch.zeros(2)}, path, metadata={"format": "implicit-bias-checkpoint/1", "step": "3"})
    with pytest.raises(CorruptFileError, match="old format 'implicit-bias-checkpoint/1'.*start a new run"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_a_run_with_dropout_resumes_bit_identically_on_its_device(tmp_path, device):
    """Dropout draws from the generator of the model's device: its state must be checkpointed and restored."""

    def dropout_run(run_dir, stop=None, resume=False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 3)
        )
        fit(model, DATA, steps=40, lr=0.05, device=device, probes=[Stop(stop)], run_dir=run_dir, resume=resume,
            checkpoint_seconds=0.0, log_points=8, progress=False)  # fmt: skip
        return model

    reference = dropout_run(None)
    with pytest.raises(Interrupt):
        dropout_run(tmp_path / "b", stop=15)
    assert (load_checkpoint(tmp_path / "b" / CHECKPOINT_FILE).cuda_rng is not None) == (device == "cuda")
    assert_same_parameters(dropout_run(tmp_path / "b", resume=True), reference)


# --- SIGKILL: the test forks one training process per kill; each kills itself (SIGKILL) at a chosen os.replace of
# its run directory's files, so the moments are exact, and nothing is imported again (the test takes seconds) ---


def killing_replace(original, target, when, count):
    """``os.replace`` that SIGKILLs the process at its ``count``-th rename onto a file named ``target``,
    ``before`` or ``after`` renaming."""
    seen = [0]

    def replace(source, destination):
        seen[0] += Path(destination).name == target
        hit = Path(destination).name == target and seen[0] == count
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        original(source, destination)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    return replace


def killed_run(run_dir, resume, target, when, count, timeout=60.0):
    """How a forked process training in ``run_dir`` ended: "SIGKILL", or its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: one thread (no OpenMP pool inherited), never returns into pytest
        status = 1
        try:
            torch.set_num_threads(1)
            os.replace = killing_replace(os.replace, target, when, count)
            train(run_dir, resume=resume)
            status = 0
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "timed out"
    return "SIGKILL" if os.WIFSIGNALED(ended[1]) and os.WTERMSIG(ended[1]) == signal.SIGKILL else ended[1]


def no_fsync(handle):
    """A SIGKILL, unlike a power cut, loses no written page, so fsync (7 ms a checkpoint here) is skipped."""


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", no_fsync)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_runs_killed_during_and_between_checkpoint_writes_resume_bit_identically(tmp_path):
    """One run SIGKILLed three times and resumed each time: after a metrics row is written (before the
    checkpoint holding it), with a new checkpoint complete on disk but not yet renamed (during the write), and
    between renaming the current checkpoint to the previous one and the new one into place (no newest file)."""
    killed = tmp_path / "killed"
    assert killed_run(killed, False, "metrics.csv", "after", 7) == "SIGKILL"
    assert killed_run(killed, True, PREVIOUS_CHECKPOINT_FILE, "before", 15) == "SIGKILL"
    assert [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]  # the unrenamed new checkpoint
    assert killed_run(killed, True, CHECKPOINT_FILE, "before", 12) == "SIGKILL"
    assert load_checkpoint(killed / PREVIOUS_CHECKPOINT_FILE).step < 60 and not (killed / CHECKPOINT_FILE).exists()
    with pytest.warns(RuntimeWarning, match=f"{CHECKPOINT_FILE}' is missing; resuming from the previous one"):
        model, history = train(killed, resume=True)
    reference, expected = train(None)
    assert_same_parameters(model, reference)
    assert logged(history) == logged(expected)
    assert logged(load_checkpoint(killed / CHECKPOINT_FILE).history) == logged(expected)
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]


def test_a_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path: Path) -> None:
    # Same settings, other parameter names: torch's multi-line load_state_dict message becomes one line.
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2
    fit(torch.nn.Linear(3, 1, dtype=torch.float64), (X, y), steps=2, run_dir=tmp_path / "run", progress=False)
    other = torch.nn.Sequential(torch.nn.Linear(3, 1, dtype=torch.float64))
    with pytest.raises(CorruptFileError, match=r"does not match this model .*Missing key\(s\).*\"0\.weight\"") as info:
        fit(other, (X, y), steps=2, run_dir=tmp_path / "run", resume=True, progress=False)
    assert "\n" not in str(info.value)
