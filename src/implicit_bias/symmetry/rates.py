"""Per-parameter rates Λ of a quasi-homogeneous network: inference, the family of valid choices, explanation.

Kunin, Yamamura, Ma & Ganguli (2023), "The asymmetric maximum margin bias of quasi-homogeneous neural networks",
ICLR, Def. 3.1: Φ(ψ_α(θ); x) = e^α Φ(θ; x) with ψ_α(θ) = exp(αΛ)θ, Λ = diag(λ_i) ≥ 0, λ_max > 0.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgumentError, NotQuasiHomogeneousError, UntraceableModelError
from ..models.inference import model_device, model_dtype
from .check import RateCheck, check_rates, complete_rates
from .graph import RateGraph, trace_constraints

CHOICES = ("uniform", "last-layer")
TOLERANCE = 1e-9


class RateFamily:
    """Every valid Λ of a traced network: {λ : A λ = b, λ ≥ 0} for the graph constraints (A, b).

    ``basis`` spans the directions in which a valid Λ can move (the null space of A, orthonormal); every valid
    Λ is ``offset`` plus a combination of them that keeps every λ ≥ 0. ``sample`` draws valid members.
    """

    def __init__(self, graph: RateGraph, offset: np.ndarray) -> None:
        self.graph = graph
        self.names = graph.names
        self.offset = offset
        A, _ = graph.matrix
        _, singular, vt = np.linalg.svd(A) if A.size else (None, np.zeros(0), np.eye(len(self.names)))
        rank = int((singular > TOLERANCE * max(1.0, singular.max(initial=0.0))).sum())
        self._basis = vt[rank:]

    @property
    def dimension(self) -> int:
        """Number of independent directions in which Λ can vary (0: Λ is unique)."""
        return len(self._basis)

    @property
    def basis(self) -> list[dict[str, float]]:
        """The directions, each a mapping parameter name → component."""
        return [dict(zip(self.names, map(float, row))) for row in self._basis]

    def contains(self, rates: Mapping[str, float], tol: float = TOLERANCE) -> bool:
        """Whether ``rates`` satisfy every constraint of the graph and are non-negative."""
        vector = np.array([float(rates.get(name, 0.0)) for name in self.names])
        return bool((vector >= -tol).all()) and not self.graph.violations(vector, tol)

    def sample(self, count: int = 1, *, seed: int = 0, cap: float = 2.0) -> list[Rates]:
        """``count`` random valid members: random convex combinations of vertices of the family (boxed by
        λ ≤ ``cap``, since the rates of weights feeding a normalization layer are unbounded), found by linear
        programs with random objectives."""
        from scipy.optimize import linprog  # here, not at import: scipy.optimize takes ~1 s to import

        rng = np.random.default_rng(seed)
        A, b = self.graph.matrix
        vertices = []
        for _ in range(max(4, 2 * count)):
            result = linprog(rng.standard_normal(len(self.names)), A_eq=A if A.size else None,
                             b_eq=b if A.size else None, bounds=(0.0, cap), method="highs")  # fmt: skip
            if result.status == 0:
                vertices.append(result.x)
        members = []
        for _ in range(count):
            weights = rng.dirichlet(np.ones(len(vertices)))
            vector = np.clip(weights @ np.array(vertices), 0.0, None)
            members.append(Rates(dict(zip(self.names, map(float, vector))), family=self, choice="sampled"))
        return members


class Rates(Mapping[str, float]):
    """Rates λ of every parameter tensor (a read-only mapping name → λ) of a quasi-homogeneous network.

    ``lambda_max`` is the largest rate and ``top`` the parameters that have it: the Λ-seminorm and the
    asymmetric margin of Kunin et al. (2023, Thm 4.1) are taken over ``top`` only. ``family`` describes every
    valid Λ of the traced graph (None when the rates were checked numerically instead); ``unused`` lists the
    parameters the forward pass never reads (rate 0) and ``shifts`` those the graph adds to a value (biases,
    normalization β).
    """

    def __init__(self, rates: Mapping[str, float], *, family: RateFamily | None = None, choice: str = "") -> None:
        self._rates = {name: float(value) for name, value in rates.items()}
        self.unused: tuple[str, ...] = family.graph.unused if family is not None else ()
        self.shifts: frozenset[str] = family.graph.shifts if family is not None else frozenset()
        if any(value < 0 for value in self._rates.values()):
            negative = [name for name, value in self._rates.items() if value < 0]
            raise InvalidArgumentError(f"rates must be non-negative; negative for {negative}")
        if not self.lambda_max > 0:
            raise InvalidArgumentError("at least one rate must be positive (λ_max > 0)")
        self.family, self.choice = family, choice

    def __getitem__(self, name: str) -> float:
        return self._rates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rates)

    def __len__(self) -> int:
        return len(self._rates)

    def __repr__(self) -> str:
        return f"Rates({self._rates!r}, choice={self.choice!r})"

    @property
    def lambda_max(self) -> float:
        """λ_max = max_i λ_i."""
        return max(self._rates.values(), default=0.0)

    @property
    def top(self) -> tuple[str, ...]:
        """Names of the parameters at λ_max (within a relative 1e−9)."""
        return tuple(n for n, v in self._rates.items() if v >= self.lambda_max * (1 - TOLERANCE))

    def groups(self) -> dict[float, tuple[str, ...]]:
        """Parameters grouped by rate (rates rounded to 12 digits), highest rate first."""
        grouped: dict[float, list[str]] = {}
        for name, value in self._rates.items():
            grouped.setdefault(round(value, 12), []).append(name)
        return {rate: tuple(grouped[rate]) for rate in sorted(grouped, reverse=True)}

    def explain(self, model: nn.Module | None = None) -> str:
        """A readable table: parameter, shape (when ``model`` is given), λ, and whether it is at λ_max."""
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()} if model is not None else {}
        width = max((len(n) for n in self._rates), default=9)
        lines = [
            f"rates ({self.choice or 'given'}): λ_max = {self.lambda_max:.6g}, "
            f"{len(self.top)} of {len(self)} tensors at λ_max"
            + (f", family of dimension {self.family.dimension}" if self.family is not None else ""),
            f"{'parameter':<{width}}  {'shape':<18}  {'λ':>10}  top",
        ]
        for name, value in self._rates.items():
            shape = "×".join(map(str, shapes.get(name, ()))) or "-"
            mark = "*" if name in self.top else ("unused" if name in self.unused else "")
            lines.append(f"{name:<{width}}  {shape:<18}  {value:>10.6g}  {mark}")
        return "\n".join(lines)


def _infeasible(graph: RateGraph) -> NotQuasiHomogeneousError:
    """The error for a graph whose constraints no Λ ≥ 0 satisfies, naming the nodes of a minimal conflict."""
    conflict = [c for c in graph.conflict() if c.reason != "the output must have degree 1"]
    named = "; ".join(f"node {c.node!r}: {c.reason}" for c in conflict[:4]) or "the output's degree"
    more = f" (+{len(conflict) - 4} more)" if len(conflict) > 4 else ""
    return NotQuasiHomogeneousError(
        "no rates Λ ≥ 0 give the output degree 1, so λ_max > 0 is impossible and the network is not "
        f"quasi-homogeneous (Kunin et al. 2023). These constraints force it: {named}{more}"
    )


def _minimum_norm(graph: RateGraph) -> np.ndarray:
    """The non-negative rates with the least Σ λ² over weights (shifts excluded), ties among shifts broken by
    the least Σ λ² over shifts.

    Which rates are zero is found with a non-negative least-squares solve of min ‖P^{1/2}λ‖² + M‖Aλ − b‖²
    (P = 1 on weights, 1e−4 on shifts, M = 1e8: the equalities as a stiff penalty); the rates are then
    polished exactly, lexicographically, on that zero set."""
    A, b = graph.matrix
    n = len(graph.names)
    weights = np.array([name not in graph.shifts for name in graph.names])
    feasible = graph.feasible_point()
    if feasible is None:
        raise _infeasible(graph)
    scale = np.sqrt(np.where(weights, 1.0, 1e-4))
    stiffness = 1e4
    system = np.vstack([stiffness * A / scale, np.eye(n)])
    from scipy.optimize import nnls

    guess = nnls(system, np.concatenate([stiffness * b, np.zeros(n)]), maxiter=100 * n)[0] / scale
    zero = guess < 1e-6
    for _ in range(n + 1):
        polished = _polish(A, b, weights, zero)
        if polished is None:
            break
        if (polished >= -1e-12).all():
            return np.clip(polished, 0.0, None)
        zero |= polished < -1e-12
    return feasible


def _polish(A: np.ndarray, b: np.ndarray, weights: np.ndarray, zero: np.ndarray) -> np.ndarray | None:
    """Exact lexicographic least norm with the rates in ``zero`` fixed at 0: the weights solve
    min ‖λ_W‖ s.t. P A_W λ_W = P b (P projects out the range of the shifts' columns A_S), then the shifts take
    the least-norm solution of A_S λ_S = b − A_W λ_W. None when the system has no solution."""
    W, S = weights & ~zero, ~weights & ~zero
    A_w, A_s = A[:, W], A[:, S]
    if A_s.shape[1]:
        u, s, _ = np.linalg.svd(A_s, full_matrices=True)
        rank = int((s > TOLERANCE * max(1.0, s.max(initial=0.0))).sum())
        complement = u[:, rank:].T
    else:
        complement = np.eye(len(b))
    vector = np.zeros(A.shape[1])
    vector[W] = np.linalg.lstsq(complement @ A_w, complement @ b, rcond=None)[0] if W.any() else 0.0
    rest = b - A_w @ vector[W]
    if S.any():
        vector[S] = np.linalg.lstsq(A_s, rest, rcond=None)[0]
    return vector if np.abs(A @ vector - b).max(initial=0.0) < 1e-9 else None


def _last_layer(graph: RateGraph) -> np.ndarray:
    """Only the final linear map scales: its weight and bias solve the constraints, every other rate is 0."""
    A, b = graph.matrix
    free = np.array([name in graph.last_layer for name in graph.names])
    vector = _polish(A, b, np.ones(len(free), dtype=bool), ~free) if free.any() else None
    if vector is None or (vector < -1e-12).any():
        raise InvalidArgumentError(
            "choice='last-layer' needs a network whose output is a final linear map (linear, conv, matmul with a "
            "parameter) that alone can scale it; this one's output "
            + (f"comes from {list(graph.last_layer)}, which cannot" if free.any() else "comes from no such map")
        )
    return np.clip(vector, 0.0, None)


def _explicit(names: tuple[str, ...], choice: Mapping[str, float]) -> np.ndarray:
    return np.array(list(complete_rates(names, choice).values()))


SELF_CHECK_TOLERANCE = 1e-8
SELF_CHECK_ALPHAS = (0.9,)  # with the Euler identity (the α → 0 limit): two points of the curve


def infer_rates(model: nn.Module, example_input: torch.Tensor, choice: str | Mapping[str, float] = "uniform") -> Rates:
    """Rates Λ under which ``model`` is quasi-homogeneous (Kunin et al. 2023, Def. 3.1), derived from its
    ``torch.fx`` graph (see :mod:`implicit_bias.symmetry.graph` for the rules) and verified numerically.

    ``choice`` picks one member of the (generally non-unique) family:

    - ``"uniform"``: the least Σ λ² over weight tensors (shifts — biases and normalization β, recognised from
      the graph — excluded, their rates then follow from the constraints). A bias-free MLP / CNN of depth L gets
      Λ = I/L; an MLP with biases λ_{W_l} = 1/L, λ_{b_l} = l/L; weights feeding a normalization layer get 0.
    - ``"last-layer"``: only the final linear map scales (λ = 1 for its weight and bias, 0 elsewhere).
    - a mapping name → λ (absent names mean 0), validated against the graph's constraints. For a model the
      tracer cannot follow, it is validated numerically with :func:`check_rates` on ``example_input``.

    Parameters the forward pass never uses get rate 0 and are listed in ``Rates.unused``. The answer is checked
    with :func:`check_rates` on ``example_input`` (on a float64 copy; the model is untouched) and refused if
    the definition or the Euler identity is off by more than a relative 1e−8.

    Raises
    ------
    NotQuasiHomogeneousError
        When no Λ ≥ 0 with λ_max > 0 exists, naming the nodes that force it.
    UntraceableModelError
        When the tracer cannot follow the model and ``choice`` is not an explicit mapping.
    """
    example_input = example_input.to(device=model_device(model), dtype=model_dtype(model))
    names = tuple(name for name, _ in model.named_parameters())
    if not names:
        raise InvalidArgumentError("the model has no parameters, so it has no rates")
    if not isinstance(choice, Mapping) and choice not in CHOICES:
        raise InvalidArgumentError(f"choice must be one of {list(CHOICES)} or a mapping name → λ, got {choice!r}")
    try:
        graph = trace_constraints(model, example_input)
    except UntraceableModelError:
        if isinstance(choice, str):
            raise
        return _checked_numerically(model, example_input, choice)
    if choice == "uniform":
        vector = _minimum_norm(graph)
    elif choice == "last-layer":
        vector = _last_layer(graph)
    else:
        vector = _explicit(names, choice)
    broken = graph.violations(vector)
    if broken:
        constraint, residual = broken[0]
        label = choice if isinstance(choice, str) else "the given rates"
        raise NotQuasiHomogeneousError(
            f"{label} violate {len(broken)} constraint(s) of the graph; worst at node {constraint.node!r}: "
            f"{constraint.reason} (off by {residual:.3g})"
        )
    rates = Rates(dict(zip(names, map(float, vector))), family=RateFamily(graph, vector),
                  choice=choice if isinstance(choice, str) else "given")  # fmt: skip
    check = _self_check(model, rates, example_input)
    if not check.worst <= SELF_CHECK_TOLERANCE:
        raise NotQuasiHomogeneousError(
            f"the rates derived from the graph fail the numerical check on the example input (relative error "
            f"{check.worst:.3g}: Φ(ψ_α θ) against e^α Φ(θ) {check.definition_error:.3g}, Euler identity "
            f"{check.euler_error:.3g}); an operation's scaling rule does not hold for this model — declare it "
            "with implicit_bias.symmetry.register_rule, or pass explicit rates"
        )
    return rates


def _self_check(model: nn.Module, rates: Rates, example_input: torch.Tensor) -> RateCheck:
    """check_rates at θ, or — when Φ(θ) is 0 on the example input (e.g. a zero-initialized layer), which leaves
    the relative errors undefined — at a seeded random perturbation of θ: the identities hold for every θ."""
    try:
        return check_rates(model, rates, example_input, alphas=SELF_CHECK_ALPHAS)
    except InvalidArgumentError:
        twin = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in twin.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.add_(noise.to(device=parameter.device, dtype=parameter.dtype))
        return check_rates(twin, rates, example_input, alphas=SELF_CHECK_ALPHAS)


def _checked_numerically(model: nn.Module, example_input: torch.Tensor, choice: Mapping[str, float]) -> Rates:
    names = tuple(name for name, _ in model.named_parameters())
    rates = Rates(complete_rates(names, choice), choice="given")
    check = check_rates(model, rates, example_input)
    if not check.worst <= 1e-6:
        raise NotQuasiHomogeneousError(
            f"the given rates do not make the model quasi-homogeneous: relative error {check.worst:.3g} "
            "(Φ(ψ_α θ) against e^α Φ(θ), and the Euler identity)"
        )
    return rates
