"""Neural collapse and nearest-class-centre accuracy at every layer, streamed over a dataset with forward hooks
(Papyan et al. 2020 at the last layer; Rangamani et al. 2023 and Súkeník et al. 2023 layer-wise)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..errors import InvalidArgumentError
from ..models.features import LayerTrace, capture_features, check_layer_names, feature_names, trace_layers
from ..models.inference import evaluation, model_device, model_dtype, sample_slices
from ..validation import check_choice, check_features_labels, check_labels, check_scalar
from .collapse import CollapseAccumulator, CollapseReport

REDUCTIONS = ("avgpool", "flatten", "projection")
TRACE_SAMPLES = 8  # inputs of the forward pass that finds the layers and the classifier (trace_layers)


@dataclass(frozen=True)
class LayerCollapse:
    """One layer's collapse report on the training split, its NCC accuracies (class means from the training
    split), and the test split's report where there is one."""

    train: CollapseReport
    ncc_train_accuracy: float
    test: CollapseReport | None
    ncc_test_accuracy: float | None


class FeatureReducer:
    """Turns a layer's output into (B, D) features: conv maps (B, C, *spatial) are globally average-pooled
    (``"avgpool"``, the default), flattened (``"flatten"``), or flattened and randomly projected to
    ``projection_dim`` dimensions with a fixed Gaussian matrix scaled by 1/√p (``"projection"``, seeded per
    layer so that every batch and split sees the same projection)."""

    def __init__(self, reduction: str = "avgpool", projection_dim: int = 256, seed: int = 0) -> None:
        check_choice("reduction", reduction, REDUCTIONS)
        check_scalar("projection_dim", projection_dim, int, low=1)
        self.reduction, self.projection_dim, self.seed = reduction, projection_dim, seed
        self.projections: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if output.ndim == 2:
            return output
        if output.ndim < 2:
            return output.reshape(len(output), -1)
        if self.reduction == "avgpool":
            return output.mean(dim=tuple(range(2, output.ndim)))
        flat = output.reshape(len(output), -1)
        if self.reduction == "flatten":
            return flat
        if name not in self.projections:
            generator = torch.Generator().manual_seed(self.seed + sum(map(ord, name)))
            matrix = torch.randn(flat.shape[1], self.projection_dim, generator=generator, dtype=torch.float64)
            self.projections[name] = (matrix / math.sqrt(self.projection_dim)).to(flat.device, flat.dtype)
        return flat @ self.projections[name]


Batches = Dataset | tuple[torch.Tensor, torch.Tensor] | Iterable


def _batches(data: Batches, batch_size: int, num_classes: int, name: str = "data") -> Iterable:
    """The (X, y) batches of ``data``: a Dataset or an (X, y) pair cut into slices of ``batch_size`` samples
    (:func:`~implicit_bias.models.inference.sample_slices`: no final batch of one), or the caller's re-iterable of
    batches (a DataLoader, a list) as it is. A one-shot iterator (a generator) is refused: the metrics read the
    data more than once, and a second pass over a spent generator would see nothing."""
    if isinstance(data, Dataset):
        X, y = data.X, data.y
        check_labels(y, num_classes=num_classes, name=f"labels of {name}")
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        X, y = check_features_labels(*data, names=("X", "y"), num_classes=num_classes)
    elif isinstance(data, Iterator) or not isinstance(data, Iterable):
        raise InvalidArgumentError(
            f"{name} must be read more than once: pass a Dataset, DataLoader or list of (X, y) batches, or an "
            f"(X, y) pair, got {'a one-shot ' if isinstance(data, Iterator) else ''}{type(data).__name__}"
        )
    else:
        return data
    return [(X[s], y[s]) for s in sample_slices(len(X), batch_size)]


def first_inputs(batches: Iterable, count: int) -> torch.Tensor:
    """The inputs of the first ``count`` samples of the stream (fewer when it has fewer)."""
    inputs, seen = [], 0
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor)):
            raise InvalidArgumentError(f"data must yield (X, y) batches of tensors, got a {type(batch).__name__}")
        inputs.append(batch[0][: count - seen])
        seen += len(inputs[-1])
        if seen >= count:
            break
    if not seen:
        raise InvalidArgumentError("data yielded no samples")
    return torch.cat(inputs)


