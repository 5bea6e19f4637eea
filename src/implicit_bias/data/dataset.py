"""The dataset container and the transforms every loader shares (class selection, balanced subsampling,
standardization, label corruption)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidArgumentError
from ..validation import check_features_labels, check_labels, check_scalar


@dataclass(frozen=True)
class Dataset:
    """A labelled classification dataset held in memory.

    Attributes
    ----------
    X : Tensor, shape (N, *input_shape)
        Inputs (float, finite: NaN or inf is refused with its first index). Images keep their (C, H, W) shape; models flatten as needed.
    y : Tensor, shape (N,)
        Integer class labels in 0..num_classes−1.
    num_classes : int
        K. Binary data has K = 2 and is served by single-output models (margins use y ↦ ±1).
    name : str
        The registered name it was loaded under.
    test : Dataset or None
        The held-out split, where the source has one.
    info : mapping
        Loader-specific facts, e.g. the planted max-margin direction of ``linear-separable``.
    """

    X: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = ""
    test: Dataset | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            check_features_labels(self.X, self.y)  # types, sizes and finite inputs
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"dataset {self.name!r}: {error}" if self.name else str(error)) from None
        check_scalar("num_classes", self.num_classes, int, low=2)
        check_labels(self.y, num_classes=self.num_classes, name=f"labels of dataset {self.name!r}")

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.X.shape[1:])

    @property
    def class_counts(self) -> torch.Tensor:
        """Number of samples of each class, shape (K,)."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def replace(self, **changes: Any) -> Dataset:
        """A copy with some fields changed (the dataset itself is immutable)."""
        return dataclasses.replace(self, **changes)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Dataset:
        """Inputs cast to ``dtype`` and everything moved to ``device`` (the test split too)."""
        test = self.test.to(dtype, device) if self.test is not None else None
        return self.replace(X=self.X.to(device=device, dtype=dtype), y=self.y.to(device), test=test)


def select_classes(dataset: Dataset, classes: Sequence[int]) -> Dataset:
    """Keep only ``classes`` (in that order) and relabel them 0..len(classes)−1, in both splits."""
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise InvalidArgumentError(f"classes must list at least two distinct labels, got {classes}")
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad:
        raise InvalidArgumentError(
            f"classes {bad} do not exist in dataset {dataset.name!r} (labels 0..{dataset.num_classes - 1})"
        )

    def keep(part: Dataset) -> Dataset:
        lookup = torch.full((dataset.num_classes,), -1, dtype=torch.long)
        lookup[torch.tensor(classes)] = torch.arange(len(classes))
        new = lookup[part.y]
        mask = new >= 0
        return Dataset(part.X[mask], new[mask], len(classes), part.name, None, part.info)

    test = keep(dataset.test) if dataset.test is not None else None
    return keep(dataset).replace(test=test)


def balanced_subsample(dataset: Dataset, per_class: int, generator: torch.Generator) -> Dataset:
    """Exactly ``per_class`` samples of every class, drawn without replacement, in a shuffled order."""
    check_scalar("per_class", per_class, int, low=1)
    counts = dataset.class_counts
    short = [(c, int(n)) for c, n in enumerate(counts.tolist()) if n < per_class]
    if short:
        listing = ", ".join(f"class {c} has {n}" for c, n in short)
        raise InvalidArgumentError(
            f"per_class={per_class} is more than dataset {dataset.name!r} holds: {listing}; "
            f"lower per_class to at most {int(counts.min())}"
        )
    order = torch.randperm(len(dataset), generator=generator)
    labels = dataset.y[order]
    # the first per_class indices of each class in a random order: rank within class < per_class
    ranks = torch.empty_like(order)
    sort = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    ranks[sort] = torch.arange(len(order)) - starts[labels[sort]]
    chosen = order[ranks < per_class]
    chosen = chosen[torch.randperm(len(chosen), generator=generator)]
    return dataset.replace(X=dataset.X[chosen], y=dataset.y[chosen])


def standardize(dataset: Dataset) -> Dataset:
    """Per-feature z-scores with the training split's mean and standard deviation, applied to both splits.

    Features with zero spread in the training split are centred and left unscaled.
    """
    mean = dataset.X.mean(dim=0)
    std = dataset.X.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))

    def apply(part: Dataset) -> Dataset:
        return part.replace(X=(part.X - mean) / std)

    test = apply(dataset.test) if dataset.test is not None else None
    return apply(dataset).replace(test=test)


def corrupt_labels(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Change exactly round(fraction·N) training labels, each to a different class drawn uniformly.

    The test split is left clean. ``info["corrupted"]`` holds the indices that were changed.

    Parameters
    ----------
    dataset : Dataset
    fraction : float in [0, 1]
    seed : int
        Seeds the choice of samples and of their new labels.
    """
    check_scalar("fraction", fraction, (int, float), low=0.0, high=1.0)
    n = len(dataset)
    count = round(fraction * n)
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=generator)[:count]
    shift = torch.randint(1, dataset.num_classes, (count,), generator=generator)
    y = dataset.y.clone()
    y[indices] = (y[indices] + shift) % dataset.num_classes
    info = {**dataset.info, "corrupted": indices.sort().values, "corruption_fraction": fraction}
    return dataset.replace(y=y, info=info)
