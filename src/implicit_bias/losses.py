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

References
----------
Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks. ICLR. (§3, eq. 2)
"""

from __future__ import annotations

import math

import torch

from .errors import InvalidArgumentError
from .validation import check_choice, check_finite

LOSSES: tuple[str, ...] = ("exponential", "logistic", "cross-entropy", "mse")
MARGIN_LOSSES: tuple[str, ...] = ("exponential", "logistic", "cross-entropy")

_SWITCH = -20.0  # below it log(log1p(e^s)) = s − e^s/2 to float64 rounding (next term 5e^{2s}/24)


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


def _log_exponential_sum(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log Σ_{j≠y} e^{Φ_j − Φ_y} per sample (for one output: −yΦ)."""
    if is_binary_output(outputs):
        return -_signs(y) * outputs.reshape(-1)
    gaps = (outputs - outputs.gather(1, y[:, None])).masked_fill(_label_mask(outputs, y), -math.inf)
    return logsumexp(gaps, dim=1)


def log_softplus_log(s: torch.Tensor) -> torch.Tensor:
    """log(log(1 + e^s)), accurate for every s: the log of the logistic loss at margin −s.

    For s < −20 it uses s − e^s/2 (the series of log(log1p(u)/u) at u = e^s), so it never underflows;
    otherwise log(softplus(s)), with softplus switching to the identity only above s = 40 (where it is exact
    to 1e−17). Both branches see clamped inputs so that their gradients stay finite where not selected.
    """
    s_low = s.clamp(max=_SWITCH)
    low = s_low - 0.5 * torch.exp(s_low)
    high = torch.log(torch.nn.functional.softplus(s.clamp(min=_SWITCH), threshold=40.0))
    return torch.where(s < _SWITCH, low, high)


def _log_half_squared_norm(residual: torch.Tensor) -> torch.Tensor:
    """log(½‖r_n‖²) per row, as log(½‖r_n/s_n‖²) + 2 log s_n with s_n = max_k |r_nk| (detached), so that no square
    underflows or overflows; −inf, with gradient 0, for a row r_n = 0."""
    scale = residual.detach().abs().amax(dim=1)
    scale = torch.where(scale > 0, scale, 1.0)
    return _log_or_neginf(0.5 * (residual / scale[:, None]).square().sum(dim=1)) + 2 * torch.log(scale)


def log_loss_terms(outputs: torch.Tensor, y: torch.Tensor, loss: str, *, validate: bool = True) -> torch.Tensor:
    """Per-sample log ℓ(x_n, y_n) in float64, finite for margins of any size (``mse``: −inf at an exact fit,
    where the gradient is 0, as is ℓ's).

    ``validate=False`` skips the checks of ``loss``, of the labels (labels must then be 0..K−1) and of the outputs'
    finiteness (NaN or ±inf outputs are refused naming the first).
    """
    if validate:
        check_choice("loss", loss, LOSSES)
        y = canonical_labels(outputs, y)
        check_finite("model outputs", outputs)
    outputs = outputs.to(torch.float64)
    if loss == "mse":
        if is_binary_output(outputs):
            residual = outputs.reshape(-1, 1) - _signs(y)[:, None]
        else:
            residual = outputs - _label_mask(outputs, y).to(outputs.dtype)
        return _log_half_squared_norm(residual)
    log_sum = _log_exponential_sum(outputs, y)
    if loss == "exponential":
        return log_sum
    return log_softplus_log(log_sum)


def log_loss(
    outputs: torch.Tensor, y: torch.Tensor, loss: str, *, reduction: str = "sum", validate: bool = True
) -> torch.Tensor:
    """log ℒ (float64 scalar) with ℒ = Σ_n ℓ_n (``reduction="sum"``) or ℒ = (1/N) Σ_n ℓ_n (``"mean"``).

    Computed as a log-sum-exp of the per-sample log-losses, so log ℒ = −10⁴ is as exact as log ℒ = −1. An exactly
    fitted sample (``mse``) adds nothing to ∇ log ℒ = Σ_n ∇ℓ_n / ℒ; when every sample is fitted, log ℒ = −inf and
    its gradient is taken as 0, the value of ∇ℒ there.
    """
    if validate:
        check_choice("reduction", reduction, ("sum", "mean"))
    total = logsumexp(log_loss_terms(outputs, y, loss, validate=validate), dim=0)
    return total - math.log(y.shape[0]) if reduction == "mean" else total


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
