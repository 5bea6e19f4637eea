"""Model specifications: a short string ``"mlp:depth=3,width=64,bias=false"`` or a dict ``{"name": "mlp", ...}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import InvalidArgumentError
from ..validation import parse_assignments, split_top_level


def parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a model spec into its name and its options.

    Values in the string form are read by :func:`~implicit_bias.validation.parse_value` (``false`` → False,
    ``1e-3`` → 0.001, ``[32, 64]`` → a list); commas inside brackets do not split options.

    >>> parse_spec("mlp:depth=3,bias=false")
    ('mlp', {'depth': 3, 'bias': False})
    """
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise InvalidArgumentError(f"a model spec dict needs a string 'name' key, got {dict(spec)!r}")
        return name, options
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"a model spec must be a non-empty string or a dict, got {spec!r}")
    name, _, rest = spec.partition(":")
    try:
        options = [part.strip() for part in split_top_level(rest) if part.strip()]
        return name.strip(), parse_assignments(options, "model option")
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"model spec {spec!r}: {error}") from None


def format_spec(name: str, options: Mapping[str, Any]) -> str:
    """The string form of a spec (inverse of :func:`parse_spec` for scalar and list values)."""
    if not options:
        return name
    rendered = ",".join(
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in options.items()
    )
    return f"{name}:{rendered}"
