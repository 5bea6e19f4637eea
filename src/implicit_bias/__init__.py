"""implicit-bias: measure the implicit biases of gradient-trained networks.

``import implicit_bias as ib`` is cheap (it imports neither torch nor matplotlib); each subpackage is imported the
first time it is used, e.g. ``ib.metrics.normalized_margin`` (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "data",
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
_SUBMODULES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import also binds it as an attribute here
    raise AttributeError(
        f"module {__name__!r} has no attribute {name!r}; its subpackages are {', '.join(sorted(_SUBMODULES))}"
    )


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
