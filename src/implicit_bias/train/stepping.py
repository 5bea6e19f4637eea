"""The backward and optimizer calls of :func:`~implicit_bias.train.fit`'s training step, without torch's per-call
Python.

A small model's step is dominated by per-call overhead, and torch adds much of it around a few kernels:
``Tensor.backward`` normalizes and validates its arguments before it runs the autograd engine (~25 µs),
``zero_grad`` runs under a profiler scope and a TorchDynamo guard (~20 µs), and every ``step`` runs inside the
wrapper that ``torch.optim.Optimizer`` puts around each subclass's ``step`` — a profiler scope and the step hooks
(~25–50 µs; ``SGD.step`` 40 µs through it, 16 µs without, on one tensor). :class:`Stepper` makes the same calls
without that wrapping, and only while no step hook is registered and no profiler runs (a profile of ``fit`` then
shows torch's own scopes):

- ``backward``: the autograd engine run that ``Tensor.backward`` ends with (``torch.autograd.graph.
  _engine_run_backward``, which keeps torch's logging hooks and compiler context), given the seed gradient that
  ``backward`` would have formed — skipped is only the checking of arguments that ``fit`` forms itself (a 0-d
  log ℒ of a plain tensor, and a seed of its shape, dtype and device); a tensor subclass goes through
  ``Tensor.backward``;

- ``zero_grad``: ``p.grad = None`` for every parameter of every group — what ``Optimizer.zero_grad(
  set_to_none=True)`` does — unless the optimizer's class overrides ``zero_grad``;
- ``step``: the class's own ``step`` (torch's SGD, the log-frame optimizers of :mod:`implicit_bias.dynamics`, a
  user's), the function the wrapper calls between its hooks — so the update is the optimizer's own, bit for bit.

An optimizer whose ``step`` or ``zero_grad`` was replaced on the instance (an LR scheduler's step counter) is
called as it is.
"""

from __future__ import annotations

import torch
from torch.autograd.graph import _engine_run_backward
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks


class Stepper:
    """``backward(objective)``, ``zero_grad()`` and ``step(**kwargs)`` of ``optimizer``, without torch's wrapping
    where nothing observes it."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        patched = vars(optimizer)  # an instance-level step or zero_grad (an LR scheduler's counter) must run
        self.clears_directly = type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad and "zero_grad" not in patched
        step = type(optimizer).step
        wrapped = getattr(step, "hooked", False) and "step" not in patched
        self.inner_step = getattr(step, "__wrapped__", None) if wrapped else None  # the class's own step

    def backward(self, objective: torch.Tensor, seed: torch.Tensor | None = None) -> None:
        """``objective.backward(seed)``: accumulate ∂objective/∂θ · seed into the parameters' ``.grad`` (seed 1 when
        None); ``objective`` is 0-d, and ``seed`` too."""
        if type(objective) is not torch.Tensor or torch.autograd._profiler_enabled():
            objective.backward(seed)
            return
        seed = torch.ones_like(objective) if seed is None else seed
        _engine_run_backward((objective,), (seed,), False, False, (), allow_unreachable=True, accumulate_grad=True)

    def zero_grad(self) -> None:
        if not self.clears_directly or torch.autograd._profiler_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            return
        for parameter in self.parameters:
            parameter.grad = None

    def step(self, **kwargs: float) -> None:
        if self.inner_step is None or self._observed():
            self.optimizer.step(**kwargs)
        else:
            self.inner_step(self.optimizer, **kwargs)

    def _observed(self) -> bool:
        """True while a step hook is registered or a profiler runs: then torch's wrapper must run."""
        optimizer = self.optimizer
        return bool(
            optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
            or torch.autograd._profiler_enabled()
        )
