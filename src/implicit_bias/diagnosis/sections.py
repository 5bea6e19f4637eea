"""The sections of a diagnosis, each a function returning its rows and the reasons for what it could not measure.

Every number comes from the toolkit's own metrics (``implicit_bias.metrics``, ``implicit_bias.symmetry``); the
functions here only choose which ones apply to the model and turn their results into rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ImplicitBiasError, NotSeparatedError
from ..losses import canonical_labels, log_loss, logsumexp, output_margins
from ..metrics.asymmetric import lambda_seminorm
from ..metrics.collapse import CollapseReport
from ..metrics.effective_depth import depth_of
from ..metrics.kkt import kkt_residual, support_size
from ..metrics.layerwise import LayerCollapse, collapse_by_layer
from ..metrics.margins import homogeneity_degree, normalize_by_norm, parameter_norm, require_fit_loss
from ..metrics.spectra import Spectrum, feature_spectra, layer_spectra
from ..models.features import LayerTrace
from ..models.inference import predict
from ..symmetry import Rates, check_rates, infer_rates
from .result import Row

TOP_SINGULAR_VALUES = 16  # σ_1 … σ_16 of each weight in the table (all of them for smaller matrices)
SMOOTHED_LOSS = "exponential"
SUPPORT_K = 3.0  # support: q_n − q_min ≤ 3 log 10 (e^{−q_n} within a factor 1000 of the largest term)
EFFECTIVE_DEPTH_EPS = 0.01
RANK_VARIANTS = {
    "rank": "σ_i > 1e-3 σ_1",
    "rank_frobenius": "σ_i > 1e-3 ‖A‖_F (Galanti et al. 2022)",
    "stable_rank": "‖A‖²_F / σ_1²",
    "effective_rank": "Roy & Vetterli 2007",
    "participation_ratio": "(Σσ²)² / Σσ⁴",
}
COLLAPSE_METRICS = ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance")
CLASSIFIER_METRICS = ("equinorm_w", "self_duality", "self_duality_wh", "ncc_mismatch")


def count(n: int) -> str:
    """``1347`` as ``"1 347"`` (thin groups of three, as in the reports)."""
    return f"{n:,}".replace(",", " ")


@dataclass
class Section:
    """The rows and skipped reasons one section produced (``name`` prefixes each reason)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float, layer: str = "", variant: str = "") -> None:
        """Append a row; a value that is not finite becomes a skipped reason instead (never a NaN row)."""
        value = float(value)
        if math.isfinite(value):
            self.rows.append(Row(self.name, layer, metric, value, variant))
        else:
            where = f" of {layer!r}" if layer else ""
            self.skip(f"{metric}{where} ({variant or 'default'}) is undefined here ({value})")

    def skip(self, reason: str) -> None:
        self.skipped.append(f"{self.name}: {reason}")


@dataclass(frozen=True)
class Structure:
    """What the architecture section found: the homogeneity degree and the rates (None where there are none)."""

    degree: float | None
    rates: Rates | None


def architecture(
    model: nn.Module, layers: Sequence[str], example: torch.Tensor, trace: LayerTrace
) -> tuple[Section, float | None]:
    """Parameter count, feature layers, the classifier, and the homogeneity degree (Lyu & Li 2020) on
    ``example`` or the reason there is none."""
    section = Section("architecture")
    parameters = list(model.parameters())
    section.add("parameters", sum(p.numel() for p in parameters))
    section.add("parameter_tensors", len(parameters))
    for index, name in enumerate(layers, start=1):
        section.add("feature_layer", index, layer=name, variant="forward order")
    if trace.head is not None:
        head = model.get_submodule(trace.head)
        section.add(
            "classifier_outputs", head.out_features, layer=trace.head, variant=f"nn.Linear reading {trace.head_input}"
        )
    else:
        section.skip(f"classifier: {trace.reason}")
    degree = None
    try:
        degree = homogeneity_degree(model, example)
        section.add("homogeneity_degree", degree, variant=f"Φ(cθ) = c^L Φ(θ), checked on {len(example)} samples")
    except ImplicitBiasError as error:  # NotHomogeneousError, or outputs all zero
        section.skip(f"homogeneity degree: {error}")
    return section, degree


