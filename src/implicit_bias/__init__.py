"""implicit-bias: measure the implicit biases of gradient-trained networks.

``import implicit_bias as ib`` is cheap (it imports neither torch nor matplotlib); each subpackage is imported the
first time it is used, e.g. ``ib.metrics.normalized_margin`` (PEP 562 module ``__getattr__``). ``ib.diagnose`` is
the function :func:`implicit_bias.diagnosis.diagnose`, imported the same way.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "data",
    "diagnose",
    "diagnosis",
    "dufm",
    "dynamics",
    "errors",
    "experiments",
    "integrations",
    "losses",
    "metrics",
    "models",
    "report",
    "sweep",
    "symmetry",
    "train",
    "validation",
]
_FUNCTIONS = {"diagnose": "diagnosis"}  # lazy functions: name → the subpackage that defines it
_SUBMODULES = frozenset(__all__) - {"__version__", *_FUNCTIONS}


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        function = getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
        globals()[name] = function
        return function
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import also binds it as an attribute here
    raise AttributeError(
        f"module {__name__!r} has no attribute {name!r}; its subpackages are {', '.join(sorted(_SUBMODULES))}"
    )


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_FUNCTIONS))
