"""The homogenization f_H of a near-homogeneous network (Cai, Zhou, Wu, Mei, Lindsey & Bartlett 2025).

A network is near-M-homogeneous when it is M-homogeneous up to lower-order terms — biases past the first
layer, skip paths of lower degree, SiLU / GELU / softplus in place of ReLU. Its homogenization is the leading
term of the parameter scaling,

    f_H(θ; x) = lim_{r→∞} f(rθ; x) / r^M,

an M-homogeneous network; Cai et al. show that GD on the exponential loss from a small enough risk drives θ/‖θ‖
to a KKT point of the max-margin problem of f_H.

References
----------
.. [1] Cai, Y., Zhou, K., Wu, J., Mei, S., Lindsey, M. & Bartlett, P. L. (2025). Implicit bias of gradient
       descent for non-homogeneous deep networks. ICML; arXiv 2502.16075 (the definitions of near-homogeneity
       and of the homogenization f_H; theorem and equation numbers not checked against the paper here).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NotHomogeneousError

SILU_GAP = 0.2784645427610738
"""sup_z |SiLU(z) − ReLU(z)| = W(1/e) ≈ 0.27846 (W: Lambert's function).

With t = |z|, |SiLU(z) − ReLU(z)| = t/(1 + e^t) on both sides of 0 (z < 0: |z σ(z)|; z > 0: z(1 − σ(z))).
Its derivative vanishes where 1 + e^t = t e^t, i.e. t = 1 + e^{−t}; there t/(1 + e^t) = t/(t e^t) = e^{−t} =
t − 1 =: s, and s = e^{−1−s} gives s e^s = 1/e, s = W(1/e), at t* = 1 + W(1/e) ≈ 1.27846."""

GELU_GAP = 0.16997120747990468
"""sup_z |GELU(z) − ReLU(z)| = sup_t t Φ(−t) (exact GELU z Φ(z)), at the root t* ≈ 0.7518 of Φ(−t) = t φ(t)."""

SOFTPLUS_GAP = math.log(2.0)
"""sup_z |softplus(z) − ReLU(z)| = log 2, at z = 0 (the gap log(1 + e^{−|z|}) decreases in |z|)."""


class Residual(nn.Module):
    """x + branch(x): a skip path around ``branch`` (whose output has the shape of its input).

    In f = wᵀ(x + V ReLU(Ux)) the skip path has degree 1 in (U, V) and the branch degree 2, so the skip path
    drops out of the homogenization: f_H = wᵀ V ReLU(Ux), M = 3 ([1]).
    """

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def _relu(_: nn.Module) -> nn.Module:
    return nn.ReLU()


def _same(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)


def _gelu_gap(module: nn.Module) -> float | None:
    return GELU_GAP if module.approximate == "none" else None  # the tanh approximation's gap is not tabulated


# activation type → (its r → ∞ limit σ(rz)/r as a module, sup_z |σ(z) − limit(z)| or None where unknown)
ACTIVATION_LIMITS: dict[
    type[nn.Module], tuple[Callable[[nn.Module], nn.Module], Callable[[nn.Module], float | None]]
] = {
    nn.SiLU: (_relu, lambda _: SILU_GAP),
    nn.GELU: (_relu, _gelu_gap),
    nn.Softplus: (_relu, lambda module: SOFTPLUS_GAP / float(module.beta)),  # softplus_β(z) = log(1 + e^{βz})/β
    nn.ReLU: (_same, lambda _: 0.0),
    nn.LeakyReLU: (_same, lambda _: 0.0),
    nn.Identity: (_same, lambda _: 0.0),
}
PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Flatten,)  # parameter-free, degree-preserving reshapes


def activation_gap(activation: nn.Module) -> float:
    """sup_z |σ(z) − σ_H(z)| for an activation σ and its homogeneous limit σ_H (ReLU for SiLU, GELU, softplus).

    SiLU: W(1/e) ≈ 0.2785 (:data:`SILU_GAP`); exact GELU: ≈ 0.1700; softplus with ``beta``: log 2/β; ReLU,
    leaky ReLU, identity: 0.
    """
    rule = ACTIVATION_LIMITS.get(type(activation))
    gap = rule[1](activation) if rule is not None else None
    if gap is None:
        raise NotHomogeneousError(
            f"activation_gap: no bound for {activation!r}; known: SiLU, exact GELU, Softplus, ReLU, LeakyReLU, Identity"
        )
    return gap


@dataclass(frozen=True)
class Homogenization:
    """f_H of a near-homogeneous network: see :func:`homogenization`.

    Attributes
    ----------
    module : nn.Module
        Evaluates f_H(θ; x) with copies of the parameters that enter it (the dropped ones are not parameters).
    degree : int
        M: f_H(rθ; x) = r^M f_H(θ; x) for r > 0.
    dropped : tuple of str
        What drops out: the names of dropped parameters (``"2.bias"``) and skip paths (``"0 (skip path)"``).
    """

    module: nn.Module
    degree: int
    dropped: tuple[str, ...]


def _name(prefix: str, child: str) -> str:
    return f"{prefix}.{child}" if prefix else child


def _homogenize(module: nn.Module, degree: int, prefix: str) -> tuple[nn.Module, int, list[str]]:
    """(module_H, output degree, dropped) for ``module`` fed an input of leading degree ``degree`` in r."""
    if isinstance(module, nn.Linear):
        # W(r^d h) + r b: the bias has degree 1, the product d + 1; it survives only when d = 0 (the first layer)
        keep_bias = module.bias is not None and degree == 0
        out = nn.Linear(module.in_features, module.out_features, bias=keep_bias)
        out = out.to(dtype=module.weight.dtype, device=module.weight.device)
        with torch.no_grad():
            out.weight.copy_(module.weight)
            if keep_bias:
                out.bias.copy_(module.bias)
        dropped = [_name(prefix, "bias")] if module.bias is not None and not keep_bias else []
        return out, degree + 1, dropped
    if type(module) in ACTIVATION_LIMITS:
        # σ(r^d z)/r^d → σ_H(z) for d ≥ 1; an activation of the raw input (d = 0) does not scale and stays
        limit = ACTIVATION_LIMITS[type(module)][0] if degree > 0 else _same
        return limit(module), degree, []
    if isinstance(module, PASS_THROUGH):
        return _same(module), degree, []
    if isinstance(module, Residual):
        branch, branch_degree, dropped = _homogenize(module.branch, degree, _name(prefix, "branch"))
        if branch_degree > degree:
            return branch, branch_degree, [*dropped, f"{prefix or 'model'} (skip path)"]
        if branch_degree == degree:
            return Residual(branch), degree, dropped
        names = [_name(_name(prefix, "branch"), n) for n, _ in module.branch.named_parameters()]
        return nn.Identity(), degree, names
    if isinstance(module, nn.Sequential):
        layers, dropped = OrderedDict(), []
        for child_name, child in module.named_children():
            layers[child_name], degree, more = _homogenize(child, degree, _name(prefix, child_name))
            dropped += more
        return nn.Sequential(layers), degree, dropped
    raise NotHomogeneousError(
        f"homogenization: cannot homogenize module {prefix or 'model'!r} ({type(module).__name__}); supported "
        "are nn.Sequential of nn.Linear, Residual, nn.Flatten and the activations SiLU, GELU, Softplus (→ ReLU), "
        "ReLU, LeakyReLU, Identity (tanh, sigmoid and normalization layers have no homogeneous limit of "
        "positive degree)"
    )


def homogenization(model: nn.Module) -> Homogenization:
    """The homogenization f_H(θ; x) = lim_{r→∞} f(rθ; x)/r^M of a near-homogeneous network ([1]).

    Built layer by layer from the leading degree in r of each layer's output: ``nn.Linear`` raises the degree
    by one, and its bias (degree 1) survives only in the first parametrized layer; SiLU, GELU and softplus of
    a scaling pre-activation become ReLU (σ(rz)/r → max(z, 0)); in a :class:`Residual` the lower-degree path
    drops out. Two-layer f = Σ_j a_j SiLU(w_jᵀx + b_j) + c: f_H = Σ_j a_j ReLU(w_jᵀx + b_j), M = 2 (c drops);
    f = wᵀ(x + V ReLU(Ux)): f_H = wᵀ V ReLU(Ux), M = 3. ``model`` is left untouched (f_H holds copies).

    The leading coefficient is assumed not to vanish identically (the sum of two paths of equal degree could
    cancel; then the limit has lower degree) — the test compares f(rθ)/r^M with f_H at large r.

    Raises
    ------
    NotHomogeneousError
        For a module outside the supported forms (named), or a model without parameters (M = 0).
    """
    if not isinstance(model, nn.Module):
        raise NotHomogeneousError(f"homogenization: model must be an nn.Module, got {type(model).__name__}")
    module, degree, dropped = _homogenize(model, 0, "")
    if degree == 0:
        raise NotHomogeneousError("homogenization: the model has no parametrized layer, so f does not scale with θ")
    return Homogenization(module.train(model.training), degree, tuple(dropped))


def homogenization_gap_bound(model: nn.Module) -> float:
    """κ with |f(θ; x) − f_H(θ; x)| ≤ κ‖θ‖ for every θ and x, for a two-layer f = Σ_j a_j σ(w_jᵀx + b_j) + c.

    f − f_H = Σ_j a_j (σ − ReLU)(z_j) + c, so |f − f_H| ≤ g Σ_j |a_j| + |c| ≤ g √m ‖a‖ + |c| ≤ (g √m + 1)‖θ‖
    with g = sup |σ − ReLU| (:func:`activation_gap`; SiLU: 0.2785) and m the width: κ = g√m + 1, or g√m
    without the output bias c. Each term is attained in a limit (c alone; all z_j = ±t* with ‖a‖ ≫ ‖(w, b)‖).
    The corrected margin [log(1/(nℒ)) − κ‖θ‖]/‖θ‖² then bounds the homogenized margin γ_H from below
    (the induced margin of [1]).

    Raises
    ------
    NotHomogeneousError
        Unless ``model`` is ``nn.Sequential(nn.Linear(d, m), activation, nn.Linear(m, 1))``.
    """
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    if not (
        len(layers) == 3
        and isinstance(layers[0], nn.Linear)
        and isinstance(layers[2], nn.Linear)
        and layers[2].out_features == 1
    ):
        raise NotHomogeneousError(
            "homogenization_gap_bound: expected nn.Sequential(nn.Linear(d, m), activation, nn.Linear(m, 1)) "
            f"(a two-layer network with one output), got {model!r}"
        )
    gap = activation_gap(layers[1])
    width = layers[0].out_features
    return gap * math.sqrt(width) + (1.0 if layers[2].bias is not None else 0.0)
