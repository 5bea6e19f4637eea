"""``diagnose(model, data)``: every implicit-bias measure of the toolkit that applies to one trained model."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..data import Dataset
from ..errors import ImplicitBiasError, InvalidArgumentError
from ..metrics.layerwise import Batches, _batches, first_inputs
from ..models.features import LayerTrace, check_layer_names, feature_names, trace_layers
from ..models.inference import evaluation, model_device
from ..validation import check_features_labels, check_model_input, check_scalar
from . import sections
from .result import Diagnosis

EXAMPLE_SAMPLES = 256  # inputs on which the homogeneity degree and the rates are checked


class _Tracked:
    """A re-iterable of batches that advances a rich progress bar on every pass (one task per pass)."""

    def __init__(self, batches: Iterable, progress: Any, label: str) -> None:
        self.batches, self.progress, self.label, self.passes = batches, progress, label, 0

    def __iter__(self) -> Iterator:
        self.passes += 1
        total = len(self.batches) if hasattr(self.batches, "__len__") else None
        task = self.progress.add_task(f"{self.label}, pass {self.passes}", total=total)
        for batch in self.batches:
            yield batch
            self.progress.advance(task)
        self.progress.update(task, visible=False)


def _num_classes(data: Batches, outputs: torch.Tensor, given: int | None) -> int:
    """K: the dataset's own, the caller's, or the model's number of outputs (2 for a single output), checked
    against the model: K outputs, or one output for two classes."""
    single = outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)
    if outputs.ndim not in (1, 2):
        raise InvalidArgumentError(f"model outputs must have shape (N,) or (N, K), got {tuple(outputs.shape)}")
    from_model = 2 if single else int(outputs.shape[1])
    if isinstance(data, Dataset):
        if given is not None and given != data.num_classes:
            raise InvalidArgumentError(f"num_classes={given} but the dataset has {data.num_classes} classes")
        K = data.num_classes
    else:
        K = from_model if given is None else check_scalar("num_classes", given, int, low=2)
    if K != from_model:
        outputs_text = "1 output" if single else f"{from_model} outputs"
        raise InvalidArgumentError(
            f"the model has {outputs_text} but the data has {K} classes: a K-class model needs K outputs "
            "(or 1 for two classes)"
        )
    return K


def diagnose(
    model: nn.Module,
    data: Batches,
    *,
    test: Batches | None = None,
    layers: Sequence[str] | None = None,
    num_classes: int | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    kkt: bool = True,
    progress: bool = False,
) -> Diagnosis:
    """Measure every implicit bias of a trained ``model`` on ``data`` and return a :class:`Diagnosis`.

    Sections (each reuses the toolkit's metric; see its docstring for the formula and the paper):

    - **architecture**: parameters, feature layers, the homogeneity degree L with Φ(cθ) = c^L Φ(θ) (Lyu & Li
      2020) or why there is none;
    - **rates**: Λ per parameter tensor with Φ(exp(αΛ)θ) = e^α Φ(θ) (Kunin et al. 2023, Def. 3.1), the top-rate
      set and the numerical check's errors;
    - **margins**: accuracy; once separated q_min/‖θ‖^L or q_min/‖θ‖_{Λmax}^{1/λ_max}, the smoothed margin,
      support count and (ε, δ)-KKT residual;
    - **collapse** per feature layer: NC1–NC4, CDNV, NCC train/test accuracy (Papyan, Han & Donoho 2020);
    - **weight spectra** and **feature spectra**: stable / effective / numerical ranks and top singular values;
    - **effective depth**: the first layer whose NCC classifier fits the training set (Galanti et al. 2022).

    Parameters
    ----------
    model : nn.Module
        Never modified: it runs in evaluation mode and its train/eval mode is restored; with ``device`` a copy
        moves there.
    data, test : Dataset, (X, y) pair, or a re-iterable of (X, y) batches (a DataLoader)
        The training data, and optionally held-out data (default: ``data.test`` for a :class:`Dataset`). Read in
        batches of ``batch_size`` (a DataLoader in its own), several passes, memory independent of N apart from
        one float per sample for the margins.
    layers : names from ``model.named_modules()`` (or ``NAME:input``), default
        :func:`~implicit_bias.models.feature_names` — for a model not built here, the layers its forward runs, in that order.
    num_classes : K when ``data`` is not a Dataset (default: the model's number of outputs, 2 for one output).
    kkt : bool
        Compute the KKT residual (per-sample gradients of up to 512 support samples).
    progress : bool
        A rich progress bar per pass over the data.

    Raises
    ------
    InvalidArgumentError
        If the data does not fit the model (one line naming both shapes) or a layer does not exist. Anything a
        section cannot measure is listed in ``Diagnosis.skipped`` instead.
    """
    check_scalar("batch_size", batch_size, int, low=1)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if device is not None and torch.device(device) != model_device(model):
        model = copy.deepcopy(model).to(device)
    if test is None and isinstance(data, Dataset):
        test = data.test
    with evaluation(model):
        if isinstance(data, Dataset):
            example = data.X[:EXAMPLE_SAMPLES]
        elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            example = check_features_labels(*data, names=("X", "y"))[0][:EXAMPLE_SAMPLES]
        else:
            example = first_inputs(_batches(data, batch_size, 2), EXAMPLE_SAMPLES)
        outputs = check_model_input(model, example, name="model")
        K = _num_classes(data, outputs, num_classes)
        train_batches = _batches(data, batch_size, K)
        test_batches = _batches(test, batch_size, K, "test") if test is not None else None
        trace = trace_layers(model, example)  # the classifier and the default layers: one forward pass
        layers = tuple(feature_names(model, trace=trace) if layers is None else layers)
        check_layer_names(model, layers)
        return _measure(model, train_batches, test_batches, example, trace, layers, K, batch_size, kkt, progress, data)


def _measure(
    model: nn.Module,
    train: Iterable,
    test: Iterable | None,
    example: torch.Tensor,
    trace: LayerTrace,
    layers: tuple[str, ...],
    num_classes: int,
    batch_size: int,
    kkt: bool,
    progress: bool,
    data: Batches,
) -> Diagnosis:
    if progress:
        from rich.progress import Progress

        bar: Any = Progress(transient=True)
    else:
        bar = nullcontext()
    results: list[sections.Section] = []
    summary: dict[str, float] = {}

    def attempt(name: str, compute: Any) -> Any:
        """Run one section; an ImplicitBiasError it raises becomes its skipped reason (the rest still runs)."""
        try:
            return compute()
        except ImplicitBiasError as error:
            results.append(sections.Section(name, skipped=[f"{name}: {error}"]))
            return None

    with bar:
        if progress:
            train = _Tracked(train, bar, "training data")
            test = _Tracked(test, bar, "test data") if test is not None else None
        section, degree = sections.architecture(model, layers, example, trace)
        results.append(section)
        section, inferred = sections.rates(model, example)
        results.append(section)
        structure = sections.Structure(degree, inferred)
        found = attempt("margins", lambda: sections.margins(model, train, test, structure, kkt=kkt))
        if found is not None:
            results.append(found[0])
            summary.update(found[1])
        measured = None
        if layers:
            found = attempt(
                "collapse",
                lambda: sections.collapse(model, train, test, layers, num_classes, batch_size, trace=trace),
            )
            if found is not None:
                results.append(found[0])
                measured = found[1]
        else:
            results.append(sections.Section("collapse", skipped=["collapse: the model has no feature layers"]))
        results.append(sections.weight_spectra(model))
        if layers:
            results.append(sections.features(model, train, layers, num_classes, batch_size))
        if measured:
            results.append(sections.effective_depth(measured))
    table = [row for section in results for row in section.rows]
    skipped = [reason for section in results for reason in section.skipped]
    summary = {**_headline(table, degree, inferred, layers), **{k: v for k, v in summary.items() if math.isfinite(v)}}
    return Diagnosis(table, summary, skipped, type(model).__name__, _describe(data), layers)


def _headline(table: list, degree: float | None, inferred: Any, layers: Sequence[str]) -> dict[str, float]:
    """The summary's numbers that are read off the table."""
    values = {(row.section, row.layer, row.metric, row.variant): row.value for row in table}
    summary: dict[str, float] = {"parameters": values[("architecture", "", "parameters", "")]}
    if degree is not None:
        summary["homogeneity_degree"] = degree
    if inferred is not None:
        summary["lambda_max"] = inferred.lambda_max
    for key, name in (("train", "train_accuracy"), ("test", "test_accuracy")):
        if ("margins", "", "accuracy", key) in values:
            summary[name] = values[("margins", "", "accuracy", key)]
    if layers:
        last = layers[-1]
        for metric, variant, name in (
            ("nc1", "train", "nc1_last_layer"),
            ("ncc_accuracy", "test, train class means", "ncc_test_accuracy_last_layer"),
        ):
            if ("collapse", last, metric, variant) in values:
                summary[name] = values[("collapse", last, metric, variant)]
    depth = [row for row in table if row.section == "effective depth" and row.metric == "depth"]
    if depth:
        summary["effective_depth"] = depth[0].value
    return summary


def _describe(data: Batches) -> str:
    if isinstance(data, Dataset):
        test = f", test {len(data.test)}" if data.test is not None else ""
        return f"{data.name or 'dataset'} (train {len(data)}{test}, {data.num_classes} classes)"
    if isinstance(data, tuple):
        return f"(X, y) with {len(data[0])} samples"
    return type(data).__name__
