"""The log-space losses of :mod:`implicit_bias.losses` as one compiled CPU kernel (numba): log ℒ (or the per-sample
log ℓ_n) and ∂ log ℒ/∂Φ in a single pass over the outputs.

A small model's step is dominated by per-operation overhead, and the loss in torch operations is ~30 of them; this
kernel is one call. It evaluates the same formulas as the torch path (the docstring of
``losses._terms_and_slopes``): the multiclass log-sum-exp of the gaps Φ_j − Φ_y formed about the largest gap, the
logistic log softplus with its branch-free clamp at −700, mse about the largest residual, and the sum over samples
formed about the largest log ℓ_n with compensated (Neumaier) summation — so it is exact to float64 rounding at any
scale, as the torch path is. An output that is NaN or ±inf (overflow) makes its sample's log ℓ_n and the sum NaN,
so that training refuses it rather than reading it as a fit. numba is imported, and the kernel compiled (cached on
disk), on first use.

Reference: Lyu, K. & Li, J. (2020), §3, eq. 2 (the loss ℒ = Σ_n ℓ(q_n) and its logarithm).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy
import torch

KINDS = {"exponential": 0, "logistic": 1, "cross-entropy": 1, "mse": 2}
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}

# shared with the torch path in losses, so that both evaluate the same formula:
LOW = -700.0  # the logistic clamp: e^{-700} ≈ 1e-304 is still a normal float64, and 1 + e^{-700}/2 rounds to 1
SOFTPLUS_IDENTITY = 40.0  # softplus(c) = c above 40, exact to 1e-17
_NO_GRADIENT = numpy.empty((0, 0))


def supports(outputs: torch.Tensor) -> bool:
    """True when the kernel can take ``outputs``: float64 on the CPU, one or two dimensions."""
    return outputs.is_cpu and outputs.dtype == torch.float64 and outputs.ndim in (1, 2)


def log_loss(
    outputs: torch.Tensor, y: torch.Tensor, loss: str, reduction: str, slopes: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log ℒ as a 0-d tensor, or the (N,) log ℓ_n for ``reduction="none"``; ∂/∂Φ of that as an (N, K) tensor,
    K = 1 for one output, or None unless ``slopes``). For ``"none"`` row n is ∂ log ℓ_n/∂Φ_n.
    ``outputs`` must satisfy :func:`supports`; ``y`` holds 0..K−1 (0/1 for one output)."""
    table = outputs.detach().numpy()  # numpy buffers: each allocation here costs ~0.5 µs, a torch one ~3 µs
    table = table[:, None] if table.ndim == 1 else table
    gradient = numpy.empty(table.shape) if slopes else _NO_GRADIENT
    terms = numpy.empty(len(table))
    labels = y if y.dtype == torch.int64 else y.to(torch.int64)
    value = _kernel()(table, labels.numpy(), KINDS[loss], REDUCTIONS[reduction], slopes, gradient, terms)
    result = terms if reduction == "none" else numpy.array(value)
    return torch.from_numpy(result), torch.from_numpy(gradient) if slopes else None


@functools.cache
def _kernel() -> Callable:
    import numba  # imported on first use: ~0.3 s that a run without a CPU float64 loss does not pay

    return numba.njit(cache=True, nogil=True)(_log_loss_kernel)


def _log_loss_kernel(out, y, kind, reduction, slopes, grad, terms):  # compiled by numba: plain loops
    """Fill ``terms`` with log ℓ_n and ``grad`` with ∂ log ℓ_n/∂Φ_n, then (reduction ≠ none) scale each gradient row
    by w_n = ℓ_n/ℒ and return log ℒ (minus log N for the mean); ``terms`` then holds scratch values. A row with a
    non-finite output has log ℓ_n = NaN and a NaN gradient, and makes log ℒ NaN."""
    n_samples, k = out.shape
    invalid = False
    for n in range(n_samples):
        label = y[n]
        if label < 0 or label >= max(k, 2):  # validate=False skips the label checks; never read out of bounds
            raise IndexError("log_loss: a label lies outside 0..K-1 (0/1 for one output)")
        finite = True
        for j in range(k):
            finite = finite and math.isfinite(out[n, j])
        if not finite:  # an overflowed or NaN output: its loss is undefined (NaN), never a fit
            invalid = True
            terms[n] = math.nan
            if slopes:
                grad[n, :] = math.nan
            continue
        if kind == 2:  # mse: ½‖Φ − target‖² about its largest residual s_n
            scale = 0.0
            for j in range(k):
                target = (2.0 * label - 1.0) if k == 1 else (1.0 if j == label else 0.0)
                scale = max(scale, abs(out[n, j] - target))
            divisor = scale if scale > 0.0 else 1.0
            half = 0.0
            for j in range(k):
                target = (2.0 * label - 1.0) if k == 1 else (1.0 if j == label else 0.0)
                unit = (out[n, j] - target) / divisor
                half += 0.5 * unit * unit
                if slopes:
                    grad[n, j] = unit
            terms[n] = math.log(half) + 2.0 * math.log(divisor) if half > 0.0 else -math.inf
            if slopes:
                for j in range(k):
                    grad[n, j] /= max(half, 0.5) * divisor
            continue
        if k == 1:  # binary: a = −yΦ with y in ±1
            sign = 1.0 - 2.0 * label
            log_sum = sign * out[n, 0]
            total = 1.0
        else:  # a = log Σ_{j≠y} e^{Φ_j − Φ_y}, about the largest gap
            base = out[n, label]
            top = -math.inf
            for j in range(k):
                if j != label:
                    top = max(top, out[n, j] - base)
            total = 0.0
            for j in range(k):
                if j != label:
                    shifted = math.exp(out[n, j] - base - top)
                    total += shifted
                    if slopes:
                        grad[n, j] = shifted
            log_sum = math.log(total) + top
        if kind == 0:
            terms[n] = log_sum
            slope = 1.0
        else:  # log softplus(a) = (a − c) + log softplus(c), c = max(a, −700); slope σ(c)/softplus(c)
            clamped = max(log_sum, LOW)
            if clamped > SOFTPLUS_IDENTITY:  # softplus(c) = c and σ(c) = 1 to float64 rounding
                softplus, sigmoid = clamped, 1.0
            else:
                power = math.exp(clamped)
                softplus, sigmoid = math.log1p(power), power / (1.0 + power)
            terms[n] = (log_sum - clamped) + math.log(softplus)
            slope = sigmoid / softplus
        if slopes:
            if k == 1:
                grad[n, 0] = sign * slope
            else:
                ratio = slope / total
                for j in range(k):
                    grad[n, j] *= ratio
                grad[n, label] = -slope
    if reduction == 0:
        return 0.0
    if invalid:
        if slopes:
            grad[:, :] = math.nan
        return math.nan
    top = -math.inf
    for n in range(n_samples):
        top = max(top, terms[n])
    if top == -math.inf:  # every sample fitted exactly (mse): ℒ = 0, gradient 0
        if slopes:
            grad[:, :] = 0.0
        return -math.inf
    total, compensation = 0.0, 0.0
    for n in range(n_samples):  # Neumaier's compensated sum of e^{log ℓ_n − top} ∈ [0, 1], kept in terms
        terms[n] = term = math.exp(terms[n] - top)
        running = total + term
        compensation += (total - running) + term if total >= term else (term - running) + total
        total = running
    total += compensation
    if slopes:
        for n in range(n_samples):
            weight = terms[n] / total
            for j in range(k):
                grad[n, j] *= weight
    value = math.log(total) + top
    return value - math.log(n_samples) if reduction == 2 else value
