"""Intermediate features by layer name, through forward hooks (works for any ``nn.Module``).

A layer name is a name from ``model.named_modules()`` (that module's output), or ``"NAME:input"``: the input of
module NAME — how the features a classifier reads are named when a functional op (``F.relu(self.fc2(x))``) sits
between the last module and the classifier, so no module outputs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .inference import to_model

INPUT_SUFFIX = ":input"


@dataclass(frozen=True)
class LayerTrace:
    """What one forward pass shows about a model's layers, found by the identity of the tensors modules pass on.

    Attributes
    ----------
    head : str | None
        The ``nn.Linear`` whose output *is* the model's output (through modules that return their input, such as
        ``nn.Identity``), or None — ``reason`` says why.
    head_input : str | None
        The layer the head reads: the outermost module whose output is the head's input, else ``"HEAD:input"``.
    features : tuple[str, ...]
        The feature layers in the order the forward pass reached them: the top-level children that ran once,
        without those whose output is the model's output (descending into a lone container that holds the whole
        network) and without leading parameter-free ones (an ``nn.Flatten`` of the inputs), then ``head_input``
        when it is not among them.
    reason : str
        Why there is no head ("" when there is one).
    """

    head: str | None
    head_input: str | None
    features: tuple[str, ...]
    reason: str = ""


def _record(model: nn.Module, example: torch.Tensor) -> tuple[object, dict[str, tuple[object, object]]]:
    """Run ``model(example)`` with hooks on every module: (output, {name: (input, output)}) in call order, for
    the modules that ran exactly once (a module applied twice, e.g. one ``self.relu`` reused, has no one output)."""
    calls: dict[str, list[tuple[object, object]]] = {}

    def hook(name: str) -> Callable:
        def record(_module: nn.Module, args: tuple, output: object) -> None:
            calls.setdefault(name, []).append((args[0] if args else None, output))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            output = model(example)
    finally:
        for handle in handles:
            handle.remove()
    return output, {name: made[0] for name, made in calls.items() if len(made) == 1}


def _producers(tensor: object, calls: dict[str, tuple[object, object]]) -> list[str]:
    return [name for name, (_, output) in calls.items() if output is tensor]


def _find_head(model: nn.Module, output: object, calls: dict[str, tuple[object, object]]) -> tuple[str | None, str]:
    modules = dict(model.named_modules())
    tensor, seen = output, set()
    while id(tensor) not in seen:
        seen.add(id(tensor))
        producers = _producers(tensor, calls)
        linear = [name for name in producers if isinstance(modules[name], nn.Linear)]
        if linear:
            return linear[0], ""
        passing = [name for name in producers if calls[name][0] is tensor]  # returns its input (nn.Identity)
        if not passing:
            made_by = (
                f" (it comes from {producers[-1]!r}, a {type(modules[producers[-1]]).__name__})" if producers else ""
            )
            return None, f"the model's output is not the output of an nn.Linear{made_by}"
        tensor = calls[passing[0]][0]
    return None, "the model's output is not the output of an nn.Linear"


def _top_level(
    model: nn.Module, output: object, calls: dict[str, tuple[object, object]], head: str | None
) -> list[str]:
    """The children of ``model`` that ran, in call order, without the head and those returning the output;
    a lone child holding the whole network is entered."""
    prefix = ""
    while True:
        children = [name for name, _ in (model.get_submodule(prefix) if prefix else model).named_children()]
        full = [f"{prefix}.{name}" if prefix else name for name in children]
        ran = [name for name in calls if name in full]
        body = [name for name in ran if name != head and calls[name][1] is not output]
        while body and not any(True for _ in model.get_submodule(body[0]).parameters()):
            body.pop(0)  # a leading nn.Flatten or normalization without parameters only reshapes the inputs
        wrappers = [name for name in ran if name != head and calls[name][1] is output]
        if body or len(wrappers) != 1 or not list(model.get_submodule(wrappers[0]).children()):
            return body
        prefix = wrappers[0]


def trace_layers(model: nn.Module, example: torch.Tensor) -> LayerTrace:
    """The classifier head and the feature layers of ``model``, in call order, from one forward pass on
    ``example`` (declaration order says nothing: ``self.fc`` may be declared before ``self.body``)."""
    output, calls = _record(model, to_model(model, example))
    if not isinstance(output, torch.Tensor):
        features = tuple(_top_level(model, None, calls, None))
        return LayerTrace(None, None, features, f"the model returns a {type(output).__name__}, not a tensor")
    head, reason = _find_head(model, output, calls)
    features = _top_level(model, output, calls, head)
    head_input = None
    if head is not None:
        read = _producers(calls[head][0], calls)
        in_features = [name for name in read if name in features]
        head_input = in_features[0] if in_features else min(read, key=lambda n: n.count("."), default=None)
        if head_input is None:
            head_input = head + INPUT_SUFFIX
        if head_input not in features:
            features.append(head_input)
    return LayerTrace(head, head_input, tuple(features), reason)


def feature_names(
    model: nn.Module, example: torch.Tensor | None = None, *, trace: LayerTrace | None = None
) -> tuple[str, ...]:
    """The model's canonical feature layers: ``model.feature_names`` for models built here, otherwise the layers
    :func:`trace_layers` finds on ``example`` (required then: only a forward pass shows the order), or in a
    ``trace`` the caller already has."""
    names = getattr(model, "feature_names", None)
    if names is not None:
        return tuple(names)
    if trace is not None:
        return trace.features
    if example is None:
        raise InvalidArgumentError(
            f"the feature layers of a {type(model).__name__} follow the order its forward() runs: pass an example "
            "batch of inputs, or layers=[...] by module name"
        )
    return trace_layers(model, example).features


def check_layer_names(model: nn.Module, layers: Sequence[str]) -> None:
    """Refuse layer names that are neither modules of ``model`` nor ``"MODULE:input"``, listing the modules."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name.removesuffix(INPUT_SUFFIX) not in modules or not name]
    if missing:
        raise InvalidArgumentError(
            f"model has no layer(s) {missing}; available: {', '.join(n for n in modules if n) or '(none)'}"
        )


def hook_layer(
    model: nn.Module, name: str, record: Callable[[torch.Tensor], None]
) -> torch.utils.hooks.RemovableHandle:
    """Call ``record`` with layer ``name``'s tensor on every forward pass: the module's output, or its input for
    ``"NAME:input"`` (a forward pre-hook). Returns the hook's handle."""
    if name.endswith(INPUT_SUFFIX):
        module = model.get_submodule(name.removesuffix(INPUT_SUFFIX))
        return module.register_forward_pre_hook(lambda _module, args: record(args[0]))
    return model.get_submodule(name).register_forward_hook(lambda _module, _args, output: record(output))


def capture_features(
    model: nn.Module, X: torch.Tensor, layers: Sequence[str] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model(X)`` once and return (outputs, {layer name: that module's output, or its input for
    ``"NAME:input"``}). ``layers`` default: :func:`feature_names` on ``X``."""
    layers = feature_names(model, X) if layers is None else tuple(layers)
    check_layer_names(model, layers)
    captured: dict[str, torch.Tensor] = {}
    handles = [hook_layer(model, name, lambda tensor, name=name: captured.__setitem__(name, tensor)) for name in layers]
    try:
        outputs = model(X)
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name in layers if name not in captured]
    if silent:
        raise InvalidArgumentError(f"layer(s) {silent} did not run in the forward pass of {type(model).__name__}")
    return outputs, captured
