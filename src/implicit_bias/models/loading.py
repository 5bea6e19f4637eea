"""The user's own models: a ``MODULE:FACTORY`` reference imported on request, and weights read from safetensors or
a PyTorch checkpoint (``torch.load(weights_only=True)``: no code in the file runs)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CorruptFileError, InvalidArgumentError, MissingFileError

NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")  # where checkpoints keep the weights
SHOWN_KEYS = 5  # names listed per kind in a key-mismatch error


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_factory(reference: str) -> bool:
    """Whether ``reference`` names user code (``path/file.py:make`` or ``package.module:make``) rather than a
    model spec of :data:`~implicit_bias.models.BUILDERS` (``mlp:depth=3``)."""
    from . import BUILDERS

    module, colon, attribute = reference.partition(":")
    if not colon or module in BUILDERS or "=" in attribute:
        return False
    return module.endswith(".py") or attribute.isidentifier()


def load_factory(reference: str) -> Callable[..., Any]:
    """The callable ``FACTORY`` of ``MODULE:FACTORY``: MODULE is a ``.py`` file (imported under its file name)
    or an importable module name."""
    module_name, _, attribute = reference.partition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise MissingFileError(f"--model {reference!r}: no file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules.setdefault(path.stem, module)  # pickling and dataclasses look the module up by name
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as error:  # noqa: BLE001 - the user's module may raise anything: one line, not a traceback
            raise InvalidArgumentError(
                f"--model {reference!r}: importing {module_name} raised {type(error).__name__}: {first_line(error)}"
            ) from None
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise InvalidArgumentError(
                f"--model {reference!r}: cannot import module {module_name!r} ({error}); pass a .py file path "
                "or a module on PYTHONPATH"
            ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        found = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_"))
        raise InvalidArgumentError(
            f"--model {reference!r}: {module_name} has no callable {attribute!r}; callables there: "
            f"{', '.join(found) or '(none)'}"
        )
    return factory


def build_model(reference: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0) -> nn.Module:
    """The model named by ``reference``: a ``MODULE:FACTORY`` (called with ``input_shape=`` and
    ``num_classes=`` where it takes them, else with no argument) or a spec for
    :func:`~implicit_bias.models.build`."""
    if not is_factory(reference):
        from . import build

        return build(reference, input_shape, num_classes, seed=seed)
    factory = load_factory(reference)
    offered = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    arguments = {key: value for key, value in offered.items() if key in parameters}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**arguments)
    except Exception as error:  # noqa: BLE001 - the user's factory may raise anything: one line, not a traceback
        raise InvalidArgumentError(
            f"--model {reference!r}: the factory raised {type(error).__name__}: {first_line(error)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"--model {reference!r}: the factory must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors (``.safetensors``), or a PyTorch checkpoint read with
    ``torch.load(weights_only=True)`` whose state dict may sit under one of :data:`NESTED_KEYS`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CorruptFileError(f"weights file {str(path)!r} is not a readable safetensors file: {error}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling refusals and corrupt archives come in many types
        raise CorruptFileError(
            f"weights file {str(path)!r} is neither safetensors nor a PyTorch checkpoint loadable with "
            f"weights_only=True: {first_line(error)}"
        ) from None
    return _state_dict_in(loaded, str(path))


def _state_dict_in(loaded: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return _state_dict_in(loaded[key], f"{where}[{key!r}]")
        raise CorruptFileError(
            f"weights file {where!r} holds a dict without a state dict: keys {sorted(map(str, loaded))[:10]}; "
            f"expected tensors by parameter name, or one under {list(NESTED_KEYS)}"
        )
    raise CorruptFileError(f"weights file {where!r} holds a {type(loaded).__name__}, not a state dict")


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_KEYS])
    return shown + (f" and {len(names) - SHOWN_KEYS} more" if len(names) > SHOWN_KEYS else "")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights file ``path`` into ``model`` (in place; returns it), refusing — in one line listing the
    missing, unexpected and wrongly shaped keys — a file written for another architecture. A ``module.``
    prefix (DistributedDataParallel) is removed when every key has it."""
    state = read_state_dict(path)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{len(items)} {kind}: {_listed(items)}"
            for kind, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong))
            if items
        ]
        raise InvalidArgumentError(
            f"weights file {str(path)!r} does not fit the {type(model).__name__} model: {'; '.join(parts)} "
            "(weights saved from another architecture or model options?)"
        )
    model.load_state_dict(state)
    return model
