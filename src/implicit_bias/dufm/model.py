"""The deep unconstrained features model (L-DUFM) of Súkeník, Mondelli & Lampert (2023, 2024).

Free features H₁ ∈ ℝ^{d×N} (N = nK, n samples per class, columns grouped by class), weights W₁ … W_L (W_l ∈ ℝ^{d×d}
for l < L, W_L ∈ ℝ^{K×d}), ReLU σ after W₁ … W_{L−1}, no biases:

    ℒ = (1/2N)‖W_L σ(W_{L−1} ⋯ σ(W₁H₁)) − Y‖²_F + Σ_l (λ_{W_l}/2)‖W_l‖²_F + (λ_{H₁}/2)‖H₁‖²_F

(SCIENCE.md §5; the λ_{H₁} term is not divided by N, so n scales it). ``loss="cross-entropy"`` replaces the
first term by the mean cross-entropy (1/N)Σ_i −log softmax(z_i)_{y_i}, and ``activation="linear"`` drops the
ReLUs — together the deep linear cross-entropy UFM of Garrod & Keating (2024, arXiv 2410.23169).

Both losses have the output gradient (S − Y)/N, S = Z for MSE and softmax(Z) (column-wise) for cross-entropy, so
one hand-written backward pass serves both. A sequence of seeds makes a *batch* of independent models with a
leading member dimension (member i is the model ``seed=seeds[i]`` would build): one batched matrix product per
layer trains all of them, and ℒ is then the sum of the members' objectives (each member's gradient is its own).
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
    W_l start i.i.d. N(0, ``init_scale``²) — the scale decides which optimum GD finds (SCIENCE.md §5). ``seed``: one
    int, or a sequence of them for a batch of ``len(seed)`` members (parameters get a leading member dimension).
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
        activation: str = "relu",
        seed: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        check_scalar("num_classes", num_classes, int, low=2)
        check_scalar("per_class", per_class, int, low=1)
        check_scalar("depth", depth, int, low=2)
        check_scalar("width", width, int, low=1)
        check_choice("loss", loss, ("mse", "cross-entropy"))
        check_choice("activation", activation, ("relu", "linear"))
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if not seeds or not all(isinstance(s, int) for s in seeds):
            raise InvalidArgumentError(f"seed must be an int or a non-empty sequence of ints, got {seed!r}")
        values = [float(lambdas)] * (depth + 1) if isinstance(lambdas, (int, float)) else [float(v) for v in lambdas]
        if len(values) != depth + 1 or any(v < 0 for v in values):
            raise InvalidArgumentError(
                f"lambdas must be one non-negative number or {depth + 1} of them (λ_H1, λ_W1 … λ_W{depth}), "
                f"got {lambdas!r}"
            )
        self.num_classes, self.per_class, self.depth, self.width = num_classes, per_class, depth, width
        self.loss_name, self.activation, self.init_scale = loss, activation, init_scale
        self.lambdas = values
        self.batch = None if isinstance(seed, int) else len(seeds)
        shapes = [(width, num_classes * per_class)] + [(width, width)] * (depth - 1) + [(num_classes, width)]
        draws: list[list[torch.Tensor]] = [[] for _ in shapes]
        for member in seeds:
            generator = torch.Generator().manual_seed(member)
            for drawn, shape in zip(draws, shapes):
                drawn.append(init_scale * torch.randn(*shape, generator=generator, dtype=torch.float64))
        tensors = [torch.stack(d) if self.batch is not None else d[0] for d in draws]
        self.features = nn.Parameter(tensors[0])
        self.weights = nn.ParameterList([nn.Parameter(t) for t in tensors[1:]])
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
                inputs.append(torch.relu(pre[-1]) if self.activation == "relu" else pre[-1])
        return Activations(inputs, pre)

    def regularization(self) -> torch.Tensor:
        """Σ_l (λ_{W_l}/2)‖W_l‖²_F + (λ_{H₁}/2)‖H₁‖²_F (one value per member of a batch)."""
        terms = [self.features, *self.weights]
        return sum(lam / 2 * t.square().sum((-2, -1)) for lam, t in zip(self.lambdas, terms))

    def fit_term(self, output: torch.Tensor) -> torch.Tensor:
        """(1/2N)‖Z − Y‖²_F or the mean cross-entropy of the K×N logits Z (one value per member of a batch)."""
        if self.loss_name == "mse":
            return (output - self.targets).square().sum((-2, -1)) / (2 * self.size)
        return -(torch.log_softmax(output, dim=-2) * self.targets).sum((-2, -1)) / self.size

    def member_losses(self) -> torch.Tensor:
        """The regularized objective ℒ (module docstring) of each member of a batch (a scalar when unbatched)."""
        return self.fit_term(self.activations().output) + self.regularization()

    def loss(self) -> torch.Tensor:
        """ℒ, summed over the members of a batch."""
        return self.member_losses().sum()

    def forward(self) -> torch.Tensor:
        """The module's output is its objective ℒ (so that ``torch.func.functional_call`` can evaluate it)."""
        return self.loss()

    def member(self, index: int) -> DUFM:
        """A copy of member ``index`` of a batch as an unbatched model."""
        if self.batch is None:
            raise InvalidArgumentError("member() needs a batched DUFM (built with a sequence of seeds)")
        check_scalar("index", index, int, low=0, high=self.batch - 1)
        twin = DUFM(self.num_classes, self.per_class, depth=self.depth, width=self.width, lambdas=self.lambdas,
                    init_scale=self.init_scale, loss=self.loss_name, activation=self.activation)  # fmt: skip
        with torch.no_grad():
            for mine, theirs in zip(twin.parameters(), self.parameters()):
                mine.copy_(theirs[index])
        return twin.to(self.features.device)

    def gradients(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(∂ℒ/∂H₁, [∂ℒ/∂W_l]) by hand-written backpropagation from the output gradient (S − Y)/N (module
        docstring; cheaper than autograd on these small dense products)."""
        with torch.no_grad():
            acts = self.activations()
            scores = acts.output if self.loss_name == "mse" else torch.softmax(acts.output, dim=-2)
            upstream = (scores - self.targets) / self.size
            weight_grads: list[torch.Tensor] = [torch.empty(0)] * self.depth
            for index in range(self.depth - 1, -1, -1):
                weight = self.weights[index]
                weight_grads[index] = upstream @ acts.inputs[index].mT + self.lambdas[index + 1] * weight
                upstream = weight.mT @ upstream
                if index > 0 and self.activation == "relu":
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
