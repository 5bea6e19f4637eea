"""Classification losses evaluated in log space, so that training goes on when the loss is far below 1e-308.

A loss here is the **sum** ℒ(θ) = Σ_n ℓ(q_n) of Lyu & Li (2020), computed as log ℒ in float64. Storing log ℒ
instead of ℒ is the "loss frame" of SCIENCE.md §1: e^{-5000} underflows in any float format, but its logarithm
−5000 is an ordinary number, and ∇ log ℒ = ∇ℒ / ℒ stays finite however small ℒ is.

Per-sample losses, with margin q = y·Φ (binary, y ∈ {±1}) or q = Φ_y − max_{j≠y} Φ_j (multiclass):

=================  ===============================================  ==========================================
name               binary ℓ                                         multiclass ℓ
=================  ===============================================  ==========================================
``exponential``    e^{−yΦ}                                          Σ_{j≠y} e^{−(Φ_y − Φ_j)}
``logistic``       log(1 + e^{−yΦ})                                 log(1 + Σ_{j≠y} e^{−(Φ_y − Φ_j)})
``cross-entropy``  log(1 + e^{−yΦ}) (the same as logistic)          log(1 + Σ_{j≠y} e^{−(Φ_y − Φ_j)})
``mse``            ½(Φ − y)²                                        ½‖Φ − onehot(y)‖²
=================  ===============================================  ==========================================

The multiclass logistic loss is the multinomial one, i.e. cross-entropy.

:func:`log_loss` is one autograd node per call (``_LogLoss``): its forward forms log ℒ and, when the outputs need
a gradient, the analytic ∂ log ℒ/∂Φ_n = (ℓ_n/ℒ) ∂ log ℓ_n/∂Φ_n from max-shifted softmaxes (exact to float64
rounding at any scale); its backward only scales that. It is differentiable once (``create_graph=True`` is
refused); nothing in this package differentiates a loss twice. On the CPU in float64 the forward is one compiled
kernel (:mod:`implicit_bias.kernels`, numba) with the same formulas; elsewhere it is torch operations.

References
----------
Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks. ICLR. (§3, eq. 2)
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .errors import InvalidArgumentError
from .validation import check_choice, check_finite

LOSSES: tuple[str, ...] = ("exponential", "logistic", "cross-entropy", "mse")
MARGIN_LOSSES: tuple[str, ...] = ("exponential", "logistic", "cross-entropy")

_COMPILED = True  # float64 CPU outputs go through kernels.log_loss (numba); False: the torch operations below
_FLOOR = torch.finfo(torch.float64).min  # a finite max for slices that are all −inf: e^{−inf − _FLOOR} = 0, not NaN


def is_binary_output(outputs: torch.Tensor) -> bool:
    """True when ``outputs`` is one score per sample, shape (N,) or (N, 1)."""
    return outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)


def canonical_labels(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Validate labels against model outputs and return them as 0..K−1 (binary ±1 labels become 0/1).

    A single-output model takes binary labels in {0, 1} or {−1, +1}; a K-output model labels in 0..K−1.
    Labels must be a 1-D integer tensor (float or boolean labels are refused, never rounded).
    """
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise InvalidArgumentError(
            "labels y must be a 1-D integer tensor of class labels, got "
            f"{f'dtype {y.dtype}' if isinstance(y, torch.Tensor) else type(y).__name__}; "
            "convert with torch.as_tensor(y).long()"
        )
    if y.ndim != 1:
        raise InvalidArgumentError(f"labels y must be a 1-D integer tensor of class labels, got shape {tuple(y.shape)}")
    if outputs.ndim not in (1, 2) or outputs.shape[0] != y.shape[0]:
        raise InvalidArgumentError(
            f"model outputs must have shape (N,) or (N, K) with N = len(y) = {y.shape[0]}, got {tuple(outputs.shape)}"
        )
    if is_binary_output(outputs):
        values = set(torch.unique(y).tolist())
        if values <= {0, 1}:
            return y
        if values <= {-1, 1}:
            return (y + 1) // 2
        raise InvalidArgumentError(
            f"a single-output model needs binary labels in {{0, 1}} or {{-1, +1}}, got labels {sorted(values)}"
        )
    k = outputs.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise InvalidArgumentError(
            f"labels must lie in 0..{k - 1} for a model with {k} outputs, "
            f"got labels from {int(y.min())} to {int(y.max())}"
        )
    return y


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log Σ e^x along ``dim``, shifted by the detached max m: m + log Σ e^{x−m}.

    Its gradient is then the softmax e^{x−m}/Σe^{x−m}, exact to float64 rounding at any scale, whereas the
    backward of ``torch.logsumexp`` forms exp(x − logsumexp(x)) and loses |x|·ε to cancellation (a relative
    1e−13 at log ℒ ≈ −5000). A slice that is all −inf gives −inf, with gradient 0 (not the NaN of log 0).
    """
    shift = x.detach().amax(dim=dim, keepdim=True).nan_to_num(neginf=0.0)
    return _log_or_neginf(torch.exp(x - shift).sum(dim=dim)) + shift.squeeze(dim)


def _log_or_neginf(x: torch.Tensor) -> torch.Tensor:
    """log x for x ≥ 0, with log 0 = −inf and a gradient of 0 there (where torch.log's backward gives 0·inf = NaN)."""
    zero = x == 0
    return torch.log(torch.where(zero, 1.0, x)).masked_fill(zero, -math.inf)


def _signs(y: torch.Tensor) -> torch.Tensor:
    return y.to(torch.float64) * 2.0 - 1.0


def _label_mask(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.arange(outputs.shape[1], device=outputs.device) == y[:, None]


def output_margins(outputs: torch.Tensor, y: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """Per-sample margins q_n (float64) from model outputs.

    q_n = y_n Φ(x_n) for one output per sample (y mapped to ±1), and q_n = Φ_{y_n} − max_{j≠y_n} Φ_j for K ≥ 2
    outputs (Lyu & Li 2020, §3). ``validate=False`` skips the label checks (labels must then be 0..K−1).
    """
    y = canonical_labels(outputs, y) if validate else y
    outputs = outputs.to(torch.float64)
    if is_binary_output(outputs):
        return _signs(y) * outputs.reshape(-1)
    true = outputs.gather(1, y[:, None])
    others = outputs.masked_fill(_label_mask(outputs, y), -math.inf)
    return (true - others.amax(dim=1, keepdim=True)).reshape(-1)


def _log_softplus_log_and_slope(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log(log(1 + e^s)) and its derivative σ(s)/softplus(s), accurate for every s, without a branch.

    With c = max(s, −700): log softplus(s) = (s − c) + log softplus(c). Above −700 that is log softplus(s) itself
    (e^s is still a normal float64); below, softplus(c) = e^c (1 − e^c/2) and the correction e^c/2 < 1e−304 is
    far below rounding, so the value is s to float64 precision, and the slope σ(c)/softplus(c) is 1 to 1e−304.
    Both are finite everywhere, and so is autograd's gradient of the value (1 below −700).
    """
    clamped = s.clamp(min=kernels.LOW)  # −700, the compiled kernel's clamp too
    softplus = torch.nn.functional.softplus(clamped, threshold=kernels.SOFTPLUS_IDENTITY)  # identity above 40, to 1e−17
    return (s - clamped) + torch.log(softplus), torch.sigmoid(clamped) / softplus


def log_softplus_log(s: torch.Tensor) -> torch.Tensor:
    """log(log(1 + e^s)), accurate for every s: the log of the logistic loss at margin −s (it never underflows;
    see :func:`_log_softplus_log_and_slope`)."""
    return _log_softplus_log_and_slope(s)[0]


def _logsumexp_softmax(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log Σ e^x along ``dim`` and the softmax e^{x − log Σ e^x}, both formed about the max m (without autograd):
    m + log Σ e^{x−m} and e^{x−m} / Σ e^{x−m}, exact to float64 rounding at any scale. A slice that is all −inf
    (an exactly fitted mse data set) gives −inf and a softmax of 0."""
    top = x.amax(dim=dim, keepdim=True).clamp_(min=_FLOOR)
    shifted = (x - top).exp_()
    total = shifted.sum(dim=dim, keepdim=True)
    value = (torch.log(total) + top).squeeze(dim)
    return value, shifted.div_(total.clamp_(min=1.0))  # total ≥ 1 unless the slice is all −inf


def _terms_and_slopes(
    outputs: torch.Tensor, y: torch.Tensor, loss: str, slopes: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample log ℓ_n, shape (N,), and when ``slopes`` is true ∂ log ℓ_n/∂Φ_n, shape (N, K) (K = 1 for one
    output), from float64 outputs, without autograd.

    Margin losses: with the gaps g_j = Φ_j − Φ_y (j ≠ y), a = log Σ_{j≠y} e^{g_j} and its softmax
    r_j = e^{g_j − a} (r_y = 0), both formed about the largest gap, ∂a/∂Φ = r − e_y; log ℓ = a (exponential) or
    log softplus(a), whose slope d log ℓ/da multiplies it. For one output a = −yΦ. mse: with s_n = max_k |r_nk|
    and r̂_n = r_n/s_n, log ℓ_n = log(½‖r̂_n‖²) + 2 log s_n and ∂ log ℓ_n/∂Φ_n = r̂_n / (s_n ½‖r̂_n‖²), which is 0
    for a fitted row.
    """
    if loss == "mse":
        if is_binary_output(outputs):
            residual = outputs.reshape(-1, 1) - _signs(y)[:, None]
        else:
            residual = outputs - _label_mask(outputs, y).to(outputs.dtype)
        scale = residual.abs().amax(dim=1, keepdim=True)
        scale = torch.where(scale > 0, scale, 1.0)
        unit = residual / scale
        half = 0.5 * unit.square().sum(dim=1, keepdim=True)  # in [½, K/2], or 0 for a fitted row
        terms = (torch.log(half) + 2 * torch.log(scale)).reshape(-1)
        return terms, unit.div_(half.clamp(min=0.5).mul_(scale)) if slopes else None
    if is_binary_output(outputs):
        flipped = 1.0 - 2.0 * y.to(torch.float64)  # −y in ±1
        log_sum = flipped * outputs.reshape(-1)
        direction = flipped[:, None] if slopes else None
    else:
        labels = y[:, None]
        gaps = (outputs - outputs.gather(1, labels)).scatter_(1, labels, -math.inf)
        log_sum, softmax = _logsumexp_softmax(gaps, dim=1)
        direction = softmax.scatter_(1, labels, -1.0) if slopes else None
    if loss == "exponential":
        return log_sum, direction
    terms, slope = _log_softplus_log_and_slope(log_sum)
    return terms, direction.mul_(slope[:, None]) if slopes else None


class _LogLoss(torch.autograd.Function):
    """log ℒ, or the per-sample log ℓ_n for ``reduction="none"``, as one autograd node with an analytic backward.

    When the outputs need a gradient, the forward also forms ∂ log ℒ/∂Φ_n = w_n ∂ log ℓ_n/∂Φ_n, with w_n = ℓ_n/ℒ
    the softmax of the log ℓ_n (formed about the largest, so exact to float64 rounding at any scale); the
    backward only scales it. Differentiable once: the backward refuses ``create_graph=True``, whose second
    derivative would silently miss the loss's curvature.
    """

    @staticmethod
    def forward(ctx, outputs: torch.Tensor, y: torch.Tensor, loss: str, reduction: str) -> torch.Tensor:
        ctx.shape, ctx.dtype, ctx.reduction = outputs.shape, outputs.dtype, reduction
        slopes = ctx.needs_input_grad[0]
        outputs = outputs if outputs.dtype == torch.float64 else outputs.to(torch.float64)
        if _COMPILED and kernels.supports(outputs):  # one compiled pass instead of ~30 small torch operations
            result, ctx.gradient = kernels.log_loss(outputs, y, loss, reduction, slopes)
            return result
        terms, gradient = _terms_and_slopes(outputs, y, loss, slopes)
        ctx.gradient = gradient  # an intermediate, not an input or output: kept on ctx, as autograd allows
        if reduction == "none":
            return terms
        value, weights = _logsumexp_softmax(terms, dim=0)
        if slopes:
            gradient.mul_(weights[:, None])
        return value - math.log(len(terms)) if reduction == "mean" else value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        if torch.is_grad_enabled():
            raise NotImplementedError(
                "log_loss is differentiable once (its backward is the analytic ∇ log ℒ): create_graph=True would "
                "give second derivatives without the loss's curvature; for a Hessian, write the loss in torch ops "
                "(e.g. torch.nn.functional.cross_entropy) while ℒ is representable"
            )
        scaled = ctx.gradient * (grad[:, None] if ctx.reduction == "none" else grad)
        if scaled.shape != ctx.shape:  # one output per sample as (N,): a reshape costs ~3 µs even when it is none
            scaled = scaled.reshape(ctx.shape)
        return scaled if scaled.dtype == ctx.dtype else scaled.to(ctx.dtype), None, None, None


def _checked(outputs: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    check_choice("loss", loss, LOSSES)
    y = canonical_labels(outputs, y)
    check_finite("model outputs", outputs)
    return y


def log_loss_terms(outputs: torch.Tensor, y: torch.Tensor, loss: str, *, validate: bool = True) -> torch.Tensor:
    """Per-sample log ℓ(x_n, y_n) in float64, finite for margins of any size (``mse``: −inf at an exact fit,
    where the gradient is 0, as is ℓ's).

    ``validate=False`` skips the checks of ``loss``, of the labels (labels must then be 0..K−1) and of the outputs'
    finiteness (NaN or ±inf outputs are refused naming the first).
    """
    return _LogLoss.apply(outputs, _checked(outputs, y, loss) if validate else y, loss, "none")


def log_loss(
    outputs: torch.Tensor, y: torch.Tensor, loss: str, *, reduction: str = "sum", validate: bool = True
) -> torch.Tensor:
    """log ℒ (float64 scalar) with ℒ = Σ_n ℓ_n (``reduction="sum"``) or ℒ = (1/N) Σ_n ℓ_n (``"mean"``).

    A log-sum-exp of the per-sample log-losses, so log ℒ = −10⁴ is as exact as log ℒ = −1, in one autograd node
    whose backward is the analytic ∇ log ℒ = Σ_n ∇ℓ_n / ℒ, exact to float64 rounding at any scale (Lyu & Li 2020,
    §3: the gradient the loss-normalized updates follow). It is differentiable once (no ``create_graph``). An
    exactly fitted sample (``mse``) adds nothing to the gradient; when every sample is fitted, log ℒ = −inf and
    its gradient is taken as 0, the value of ∇ℒ there.
    """
    if validate:
        check_choice("reduction", reduction, ("sum", "mean"))
        y = _checked(outputs, y, loss)
    return _LogLoss.apply(outputs, y, loss, reduction)


def inverse_loss(loss: str, log_value: float) -> float:
    """ℓ^{-1}(ℒ) from log ℒ: the margin at which one sample alone would have loss ℒ (Lyu & Li 2020, §4.1).

    exponential: −log ℒ.  logistic / cross-entropy: −log(e^ℒ − 1), evaluated as −log ℒ − log(expm1(ℒ)/ℒ)
    so that it stays exact for ℒ far below 1e−308.
    """
    check_choice("loss", loss, MARGIN_LOSSES)
    if loss == "exponential":
        return -log_value
    if log_value < -30.0:  # expm1(v)/v = 1 + v/2 + ... with v < 1e-13
        return -log_value - 0.5 * math.exp(log_value)
    value = math.exp(log_value)
    if math.isinf(value) or value > 700:
        return -value  # log(e^v − 1) ≈ v for large v
    return -math.log(math.expm1(value))
