"""Probes: callbacks that compute metrics at the logged steps of a run.

A probe is any callable ``probe(context) -> {name: value}``. It returns only the values that are defined at
that step (a margin before the data is fit is simply absent from the row). A probe that keeps state between
calls defines ``state_dict() -> {key: Tensor}`` and ``load_state_dict(state)``: checkpoints save that state and
resuming restores it, so a resumed run logs exactly what an uninterrupted one does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import (
    InvalidArgumentError,
    NotHomogeneousError,
    NotQuasiHomogeneousError,
    NotSeparatedError,
    UntraceableModelError,
)
from ..losses import MARGIN_LOSSES, output_margins
from ..metrics.asymmetric import lambda_seminorm, rate_group_norms, rate_shares
from ..metrics.direction import alignment, direction_cosine, flat_parameters, layer_norms
from ..metrics.kkt import KKT_MEMORY, kkt_residual, support_size
from ..metrics.layerwise import TRACE_SAMPLES, collapse_by_layer, collapse_of_features, resolve_layers
from ..metrics.margins import (
    homogeneity_degree,
    normalize_by_norm,
    parameter_norm,
    require_fit_loss,
    require_separated,
)
from ..metrics.spectra import layer_spectra
from ..models.features import LayerTrace, trace_layers
from ..models.inference import evaluation
from ..symmetry.rates import Rates, infer_rates
from ..validation import check_choice


@dataclass(frozen=True)
class ProbeContext:
    """What a probe sees at a logged step.

    Attributes
    ----------
    step : int
        Number of optimizer steps taken.
    model : nn.Module
    X, y : Tensor
        The full training set, on the training device and in the training dtype.
    outputs : Tensor
        Φ(θ; X) in evaluation mode, float64.
    log_loss : float
        log ℒ with ℒ = Σ_n ℓ(q_n) over the training set (Lyu & Li's sum convention).
    loss : str
        The loss name.
    optimizer : torch.optim.Optimizer
    num_classes : int
        K of the training data.
    eval_batch_size : int or None
        Samples per forward pass for a probe's own passes over ``X`` (fit's ``eval_batch_size``; None: all at
        once); a probe given its own ``batch_size`` uses that instead.
    features : dict of str to Tensor
        (N, D) features of ``X`` captured by the evaluation pass that made ``outputs`` (conv maps average-pooled),
        for the layers a probe's ``feature_layers(model, X)`` asked for; empty when ``eval_batch_size`` is set
        (features of all N samples are then not kept).
    """

    step: int
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    outputs: torch.Tensor
    log_loss: float
    loss: str
    optimizer: torch.optim.Optimizer
    num_classes: int = 2
    eval_batch_size: int | None = None
    features: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def batch_size(self, own: int | None) -> int | None:
        """A probe's own ``batch_size`` if it has one, else the run's ``eval_batch_size``."""
        return own if own is not None else self.eval_batch_size

    @property
    def margins(self) -> torch.Tensor:
        """Per-sample margins q_n, float64."""
        return output_margins(self.outputs, self.y)


Probe = Callable[[ProbeContext], Mapping[str, float]]


def probe_name(probe: Probe) -> str:
    """A probe's name: its function's name or its class's."""
    return getattr(probe, "__name__", type(probe).__name__)


def _degree_state(degree: float | None) -> dict[str, torch.Tensor]:
    """A detected (or given) degree as a checkpointable state; NaN stands for "not homogeneous"."""
    return {} if degree is None else {"degree": torch.tensor(degree, dtype=torch.float64)}


def _loaded_degree(state: Mapping[str, torch.Tensor]) -> float | None:
    return float(state["degree"]) if "degree" in state else None


logger = logging.getLogger("implicit_bias.train")


def _detected_degree(context: ProbeContext, missing: str, batch_size: int | None) -> float | None:
    """The model's homogeneity degree, or None after a warning in the run's log saying what will be ``missing``
    (e.g. "margins probe: no normalized margins") and the fix."""
    try:
        return homogeneity_degree(context.model, context.X, batch_size=context.batch_size(batch_size))
    except NotHomogeneousError as error:
        logger.warning("%s for this model (pass degree=L to the probe if it is L-homogeneous): %s", missing, error)
        return None


