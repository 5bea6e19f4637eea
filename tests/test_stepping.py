"""fit's backward and optimizer calls without torch's per-call Python (``train.stepping.Stepper``), against torch's
own ``Tensor.backward`` / ``SGD.step`` / ``zero_grad``: the same gradients, parameters and momentum buffers bit for
bit, each update made by the optimizer's own step, and torch's wrapper wherever something observes it (hooks, profilers, schedulers, overridden
methods)."""

import importlib
import warnings

import pytest
import torch
from torch import nn

from implicit_bias.dynamics import make_optimizer
from implicit_bias.train.stepping import Stepper

SETTINGS = [
    {},
    {"weight_decay": 1e-2},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-2},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
]


def network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def loss(model: nn.Module, step: int) -> torch.Tensor:
    X = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
    return model(X).square().mean()


@pytest.fixture
def torch_updates(monkeypatch):
    """Counts the updates made by the body of torch's own ``SGD.step`` (its call of ``torch.optim.sgd.sgd``)."""
    calls = []
    module = importlib.import_module("torch.optim.sgd")  # not an attribute of torch.optim in this torch
    original = module.sgd

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "sgd", counted)
    return calls


def train(stepper_or_optimizer, model: nn.Module, steps: int = 3, **kwargs) -> None:
    for step in range(steps):
        stepper_or_optimizer.zero_grad()
        loss(model, step).backward()
        stepper_or_optimizer.step(**kwargs)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(s) or "plain")
def test_the_unwrapped_step_is_bitwise_torchs_sgd(settings, torch_updates):
    direct, reference = network(), network()
    stepper = Stepper(torch.optim.SGD(direct.parameters(), lr=0.05, foreach=True, **settings))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, foreach=True, **settings)
    for step in range(6):
        stepper.zero_grad()
        loss(direct, step).backward()
        stepper.step()
        optimizer.zero_grad()
        loss(reference, step).backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(direct.parameters(), reference.parameters()))
    if settings.get("momentum"):
        for a, b in zip(direct.parameters(), reference.parameters()):
            assert torch.equal(stepper.optimizer.state[a]["momentum_buffer"], optimizer.state[b]["momentum_buffer"])
    assert len(torch_updates) == 12  # every update, the stepper's too, made by SGD's own step
    assert stepper.inner_step is not None  # and the stepper's without torch's wrapper


@pytest.mark.parametrize("seeded", [False, True])
def test_backward_accumulates_torchs_gradients_bit_for_bit(seeded):
    direct, reference = network(), network()
    stepper = Stepper(torch.optim.SGD(direct.parameters(), lr=0.1))
    seed = torch.tensor(0.37, dtype=torch.float64) if seeded else None
    for step in range(2):  # the second call accumulates onto the first's .grad, as backward does
        stepper.backward(loss(direct, step), seed)
        loss(reference, step).backward(seed)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(direct.parameters(), reference.parameters()))


def test_backward_of_a_tensor_subclass_goes_through_its_torch_function():
    seen = []

    class Traced(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return super().__torch_function__(func, types, args, kwargs or {})

    model = network()
    objective = loss(model, 0).as_subclass(Traced)
    Stepper(torch.optim.SGD(model.parameters(), lr=0.1)).backward(objective)
    assert "backward" in seen and all(p.grad is not None for p in model.parameters())


def test_backward_of_a_constant_is_torchs_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Stepper(torch.optim.SGD(network().parameters(), lr=0.1)).backward(torch.tensor(1.0))


def test_zero_grad_clears_every_gradient():
    model = network()
    stepper = Stepper(torch.optim.SGD(model.parameters(), lr=0.1))
    loss(model, 0).backward()
    stepper.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_step_hook_runs_with_torchs_step(torch_updates):
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(1))
    train(Stepper(optimizer), model)
    assert len(seen) == 3 and len(torch_updates) == 3


def test_a_profiler_sees_torchs_scopes():
    model = network()
    stepper = Stepper(torch.optim.SGD(model.parameters(), lr=0.1, foreach=True))
    with torch.profiler.profile() as profile:
        train(stepper, model, steps=1)
    names = {event.name for event in profile.events()}
    assert {"Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad"} <= names


def test_a_learning_rate_scheduler_sees_every_step():
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    stepper = Stepper(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns if scheduler.step() comes before any optimizer.step()
        for step in range(3):
            stepper.zero_grad()
            loss(model, step).backward()
            stepper.step()
            scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 8)


def test_an_overridden_zero_grad_is_called():
    class Counting(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none: bool = True) -> None:
            Counting.calls += 1
            super().zero_grad(set_to_none)

    Stepper(Counting(network().parameters(), lr=0.1)).zero_grad()
    assert Counting.calls == 1


@pytest.mark.parametrize("name", ["normalized-gd", "loss-based", "sign"])
def test_a_log_frame_optimizer_steps_as_its_own_step(name):
    direct, reference = network(), network()
    stepper = Stepper(make_optimizer(name, direct.parameters(), lr=0.05))
    assert stepper.inner_step is not None  # the direct call is the one under test
    optimizer = make_optimizer(name, reference.parameters(), lr=0.05)
    for model, caller in ((direct, stepper), (reference, optimizer)):
        for step in range(4):
            caller.zero_grad()
            value = torch.log(loss(model, step))
            value.backward()
            caller.step(log_loss=float(value.detach()))
    assert all(torch.equal(a, b) for a, b in zip(direct.parameters(), reference.parameters()))