def rates(model: nn.Module, example: torch.Tensor) -> tuple[Section, Rates | None]:
    """Λ per parameter tensor (Kunin et al. 2023, Def. 3.1; ``"uniform"`` choice), the top-rate set and the
    numerical check's error, or the reason the model is not quasi-homogeneous."""
    section = Section("rates")
    try:
        inferred = infer_rates(model, example)
        check = check_rates(model, inferred, example)
    except ImplicitBiasError as error:  # NotQuasiHomogeneousError, UntraceableModelError
        section.skip(str(error))
        return section, None
    for name, value in inferred.items():
        section.add("lambda", value, layer=name, variant="top" if name in inferred.top else "")
    section.add("lambda_max", inferred.lambda_max, variant=inferred.choice)
    section.add("top_tensors", len(inferred.top), variant="tensors at λ_max")
    section.add("family_dimension", inferred.family.dimension if inferred.family is not None else 0)
    section.add("check_definition_error", check.definition_error, variant="max_α |Φ(ψ_α θ) − e^α Φ(θ)| / max|e^α Φ|")
    section.add("check_euler_error", check.euler_error, variant="|⟨∇Φ, Λθ⟩ − Φ| / max|Φ|")
    return section, inferred


def _margin_pass(model: nn.Module, batches: Iterable) -> tuple[torch.Tensor, float]:
    """Per-sample margins q_n (float64, CPU) and log Σ_n e^{−q_n}-type log loss of :data:`SMOOTHED_LOSS`, in one
    forward pass per batch."""
    margins, log_sums = [], []
    for X, y in batches:
        outputs = predict(model, X)
        labels = canonical_labels(outputs, y.to(outputs.device))
        margins.append(output_margins(outputs, labels, validate=False).to(torch.float64).cpu())
        log_sums.append(log_loss(outputs, labels, SMOOTHED_LOSS, validate=False).cpu())
    return torch.cat(margins), float(logsumexp(torch.stack(log_sums), dim=0))


