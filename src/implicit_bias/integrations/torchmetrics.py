"""Neural collapse and the normalized margin as ``torchmetrics.Metric`` s: ``update`` per batch, ``compute`` at the
end, distributed sync, ``reset``, ``.to(device)``, ``forward`` and ``MetricCollection`` as torchmetrics does them.

:class:`NeuralCollapse` accumulates with the helpers of :class:`~implicit_bias.metrics.CollapseAccumulator`
(:func:`~implicit_bias.metrics.collapse.add_shifted_batch`) and computes with the accumulator itself, so the two
cannot drift apart; :class:`NormalizedMargin` uses the margin helpers of :mod:`implicit_bias.metrics.margins`.

References
----------
.. [1] Papyan, V., Han, X. Y. & Donoho, D. L. (2020). Prevalence of neural collapse during the terminal phase of
       deep learning training. PNAS 117(40). NC1 = tr(Σ_W Σ_B^†)/K (Fig. 6), NC2 (Figs. 2–3), NC3 (Fig. 5).
.. [2] Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks. ICLR.
       Normalized margin γ̄ = q_min / ‖θ‖^L (§3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

try:
    from torchmetrics import Metric
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "implicit_bias.integrations.torchmetrics needs torchmetrics: pip install 'implicit-bias[torchmetrics]'"
    ) from error

from ..errors import InvalidArgumentError, NotSeparatedError, NumericalError
from ..losses import output_margins
from ..metrics.collapse import CollapseAccumulator, CollapseReport, add_shifted_batch, check_feature_batch, gram_edges
from ..metrics.margins import homogeneity_degree, normalize_by_norm, parameter_norm
from ..validation import check_choice, check_features, check_finite, check_scalar

CANCELLATION_LIMIT = 1e-6  # the largest estimated relative error of the within-class scatter NeuralCollapse returns
SCALAR_FIELDS = ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance", "etf_floor")
CLASSIFIER_FIELDS = ("equinorm_w", "self_duality", "self_duality_wh")


class _Live:
    """Holds a user's module without registering it as a submodule (so the metric's ``.to()``, ``state_dict()``
    and ``parameters()`` leave it alone); copies of the metric (``clone()``, ``MetricCollection``) share the live
    module instead of freezing a copy of its weights. Pickling carries the module along."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict) -> _Live:
        return self

    def __getstate__(self) -> nn.Module:
        return self.module

    def __setstate__(self, module: nn.Module) -> None:
        self.module = module


def _agreed(stacked: torch.Tensor) -> torch.Tensor:
    """The reduction of a state every rank must hold identically (the shift): that value, or a refusal."""
    first = stacked[0]
    if not all(torch.equal(first, other) for other in stacked[1:]):
        raise InvalidArgumentError(
            "NeuralCollapse's shift differs between the ranks (or the merged metrics): their sums are taken around "
            "different points and cannot be added; give every rank the same shift= (e.g. broadcast it from rank 0)"
        )
    return first.clone()