FLAVOURS = {"": 2, "_linf": math.inf, "_l1": 1}  # key suffix → p of ‖θ‖_p (Tsilivis, Vardi & Kempe 2024)


class MarginProbe:
    """Logs ``q_min``, ‖θ‖_p (``param_norm``, ``param_norm_linf``, ``param_norm_l1``) and, once every point is
    fit, the normalized margins q_min/‖θ‖_p^L (``normalized_margin``, ``…_linf``, ``…_l1``) and, for margin
    losses, the smoothed margins ℓ^{−1}(ℒ)/‖θ‖_p^L (``smoothed_margin``, ``…_linf``, ``…_l1``) of Lyu & Li
    (2020, §3–4) and Tsilivis, Vardi & Kempe (2024).

    The homogeneity degree L is detected on the first call unless given (``batch_size`` samples at a time, all at
    once by default). For a model that is not homogeneous the normalized quantities are undefined: the probe says
    so once in the run's log, with the fix when the user knows L, and logs q_min and ‖θ‖.
    """

    def __init__(self, degree: float | None = None, batch_size: int | None = None) -> None:
        self.degree, self.batch_size = degree, batch_size
        self.homogeneous = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The degree L once known (NaN once the model was found not homogeneous)."""
        return _degree_state(self.degree if self.homogeneous else math.nan)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        degree = _loaded_degree(state)
        self.homogeneous = degree is None or not math.isnan(degree)
        self.degree = degree if self.homogeneous else None

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        q = context.margins
        norms = {suffix: parameter_norm(context.model, p) for suffix, p in FLAVOURS.items()}
        row = {"q_min": float(q.min()), **{f"param_norm{suffix}": norm for suffix, norm in norms.items()}}
        if self.degree is None and self.homogeneous:
            self.degree = _detected_degree(context, "margins probe: no normalized margins", self.batch_size)
            self.homogeneous = self.degree is not None
        if self.degree is None:
            return row
        try:
            q_min = require_separated(q)
            row.update(
                {
                    f"normalized_margin{suffix}": normalize_by_norm(q_min, norm, self.degree)
                    for suffix, norm in norms.items()
                }
            )
            if context.loss in MARGIN_LOSSES:
                numerator = require_fit_loss(context.loss, context.log_loss)
                row.update(
                    {
                        f"smoothed_margin{suffix}": normalize_by_norm(numerator, norm, self.degree)
                        for suffix, norm in norms.items()
                    }
                )
        except NotSeparatedError:
            pass
        return row


def norms_probe(context: ProbeContext) -> dict[str, float]:
    """‖W‖_F of every parameter tensor, as ``norm/<parameter name>``, and the output scale ``output_rms`` =
    (mean Φ²)^{1/2} over the training set (together they give :func:`~implicit_bias.metrics.empirical_rates`)."""
    row = {f"norm/{name}": value for name, value in layer_norms(context.model).items()}
    row["output_rms"] = float(context.outputs.pow(2).mean().sqrt())
    return row


class AsymmetricMarginProbe:
    """``lambda_seminorm`` ‖θ‖_{Λmax}, ``rate_norm/<λ>`` and ``rate_share/<λ>`` per rate group (see
    :func:`~implicit_bias.metrics.rate_shares`) and, once every point is fit,
    ``asymmetric_margin`` q_min/‖θ‖_{Λmax}^{1/λ_max} (Kunin et al. 2023, Thm 4.1).

    Rates are inferred on the first call (``choice``, see :func:`~implicit_bias.symmetry.infer_rates`, with the
    model in evaluation mode, as margins are measured) unless given. A model that is not quasi-homogeneous is
    reported once in the run's log and the probe logs nothing. The rates depend on the architecture alone, not on
    θ, so a resumed run infers the same ones again and the probe keeps no checkpointed state.
    """

    def __init__(self, rates: Mapping[str, float] | None = None, choice: str = "uniform") -> None:
        self.rates = None if rates is None else Rates(rates)
        self.choice, self.failed = choice, False

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        if self.rates is None and not self.failed:
            try:
                with evaluation(context.model):
                    self.rates = infer_rates(context.model, context.X[:64], self.choice)
            except (NotQuasiHomogeneousError, UntraceableModelError) as error:
                self.failed = True
                logger.warning("asymmetric probe: no asymmetric margin for this model: %s", error)
        if self.rates is None:
            return {}
        norm = lambda_seminorm(context.model, self.rates)
        row = {"lambda_seminorm": norm}
        row.update(
            {f"rate_norm/{rate:.6g}": value for rate, value in rate_group_norms(context.model, self.rates).items()}
        )
        try:
            shares = rate_shares(context.model, self.rates)
            row.update({f"rate_share/{rate:.6g}": value for rate, value in shares.items()})
        except InvalidArgumentError:  # every scaling parameter is still zero
            pass
        q = context.margins
        if bool((q > 0).all()) and norm > 0:
            row["asymmetric_margin"] = normalize_by_norm(float(q.min()), norm, 1.0 / self.rates.lambda_max)
        return row


def alignment_probe(context: ProbeContext) -> dict[str, float]:
    """``alignment`` = cos(θ, −∇ℒ) (Ji & Telgarsky 2020)."""
    try:
        return {
            "alignment": alignment(
                context.model, context.X, context.y, context.loss, batch_size=context.batch_size(None)
            )
        }
    except InvalidArgumentError:  # a zero gradient (an exact mse fit) or zero parameters
        return {}


class DirectionProbe:
    """``direction_cosine`` = cos(θ_t, θ_s) with s the previous logged step (Ji & Telgarsky 2020)."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """θ_s of the previous logged step, once there is one."""
        return {} if self.previous is None else {"previous": self.previous}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.previous = state.get("previous")

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        current = flat_parameters(context.model)
        row = {}
        if self.previous is not None and current.norm() > 0 and self.previous.norm() > 0:
            row["direction_cosine"] = direction_cosine(self.previous, current)
        self.previous = current
        return row


class KKTProbe:
    """``kkt_epsilon`` (ε/‖θ̃‖) and ``kkt_delta`` (δ) of Lyu & Li's (ε, δ)-KKT condition, once every point is fit.

    The degree L is detected at the first fit step unless given; a model that is not homogeneous is reported once
    in the run's log and the probe logs nothing. ``batch_size`` and ``max_memory`` go to
    :func:`~implicit_bias.metrics.kkt_residual`.
    """

    def __init__(
        self,
        degree: float | None = None,
        slack: float = 0.2,
        max_points: int = 512,
        batch_size: int | None = None,
        max_memory: int = KKT_MEMORY,
    ) -> None:
        self.degree, self.slack, self.max_points = degree, slack, max_points
        self.batch_size, self.max_memory = batch_size, max_memory

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The degree L once known (NaN once the model was found not homogeneous)."""
        return _degree_state(self.degree)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.degree = _loaded_degree(state)

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        if not bool((context.margins > 0).all()):
            return {}
        if self.degree is None:
            detected = _detected_degree(context, "kkt probe: no KKT residuals", self.batch_size)
            self.degree = math.nan if detected is None else detected
        if math.isnan(self.degree):
            return {}
        epsilon, delta = kkt_residual(
            context.model,
            context.X,
            context.y,
            degree=self.degree,
            slack=self.slack,
            max_points=self.max_points,
            batch_size=context.batch_size(self.batch_size),
            max_memory=self.max_memory,
        )
        return {"kkt_epsilon": epsilon, "kkt_delta": delta}


