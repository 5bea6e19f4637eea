"""The linear constraints that quasi-homogeneity puts on per-parameter rates, read off a traced graph.

Kunin, Yamamura, Ma & Ganguli (2023, §3): Φ is Λ-quasi-homogeneous when Φ(exp(αΛ)θ; x) = e^α Φ(θ; x) with
Λ = diag(λ) ≥ 0 and λ_max > 0. Every tensor of the computation gets a *degree* s — how its value scales with
e^α — a linear form in the rates λ_p of the parameter tensors p (a coefficient vector over the parameters). The
input, buffers and constants have degree 0, a parameter p has degree λ_p, and each operation has a rule
(:mod:`implicit_bias.symmetry.rules`):

- linear / conv (modules, ``F.linear``, ``F.conv*``, ``addmm``): s_out = s_in + λ_W, and the bias (a *shift*)
  needs λ_b = s_out; ``matmul`` / ``@`` / ``mul`` / ``einsum`` add degrees, ``div`` subtracts, ``x**p`` scales;
- ReLU, leaky ReLU, |·|, pooling, flatten, views, permutes, indexing, dropout, ``nn.Identity``: s_out = s_in;
- **one rule for every joining op** (``+``/``−``, ``cat``/``stack``, ``maximum``/``minimum``/``where``,
  ``clamp``, comparisons): all inputs carry one degree — degree-0 inputs (the raw x, a buffer, a non-zero
  constant) included; a parameter added to an activation is a shift;
- a non-homogeneous function (tanh, sigmoid, GELU, SiLU, softmax, exp, …) forces the degree of its input to 0
  and outputs degree 0 (the parameters before it get rate 0, as the definition allows);
- a normalization (BatchNorm with batch statistics, LayerNorm, GroupNorm, InstanceNorm) outputs the degree of
  its gain γ (0 without one), β is a shift with λ_β = λ_γ; it is scale-invariant in its input only when its
  ε = 0 — with ε > 0 (the default) the identity holds only to O(ε/Var), so its input degree is fixed at 0.
  BatchNorm with running statistics (evaluation mode) is an affine map of buffers: input degree 0;
- the output must have degree 1.

Every rule is a linear constraint, and the solver (:func:`~implicit_bias.symmetry.infer_rates`) decides them
together; when no Λ ≥ 0 satisfies them, :class:`~implicit_bias.errors.NotQuasiHomogeneousError` names the
nodes that force λ_max = 0. Parameters are matched to the model's by identity, so their declaration order does
not matter; parameters the forward pass never uses are listed as ``unused`` (rate 0). The graph is traced with
``torch.fx``; a model it cannot follow gets :class:`~implicit_bias.errors.UntraceableModelError`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from ..errors import InvalidArgumentError, NotQuasiHomogeneousError, UntraceableModelError
from .rules import Call, leaf_functions, leaf_modules, rule_for


@dataclass(frozen=True)
class Constraint:
    """Σ_p coefficients[p] λ_p = value, imposed by graph node ``node`` for ``reason``."""

    coefficients: np.ndarray
    value: float
    node: str
    reason: str


@dataclass(frozen=True)
class RateGraph:
    """The parameters of a model (one rate per tensor) and the constraints its graph puts on their rates.

    ``shifts`` are the parameters the graph adds to a value (biases, normalization β); ``unused`` the ones the
    forward pass never reads (fixed at rate 0); ``last_layer`` the parameters of the final linear map producing
    the output (empty when no such map ends the network).
    """

    names: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    shifts: frozenset[str] = frozenset()
    unused: tuple[str, ...] = ()
    last_layer: tuple[str, ...] = ()

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

    def feasible_point(self, constraints: tuple[Constraint, ...] | None = None) -> np.ndarray | None:
        """Some λ ≥ 0 satisfying ``constraints`` (all of the graph's by default), found by a linear program; None
        when there is none."""
        rows = self.constraints if constraints is None else constraints
        if not rows:
            return np.zeros(len(self.names))
        from scipy.optimize import linprog  # here, not at import: scipy.optimize takes ~1 s to import

        A = np.stack([c.coefficients for c in rows])
        b = np.array([c.value for c in rows])
        result = linprog(np.zeros(len(self.names)), A_eq=A, b_eq=b, bounds=(0.0, None), method="highs")
        return result.x if result.status == 0 else None

    def conflict(self) -> tuple[Constraint, ...]:
        """An irreducible infeasible subset of the constraints (deletion filter): dropping any one of them
        makes the rest satisfiable. Empty when the constraints are satisfiable."""
        if self.feasible_point() is not None:
            return ()
        kept = list(self.constraints)
        for constraint in list(kept):
            trial = tuple(c for c in kept if c is not constraint)
            if self.feasible_point(trial) is None:
                kept = list(trial)
        return tuple(kept)


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, with the modules and functions that have a registered degree rule kept as leaves."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(leaf_functions()))

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, leaf_modules()) or super().is_leaf_module(module, qualified_name)


class _Walker:
    """Walks a shape-propagated fx graph, giving every tensor node a degree (a vector over the rates)."""

    def __init__(self, graph_module: fx.GraphModule, indices: dict[int, int], size: int) -> None:
        self.module = graph_module
        self.indices = indices  # id(parameter) → position in the model's named_parameters()
        self.size = size
        self.degrees: dict[fx.Node, np.ndarray] = {}
        self.origins: dict[fx.Node, str] = {}  # why a value that cannot scale does not (a non-homogeneous node)
        self.last: dict[fx.Node, frozenset[int]] = {}  # parameters of the last linear map producing a value
        self.constraints: list[Constraint] = []
        self.used: set[int] = set()
        self.zeros: set[fx.Node] = set()  # values known to be 0, which join any degree
        self.shifts: set[int] = set()

    def rate(self, parameter: object) -> np.ndarray:
        """The degree λ_p of a parameter tensor (0 for a buffer or a constant tensor)."""
        vector = np.zeros(self.size)
        index = self.indices.get(id(parameter))
        if index is not None:
            vector[index] = 1.0
            self.used.add(index)
        return vector

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.degrees[node] = np.zeros(self.size)
        elif node.op == "get_attr":
            self.degrees[node] = self.rate(operator.attrgetter(node.target)(self.module))
        elif node.op in ("call_module", "call_function", "call_method"):
            module = self.module.get_submodule(node.target) if node.op == "call_module" else None
            call = Call(self, node, module)
            rule = rule_for(node, module)
            if rule is None:
                degree = call.unknown()
            else:
                degree = rule(call)
            self.degrees[node] = degree
            if call.in_place:  # x.add_(y) changes x itself: later reads of x see the new degree
                self.degrees[node.args[0]] = degree
        elif node.op == "output":
            self.output(node)

    def output(self, node: fx.Node) -> None:
        outputs: list[fx.Node] = []
        fx.node.map_arg(node.args, lambda a: outputs.append(a) if a in self.degrees else a)
        if not outputs:
            raise UntraceableModelError("the traced model returns no tensor")
        for value in outputs:
            degree = self.degrees[value]
            if not np.any(degree != 0):
                why = self.origins.get(value)
                raise NotQuasiHomogeneousError(
                    f"the model's output cannot scale with any rates: {why}, so λ_max > 0 is impossible and the "
                    "network is not quasi-homogeneous (Kunin et al. 2023)"
                    if why
                    else "the model's output does not depend on its parameters, so no rates scale it"
                )
            self.constraints.append(Constraint(degree.copy(), 1.0, value.name, "the output must have degree 1"))


def trace_constraints(model: nn.Module, example_input: torch.Tensor) -> RateGraph:
    """Trace ``model`` with ``torch.fx`` on ``example_input`` and collect its rate constraints (module docstring).

    Rates are per parameter tensor, named as in ``model.named_parameters()``. The model is not modified: it runs
    once on ``example_input`` for the shapes, and its buffers (batch-norm running statistics) are restored.
    """
    names = [name for name, _ in model.named_parameters()]
    indices = {id(parameter): i for i, (_, parameter) in enumerate(model.named_parameters())}
    try:
        graph_module = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except (fx.proxy.TraceError, TypeError, NotImplementedError, AttributeError, RuntimeError, NameError) as error:
        raise UntraceableModelError(
            f"torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "data-dependent control flow is the usual cause. Declare the rule of the module or function that "
            "holds it with implicit_bias.symmetry.register_rule (it is then kept whole), or pass explicit rates "
            "(a mapping name → λ), which are checked numerically instead"
        ) from None
    try:
        _mark_tensors(graph_module, example_input)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"the model cannot run on the example input of shape {tuple(example_input.shape)}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    walker = _Walker(graph_module, indices, len(names))
    output = None
    for node in graph_module.graph.nodes:
        if node.op == "output":
            output = node
        elif not node.meta.get("is_tensor"):
            continue  # a shape, a size or another non-tensor value: no degree
        walker.visit(node)
    unused = tuple(name for i, name in enumerate(names) if i not in walker.used)
    for name in unused:  # a parameter the forward pass never reads cannot scale Φ: fixed at 0, outside the family
        vector = np.zeros(len(names))
        vector[names.index(name)] = 1.0
        walker.constraints.append(Constraint(vector, 0.0, name, "the forward pass never uses this parameter"))
    produced = output.args[0] if output is not None and isinstance(output.args[0], fx.Node) else None
    last = sorted(walker.last.get(produced, frozenset()))
    return RateGraph(
        tuple(names),
        tuple(walker.constraints),
        frozenset(names[i] for i in walker.shifts),
        unused,
        tuple(names[i] for i in last),
    )


class _TensorMarker(fx.Interpreter):
    """Runs the graph once, marking the nodes whose value is a tensor (or a tuple of tensors)."""

    def run_node(self, node: fx.Node) -> object:
        result = super().run_node(node)
        values = result if isinstance(result, (tuple, list)) else (result,)
        node.meta["is_tensor"] = any(isinstance(value, torch.Tensor) for value in values)
        return result


def _mark_tensors(graph_module: fx.GraphModule, example_input: torch.Tensor) -> None:
    """Which nodes hold tensors, from one run on the example input that leaves no trace: the buffers it
    updates (batch-norm running statistics) are restored and the random state is forked (dropout)."""
    saved = {name: buffer.clone() for name, buffer in graph_module.named_buffers()}
    devices = [example_input.device] if example_input.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            _TensorMarker(graph_module).run(example_input)
    finally:
        with torch.no_grad():
            for name, buffer in graph_module.named_buffers():
                buffer.copy_(saved[name])
