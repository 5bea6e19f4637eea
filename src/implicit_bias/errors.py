"""The one family of exceptions the toolkit raises for user-facing problems.

Every message names the argument, what was expected, what arrived and, where one exists, the fix.
The CLI prints such an error as one line and exits with code 2.
"""

from __future__ import annotations


class ImplicitBiasError(Exception):
    """Base class: a problem with the caller's input, configuration or files."""


class InvalidArgumentError(ImplicitBiasError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class UnknownNameError(InvalidArgumentError):
    """A name (dataset, model, loss, optimizer, experiment, option) is not registered."""


class MissingFileError(ImplicitBiasError, FileNotFoundError):
    """A file the caller pointed at does not exist."""


class CorruptFileError(ImplicitBiasError):
    """A file exists but cannot be read as the format it claims to be."""


class NotSeparatedError(ImplicitBiasError):
    """A margin was asked of a model that does not classify every point correctly."""


class NotHomogeneousError(ImplicitBiasError):
    """A homogeneous-network quantity was asked of a model that is not homogeneous."""


class NumericalError(ImplicitBiasError, ArithmeticError):
    """A computation produced NaN or infinity and could not recover."""


class NotQuasiHomogeneousError(ImplicitBiasError):
    """A network contains an operation that breaks quasi-homogeneity (Kunin et al. 2023), or no non-negative
    rates satisfy its constraints."""


class UntraceableModelError(ImplicitBiasError):
    """The graph tracer cannot follow a model (data-dependent control flow, an unsupported operation)."""