class NeuralCollapse(Metric):
    """Neural-collapse metrics (NC1, NC2, NC3) of D-dimensional features over K classes, as a torchmetrics Metric.

    ``update(features, labels)`` adds a batch (B, D) with labels (B,) in 0..K−1; ``compute()`` returns a dict of
    float64 scalar tensors — nc1 = tr(Σ_W Σ_B^†)/K (Papyan, Han & Donoho 2020, Fig. 6), nc1_trace = tr Σ_W/tr Σ_B,
    cdnv, equinorm, equiangularity, max_angle, etf_distance, etf_floor (NC2), plus equinorm_w, self_duality and
    self_duality_wh (NC3) when a ``classifier`` is given — ready for ``log_dict`` and ``MetricCollection``;
    :meth:`report` returns the whole :class:`~implicit_bias.metrics.CollapseReport` (per-class counts, norms and
    variances, missing and singleton classes). The definitions and conventions are those of
    :class:`~implicit_bias.metrics.CollapseAccumulator`, which does the computing. NC4 needs the final class
    means in a second pass: use the accumulator's ``ncc_update`` for it.

    Parameters
    ----------
    num_classes, dim : int
        K and D.
    global_mean : {"unweighted", "weighted"}
        μ_G as the mean of the class means (Papyan's balanced setting) or the sample mean.
    rcond : float
        Relative tolerance of Σ_B's pseudo-inverse.
    shift : tensor (D,) or (K, D), or None
        The fixed points s_c the sums are taken around (None: 0); it must be the same on every rank. See Notes.
    classifier : module with ``weight`` (K, D) and optionally ``bias`` (K,), or None
        The layer after the features (e.g. an ``nn.Linear``), read at every compute for the NC3 fields; it is
        referenced, not copied, and never moved or modified.
    **kwargs
        torchmetrics' Metric options (``sync_on_compute``, ``process_group``, …).

    Notes
    -----
    State: every entry a running total with ``dist_reduce_fx="sum"`` — counts n_c (int64, K), shifted sums
    u_c = Σ_{i∈c} (h_i − s_c) (K × D), shifted squares q_c = Σ_{i∈c} ‖h_i − s_c‖² (K) and the shifted scatter
    T = Σ_i (h_i − s_{y_i})(h_i − s_{y_i})ᵀ (D × D, float64) — and the shift itself, which each rank holds
    identically (its reduction checks that and refuses a disagreement). Sums around one fixed point add exactly
    across batches and ranks, so sync, ``forward`` and ``merge_state`` give one pass over all the data; memory
    is O(KD + D²) whatever the number of samples.

    Accuracy: S_W = T − Σ_c n_c d_cd_cᵀ with d_c = u_c/n_c = μ_c − s_c is a difference, and the rounding of the
    sums (m terms each, m ≤ N) costs, to first order,
    |Δ tr Σ_W| / tr Σ_W ≤ 3 m ε (1 + ρ),  ρ = Σ_c n_c ‖μ_c − s_c‖² / Σ_c n_c σ²_c,
    with ε = 2⁻⁵² in float64; σ²_c, nc1_trace, cdnv inherit it and NC1 behaves alike. Measured against a
    float64 two-pass reference (N = 200, D = 8, offset 10³, spread 1, ρ = 1.05e6, bound 1.4e−7): NC1 6.9e−10,
    nc1_trace 1.4e−10, cdnv 4.9e−11 with the default shift 0; 1.2e−13 or less with a shift at the class means
    rounded to integers. With shift 0, ρ ≈ ‖μ‖²/σ²: offset 10⁴ and spread 10⁻² (ρ = 1e12) would lose ~12 digits,
    and is refused (below). A ``shift`` near the class means (the class means of an earlier epoch, from
    :meth:`class_means`, or of a first batch broadcast from rank 0) makes ρ ≈ 0 and the result exact to float64
    — the :class:`CollapseAccumulator` does this automatically with per-class shifts from its first batch, which
    cannot be summed across ranks. ``compute`` refuses (:class:`~implicit_bias.errors.NumericalError`) when the
    estimated error √N ε max_c κ_c exceeds 1e−6, κ_c = q_c / (q_c − n_c‖d_c‖²) the cancellation factor of class c.

    >>> metric = NeuralCollapse(num_classes=3, dim=2)
    >>> metric.update(torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.0, 1.0], [0.0, 1.2], [-1.0, -1.0], [-1.0, -0.9]]),
    ...               torch.tensor([0, 0, 1, 1, 2, 2]))
    >>> round(float(metric.compute()["nc1_trace"]), 6)
    0.003566
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        global_mean: str = "unweighted",
        rcond: float = 1e-10,
        shift: torch.Tensor | None = None,
        classifier: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        check_scalar("num_classes", num_classes, int, low=2)
        check_scalar("dim", dim, int, low=1)
        check_choice("global_mean", global_mean, ("unweighted", "weighted"))
        check_scalar("rcond", rcond, (int, float), low=0.0)
        if classifier is not None:
            kwargs.setdefault("compute_with_cache", False)  # its weights may change between two computes
        super().__init__(**kwargs)
        self.num_classes, self.dim, self.global_mean, self.rcond = num_classes, dim, global_mean, float(rcond)
        self._classifier = None if classifier is None else _Live(_check_classifier(classifier, num_classes, dim))
        self._edges = gram_edges(dim)
        f64 = torch.float64
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("shift", self._shift_tensor(shift), dist_reduce_fx=_agreed)
        self.add_state("shifted_sums", torch.zeros(num_classes, dim, dtype=f64), dist_reduce_fx="sum")
        self.add_state("shifted_squares", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")
        self.add_state("shifted_scatter", torch.zeros(dim, dim, dtype=f64), dist_reduce_fx="sum")

    def _shift_tensor(self, shift: torch.Tensor | None) -> torch.Tensor:
        k, d = self.num_classes, self.dim
        if shift is None:
            return torch.zeros(k, d, dtype=torch.float64)
        if (
            not isinstance(shift, torch.Tensor)
            or not shift.dtype.is_floating_point
            or shift.shape not in ((d,), (k, d))
        ):
            got = f"shape {tuple(shift.shape)} and dtype {shift.dtype}" if isinstance(shift, torch.Tensor) else shift
            raise InvalidArgumentError(f"shift must be a float tensor of shape ({d},) or ({k}, {d}), got {got}")
        check_finite("shift", shift)
        return shift.detach().to(device="cpu", dtype=torch.float64).expand(k, d).clone()

    def reset(self, shift: torch.Tensor | None = None) -> None:
        """Forget everything seen so far; with ``shift``, take sums around it from now on (every rank alike)."""
        if shift is not None:
            value = self._shift_tensor(shift).to(device=self.shifted_sums.device, dtype=self.shifted_sums.dtype)
            self._defaults["shift"] = value
            self.shift = value.clone()
        super().reset()

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of features (B, D) with their labels (B,) (any device and floating dtype)."""
        check_feature_batch(features, labels, self.num_classes, self.dim)
        totals = self.shifted_sums
        labels = labels.to(device=totals.device, dtype=torch.int64)  # features are cast chunk by chunk
        add_shifted_batch(
            features.detach(), labels, self.shift, totals, self.shifted_squares, self.shifted_scatter, self._edges
        )
        self.counts += torch.bincount(labels, minlength=self.num_classes)

    def _accumulator(self) -> CollapseAccumulator:
        """A CollapseAccumulator holding the current (synced, inside compute) totals, checked for cancellation."""
        self._refuse_cancellation()
        totals = self.shifted_sums
        accumulator = CollapseAccumulator(
            self.num_classes,
            self.dim,
            dtype=totals.dtype,
            device=totals.device,
            global_mean=self.global_mean,
            rcond=self.rcond,
        )
        state = accumulator.state_dict()
        state.update(
            counts=self.counts,
            seen=self.counts > 0,
            shifts=self.shift,
            shifted_sums=totals,
            shifted_scatter=self.shifted_scatter,
            shifted_squares=self.shifted_squares,
        )
        accumulator.load_state_dict(state)
        return accumulator

    def _refuse_cancellation(self) -> None:
        n = self.counts.to(torch.float64)
        squares = self.shifted_squares.to(torch.float64)
        offsets = self.shifted_sums.to(torch.float64).square().sum(dim=1) / n.clamp(min=1)  # n_c ‖d_c‖²
        spread = squares - offsets
        judged = (self.counts >= 2) & (squares > 0)
        factors = torch.where(judged, squares / spread.clamp(min=0), torch.ones_like(squares))  # κ_c (inf: all lost)
        worst = int(factors.argmax())
        estimate = math.sqrt(float(n.sum())) * torch.finfo(self.shifted_sums.dtype).eps * float(factors[worst])
        if not estimate <= CANCELLATION_LIMIT:
            distance = math.sqrt(float(offsets[worst] / n[worst]))  # ‖μ_c − s_c‖
            rms = math.sqrt(max(float(spread[worst]), 0.0) / float(n[worst]))  # σ_c as the sums resolve it
            lost = f"~{estimate:.1e} relative" if math.isfinite(estimate) else "every digit"
            raise NumericalError(
                f"NeuralCollapse cannot resolve the within-class spread of class {worst}: its mean lies "
                f"{distance:.3g} from the shift against a spread of {rms:.3g}, so the sums around the shift lose "
                f"{lost} (limit {CANCELLATION_LIMIT:g}); pass shift= near the class means, e.g. "
                "metric.reset(shift=metric.class_means()) after a first epoch"
            )

    def _weights(self, weight: torch.Tensor | None, bias: torch.Tensor | None):
        if weight is None and self._classifier is not None:
            layer = self._classifier.module
            return layer.weight, getattr(layer, "bias", None)
        return weight, bias

    def compute(self) -> dict[str, torch.Tensor]:
        """The scalar fields of :meth:`report` as float64 tensors (NC3 fields only with a ``classifier``)."""
        report = self._accumulator().compute(*self._weights(None, None))
        names = SCALAR_FIELDS + (CLASSIFIER_FIELDS if self._classifier is not None else ())
        return {name: torch.tensor(getattr(report, name), dtype=torch.float64) for name in names}

    def report(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> CollapseReport:
        """The full :class:`CollapseReport` of everything seen on every rank (``weight``/``bias``: the classifier
        after the layer; default: the ``classifier`` given at construction, if any)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            return self._accumulator().compute(*self._weights(weight, bias))

    def class_means(self) -> torch.Tensor:
        """μ_c (K, D) over every rank's data, float64 — for a class without samples, its current shift (so the
        result suits ``reset(shift=...)``)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            n = self.counts.clamp(min=1).to(self.shifted_sums.dtype)
            return (self.shift + self.shifted_sums / n[:, None]).to(torch.float64).clone()