def support_probe(context: ProbeContext) -> dict[str, float]:
    """``support_count``: samples with q_n − q_min ≤ 3 log 10 (see :func:`~implicit_bias.metrics.support_count`)."""
    return {"support_count": float(support_size(context.margins, 3.0))}


class CollapseProbe:
    """Neural collapse of the training set at the model's feature layers (default: all of them), through
    :func:`~implicit_bias.metrics.collapse_by_layer`: ``nc1/<layer>``, ``nc1_trace/<layer>``, ``cdnv/<layer>``,
    ``equinorm/<layer>``, ``equiangularity/<layer>``, ``etf_distance/<layer>``, ``ncc_accuracy/<layer>`` and, at
    the layer feeding the classifier, ``self_duality``, ``self_duality_wh`` and ``ncc_mismatch`` (NC3, NC4)."""

    KEYS = (
        "nc1",
        "nc1_trace",
        "cdnv",
        "equinorm",
        "equiangularity",
        "etf_distance",
        "self_duality",
        "self_duality_wh",
        "ncc_mismatch",
    )

    def __init__(self, layers: list[str] | None = None, reduction: str = "avgpool") -> None:
        self.layers, self.reduction = layers, reduction
        self._resolved: tuple[int, tuple[str, ...], LayerTrace] | None = None  # (id of the model, layers, trace)

    def _structure(self, model: nn.Module, X: torch.Tensor) -> tuple[tuple[str, ...], LayerTrace]:
        if self._resolved is None or self._resolved[0] != id(model):
            with evaluation(model):
                trace = trace_layers(model, X[:TRACE_SAMPLES])
            self._resolved = (id(model), resolve_layers(model, X, self.layers, trace=trace), trace)
        return self._resolved[1], self._resolved[2]

    def feature_layers(self, model: nn.Module, X: torch.Tensor) -> tuple[str, ...]:
        """The layers whose average-pooled features the evaluation pass should keep for this probe."""
        return self._structure(model, X)[0] if self.reduction == "avgpool" else ()

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        layers, trace = self._structure(context.model, context.X)
        batch = {"batch_size": context.eval_batch_size} if context.eval_batch_size is not None else {}
        if self.reduction == "avgpool" and all(name in context.features for name in layers):
            head = context.model.get_submodule(trace.head) if trace.head is not None else None
            fits = isinstance(head, nn.Linear) and head.out_features == context.num_classes
            result = collapse_of_features(
                {name: context.features[name] for name in layers},
                context.y,
                context.num_classes,
                classifier_layer=trace.head_input,
                classifier=(head.weight, head.bias) if fits else None,
                **batch,
            )  # no forward pass: the evaluation's features
        else:
            result = collapse_by_layer(
                context.model,
                (context.X, context.y),
                layers,
                num_classes=context.num_classes,
                reduction=self.reduction,
                **batch,
            )
        row = {}
        for layer, measured in result.items():
            for key in self.KEYS:
                value = getattr(measured.train, key)
                if value is not None:
                    row[f"{key}/{layer}"] = float(value)
            row[f"ncc_accuracy/{layer}"] = measured.ncc_train_accuracy
        return row


def spectra_probe(context: ProbeContext) -> dict[str, float]:
    """Rank measures of every weight matrix (conv kernels as (out, in·k…)): ``rank/<name>`` (σ_i > 1e−3 σ_1),
    ``rank_frobenius/<name>`` (Galanti et al. 2022), ``stable_rank/<name>``, ``effective_rank/<name>``; see
    :func:`~implicit_bias.metrics.layer_spectra`."""
    row = {}
    for name, spectrum in layer_spectra(context.model).items():
        row.update(
            {f"{key}/{name}": value for key, value in spectrum.summary().items() if key != "participation_ratio"}
        )
    return row


PROBES: dict[str, Callable[[], Probe]] = {
    "margins": MarginProbe,
    "norms": lambda: norms_probe,
    "asymmetric": AsymmetricMarginProbe,
    "alignment": lambda: alignment_probe,
    "direction": DirectionProbe,
    "kkt": KKTProbe,
    "support": lambda: support_probe,
    "collapse": CollapseProbe,
    "spectra": lambda: spectra_probe,
}


def make_probe(name: str) -> Probe:
    """A fresh probe registered under ``name`` (see :data:`PROBES`)."""
    check_choice("probe", name, PROBES)
    return PROBES[name]()
