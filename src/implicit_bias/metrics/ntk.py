"""Tangent features and the NTK margin of a single-output network (Telgarsky 2023).

References
----------
.. [1] Telgarsky, M. (2023). Feature selection and low test error in shallow low-rotation ReLU networks. ICLR;
       arXiv 2208.02789 (Assumption 1.2: the NTK margin γ_ntk of the initialization).
.. [2] Jacot, A., Gabriel, F. & Hongler, C. (2018). Neural tangent kernel. NeurIPS.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import InvalidArgumentError
from ..models.inference import evaluation, to_model
from ..validation import check_features, check_features_labels
from .margins import model_labels
from .svm import hard_margin_svm


def tangent_features(model: nn.Module, X: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """The tangent features ∇_θ Φ(θ; x_n) of a single-output model, float64, shape (N, P), on the CPU.

    θ are the parameters that require gradients (buffers and frozen parameters are held fixed), flattened in the
    order of ``model.named_parameters()``. The model runs in evaluation mode, ``batch_size`` samples at a time
    (all at once by default); the kernel Θ(x, x') = ⟨∇_θΦ(θ; x), ∇_θΦ(θ; x')⟩ is their Gram matrix [2].

    Raises
    ------
    InvalidArgumentError
        If the model has no trainable parameter or more than one output per sample.
    """
    check_features(X)
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise InvalidArgumentError("model must have a parameter that requires gradients, got none")
    fixed = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    fixed |= dict(model.named_buffers())

    def output(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, fixed), (x[None],))
        if out.numel() != 1:
            raise InvalidArgumentError(
                f"tangent features need a single-output model (one score per sample), got outputs of shape "
                f"{tuple(out.shape)} for one sample"
            )
        return out.reshape(())

    per_sample = vmap(grad(output), in_dims=(None, 0))
    size = batch_size or max(len(X), 1)
    rows = []
    with evaluation(model):
        for start in range(0, len(X), size):
            grads = per_sample(trainable, to_model(model, X[start : start + size]))
            rows.append(torch.cat([g.reshape(len(g), -1).to(torch.float64).cpu() for g in grads.values()], dim=1))
    return torch.cat(rows)


def ntk_margin(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None) -> float:
    """The NTK margin of ``model`` at its current parameters θ₀: the hard-margin SVM margin of its tangent features,
    γ_ntk = max_{‖v‖ ≤ 1} min_n y_n ⟨v, ∇_θΦ(θ₀; x_n)⟩ (y_n ∈ {±1}).

    The finite-width form of Telgarsky's NTK margin [1] (Assumption 1.2: some unit-bounded θ̄ makes
    y_n⟨θ̄, ∇Φ(θ₀; x_n)⟩ ≥ γ_ntk for every n): the margin of the linearized model Φ(θ₀) + ⟨θ − θ₀, ∇Φ(θ₀)⟩ around
    θ₀, whose largest value over ‖θ − θ₀‖ ≤ 1 is the SVM's (:func:`~implicit_bias.metrics.hard_margin_svm`).
    For a 1-homogeneous model Φ(θ; x) = ⟨θ, ∇Φ(θ; x)⟩, so the normalized margin min_n y_nΦ(θ; x_n)/‖θ‖ never
    exceeds γ_ntk at θ. Binary labels in {0, 1} or {±1}; see :func:`tangent_features` for θ and ``batch_size``.

    Raises
    ------
    NotSeparatedError
        If no direction of the tangent space separates the data.
    """
    check_features_labels(X, y)
    labels = model_labels(model, X, y)
    return hard_margin_svm(tangent_features(model, X, batch_size=batch_size), labels.cpu()).margin