def _gather(batches: Iterable, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples at ``indices`` (positions in the stream of batches), in the order of ``indices``."""
    wanted = set(indices.tolist())
    found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    offset = 0
    for X, y in batches:
        for position in range(offset, offset + len(X)):
            if position in wanted:
                found[position] = (X[position - offset], y[position - offset])
        offset += len(X)
    order = indices.tolist()
    return torch.stack([found[i][0] for i in order]), torch.stack([found[i][1] for i in order])


def margins(
    model: nn.Module,
    train: Iterable,
    test: Iterable | None,
    structure: Structure,
    *,
    kkt: bool = True,
    kkt_points: int = 512,
) -> tuple[Section, dict[str, float]]:
    """Accuracy and the smallest margin; once every training sample is classified correctly, the normalized
    margin q_min/‖θ‖^L (Lyu & Li 2020, §3) for an L-homogeneous model or the asymmetric margin
    q_min/‖θ‖_{Λmax}^{1/λ_max} (Kunin et al. 2023, §4) for a quasi-homogeneous one, the smoothed margin
    ℓ^{−1}(ℒ)/‖θ‖^L (Lyu & Li eq. (5), exponential loss), the support count and the KKT residual (ε, δ)."""
    section = Section("margins")
    q, log_value = _margin_pass(model, train)
    wrong = int((q <= 0).sum())
    section.add("accuracy", float((q > 0).double().mean()), variant="train")
    if test is not None:
        q_test, _ = _margin_pass(model, test)
        section.add("accuracy", float((q_test > 0).double().mean()), variant="test")
    section.add("misclassified", wrong, variant="train, q_n ≤ 0")
    q_min = float(q.min())
    section.add("min_margin", q_min, variant="q_min, unnormalized")
    headline: dict[str, float] = {}
    if wrong:
        section.skip(
            f"{count(wrong)} of {count(len(q))} samples misclassified (q_n ≤ 0): the normalized, smoothed and "
            "asymmetric margins, support count and KKT residual are defined once every sample is fit"
        )
        return section, headline
    section.add("support_count", support_size(q, SUPPORT_K), variant="q_n − q_min ≤ 3 log 10")
    degree, inferred = structure.degree, structure.rates
    if degree is not None:
        norm = parameter_norm(model)
        headline["normalized_margin"] = normalize_by_norm(q_min, norm, degree)
        section.add("normalized_margin", headline["normalized_margin"], variant=f"q_min / ‖θ‖_2^L, L = {degree:g}")
        try:
            numerator = require_fit_loss(SMOOTHED_LOSS, log_value)
            section.add("smoothed_margin", normalize_by_norm(numerator, norm, degree), variant="exponential loss")
        except NotSeparatedError as error:
            section.skip(f"smoothed margin: {error}")
        if kkt:
            normalized = q / q_min
            candidates = torch.nonzero(normalized <= 1.2).flatten()
            support = candidates[torch.argsort(normalized[candidates])][:kkt_points]
            X, y = _gather(train, support)
            residual = kkt_residual(model, X, y, degree=degree, slack=0.2, max_points=kkt_points)
            variant = f"(ε, δ)-KKT of Lyu & Li 2020 over {len(support)} samples with q_n ≤ 1.2 q_min"
            section.add("kkt_epsilon", residual.epsilon, variant=variant)
            section.add("kkt_delta", residual.delta, variant=variant)
        return section, headline
    if inferred is not None:
        seminorm = lambda_seminorm(model, inferred)
        if seminorm > 0:
            headline["asymmetric_margin"] = normalize_by_norm(q_min, seminorm, 1.0 / inferred.lambda_max)
            section.add(
                "asymmetric_margin",
                headline["asymmetric_margin"],
                variant=f"q_min / ‖θ‖_Λmax^(1/λ_max), λ_max = {inferred.lambda_max:g}",
            )
        else:
            section.skip(f"asymmetric margin: the top-rate parameters {list(inferred.top)} are all zero")
        section.skip(
            "smoothed margin and KKT residual: defined for homogeneous models (Lyu & Li 2020); this model is only "
            "quasi-homogeneous (see the asymmetric margin)"
        )
        return section, headline
    section.skip(
        "normalized margin, smoothed margin and KKT residual: the model is neither homogeneous nor "
        "quasi-homogeneous (see the architecture and rates lines)"
    )
    return section, headline


def _report_rows(section: Section, layer: str, report: CollapseReport, variant: str, classifier: bool) -> None:
    for metric in COLLAPSE_METRICS + (CLASSIFIER_METRICS if classifier else ()):
        value = getattr(report, metric)
        if value is not None:
            section.add(metric, value, layer=layer, variant=variant)


def collapse(
    model: nn.Module,
    train: Iterable,
    test: Iterable | None,
    layers: Sequence[str],
    num_classes: int,
    batch_size: int,
    *,
    trace: LayerTrace,
) -> tuple[Section, dict[str, LayerCollapse]]:
    """Neural collapse at every feature layer (Papyan, Han & Donoho 2020: NC1–NC4; Galanti et al. 2022: CDNV;
    nearest-class-centre accuracies), streamed by :func:`~implicit_bias.metrics.collapse_by_layer`. NC3/NC4 need
    the model's linear classifier W; without one they are skipped with the reason and the rest is reported."""
    section = Section("collapse")
    measured = collapse_by_layer(model, train, layers, test=test, num_classes=num_classes, batch_size=batch_size)
    head = model.get_submodule(trace.head) if trace.head is not None else None
    penultimate = trace.head_input
    if head is None:
        section.skip(
            "NC3 (self-duality), NC4 (classifier vs nearest class mean) and W's equinorm: the model has no linear "
            f"classifier ({trace.reason})"
        )
    elif head.out_features != num_classes:
        section.skip(
            f"NC3, NC4 and W's equinorm: the classifier has {head.out_features} output(s) for {num_classes} classes "
            "(they need one row of W per class)"
        )
    elif penultimate not in measured:
        section.skip(f"NC3, NC4 and W's equinorm: the classifier's input layer {penultimate!r} is not among layers")
    for name, result in measured.items():
        _report_rows(section, name, result.train, "train", result.train.self_duality is not None)
        section.add("ncc_accuracy", result.ncc_train_accuracy, layer=name, variant="train")
        if result.test is not None:
            _report_rows(section, name, result.test, "test", False)
        if result.ncc_test_accuracy is not None:
            section.add("ncc_accuracy", result.ncc_test_accuracy, layer=name, variant="test, train class means")
    return section, measured


def effective_depth(measured: dict[str, LayerCollapse]) -> Section:
    """The ε-effective depth (Galanti, Galanti & Ben-Shaul 2022, Def. 1) from the collapse section's NCC errors."""
    section = Section("effective depth")
    depth = depth_of(measured, EFFECTIVE_DEPTH_EPS)
    for name, error in zip(depth.layers, depth.ncc_train_error):
        section.add("ncc_train_error", error, layer=name)
    if depth.depth is None:
        best = min(zip(depth.ncc_train_error, depth.layers))
        section.skip(
            f"no layer's NCC classifier fits the training set to error ε = {depth.eps:g} (best: {best[1]!r} "
            f"with {best[0]:.4g})"
        )
    else:
        section.add("depth", depth.depth, layer=depth.layers[depth.depth - 1], variant=f"ε = {depth.eps:g}")
    return section


def _spectrum_rows(section: Section, layer: str, spectrum: Spectrum, kind: str) -> None:
    for metric, value in spectrum.summary().items():
        section.add(
            metric, value, layer=layer, variant=f"{kind}: {RANK_VARIANTS[metric]}" if kind else RANK_VARIANTS[metric]
        )
    for index, sigma in enumerate(spectrum.singular_values[:TOP_SINGULAR_VALUES].tolist(), start=1):
        section.add(f"sigma_{index}", sigma, layer=layer, variant=kind or f"{spectrum.shape[0]}×{spectrum.shape[1]}")


def weight_spectra(model: nn.Module) -> Section:
    """Singular values and ranks of every weight with ≥ 2 dimensions (conv kernels as (out, in·k…) matrices):
    :func:`~implicit_bias.metrics.layer_spectra` (SCIENCE.md §5; Galanti et al. 2022)."""
    section = Section("weight spectra")
    spectra = layer_spectra(model)
    for name, spectrum in spectra.items():
        _spectrum_rows(section, name, spectrum, "")
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2 and name not in spectra:
            section.skip(f"{name} is all zero; its ranks are undefined")
    if not any(p.ndim >= 2 for p in model.parameters()):
        section.skip("the model has no weight matrix (no parameter with 2 or more dimensions)")
    return section


def features(model: nn.Module, train: Iterable, layers: Sequence[str], num_classes: int, batch_size: int) -> Section:
    """Spectra of each feature layer's features H and class means M (:func:`~implicit_bias.metrics.feature_spectra`;
    Súkeník et al. 2024 for the class-mean ranks)."""
    section = Section("feature spectra")
    try:
        measured = feature_spectra(model, train, layers, num_classes=num_classes, batch_size=batch_size)
    except ImplicitBiasError:  # e.g. a dead layer with all-zero features: measure layer by layer, skip that one
        measured = {}
        for name in layers:
            try:
                measured[name] = feature_spectra(model, train, [name], num_classes=num_classes, batch_size=batch_size)[
                    name
                ]
            except ImplicitBiasError as error:
                section.skip(f"{name}: {error}")
    for name, spectra in measured.items():
        _spectrum_rows(section, name, spectra.features, "features")
        _spectrum_rows(section, name, spectra.means, "class means")
        _spectrum_rows(section, name, spectra.centred_means, "centred class means")
    return section
