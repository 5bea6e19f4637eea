"""Numerical checks of quasi-homogeneity, and the rescaling ψ_α along characteristic curves.

Kunin, Yamamura, Ma & Ganguli (2023), Def. 3.1 and the generalized Euler identity (Lemma 3.2):
Φ(ψ_α(θ); x) = e^α Φ(θ; x), ψ_α(θ) = exp(αΛ)θ, and ⟨∇_θ Φ(θ; x), Λθ⟩ = Φ(θ; x).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class RateCheck:
    """Worst relative errors of the two identities, each max|lhs − rhs| / max|rhs| over outputs and samples."""

    definition_error: float  # max over α of |Φ(ψ_α θ) − e^α Φ(θ)|
    euler_error: float  # |⟨∇Φ, Λθ⟩ − Φ|
    alphas: tuple[float, ...]

    @property
    def worst(self) -> float:
        return max(self.definition_error, self.euler_error)


def complete_rates(names: Sequence[str], rates: Mapping[str, float]) -> dict[str, float]:
    """λ for every parameter in ``names`` (absent names: 0), refusing rates for parameters not in ``names``."""
    unknown = sorted(set(rates) - set(names))
    if unknown:
        raise InvalidArgumentError(f"rates given for unknown parameters {unknown}; the model has {list(names)}")
    return {name: float(rates.get(name, 0.0)) for name in names}


def _rate_tensors(model: nn.Module, rates: Mapping[str, float]) -> dict[str, float]:
    return complete_rates([name for name, _ in model.named_parameters()], rates)


def _stateless_copy(model: nn.Module) -> nn.Module:
    """A float64 copy whose training-mode batch norms use batch statistics without updating running ones (same
    outputs, no buffer mutation — which forward-mode differentiation forbids)."""
    twin = copy.deepcopy(model).to(torch.float64)
    for module in twin.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return twin


def _relative(error: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.abs().max())
    if not scale > 0:
        raise InvalidArgumentError("the model outputs are all zero on X; the check is undefined")
    return float(error.abs().max()) / scale


def check_rates(
    model: nn.Module,
    rates: Mapping[str, float],
    X: torch.Tensor,
    *,
    alphas: Sequence[float] = (-1.5, -0.4, 0.7, 2.0),
) -> RateCheck:
    """How well Φ is Λ-quasi-homogeneous on ``X``, in float64 (Kunin et al. 2023, Def. 3.1 and Lemma 3.2):
    the definition Φ(exp(αΛ)θ) = e^α Φ(θ) at each α in ``alphas`` and the Euler identity ⟨∇Φ, Λθ⟩ = Φ (a
    forward-mode derivative along Λθ).

    The model runs in its current train/eval mode on a float64 copy (its own buffers are untouched), every
    evaluation with the same random seed (so dropout draws one mask).
    """
    lam = _rate_tensors(model, rates)
    twin = _stateless_copy(model)
    X = X.to(device=next(twin.parameters()).device, dtype=torch.float64)
    theta = {name: p.detach() for name, p in twin.named_parameters()}

    def forward(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.random.fork_rng(devices=[X.device] if X.device.type == "cuda" else []):
            torch.manual_seed(0)  # one dropout mask for every evaluation: a model in training mode compares alike
            return functional_call(twin, parameters, (X,))

    tangent = {name: lam[name] * t for name, t in theta.items()}
    with warnings.catch_warnings():  # torch's first forward-mode call scripts its decompositions (a deprecated API)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no forward-mode derivative
            base, derivative = (t.detach() for t in jvp(forward, (theta,), (tangent,)))
    euler = _relative(derivative - base, base)
    with torch.no_grad():
        definition = max(
            _relative(
                forward({n: math.exp(a * lam[n]) * t for n, t in theta.items()}) - math.exp(a) * base,
                math.exp(a) * base,
            )
            for a in alphas
        )
    return RateCheck(definition, euler, tuple(alphas))


@torch.no_grad()
def rescale(model: nn.Module, alpha: float, rates: Mapping[str, float]) -> nn.Module:
    """Apply ψ_α in place: θ_p ← exp(α λ_p) θ_p for every parameter tensor p; returns ``model``.

    For a Λ-quasi-homogeneous model the outputs become e^α Φ(θ) (Kunin et al. 2023, Def. 3.1).
    """
    lam = _rate_tensors(model, rates)
    for name, parameter in model.named_parameters():
        parameter.mul_(math.exp(alpha * lam[name]))
    return model