def _check_classifier(classifier: nn.Module, num_classes: int, dim: int) -> nn.Module:
    weight = getattr(classifier, "weight", None)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (num_classes, dim):
        got = f"shape {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else f"{type(classifier).__name__}"
        raise InvalidArgumentError(
            f"classifier must be a layer with a weight of shape ({num_classes}, {dim}) (e.g. nn.Linear({dim}, "
            f"{num_classes})), got {got}"
        )
    return classifier


class NormalizedMargin(Metric):
    """γ̄_p = q_min / ‖θ‖_p^L, the normalized margin of an L-homogeneous network (Lyu & Li 2020, §3), streamed.

    ``update(outputs, labels)`` takes the model's outputs on a batch — shape (B,) with labels in {0, 1} or {±1},
    or (B, K) with labels in 0..K−1 — and keeps the running minimum of the margins q_n = y_nΦ(x_n) or
    Φ_{y_n} − max_{j≠y_n} Φ_j (``dist_reduce_fx="min"``); ``compute()`` divides it by the model's current
    parameter norm to the power L, a float64 scalar tensor. Invariant under θ → cθ.

    Parameters
    ----------
    model : nn.Module
        The network whose outputs are passed to ``update``; its parameters are read at every ``compute`` (it is
        referenced, never moved, copied or modified).
    degree : float or None
        L. None: detected with :func:`~implicit_bias.metrics.homogeneity_degree` on ``inputs`` at construction.
    inputs : tensor or None
        A batch of model inputs for that detection (needed when ``degree`` is None).
    p : {1, 2, inf}
        The norm of θ (p = ∞, 1: Tsilivis, Vardi & Kempe 2024).
    **kwargs
        torchmetrics' Metric options.

    ``compute`` raises :class:`~implicit_bias.errors.NotSeparatedError` while some sample has q_n ≤ 0 (the
    normalized margin is only defined once the data are fit) and :class:`~implicit_bias.errors.InvalidArgumentError`
    before any sample. Pass outputs of the model in evaluation mode for the margin of the function it computes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: nn.Module,
        *,
        degree: float | None = None,
        inputs: torch.Tensor | None = None,
        p: float = 2,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
            raise InvalidArgumentError(
                f"model must be an nn.Module with parameters, got {type(model).__name__}; the normalized margin "
                "divides by their norm"
            )
        if p not in (1, 2, math.inf):
            raise InvalidArgumentError(f"p must be 1, 2 or inf, got {p!r}")
        if degree is None:
            if inputs is None:
                raise InvalidArgumentError(
                    "NormalizedMargin needs degree= (L, e.g. 2 for a bias-free two-layer ReLU network) or inputs= "
                    "(a batch of model inputs to detect it with homogeneity_degree)"
                )
            degree = homogeneity_degree(model, inputs)
        check_scalar("degree", degree, (int, float), low=0.0, low_inclusive=False)
        kwargs.setdefault("compute_with_cache", False)  # the model's norm changes between two computes
        super().__init__(**kwargs)
        self._model, self.degree, self.p = _Live(model), float(degree), p
        self.add_state("min_margin", torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("num_samples", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_unfit", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of model outputs (B,) or (B, K) with their labels (B,)."""
        outputs = check_features(outputs, name="outputs", allow_empty=True).detach()
        q = output_margins(outputs, labels).to(self.min_margin.device)
        if q.numel():
            self.min_margin = torch.minimum(self.min_margin, q.min().to(self.min_margin.dtype))
        self.num_samples += q.numel()
        self.num_unfit += int((q <= 0).sum())

    def compute(self) -> torch.Tensor:
        """q_min / ‖θ‖_p^L over every sample seen (on every rank), with the model's current θ."""
        total = int(self.num_samples)
        if total == 0:
            raise InvalidArgumentError("NormalizedMargin has seen no samples: call update(outputs, labels) first")
        q_min = float(self.min_margin)
        if int(self.num_unfit) > 0:
            raise NotSeparatedError(
                f"the model does not fit the data: {int(self.num_unfit)} of {total} samples have margin <= 0 "
                f"(q_min = {q_min:.4g}); a normalized margin is only defined once every point is classified correctly"
            )
        norm = parameter_norm(self._model.module, self.p)
        return torch.tensor(normalize_by_norm(q_min, norm, self.degree), dtype=torch.float64)
