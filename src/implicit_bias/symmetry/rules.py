"""Degree rules: how each operation maps the degrees of its inputs to the degree of its output (Kunin et al.
2023, §3), as linear constraints on the rates. The rules themselves are listed in
:mod:`implicit_bias.symmetry.graph`; this module holds them and the extension point for a user's own modules
and functions, :func:`register_rule`.

A degree is a NumPy vector of coefficients over the model's parameters — a linear form Σ_p c_p λ_p — so rules
add, subtract and scale degrees with ordinary arithmetic. A rule receives a :class:`Call` and returns the degree
of the output::

    from implicit_bias.symmetry import register_rule

    class Scale(nn.Module):            # y = s · x with a learned scalar s
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(()))
        def forward(self, x):
            return self.s * x

    register_rule(Scale, lambda call: call.inputs()[0] + call.parameter("s"))

A registered module or function is kept whole (a leaf) when the model is traced. ``"keep"`` (the output scales
like the first input, as for ReLU) and ``"invariant"`` (a non-homogeneous function: its input must not scale)
name the two most common rules.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import InvalidArgumentError, UntraceableModelError

Rule = Callable[["Call"], np.ndarray]


class Call:
    """One call in the traced graph as a degree rule sees it: its arguments' degrees, the module's parameters,
    and ways to add constraints."""

    def __init__(self, walker: Any, node: fx.Node, module: nn.Module | None) -> None:
        self.walker, self.node, self.module = walker, node, module
        target = node.target
        self.in_place = (
            node.op == "call_method" and target.endswith("_") and not target.startswith("__")
        ) or target in IN_PLACE_OPERATORS
        if node.op == "call_module":
            self.what = f"{type(module).__name__} (module {node.target!r})"
        else:
            self.what = target if isinstance(target, str) else getattr(target, "__name__", str(target))

    # -- reading arguments ------------------------------------------------------------------------------------
    def zero(self) -> np.ndarray:
        """The degree of a value that does not scale (the input, a buffer, a constant)."""
        return np.zeros(self.walker.size)

    def arg(self, position: int, keyword: str, default: object = None) -> object:
        """The raw argument at ``position`` or named ``keyword``."""
        if keyword in self.node.kwargs:
            return self.node.kwargs[keyword]
        return self.node.args[position] if len(self.node.args) > position else default

    def degree(self, value: object) -> np.ndarray | None:
        """The degree of an argument: a tensor node's, a parameter's λ_p, 0 for a non-zero number or a constant
        tensor; None for what scales with anything or nothing (the number 0, None, a shape)."""
        if isinstance(value, _Degree):
            return value.value
        if isinstance(value, fx.Node):
            return None if value in self.walker.zeros else self.walker.degrees.get(value)
        if isinstance(value, torch.Tensor):
            return self.walker.rate(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.zero() if value != 0 else None
        return None

    def inputs(self) -> list[np.ndarray]:
        """Degrees of the tensor arguments, in order (lists such as ``torch.cat``'s flattened)."""
        return [self.walker.degrees[node] for node in self.tensor_nodes() if node not in self.walker.zeros]

    def tensor_nodes(self) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((self.node.args, self.node.kwargs), lambda a: found.append(a)
                        if a in self.walker.degrees else a)  # fmt: skip
        return found

    def parameter(self, name: str) -> np.ndarray | None:
        """The degree λ_p of the called module's parameter ``name`` (None when it is None)."""
        value = getattr(self.module, name, None)
        return None if value is None else self.walker.rate(value)

    # -- constraints -------------------------------------------------------------------------------------------
    def require(self, lhs: np.ndarray, value: float, reason: str) -> None:
        """Add the constraint ⟨lhs, λ⟩ = value (nothing when it holds identically)."""
        from .graph import Constraint

        if np.any(lhs != 0) or value != 0:
            self.walker.constraints.append(Constraint(lhs.copy(), float(value), self.node.name, reason))

    def join(self, degrees: list[np.ndarray | None], reason: str) -> np.ndarray:
        """All of ``degrees`` (None entries: free) must be equal; their common degree (0 when one is 0)."""
        present = [d for d in degrees if d is not None]
        if not present:
            return self.zero()
        for other in present[1:]:
            self.require(other - present[0], 0.0, f"{reason} ({self.what})")
        common = next((d for d in present if not np.any(d != 0)), present[0])
        if not np.any(common != 0):
            self._inherit_origin()
            self.walker.origins.setdefault(
                self.node, f"node {self.node.name!r} ({self.what}) joins it with a value that does not scale"
            )
        return common

    def invariant(self, degree: np.ndarray | None = None, why: str = "") -> np.ndarray:
        """A non-homogeneous map: its input (``degree``, by default every tensor input) must have degree 0; the
        output does not scale."""
        why = why or f"{self.what} is not homogeneous, so its input must not scale"
        for value in [degree] if degree is not None else self.inputs():
            self.require(value, 0.0, why)
        self.walker.origins[self.node] = f"node {self.node.name!r} applies {self.what}, which is not homogeneous"
        return self.zero()

    def shift(self, value: object) -> None:
        """Mark a parameter operand (a bias, a normalization's β, a parameter added to an activation) a shift."""
        tensor = self._parameter_of(value)
        if tensor is not None and id(tensor) in self.walker.indices:
            self.walker.shifts.add(self.walker.indices[id(tensor)])

    def last_layer(self, *operands: object) -> None:
        """Record the parameters of the linear map this call applies (for ``choice="last-layer"``)."""
        found = {self.walker.indices[id(t)] for t in map(self._parameter_of, operands)
                 if t is not None and id(t) in self.walker.indices}  # fmt: skip
        if found:
            self.walker.last[self.node] = frozenset(found)

    # -- common rules --------------------------------------------------------------------------------------------
    def keep(self) -> np.ndarray:
        """The output scales like the first tensor input (ReLU, views, pooling, dropout …)."""
        nodes = self.tensor_nodes()
        if not nodes:
            return self.zero()
        if nodes[0] in self.walker.origins:
            self.walker.origins[self.node] = self.walker.origins[nodes[0]]
        if nodes[0] in self.walker.last:
            self.walker.last[self.node] = self.walker.last[nodes[0]]
        return self.walker.degrees[nodes[0]]

    def unknown(self) -> np.ndarray:
        """No rule: allowed only when no input scales (any function of invariant values is invariant)."""
        if all(not np.any(d != 0) for d in self.inputs()):
            self._inherit_origin()
            return self.zero()
        raise UntraceableModelError(
            f"node {self.node.name!r} calls {self.what}, whose scaling rule is unknown; declare one with "
            "implicit_bias.symmetry.register_rule, or pass explicit rates (a mapping name → λ)"
        )

    def _inherit_origin(self) -> None:
        for node in self.tensor_nodes():
            if node in self.walker.origins:
                self.walker.origins[self.node] = self.walker.origins[node]
                return

    def _parameter_of(self, value: object) -> torch.Tensor | None:
        if isinstance(value, fx.Node) and value.op == "get_attr":
            value = operator.attrgetter(value.target)(self.walker.module)
        return value if isinstance(value, torch.Tensor) else None


# -- built-in rules ----------------------------------------------------------------------------------------------
def _linear(call: Call, x: object, weight: object, bias: object) -> np.ndarray:
    """s_out = s_in + λ_W; the bias must scale like the output."""
    s_in, s_weight = call.degree(x), call.degree(weight)
    s_out = (s_in if s_in is not None else call.zero()) + (s_weight if s_weight is not None else call.zero())
    s_bias = call.degree(bias) if bias is not None else None
    if s_bias is not None:
        call.shift(bias)
        call.require(s_bias - s_out, 0.0, "a bias must scale like the output of its layer")
    call.last_layer(weight, bias)
    return s_out


def _linear_module(call: Call) -> np.ndarray:
    return _linear(call, call.arg(0, "input"), call.module.weight, call.module.bias)


def _linear_function(call: Call) -> np.ndarray:
    return _linear(call, call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias"))


def _addmm(call: Call) -> np.ndarray:
    """addmm(b, x, W) = b + x W (also addmv, baddbmm): a linear map with its bias first."""
    product = call.degree(call.arg(1, "mat1")) + call.degree(call.arg(2, "mat2"))
    bias = call.arg(0, "input")
    call.shift(bias)
    call.last_layer(call.arg(2, "mat2"), bias)
    return call.join([product, call.degree(bias)], "a bias must scale like the product it is added to")


def _normalization(
    call: Call, x: object, weight: object, bias: object, eps: float | None, batch_statistics: bool = True
) -> np.ndarray:
    """Output degree λ_γ (0 without γ), λ_β = λ_γ; scale-invariant in the input only for ε = 0 and batch
    statistics."""
    s_in = call.degree(x)
    if not batch_statistics:
        call.require(s_in, 0.0, "batch norm with running statistics (evaluation mode) is an affine map of fixed "
                     "buffers, so its input must not scale")  # fmt: skip
    elif eps is None or eps > 0:
        call.require(s_in, 0.0, f"{call.what} with ε = {eps if eps is not None else 'machine ε'} > 0 is only "
                     "approximately scale-invariant, so its input must not scale (set eps=0 for exact invariance)")  # fmt: skip
    gamma = call.degree(weight) if weight is not None else None
    gamma = call.zero() if gamma is None else gamma
    if bias is not None:
        call.shift(bias)
        call.require(call.degree(bias) - gamma, 0.0, "a normalization's shift β must scale like its gain γ")
    return gamma


def _normalization_module(call: Call) -> np.ndarray:
    module = call.module
    batch_statistics = True
    if isinstance(module, nn.modules.batchnorm._NormBase):
        batch_statistics = module.training or module.running_mean is None
    return _normalization(call, call.arg(0, "input"), getattr(module, "weight", None),
                          getattr(module, "bias", None), getattr(module, "eps", None), batch_statistics)  # fmt: skip


def _prelu(call: Call) -> np.ndarray:
    call.require(call.parameter("weight"), 0.0, "a PReLU slope cannot scale")
    return call.keep()


def _embedding(call: Call) -> np.ndarray:
    return call.parameter("weight")


def _attention_scores(call: Call, query: np.ndarray, key: np.ndarray) -> None:
    call.require(query + key, 0.0, "softmax attention is not homogeneous in its scores q·kᵀ, which must not scale")


def _scaled_dot_product(call: Call) -> np.ndarray:
    """softmax(q kᵀ/√d + mask) v: the scores must not scale; the output scales like v."""
    _attention_scores(call, call.degree(call.arg(0, "query")), call.degree(call.arg(1, "key")))
    return call.degree(call.arg(2, "value"))


def _multihead_attention(call: Call) -> np.ndarray:
    """nn.MultiheadAttention: projections q = x W_q + b_q, …; scores softmax-ed; out_proj on the mixed values."""
    module = call.module
    query, key, value = (call.degree(call.arg(i, name)) for i, name in enumerate(("query", "key", "value")))
    packed = module.in_proj_weight is not None
    weights = [call.parameter("in_proj_weight")] * 3 if packed else [
        call.parameter(f"{n}_proj_weight") for n in ("q", "k", "v")]  # fmt: skip
    projected = [s + w for s, w in zip((query, key, value), weights)]
    if module.in_proj_bias is not None:
        call.shift(module.in_proj_bias)
        for s in projected:  # one bias tensor for q, k and v
            call.require(call.parameter("in_proj_bias") - s, 0.0, "an attention projection's bias must scale "
                         "like the projection")  # fmt: skip
    _attention_scores(call, projected[0], projected[1])
    return _linear(call, _Degree(projected[2]), module.out_proj.weight, module.out_proj.bias)


class _Degree:
    """A degree standing in for an argument (for rules built from other rules)."""

    def __init__(self, degree: np.ndarray) -> None:
        self.value = degree


def _product(call: Call) -> np.ndarray:
    """mul, matmul, @, mm, bmm, einsum, outer: degrees add."""
    return sum(call.inputs(), call.zero())


def _quotient(call: Call) -> np.ndarray:
    numerator, denominator = call.degree(call.arg(0, "input")), call.degree(call.arg(1, "other"))
    return (numerator if numerator is not None else call.zero()) - (
        denominator if denominator is not None else call.zero()
    )


def _power(call: Call) -> np.ndarray:
    exponent = call.arg(1, "exponent")
    if not isinstance(exponent, (int, float)):
        return call.unknown()
    return call.degree(call.arg(0, "input")) * float(exponent)


def _power_of(exponent: float) -> Rule:
    return lambda call: call.degree(call.arg(0, "input")) * exponent


def _sum(call: Call) -> np.ndarray:
    """a + b, a − b (alpha= scales b): one degree for every input, constants included."""
    degrees = [call.degree(call.arg(0, "input")), call.degree(call.arg(1, "other"))]
    for position in (0, 1):
        operand = call.arg(position, "input" if position == 0 else "other")
        other = call.degree(call.arg(1 - position, "other" if position == 0 else "input"))
        if isinstance(operand, fx.Node) and operand.op == "get_attr" and other is not None and np.any(other != 0):
            call.shift(operand)  # a parameter added to an activation
    return call.join(degrees, "a sum needs equal degrees on its inputs")


def _joined(call: Call) -> np.ndarray:
    """cat, stack, maximum, minimum, max/min of two tensors: equal degrees."""
    return call.join(call.inputs(), "inputs joined by this node must scale alike")


def _where(call: Call) -> np.ndarray:
    return call.join([call.degree(call.arg(1, "input")), call.degree(call.arg(2, "other"))],
                     "both branches of a where must scale alike")  # fmt: skip


def _clamp(call: Call) -> np.ndarray:
    """clamp(x, min, max): homogeneous when the bounds are 0 or absent (relu), otherwise a join with them."""
    bounds = [call.degree(call.arg(1, "min")), call.degree(call.arg(2, "max"))]
    return call.join([call.degree(call.arg(0, "input")), *bounds], "a clamp needs bounds that scale with its input")


def _reduction_or_join(call: Call) -> np.ndarray:
    """torch.max(x, dim) keeps the degree; torch.max(a, b) joins a and b."""
    return _joined(call) if len(call.inputs()) > 1 else call.keep()


def _comparison(call: Call) -> np.ndarray:
    """x > y (≥, <, ≤, ==, ≠): the result is invariant when both sides scale alike (a constant side: 0)."""
    call.join([call.degree(call.arg(0, "input")), call.degree(call.arg(1, "other"))],
              "a comparison is scale-invariant only between values that scale alike")  # fmt: skip
    return call.zero()


def _pad(call: Call) -> np.ndarray:
    value = call.arg(3, "value")
    return call.join([call.degree(call.arg(0, "input")), call.degree(value)], "padding must scale with the input")


def _masked_fill(call: Call) -> np.ndarray:
    return call.join([call.degree(call.arg(0, "input")), call.degree(call.arg(2, "value"))],
                     "a fill value must scale with the tensor it fills")  # fmt: skip


def _function_normalization(positions: tuple[int, int, int], training: int | None = None) -> Rule:
    weight_at, bias_at, eps_at = positions

    def rule(call: Call) -> np.ndarray:
        batch_statistics = True if training is None else bool(call.arg(training, "training", False))
        if call.node.target is F.instance_norm:
            batch_statistics = bool(call.arg(5, "use_input_stats", True))
        eps = call.arg(eps_at, "eps", None if call.node.target is F.rms_norm else 1e-5)
        return _normalization(call, call.arg(0, "input"), call.arg(weight_at, "weight"),
                              call.arg(bias_at, "bias") if bias_at >= 0 else None, eps, batch_statistics)  # fmt: skip

    return rule


def _constant(call: Call) -> np.ndarray:
    """ones_like, full_like, new_ones …: a constant, degree 0 whatever its argument's degree."""
    return call.zero()


def _zeros(call: Call) -> np.ndarray:
    """zeros_like, new_zeros, torch.zeros: 0 scales with anything, so it joins any degree freely."""
    call.walker.zeros.add(call.node)
    return call.zero()


def _unit_normalize(call: Call) -> np.ndarray:
    """F.normalize: x / max(‖x‖, ε) is exactly scale-invariant wherever ‖x‖ > ε; output degree 0."""
    return call.zero()


LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.LazyLinear)  # fmt: skip
KEEP_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Flatten, nn.Unflatten, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.Upsample, nn.PixelShuffle,
    nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
                nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm, nn.SyncBatchNorm)  # fmt: skip
