"""The training loop: histories, terminal-phase numerics, errors, checkpoints and exact resumption."""

import math

import pytest
import torch

from implicit_bias.data import load
from implicit_bias.errors import CorruptFileError, InvalidArgumentError, NumericalError, UnknownNameError
from implicit_bias.losses import log_loss
from implicit_bias.metrics import normalized_margin
from implicit_bias.models import build
from implicit_bias.train import MarginProbe, TrainConfig, fit, resume_run, run
from implicit_bias.train.rundir import CHECKPOINT_FILE


def test_fit_on_a_tensor_pair_with_plus_minus_labels_logs_on_log_time():
    data = load("linear-separable", n=60, dim=4, seed=0)
    y_pm = 2 * data.y - 1
    model = build("linear:bias=false", data.input_shape, 2, seed=0)
    history = fit(
        model,
        (data.X, y_pm),
        loss="logistic",
        optimizer="gd",
        steps=300,
        lr=0.5,
        log_points=20,
        progress=False,
    )
    steps = [row["step"] for row in history]
    assert steps[0] == 0 and steps[-1] == 300 and steps == sorted(set(steps))
    assert history.last["accuracy"] == 1.0 and history.last["log_loss"] < history.rows[0]["log_loss"]
    assert model.head.weight.dtype == torch.float32  # fit keeps the model's own dtype (build makes float32)


def test_normalized_gd_goes_deep_into_the_terminal_phase_and_reaches_the_svm_margin():
    data = load("linear-separable", n=100, dim=5, margin=0.2, seed=4)
    model = build("linear:bias=false", data.input_shape, 2, seed=0)
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer="normalized-gd",
        steps=3000,
        lr=10.0,
        probes=[MarginProbe(degree=1)],
        log_points=30,
        progress=False,
    )
    log_losses = [row["log_loss"] for row in history]
    assert min(log_losses) < -1000  # ℒ < 1e-434: far below the smallest float64
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert torch.isfinite(model.head.weight).all()
    # the planted margin 0.2 is the hard-margin SVM's (see test_data); normalized GD approaches it
    assert normalized_margin(model, data.X, data.y, degree=1) == pytest.approx(0.2, rel=0.02)


def test_divergence_is_reported_not_propagated():
    data = load("gaussians", seed=0)
    model = build("mlp:bias=false", data.input_shape, 3, seed=0)
    with pytest.raises(NumericalError, match="learning rate 1e\\+06 is probably too large"):
        fit(model, data, loss="exponential", optimizer="gd", steps=50, lr=1e6, progress=False)


def test_a_diverged_run_logs_no_nan_row(tmp_path):
    # Every step is a logged step: the NaN parameters of a diverged step are refused at the next evaluation,
    # before a row of NaN values reaches the history or metrics.csv.
    data = load("gaussians", seed=0)
    model = build("mlp:bias=false", data.input_shape, 3, seed=0)
    with pytest.raises(NumericalError, match="probably too large"):
        fit(model, data, loss="exponential", optimizer="gd", steps=50, lr=1e6, log_points=1000,
            run_dir=tmp_path / "run", progress=False)
    table = (tmp_path / "run" / "metrics.csv").read_text().lower()
    assert "nan" not in table and "inf" not in table


def test_fit_keeps_the_callers_rng_and_is_reproducible():
    data = load("gaussians", seed=0)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    results = []
    for seed in (1, 1, 2):
        model = build("mlp:width=16", data.input_shape, 3, seed=0)
        fit(
            model,
            data,
            loss="cross-entropy",
            optimizer="sgd",
            steps=40,
            lr=0.1,
            batch_size=32,
            seed=seed,
            optimizer_options={"momentum": 0.9},
            progress=False,
        )
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


def test_float32_mse_with_batchnorm_trains():
    data = load("digits", per_class=10, seed=0)
    model = build("mlp:depth=3,width=32,norm=batchnorm", data.input_shape, 10, seed=0)
    history = fit(
        model,
        data,
        loss="mse",
        optimizer="adam",
        steps=100,
        lr=1e-2,
        dtype="float32",
        batch_size=25,
        progress=False,
    )
    assert history.last["log_loss"] < history.rows[0]["log_loss"] and history.last["accuracy"] > 0.9


