"""Host syncs per training step, counted: every read of a tensor's value on the host goes through
``Tensor.item`` / ``__float__`` / ``__int__`` / ``__index__`` / ``__bool__`` / ``tolist``, which are wrapped here.

On a GPU each such read waits for the device; ``fit`` reads none on the hot path of gd / sgd, and exactly one
(the value log ℒ, which the optimizer takes) for the log-frame optimizers. The NaN / overflow guard stays on the
device and is read at log steps, naming the first step that went wrong.
"""

import math
from collections import Counter

import pytest
import torch
from torch import nn

from implicit_bias.data import load
from implicit_bias.dynamics import OPTIMIZERS
from implicit_bias.errors import NumericalError
from implicit_bias.losses import log_loss
from implicit_bias.models import build
from implicit_bias.train import fit

READS = ("item", "__float__", "__int__", "__index__", "__bool__", "tolist")

# syncs per step between two log points, by optimizer (the README's table)
SYNCS_PER_STEP = {
    "gd": 0,
    "sgd": 0,
    "adam": 1,
    "normalized-gd": 1,
    "loss-based": 1,
    "sign": 1,
    "coordinate": 1,
    "dual-accelerated": 1,
}
OPTIONS = {"sgd": {"momentum": 0.9}, "normalized-gd": {"degree": 2.0}, "sign": {"normalize": True}}


@pytest.fixture
def reads(monkeypatch):
    """Counts host reads of tensor values by kind while the test runs."""
    counts: Counter = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def train(optimizer: str, steps: int, batch_size: int | None = None) -> None:
    data = load("gaussians", seed=0)
    model = build("mlp:depth=2,width=8,bias=false", data.input_shape, data.num_classes, seed=0).double()
    fit(model, data, loss="cross-entropy", optimizer=optimizer, optimizer_options=OPTIONS.get(optimizer), lr=0.01,
        steps=steps, batch_size=batch_size, log_points=1, progress=False)  # fmt: skip


def test_the_table_covers_every_optimizer():
    assert set(SYNCS_PER_STEP) == set(OPTIMIZERS)


@pytest.mark.parametrize("optimizer", sorted(SYNCS_PER_STEP))
def test_host_syncs_per_step_between_log_points(optimizer, reads):
    # log_points=1 logs steps 0 and `steps` only: the difference of two runs is the steps between log points
    train(optimizer, 3)
    short = sum(reads.values())
    reads.clear()
    train(optimizer, 11)
    assert (sum(reads.values()) - short) / 8 == SYNCS_PER_STEP[optimizer], dict(reads)


def test_minibatches_add_no_sync(reads):
    train("sgd", 3, batch_size=32)
    short = sum(reads.values())
    reads.clear()
    train("sgd", 11, batch_size=32)
    assert sum(reads.values()) == short


def first_non_finite_step(lr: float, steps: int) -> tuple[int, float]:
    """The same gradient descent by hand, checked at every step: (step, log ℒ) of the first non-finite loss."""
    data = load("gaussians", seed=0)
    model = build("mlp:bias=false", data.input_shape, 3, seed=0).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        value = log_loss(model(data.X), data.y, "exponential", reduction="mean", validate=False)
        if not math.isfinite(float(value.detach())):
            return step, float(value.detach())
        optimizer.zero_grad()
        torch.exp(value).backward()
        optimizer.step()
    raise AssertionError("the hand loop did not diverge")


def test_the_device_guard_names_the_first_non_finite_step():
    step, value = first_non_finite_step(1e6, 50)
    assert step > 1  # not a log step: the guard found it in its buffer
    data = load("gaussians", seed=0)
    model = build("mlp:bias=false", data.input_shape, 3, seed=0).double()
    with pytest.raises(NumericalError, match=rf"became {value} at step {step} .*learning rate 1e\+06"):
        fit(model, data, loss="exponential", optimizer="gd", steps=50, lr=1e6, log_points=1, progress=False)


def test_an_exact_mse_fit_trains_on_without_a_sync_and_only_weight_decay_moves():
    # W = I fits one-hot targets exactly: log ℒ = −inf is no error for mse, ∇ℒ = 0, and SGD's decay acts alone
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2, dtype=torch.float64))
    X, y = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    fit(model, (X, y), loss="mse", optimizer="gd", optimizer_options={"weight_decay": 0.1}, lr=0.1, steps=1,
        log_points=1, progress=False)  # fmt: skip
    assert torch.equal(model.weight.detach(), (1 - 0.1 * 0.1) * torch.eye(2, dtype=torch.float64))