NONHOMOGENEOUS_MODULES = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Softmax, nn.Softmax2d,
    nn.LogSoftmax, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink,
    nn.LogSigmoid, nn.GLU, nn.Softmin, nn.Threshold, nn.Hardshrink, nn.Softshrink,
)  # fmt: skip
MODULE_RULES: list[tuple[tuple[type, ...], Rule]] = [
    (LINEAR_MODULES, _linear_module),
    (KEEP_MODULES, Call.keep),
    (NORM_MODULES, _normalization_module),
    (NONHOMOGENEOUS_MODULES, lambda call: call.invariant()),
    ((nn.PReLU,), _prelu),
    ((nn.Embedding,), _embedding),
    ((nn.MultiheadAttention,), _multihead_attention),
]

KEEP_FUNCTIONS = (
    F.relu, torch.relu, F.relu_, torch.relu_, F.leaky_relu, torch.abs, operator.abs, operator.neg, operator.pos,
    torch.neg, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
    torch.movedim, torch.swapaxes, torch.mean, torch.sum, torch.nansum, torch.amax, torch.amin, torch.clone,
    operator.getitem, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.max_pool1d,
    F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, torch.chunk, torch.split, torch.unbind, torch.flip, torch.roll, torch.t,
    torch.narrow, torch.select, torch.index_select, torch.gather, torch.take_along_dim, torch.cumsum,
    torch.diagonal, torch.tril, torch.triu, torch.repeat_interleave, torch.tile, torch.broadcast_to,
    torch.linalg.vector_norm, torch.norm, torch.trace, torch.diag, F.interpolate, F.pixel_shuffle,
    F.unfold, F.fold, torch.real, torch.conj,
)  # fmt: skip
KEEP_METHODS = (
    "relu", "abs", "neg", "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute",
    "transpose", "squeeze", "unsqueeze", "contiguous", "mean", "sum", "nansum", "amax", "amin", "clone", "chunk",
    "split", "unbind", "expand", "expand_as", "repeat", "repeat_interleave", "tile", "t", "flip", "roll", "to",
    "type_as", "float", "double", "half", "bfloat16", "detach", "__getitem__", "narrow", "select",
    "index_select", "gather", "cumsum", "diagonal", "tril", "triu", "norm", "movedim", "swapaxes", "cpu", "cuda",
    "squeeze_", "unsqueeze_", "relu_", "abs_", "neg_", "t_", "transpose_", "diag", "trace", "leaky_relu",
)  # fmt: skip
NONHOMOGENEOUS_FUNCTIONS = (
    torch.tanh, torch.sigmoid, F.tanh, F.sigmoid, F.gelu, F.silu, F.elu, F.selu, F.celu, F.softplus, F.softmax,
    F.log_softmax, F.softmin, torch.softmax, torch.log_softmax, torch.exp, torch.expm1, torch.log, torch.log1p,
    torch.log2, torch.log10, torch.sin, torch.cos, torch.tan, F.hardtanh, F.relu6, torch.erf, torch.erfc, F.mish,
    F.hardswish, F.hardsigmoid, F.logsigmoid, F.softsign, F.tanhshrink, F.glu, F.threshold, F.hardshrink,
    F.softshrink, torch.logsumexp, torch.special.expit, torch.special.erf, math.exp, math.log, torch.atan,
    torch.sinh, torch.cosh, torch.asinh, F.cross_entropy, F.mse_loss,
)  # fmt: skip
NONHOMOGENEOUS_METHODS = (
    "tanh", "sigmoid", "exp", "expm1", "log", "log1p", "softmax", "log_softmax", "sin", "cos", "erf", "logsumexp",
    "tanh_", "sigmoid_", "exp_", "log_",
)  # fmt: skip
FUNCTION_RULES: dict[object, Rule] = {
    **{f: Call.keep for f in KEEP_FUNCTIONS},
    **{f: (lambda call: call.invariant()) for f in NONHOMOGENEOUS_FUNCTIONS},
    **dict.fromkeys((F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                     F.conv_transpose3d), _linear_function),
    **dict.fromkeys((torch.addmm, torch.addmv, torch.baddbmm, torch.addbmm), _addmm),
    **dict.fromkeys((operator.add, operator.sub, torch.add, torch.sub, torch.subtract, operator.iadd,
                     operator.isub), _sum),
    **dict.fromkeys((torch.cat, torch.concat, torch.concatenate, torch.stack, torch.hstack, torch.vstack,
                     torch.maximum, torch.minimum, torch.fmax, torch.fmin), _joined),
    **dict.fromkeys((torch.max, torch.min), _reduction_or_join),
    **dict.fromkeys((operator.mul, operator.imul, torch.mul, torch.multiply, torch.matmul, operator.matmul,
                     torch.mm, torch.bmm, torch.einsum, torch.outer, torch.dot, torch.inner, torch.kron,
                     torch.tensordot), _product),
    **dict.fromkeys((operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide), _quotient),
    **dict.fromkeys((operator.pow, torch.pow), _power),
    torch.sqrt: _power_of(0.5), torch.rsqrt: _power_of(-0.5), torch.square: _power_of(2.0),
    torch.reciprocal: _power_of(-1.0),
    torch.where: _where,
    torch.clamp: _clamp, torch.clip: _clamp, torch.clamp_min: _clamp,
    **dict.fromkeys((operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne, torch.gt,
                     torch.ge, torch.lt, torch.le, torch.eq, torch.ne), _comparison),
    F.pad: _pad,
    torch.masked_fill: _masked_fill,
    F.layer_norm: _function_normalization((2, 3, 4)),
    F.group_norm: _function_normalization((2, 3, 4)),
    F.rms_norm: _function_normalization((2, -1, 3)),
    F.instance_norm: _function_normalization((3, 4, 7)),
    F.batch_norm: _function_normalization((3, 4, 7), training=5),
    F.normalize: _unit_normalize,
    F.scaled_dot_product_attention: _scaled_dot_product,
    **dict.fromkeys((torch.zeros, torch.zeros_like), _zeros),
    **dict.fromkeys((torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like,
                     torch.randint_like), _constant),
    torch.var: _power_of(2.0),
    torch.std: Call.keep,
}
METHOD_RULES: dict[str, Rule] = {
    **{m: Call.keep for m in KEEP_METHODS},
    **{m: (lambda call: call.invariant()) for m in NONHOMOGENEOUS_METHODS},
    **dict.fromkeys(("add", "sub", "add_", "sub_", "__add__", "__sub__", "__radd__"), _sum),
    **dict.fromkeys(("mul", "mul_", "matmul", "mm", "bmm", "__mul__", "__matmul__", "outer", "dot"), _product),
    **dict.fromkeys(("div", "div_", "true_divide", "__truediv__"), _quotient),
    **dict.fromkeys(("max", "min"), _reduction_or_join),
    **dict.fromkeys(("maximum", "minimum"), _joined),
    "pow": _power, "pow_": _power, "sqrt": _power_of(0.5), "rsqrt": _power_of(-0.5), "square": _power_of(2.0),
    "reciprocal": _power_of(-1.0),
    **dict.fromkeys(("clamp", "clip", "clamp_", "clamp_min", "clamp_min_"), _clamp),
    **dict.fromkeys(("gt", "ge", "lt", "le", "eq", "ne"), _comparison),
    **dict.fromkeys(("masked_fill", "masked_fill_"), _masked_fill),
    "addmm": _addmm,
    "new_zeros": _zeros, "zero_": _zeros,
    **dict.fromkeys(("new_ones", "new_full", "new_empty", "new_tensor", "fill_"), _constant),
    "var": _power_of(2.0), "std": Call.keep,
}
IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


