"""The deep unconstrained features model (L-DUFM) of Súkeník, Mondelli & Lampert (2023, 2024).

Free features H₁ ∈ ℝ^{d×N} (N = nK, n samples per class, columns grouped by class), weights W₁ … W_L (W_l ∈ ℝ^{d×d}
for l < L, W_L ∈ ℝ^{K×d}), ReLU σ after W₁ … W_{L−1}, no biases:

    ℒ = (1/2N)‖W_L σ(W_{L−1} ⋯ σ(W₁H₁)) − Y‖²_F + Σ_l (λ_{W_l}/2)‖W_l‖²_F + (λ_{H₁}/2)‖H₁‖²_F

(SCIENCE.md §5; the λ_{H₁} term is not divided by N, so n scales it). ``loss="cross-entropy"`` replaces the
first term by the mean cross-entropy (Garrod & Keating 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgumentError, NumericalError
from ..validation import check_choice, check_scalar


@dataclass(frozen=True)
class Activations:
    """Class-grouped activations of every layer: ``inputs[l]`` = H_{l+1}, the input of W_{l+1} (``inputs[0]`` = H₁,
    then post-ReLU features), ``pre[l]`` = W_{l+1} H_{l+1} before the ReLU (the last is the output)."""

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.pre[-1]


class DUFM(nn.Module):
    """An L-DUFM (module docstring) with its data: ``labels`` (N,), class c in columns c·n … (c+1)·n − 1.

    ``lambdas`` is one λ for every term or the L + 1 values (λ_{H₁}, λ_{W₁}, …, λ_{W_L}). Entries of H₁ and every
    W_l start i.i.d. N(0, ``init_scale``²) — the scale decides which optimum GD finds (SCIENCE.md §5).
    """

    def __init__(
        self,
        num_classes: int,
        per_class: int,
        *,
        depth: int = 4,
        width: int = 30,
        lambdas: float | Sequence[float] = 0.004,
        init_scale: float = 0.1,
        loss: str = "mse",
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_scalar("num_classes", num_classes, int, low=2)
        check_scalar("per_class", per_class, int, low=1)
        check_scalar("depth", depth, int, low=2)
        check_scalar("width", width, int, low=1)
        check_choice("loss", loss, ("mse", "cross-entropy"))
        values = [float(lambdas)] * (depth + 1) if isinstance(lambdas, (int, float)) else [float(v) for v in lambdas]
        if len(values) != depth + 1 or any(v < 0 for v in values):
            raise InvalidArgumentError(
                f"lambdas must be one non-negative number or {depth + 1} of them (λ_H1, λ_W1 … λ_W{depth}), "
                f"got {lambdas!r}"
            )
        self.num_classes, self.per_class, self.depth, self.width, self.loss_name = (
            num_classes,
            per_class,
            depth,
            width,
            loss,
        )
        self.lambdas = values
        generator = torch.Generator().manual_seed(seed)

        def draw(*shape: int) -> nn.Parameter:
            return nn.Parameter(init_scale * torch.randn(*shape, generator=generator, dtype=torch.float64))

        size = num_classes * per_class
        self.features = draw(width, size)
        self.weights = nn.ParameterList([draw(width, width) for _ in range(depth - 1)] + [draw(num_classes, width)])
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(per_class))
        self.register_buffer("targets", torch.nn.functional.one_hot(self.labels, num_classes).T.to(torch.float64))

    @property
    def size(self) -> int:
        """N = nK."""
        return self.num_classes * self.per_class

    def activations(self) -> Activations:
        inputs, pre = [self.features], []
        for index, weight in enumerate(self.weights):
            pre.append(weight @ inputs[-1])
            if index < self.depth - 1:
                inputs.append(torch.relu(pre[-1]))
        return Activations(inputs, pre)

    def regularization(self) -> torch.Tensor:
        """Σ_l (λ_{W_l}/2)‖W_l‖²_F + (λ_{H₁}/2)‖H₁‖²_F."""
        terms = [self.features, *self.weights]
        return sum(lam / 2 * t.square().sum() for lam, t in zip(self.lambdas, terms))

    def fit_term(self, output: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return (output - self.targets).square().sum() / (2 * self.size)
        return torch.nn.functional.cross_entropy(output.T, self.labels)

    def loss(self) -> torch.Tensor:
        """The regularized objective ℒ (module docstring)."""
        return self.fit_term(self.activations().output) + self.regularization()

    def gradients(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(∂ℒ/∂H₁, [∂ℒ/∂W_l]) by hand-written backpropagation for the MSE loss (cheaper than autograd on these
        small dense products); autograd for cross-entropy."""
        if self.loss_name != "mse":
            grads = torch.autograd.grad(self.loss(), [self.features, *self.weights])
            return grads[0], list(grads[1:])
        with torch.no_grad():
            acts = self.activations()
            upstream = (acts.output - self.targets) / self.size
            weight_grads: list[torch.Tensor] = [torch.empty(0)] * self.depth
            for index in range(self.depth - 1, -1, -1):
                weight = self.weights[index]
                weight_grads[index] = upstream @ acts.inputs[index].T + self.lambdas[index + 1] * weight
                upstream = weight.T @ upstream
                if index > 0:
                    upstream = upstream * (acts.pre[index - 1] > 0)
            feature_grad = upstream + self.lambdas[0] * self.features
        return feature_grad, weight_grads

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One full-batch gradient step θ ← θ − lr ∇ℒ."""
        feature_grad, weight_grads = self.gradients()
        self.features -= lr * feature_grad
        for weight, grad in zip(self.weights, weight_grads):
            weight -= lr * grad


def train_dufm(model: DUFM, *, steps: int, lr: float, log_every: int = 100) -> list[tuple[int, float]]:
    """Full-batch GD in float64 for ``steps`` steps; returns (step, ℒ) every ``log_every`` steps and at the end.

    Raises
    ------
    NumericalError
        If ℒ becomes NaN or infinite (lr too large).
    """
    check_scalar("steps", steps, int, low=0)
    check_scalar("lr", lr, (int, float), low=0.0, low_inclusive=False)
    losses = []
    for step in range(steps + 1):
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                value = float(model.loss())
            if not math.isfinite(value):
                raise NumericalError(f"the DUFM loss became {value} at step {step}; lower the learning rate ({lr})")
            losses.append((step, value))
        if step < steps:
            model.step(lr)
    return losses
