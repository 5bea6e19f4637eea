"""The linear constraints that quasi-homogeneity puts on per-parameter rates, read off a traced graph.

Kunin, Yamamura, Ma & Ganguli (2023, §3): Φ is Λ-quasi-homogeneous when Φ(exp(αΛ)θ; x) = e^α Φ(θ; x). Give every
tensor of the computation a *degree* s — how its value scales with e^α — which is a linear form in the rates
λ = (λ_p) of the parameter tensors p. The network input has degree 0 and a parameter p has degree λ_p; then

- linear / conv: s_out = s_in + λ_W, and a bias needs λ_b = s_out;
- ReLU, leaky ReLU, |·|, max / avg / adaptive pooling, flatten, reshape, dropout, indexing: s_out = s_in;
- a sum (residual connection), concatenation, max of tensors: equal degrees on every input;
- a product adds degrees, a quotient subtracts them, scalar multiplication keeps them, x**p multiplies by p;
- BatchNorm (batch statistics), LayerNorm, GroupNorm, InstanceNorm, F.normalize: any input degree (the weights
  before them are scale-invariant); the output has the degree of the affine weight γ (0 without one) and β
  needs λ_β = λ_γ. BatchNorm with running statistics in evaluation mode is an affine map of fixed buffers and
  needs s_in = 0;
- the output must have degree 1.

Operations that are not homogeneous (tanh, sigmoid, GELU, softmax, exp, adding a non-zero constant …) are
allowed only on values that do not depend on the parameters (e.g. input preprocessing); anywhere else they
make the network not quasi-homogeneous and :class:`~implicit_bias.errors.NotQuasiHomogeneousError` names the
node. The graph is traced with ``torch.fx``; a model it cannot follow gets
:class:`~implicit_bias.errors.UntraceableModelError`.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InvalidArgumentError, NotQuasiHomogeneousError, UntraceableModelError


@dataclass(frozen=True)
class Constraint:
    """Σ_p coefficients[p] λ_p = value, imposed by graph node ``node`` for ``reason``."""

    coefficients: np.ndarray
    value: float
    node: str
    reason: str


@dataclass(frozen=True)
class RateGraph:
    """The parameter names of a model (one rate per tensor) and the constraints its graph puts on their rates."""

    names: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    output_producer: str | None

    @property
    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with every constraint a row of A λ = b."""
        if not self.constraints:
            return np.zeros((0, len(self.names))), np.zeros(0)
        return np.stack([c.coefficients for c in self.constraints]), np.array([c.value for c in self.constraints])

    def violations(self, rates: np.ndarray, tol: float = 1e-9) -> list[tuple[Constraint, float]]:
        """The constraints ``rates`` break by more than ``tol``, with the residual, worst first."""
        broken = [(c, float(c.coefficients @ rates - c.value)) for c in self.constraints]
        broken = [(c, r) for c, r in broken if abs(r) > tol]
        return sorted(broken, key=lambda item: -abs(item[1]))


LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
KEEP_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
)
NORM_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
)
NONHOMOGENEOUS_MODULES = (
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
)
KEEP_FUNCTIONS = {
    F.relu, torch.relu, F.leaky_relu, torch.abs, operator.abs, operator.neg, torch.neg, torch.flatten, torch.reshape,
    torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.mean, torch.sum, torch.amax, torch.max,
    torch.clone, operator.getitem, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, torch.chunk,
    torch.split, torch.flip, torch.roll, torch.t,
}  # fmt: skip
KEEP_METHODS = {
    "relu", "abs", "neg", "view", "reshape", "flatten", "unflatten", "permute", "transpose", "squeeze", "unsqueeze",
    "contiguous", "mean", "sum", "amax", "max", "clone", "chunk", "split", "expand", "expand_as", "repeat", "t",
    "flip", "roll", "to", "type_as", "float", "double", "detach", "__getitem__",
}  # fmt: skip
SUM_TARGETS = {operator.add, operator.sub, operator.iadd, torch.add, torch.sub, "add", "sub", "add_", "sub_"}
EQUAL_TARGETS = {torch.cat, torch.stack, torch.maximum, torch.minimum, torch.where}
PRODUCT_TARGETS = {operator.mul, operator.imul, torch.mul, torch.matmul, operator.matmul, torch.mm, torch.bmm,
                   torch.einsum, "mul", "mul_", "matmul", "mm", "bmm"}  # fmt: skip
