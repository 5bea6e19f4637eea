"""The optimizer calls of :func:`~implicit_bias.train.fit`'s training step, without torch's per-call Python.

A small model's step is dominated by per-call overhead, and ``torch.optim`` adds much of it around a few foreach
kernels: ``zero_grad`` runs under a profiler scope and a TorchDynamo guard (~20 µs); every ``step`` runs inside
the wrapper that ``torch.optim.Optimizer`` puts around each subclass's ``step`` — a profiler scope and the step
hooks (~40 µs) — and ``SGD.step`` adds a grad-mode switch and a regrouping of the parameters by device and dtype
(together ~60 µs for one tensor, ~120 µs for 23, against ~10 µs of update). :class:`Stepper` makes the same
calls directly where that is exact, and only while no step hook is registered and no profiler runs (a profile of
``fit`` then shows torch's own scopes):

- ``zero_grad``: ``p.grad = None`` for every parameter of every group — what ``Optimizer.zero_grad(
  set_to_none=True)`` does — unless the optimizer's class overrides ``zero_grad``;
- ``step`` of a ``torch.optim.SGD`` (exactly that class) with ``foreach=True``, no ``maximize``,
  ``differentiable`` or ``fused``, a float ``lr``, dense gradients on every parameter and momentum buffers
  already made: the foreach update of ``torch.optim.sgd._multi_tensor_sgd`` (weight decay, momentum, dampening,
  Nesterov), the same operations in the same order, so bitwise the same parameters and buffers
  (``tests/test_stepping.py`` checks it against ``SGD.step``);
- any other ``step`` (the first momentum step, which makes the buffers, the log-frame optimizers of
  :mod:`implicit_bias.dynamics`, a user's optimizer): the class's own ``step``, called without torch's wrapper —
  the function the wrapper calls between its hooks.

An optimizer whose ``step`` or ``zero_grad`` was replaced on the instance (an LR scheduler's step counter) is
called as it is. The direct SGD update needs every parameter on one device in one dtype (then torch's regrouping
is one group), as :func:`~implicit_bias.train.loop.placement` requires of ``fit``'s model.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks


class Stepper:
    """``zero_grad()`` and ``step(**kwargs)`` of ``optimizer``, on the direct path where it is exact."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        patched = vars(optimizer)  # an instance-level step or zero_grad (an LR scheduler's counter) must run
        self.clears_directly = type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad and "zero_grad" not in patched
        step = type(optimizer).step
        wrapped = getattr(step, "hooked", False) and "step" not in patched
        self.inner_step = getattr(step, "__wrapped__", None) if wrapped else None  # the class's own step
        one_placement = len({(p.device, p.dtype) for p in self.parameters}) == 1  # torch's regrouping is a no-op
        self.updates_directly = (
            self.inner_step is not None
            and type(optimizer) is torch.optim.SGD
            and one_placement
            and all(
                group["foreach"] and not (group["maximize"] or group["differentiable"] or group["fused"])
                for group in optimizer.param_groups
            )
        )

    def zero_grad(self) -> None:
        if not self.clears_directly or torch.autograd._profiler_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            return
        for parameter in self.parameters:
            parameter.grad = None

    def step(self, **kwargs: float) -> None:
        if self.inner_step is None or self._observed():
            self.optimizer.step(**kwargs)
        elif not (self.updates_directly and not kwargs and self._sgd_step()):
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

    def _sgd_step(self) -> bool:
        """SGD's foreach update, or False (nothing done) where it would not be exactly ``SGD.step``'s."""
        optimizer = self.optimizer
        updates = []
        for group in optimizer.param_groups:
            params = group["params"]
            grads = [p.grad for p in params]
            if not params or any(g is None or g.is_sparse for g in grads) or isinstance(group["lr"], torch.Tensor):
                return False
            buffers = None
            if group["momentum"] != 0:
                buffers = [optimizer.state[p].get("momentum_buffer") for p in params]
                if any(b is None for b in buffers):
                    return False
            updates.append((group, params, grads, buffers))
        with torch.no_grad():
            for group, params, grads, buffers in updates:
                if group["weight_decay"] != 0:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                if buffers is not None:
                    torch._foreach_mul_(buffers, group["momentum"])
                    torch._foreach_add_(buffers, grads, alpha=1 - group["dampening"])
                    if group["nesterov"]:
                        torch._foreach_add_(grads, buffers, alpha=group["momentum"])
                    else:
                        grads = buffers
                torch._foreach_add_(params, grads, alpha=-group["lr"])
        return True