# -- the extension point -------------------------------------------------------------------------------------------
_USER_MODULE_RULES: dict[type, Rule] = {}
_USER_FUNCTION_RULES: dict[object, Rule] = {}
NAMED_RULES: dict[str, Rule] = {"keep": Call.keep, "invariant": lambda call: call.invariant()}


def register_rule(target: type[nn.Module] | Callable[..., Any], rule: str | Rule) -> None:
    """Declare how ``target`` — a module class or a function of a user's model — scales.

    ``rule`` is ``"keep"`` (the output scales like the first input), ``"invariant"`` (not homogeneous: the
    input must not scale, the output does not), or a function ``rule(call) -> degree`` of a :class:`Call`.
    ``target`` is then kept whole when models are traced, and the rule replaces any built-in one.
    """
    if isinstance(rule, str):
        if rule not in NAMED_RULES:
            raise InvalidArgumentError(f"rule must be one of {sorted(NAMED_RULES)} or a function, got {rule!r}")
        rule = NAMED_RULES[rule]
    if not callable(rule):
        raise InvalidArgumentError(f"rule must be a string or a function of a Call, got {type(rule).__name__}")
    if isinstance(target, type) and issubclass(target, nn.Module):
        _USER_MODULE_RULES[target] = rule
    elif callable(target):
        _USER_FUNCTION_RULES[target] = rule
    else:
        raise InvalidArgumentError(f"target must be an nn.Module subclass or a function, got {target!r}")


def leaf_modules() -> tuple[type, ...]:
    """Module classes with a user rule, kept whole when tracing."""
    return tuple(_USER_MODULE_RULES)


def leaf_functions() -> tuple[object, ...]:
    """Functions with a user rule, kept whole when tracing."""
    return tuple(_USER_FUNCTION_RULES)


def rule_for(node: fx.Node, module: nn.Module | None) -> Rule | None:
    """The degree rule of a call node: the user's first, then the built-in one; None when there is none."""
    if node.op == "call_module":
        for kind in type(module).__mro__:
            if kind in _USER_MODULE_RULES:
                return _USER_MODULE_RULES[kind]
        return next((rule for kinds, rule in MODULE_RULES if isinstance(module, kinds)), None)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return _USER_FUNCTION_RULES.get(node.target) or FUNCTION_RULES.get(node.target)
