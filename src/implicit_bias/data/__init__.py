"""Datasets: ``load(name, **options)`` returns a :class:`Dataset` with ``.X``, ``.y``, ``.num_classes``, ``.test``.

Options every dataset accepts
-----------------------------
seed : int, optional
    Seeds generation, splitting and subsampling (default: each loader's own default, 0 for subsampling).
classes : list of int
    Keep these classes only, relabelled 0..len−1 in the given order.
per_class : int
    Balanced subsampling of the training split: exactly that many samples per class.
standardize : bool, default False
    Per-feature z-scores with the training split's statistics, applied to both splits.
dtype : torch.dtype or str
    Input precision; default float64 for synthetic data (exact geometry), float32 for real data.

Every other option is the loader's own (see each loader's docstring, or ``implicit-bias list``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..validation import check_choice, check_float_dtype, check_options
from .builtin import digits, mnist1d
from .dataset import Dataset, balanced_subsample, corrupt_labels, select_classes
from .dataset import standardize as standardize_features
from .files import cifar10, fashion_mnist, mnist, read_idx
from .synthetic import gaussians, linear_separable, xor

LOADERS: dict[str, Callable[..., Dataset]] = {
    "gaussians": gaussians,
    "xor": xor,
    "linear-separable": linear_separable,
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "cifar10": cifar10,
}
COMMON_OPTIONS = ("seed", "classes", "per_class", "standardize", "dtype")

__all__ = ["LOADERS", "Dataset", "corrupt_labels", "load", "loader_options", "read_idx"]


def loader_options(name: str) -> dict[str, Any]:
    """The loader-specific options of dataset ``name`` with their defaults."""
    check_choice("dataset", name, LOADERS)
    parameters = inspect.signature(LOADERS[name]).parameters
    return {key: p.default for key, p in parameters.items() if key != "seed"}


def load(
    name: str,
    *,
    seed: int | None = None,
    classes: list[int] | None = None,
    per_class: int | None = None,
    standardize: bool = False,
    dtype: torch.dtype | str | None = None,
    **options: Any,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`LOADERS`) with the shared and loader-specific options.

    Examples
    --------
    >>> data = load("gaussians", num_classes=4, dim=5, per_class=20, seed=1)
    >>> data.X.shape, data.num_classes
    (torch.Size([80, 5]), 4)
    """
    check_choice("dataset", name, LOADERS)
    loader = LOADERS[name]
    shared = {"seed": seed, "classes": classes, "per_class": per_class, "standardize": standardize, "dtype": dtype}
    options = check_options(f"dataset {name!r}", {**options, **shared}, loader, load, exclude=("name",))
    seed, classes, per_class, standardize, dtype = (options.pop(key) for key in COMMON_OPTIONS)
    if seed is not None and "seed" in inspect.signature(loader).parameters:
        options["seed"] = seed
    dataset = loader(**options)
    if classes is not None:
        dataset = select_classes(dataset, classes)
    if per_class is not None:
        dataset = balanced_subsample(dataset, per_class, torch.Generator().manual_seed(seed or 0))
    if standardize:
        dataset = standardize_features(dataset)
    if dtype is not None:
        dataset = dataset.to(dtype=check_float_dtype(dtype))
    return dataset