def test_run_directories_are_protected_and_checked(tmp_path):
    config = TrainConfig(steps=5, log_points=3)
    run(config, tmp_path / "r", progress=False)
    with pytest.raises(InvalidArgumentError, match="already holds a run"):
        run(config, tmp_path / "r", progress=False)
    with pytest.raises(InvalidArgumentError, match="not a run directory"):
        run(config, tmp_path / "empty", resume=True, progress=False)
    (tmp_path / "r" / CHECKPOINT_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    with pytest.raises(CorruptFileError, match="not a readable implicit-bias checkpoint"):
        resume_run(tmp_path / "r", progress=False)


def test_config_files_are_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nlrr: 0.1\n")
    with pytest.raises(UnknownNameError, match="'lrr'"):
        TrainConfig.from_file(path)
    path.write_text("steps: ten\n")
    with pytest.raises(InvalidArgumentError, match="steps must be int, got str 'ten'"):
        TrainConfig.from_file(path)
    path.write_text("steps: [1, 2\n")
    with pytest.raises(CorruptFileError, match="not valid YAML at line"):
        TrainConfig.from_file(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(CorruptFileError, match="must hold a mapping"):
        TrainConfig.from_file(path)
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(CorruptFileError, match="not valid YAML"):
        TrainConfig.from_file(path)


def test_margin_probe_on_a_network_with_biases_logs_what_is_defined(tmp_path):
    data = load("gaussians", seed=0)
    model = build("mlp:width=16", data.input_shape, 3, seed=0)
    history = fit(
        model,
        data,
        loss="exponential",
        optimizer="gd",
        steps=200,
        lr=0.05,
        probes=[MarginProbe()],
        run_dir=tmp_path / "r",
        log_points=5,
        progress=False,
    )
    assert all("q_min" in row and "normalized_margin" not in row for row in history)
    assert "no normalized margins for this model" in (tmp_path / "r" / "train.log").read_text()


class _SmallBatchesOnly(torch.nn.Module):
    """A bias-free 2-layer ReLU network that refuses forward passes over more than 8 samples (a model whose
    activations only fit in memory in small batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(2, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > 8:
            raise MemoryError(f"a batch of {len(x)} does not fit")
        return self.body(x).squeeze(-1)


def test_eval_batch_size_reaches_the_evaluation_and_every_probe():
    from implicit_bias.train.probes import CollapseProbe, KKTProbe, alignment_probe

    def probes() -> list:
        return [MarginProbe(), alignment_probe, KKTProbe(), CollapseProbe(layers=["body.1"])]

    data = load("gaussians", num_classes=2, n_per_class=20, test_per_class=20, seed=0)
    model = _SmallBatchesOnly().double()
    with pytest.raises(MemoryError):
        fit(model, data, loss="exponential", optimizer="gd", steps=3, lr=0.1, batch_size=8, progress=False)
    history = fit(model, data, loss="exponential", optimizer="gd", steps=3, lr=0.1, batch_size=8,
                  eval_batch_size=8, probes=probes(), progress=False)
    assert {"normalized_margin", "alignment", "kkt_epsilon", "nc1/body.1", "test_log_loss"} <= set(history.last)


def test_the_test_log_loss_is_logged_as_the_sum_over_the_test_set():
    data = load("gaussians", num_classes=2, n_per_class=30, test_per_class=30, seed=0)
    model = build("linear:bias=false", data.input_shape, 2, seed=0).double()
    history = fit(model, data, loss="logistic", optimizer="gd", steps=5, lr=0.1, progress=False)
    with torch.no_grad():  # log Σ_n log(1 + e^{−q_n}) by hand, q_n = ±Φ(x_n)
        q = (2 * data.test.y - 1).double() * model(data.test.X.double()).squeeze(-1)
        expected = math.log(float(torch.log1p(torch.exp(-q)).sum()))
    assert history.last["test_log_loss"] == pytest.approx(expected, rel=1e-12)


def test_full_batch_fit_is_bitwise_a_hand_written_loop():
    # the reference: torch's momentum SGD on ℒ = exp(log ℒ) back-propagated through an exp node, step by step
    data = load("gaussians", seed=0).to(dtype=torch.float64)
    trained, reference = (build("mlp:depth=3,width=16", data.input_shape, 3, seed=0).double() for _ in range(2))
    fit(trained, data, loss="logistic", optimizer="sgd", optimizer_options={"momentum": 0.9}, steps=200, lr=0.3,
        log_points=3, progress=False)  # fmt: skip
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3, momentum=0.9, foreach=False)
    for _ in range(200):
        optimizer.zero_grad()
        torch.exp(log_loss(reference(data.X), data.y, "logistic", reduction="mean")).backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), reference.parameters()))