QUOTIENT_TARGETS = {operator.truediv, torch.div, torch.true_divide, "div", "div_", "true_divide"}
NONHOMOGENEOUS_TARGETS = {
    torch.tanh, torch.sigmoid, F.gelu, F.silu, F.elu, F.softplus, F.softmax, F.log_softmax, torch.softmax,
    torch.log_softmax, torch.exp, torch.log, torch.sin, torch.cos, F.hardtanh, F.relu6, torch.erf, F.mish,
    torch.clamp, "tanh", "sigmoid", "exp", "log", "softmax", "log_softmax", "sin", "cos", "clamp", "erf",
}  # fmt: skip
NORM_FUNCTIONS = {F.layer_norm, F.group_norm, F.normalize, F.instance_norm}


class _Tracer:
    """Walks a shape-propagated fx graph, giving every tensor node a degree (a vector over the rates)."""

    def __init__(self, graph_module: fx.GraphModule, names: Sequence[str], ids: dict[int, int]) -> None:
        self.module = graph_module
        self.names = tuple(names)
        self.ids = ids
        self.degrees: dict[fx.Node, np.ndarray] = {}
        self.constraints: list[Constraint] = []

    # -- helpers -------------------------------------------------------------------------------------------
    def zero(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def rate(self, parameter: torch.Tensor | None) -> np.ndarray:
        vector = self.zero()
        if parameter is not None and id(parameter) in self.ids:
            vector[self.ids[id(parameter)]] = 1.0
        return vector

    def require(self, lhs: np.ndarray, value: float, node: fx.Node, reason: str) -> None:
        if np.any(lhs != 0) or value != 0:
            self.constraints.append(Constraint(lhs.copy(), float(value), node.name, reason))

    def parameter_degree(self, value: object) -> np.ndarray | None:
        """The degree of a weight or bias given as a graph node or as a parameter tensor; None for None."""
        if value is None:
            return None
        return self.degree(value) if isinstance(value, fx.Node) else self.rate(value)

    def degree(self, arg: object) -> np.ndarray | None:
        """The degree of a tensor argument, None for a non-tensor (a number, a shape, None)."""
        return self.degrees.get(arg) if isinstance(arg, fx.Node) else None

    def tensor_args(self, node: fx.Node) -> list[np.ndarray]:
        """Degrees of the tensor arguments of ``node`` (lists such as torch.cat's are flattened)."""
        found: list[np.ndarray] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(self.degrees[a]) if a in self.degrees else a)
        return found

    def first_tensor(self, node: fx.Node) -> np.ndarray:
        degrees = self.tensor_args(node)
        return degrees[0] if degrees else self.zero()

    def nonhomogeneous(self, node: fx.Node, what: str) -> np.ndarray:
        if any(np.any(d != 0) for d in self.tensor_args(node)):
            raise NotQuasiHomogeneousError(
                f"node {node.name!r} applies {what}, which is not homogeneous, to a value that scales with the "
                "parameters; the network is not quasi-homogeneous (Kunin et al. 2023)"
            )
        return self.zero()

    def equal(self, node: fx.Node, degrees: list[np.ndarray], reason: str) -> np.ndarray:
        scaling = [d for d in degrees if np.any(d != 0)]
        if not scaling:
            return self.zero()
        for other in scaling[1:]:
            self.require(other - scaling[0], 0.0, node, reason)
        return scaling[0]

    # -- rules -----------------------------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.degrees[node] = self.zero()
        elif node.op == "get_attr":
            value = operator.attrgetter(node.target)(self.module)
            self.degrees[node] = self.rate(value) if isinstance(value, torch.Tensor) else self.zero()
        elif node.op == "call_module":
            self.degrees[node] = self.module_rule(node, self.module.get_submodule(node.target))
        elif node.op in ("call_function", "call_method"):
            self.degrees[node] = self.function_rule(node)
        elif node.op == "output":
            self.output(node)

    def linear(self, node: fx.Node, s_in: np.ndarray, weight: object, bias: object) -> np.ndarray:
        s_out = s_in + self.parameter_degree(weight)
        b = self.parameter_degree(bias)
        if b is not None and (np.any(b != 0) or np.any(s_out != 0)):
            self.require(b - s_out, 0.0, node, "a bias must scale like the output of its layer")
        return s_out

    def normalization(
        self, node: fx.Node, s_in: np.ndarray, weight: object, bias: object, fixed_statistics: bool
    ) -> np.ndarray:
        if fixed_statistics:
            self.require(s_in, 0.0, node, "batch norm with running statistics (evaluation mode) needs an input of "
                         "degree 0")  # fmt: skip
        gamma = self.zero() if weight is None else self.parameter_degree(weight)  # no affine gain: degree 0
        beta = self.parameter_degree(bias)
        if beta is not None:
            self.require(beta - gamma, 0.0, node, "a normalization's shift β must scale like its gain γ")
        return gamma

    def module_rule(self, node: fx.Node, module: nn.Module) -> np.ndarray:
        s_in = self.first_tensor(node)
        if isinstance(module, LINEAR_MODULES):
            return self.linear(node, s_in, module.weight, module.bias)
        if isinstance(module, KEEP_MODULES):
            return s_in
        if isinstance(module, nn.PReLU):
            self.require(self.rate(module.weight), 0.0, node, "a PReLU slope cannot scale")
            return s_in
        if isinstance(module, NORM_MODULES):
            fixed = isinstance(module, nn.modules.batchnorm._NormBase) and (
                not module.training and module.track_running_stats
            )
            return self.normalization(node, s_in, getattr(module, "weight", None), getattr(module, "bias", None),
                                      fixed)  # fmt: skip
        if isinstance(module, nn.Embedding):
            return self.rate(module.weight)
        if isinstance(module, NONHOMOGENEOUS_MODULES):
            return self.nonhomogeneous(node, f"{type(module).__name__} (module {node.target!r})")
        raise UntraceableModelError(
            f"node {node.name!r} calls a {type(module).__name__} (module {node.target!r}), whose scaling rule is "
            "unknown; pass explicit rates (a mapping name → λ) instead"
        )

    def function_rule(self, node: fx.Node) -> np.ndarray:
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        args = node.args
        if target in (F.linear, F.conv1d, F.conv2d, F.conv3d):
            weight = args[1] if len(args) > 1 else node.kwargs.get("weight")
            bias = args[2] if len(args) > 2 else node.kwargs.get("bias")
            return self.linear(node, self.degree(args[0]), weight, bias)
        if target in NORM_FUNCTIONS:
            weight = node.kwargs.get("weight", args[2] if len(args) > 2 and target is not F.normalize else None)
            bias = node.kwargs.get("bias", args[3] if len(args) > 3 and target is not F.normalize else None)
            return self.normalization(node, self.degree(args[0]), weight, bias, fixed_statistics=False)
        if target in KEEP_FUNCTIONS or target in KEEP_METHODS:
            return self.first_tensor(node)
        if target in SUM_TARGETS:
            return self.sum(node)
        if target in EQUAL_TARGETS:
            return self.equal(node, self.tensor_args(node)[(1 if target is torch.where else 0) :],
                              "inputs joined by this node must scale alike")  # fmt: skip
        if target in PRODUCT_TARGETS:
            return sum(self.tensor_args(node), self.zero())
        if target in QUOTIENT_TARGETS:
            numerator, denominator = self.degree(args[0]), self.degree(args[1])
            return (numerator if numerator is not None else self.zero()) - (
                denominator if denominator is not None else self.zero()
            )
        if target in (operator.pow, torch.pow, "pow") and isinstance(args[1], (int, float)):
            return self.degree(args[0]) * float(args[1])
        if target in NONHOMOGENEOUS_TARGETS:
            return self.nonhomogeneous(node, f"{name}")
        if target is F.batch_norm:
            weight = node.kwargs.get("weight", args[3] if len(args) > 3 else None)
            bias = node.kwargs.get("bias", args[4] if len(args) > 4 else None)
            training = node.kwargs.get("training", args[5] if len(args) > 5 else False)
            return self.normalization(node, self.degree(args[0]), weight, bias, fixed_statistics=not training)
        raise UntraceableModelError(
            f"node {node.name!r} calls {name!r}, whose scaling rule is unknown; pass explicit rates (a mapping "
            "name → λ) instead"
        )

    def sum(self, node: fx.Node) -> np.ndarray:
        constants = [a for a in node.args if isinstance(a, (int, float)) and a != 0]  # alpha= is a scale factor
        degrees = self.tensor_args(node)
        scaling = [d for d in degrees if np.any(d != 0)]
        if scaling and (constants or len(scaling) < len(degrees)):
            raise NotQuasiHomogeneousError(
                f"node {node.name!r} adds a constant to a value that scales with the parameters; the network is "
                "not quasi-homogeneous (Kunin et al. 2023)"
            )
        return self.equal(node, degrees, "a sum (e.g. a residual connection) needs equal degrees on its inputs")

    def output(self, node: fx.Node) -> None:
        outputs = self.tensor_args(node)
        if not outputs:
            raise UntraceableModelError("the traced model returns no tensor")
        for degree in outputs:
            if not np.any(degree != 0):
                raise NotQuasiHomogeneousError(
                    "the model's output does not depend on its parameters, so no rates scale it"
                )
            self.require(degree, 1.0, node, "the output must have degree 1")