def first_batch(batches: Iterable, name: str = "data") -> tuple[torch.Tensor, Iterable]:
    """The inputs of the first batch, and an iterable that replays this pass over ``batches`` from its start
    (the peek costs no extra pass: data that can be read only so many times is not read once more)."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise InvalidArgumentError(f"{name} yielded no samples")
    return first[0], itertools.chain([first], iterator)


def resolve_layers(
    model: nn.Module, example: torch.Tensor, layers: Sequence[str] | None, *, trace: LayerTrace | None = None
) -> tuple[str, ...]:
    """``layers`` checked against the model, or by default its feature layers
    (:func:`~implicit_bias.models.feature_names`, from ``trace`` when given, else traced on ``example``)."""
    if layers is None:
        with evaluation(model):
            layers = feature_names(model, example[:TRACE_SAMPLES], trace=trace)
    layers = tuple(layers)
    if not layers:
        raise InvalidArgumentError("the model has no feature layers to measure; pass layers=[...] by module name")
    check_layer_names(model, layers)
    return layers


def _no_samples(name: str, count: int, expected: int | None = None) -> None:
    """Refuse a pass over the data that saw no samples, or not the ``expected`` number of the first pass."""
    if count == 0 and expected is None:
        raise InvalidArgumentError(f"{name} yielded no samples")
    if expected is not None and count != expected:
        raise InvalidArgumentError(
            f"{name} yielded {count} samples on a second pass where the first gave {expected}: pass a Dataset, "
            "DataLoader or list of (X, y) batches, which can be read again"
        )


@torch.no_grad()
def collapse_by_layer(
    model: nn.Module,
    data: Batches,
    layers: Sequence[str] | None = None,
    *,
    test: Batches | None = None,
    num_classes: int | None = None,
    batch_size: int = 1024,
    reduction: str = "avgpool",
    projection_dim: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> dict[str, LayerCollapse]:
    """Neural-collapse reports and NCC accuracies of ``layers`` (default: the model's feature layers).

    Two streaming passes over the training data (statistics, then NCC decisions against the final class
    means), and two over ``test`` (default: ``data.test`` for a :class:`Dataset`). The classifier after the
    penultimate layer (the model's last ``nn.Linear``) enters that layer's report (NC3, NC4). ``data`` may be
    a Dataset, an (X, y) pair, or a re-iterable of (X, y) batches such as a ``DataLoader``.
    """
    check_scalar("batch_size", batch_size, int, low=1)
    if test is None and isinstance(data, Dataset):
        test = data.test
    if num_classes is None:
        if not isinstance(data, Dataset):
            raise InvalidArgumentError("pass num_classes= when data is not a Dataset")
        num_classes = data.num_classes
    reducer = FeatureReducer(reduction, projection_dim, seed)
    device, model_type = model_device(model), model_dtype(model)
    train_split = _batches(data, batch_size, num_classes)
    example, first_pass = first_batch(train_split)
    with evaluation(model):
        trace = trace_layers(model, example[:TRACE_SAMPLES])
    layers = resolve_layers(model, example, layers, trace=trace)
    head = model.get_submodule(trace.head) if trace.head is not None else None
    penultimate = trace.head_input
    classifier = (head.weight, head.bias) if head is not None and head.out_features == num_classes else (None, None)

    def features_of(split: Iterable) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        for X, y in split:
            _, captured = capture_features(model, X.to(device=device, dtype=model_type), layers)
            yield {name: reducer(name, output) for name, output in captured.items()}, y

    test_split = _batches(test, batch_size, num_classes, "test") if test is not None else None
    with evaluation(model):
        return _collapse_passes(
            features_of(first_pass),
            lambda: features_of(train_split),
            (lambda: features_of(test_split)) if test_split is not None else None,
            layers,
            num_classes,
            penultimate,
            classifier,
            dtype=dtype,
            device=device,
        )


FeatureBatches = Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]


def _collapse_passes(
    first_pass: FeatureBatches,
    train_pass: Callable[[], FeatureBatches],
    test_pass: Callable[[], FeatureBatches] | None,
    layers: Sequence[str],
    num_classes: int,
    penultimate: str | None,
    classifier: tuple[torch.Tensor | None, torch.Tensor | None],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, LayerCollapse]:
    """The passes of :func:`collapse_by_layer` over (features by layer, labels) batches: statistics (``first_pass``),
    NCC decisions against the final class means (``train_pass()``), and both over ``test_pass()``."""

    def statistics(split: FeatureBatches, split_name: str) -> tuple[dict[str, CollapseAccumulator], int]:
        accumulators: dict[str, CollapseAccumulator] = {}
        offset = 0
        for features_by_layer, y in split:
            for name, features in features_by_layer.items():
                if name not in accumulators:
                    accumulators[name] = CollapseAccumulator(num_classes, features.shape[1], dtype=dtype, device=device)
                try:
                    accumulators[name].update(features, y)
                except InvalidArgumentError as error:  # e.g. the model made NaN features: say where
                    raise InvalidArgumentError(
                        f"layer {name!r}, batch of samples {offset}..{offset + len(y) - 1}: {error}"
                    ) from None
            offset += len(y)
        _no_samples(split_name, offset)
        return accumulators, offset

    def ncc_accuracy(
        split: FeatureBatches,
        split_name: str,
        samples: int,
        means_from: dict[str, CollapseAccumulator],
        nc4: dict[str, CollapseAccumulator] | None,
    ) -> dict[str, float]:
        correct = dict.fromkeys(layers, 0)
        total = 0
        for features_by_layer, y in split:
            y = y.to(device)
            for name, features in features_by_layer.items():
                correct[name] += int((means_from[name].nearest_class_mean(features) == y).sum())
                if nc4 is not None and name == penultimate and classifier[0] is not None:
                    nc4[name].ncc_update(features, y, *classifier)
            total += len(y)
        _no_samples(split_name, total, samples)
        return {name: correct[name] / total for name in layers}

    train_stats, samples = statistics(first_pass, "data")
    train_ncc = ncc_accuracy(train_pass(), "data", samples, train_stats, train_stats)
    test_stats, test_ncc = None, None
    if test_pass is not None:
        test_stats, samples = statistics(test_pass(), "test")
        test_ncc = ncc_accuracy(test_pass(), "test", samples, train_stats, None)
    result = {}
    for name in layers:
        weight, bias = classifier if name == penultimate else (None, None)
        result[name] = LayerCollapse(
            train=train_stats[name].compute(weight, bias),
            ncc_train_accuracy=train_ncc[name],
            test=test_stats[name].compute(weight, bias) if test_stats is not None else None,
            ncc_test_accuracy=test_ncc[name] if test_ncc is not None else None,
        )
    return result


def collapse_of_features(
    features: Mapping[str, torch.Tensor],
    y: torch.Tensor,
    num_classes: int,
    *,
    classifier_layer: str | None = None,
    classifier: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float64,
) -> dict[str, LayerCollapse]:
    """:func:`collapse_by_layer` on features already computed — ``features[layer]`` is (N, D_layer), sample n
    labelled ``y[n]`` — with no forward pass (how a training run's collapse probe reuses its evaluation pass).
    ``classifier`` = (W, b) of the linear classifier reading ``classifier_layer`` enters that layer's NC3 / NC4."""
    check_scalar("batch_size", batch_size, int, low=1)
    check_labels(y, num_classes=num_classes, name="y")
    for name, values in features.items():
        if values.ndim != 2 or len(values) != len(y):
            raise InvalidArgumentError(
                f"features[{name!r}] must be (N, D) with N = {len(y)} labels, got shape {tuple(values.shape)}"
            )
    slices = sample_slices(len(y), batch_size)

    def batches() -> FeatureBatches:
        return (({name: values[s] for name, values in features.items()}, y[s]) for s in slices)

    device = next(iter(features.values())).device if features else y.device
    weight, bias = classifier if classifier is not None else (None, None)
    return _collapse_passes(
        batches(), batches, None, tuple(features), num_classes, classifier_layer, (weight, bias),
        dtype=dtype, device=device,
    )  # fmt: skip