def trace_constraints(model: nn.Module, example_input: torch.Tensor) -> RateGraph:
    """Trace ``model`` with ``torch.fx`` on ``example_input`` and collect its rate constraints (module docstring).

    Rates are per parameter tensor, named as in ``model.named_parameters()``. The model is not modified (a copy
    is traced and run once, so batch-norm running statistics are untouched).
    """
    names = [name for name, _ in model.named_parameters()]
    try:
        graph_module = fx.symbolic_trace(copy.deepcopy(model))
    except (fx.proxy.TraceError, TypeError, NotImplementedError, AttributeError, RuntimeError) as error:
        raise UntraceableModelError(
            f"torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "data-dependent control flow is the usual cause. Pass explicit rates (a mapping name → λ), which are "
            "checked numerically instead"
        ) from None
    ids = {id(p): i for i, (_, p) in enumerate(graph_module.named_parameters())}
    if len(ids) != len(names):
        raise UntraceableModelError("the traced copy of the model does not have the model's parameters")
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(example_input)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"the model cannot run on the example input of shape {tuple(example_input.shape)}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    tracer = _Tracer(graph_module, names, ids)
    for node in graph_module.graph.nodes:
        if node.op != "output" and "tensor_meta" not in node.meta:
            continue  # a shape, a size or another non-tensor value: no degree
        tracer.visit(node)
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    producer = output.args[0] if isinstance(output.args[0], fx.Node) else None
    return RateGraph(tuple(names), tuple(tracer.constraints), _module_name(graph_module, producer))


def _module_name(graph_module: fx.GraphModule, node: fx.Node | None) -> str | None:
    """The qualified name of the linear module that produces the output, if one does."""
    if node is None or node.op != "call_module":
        return None
    module = graph_module.get_submodule(node.target)
    return str(node.target) if isinstance(module, LINEAR_MODULES) else None
