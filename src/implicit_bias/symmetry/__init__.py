"""Quasi-homogeneity (Kunin, Yamamura, Ma & Ganguli 2023): per-parameter rates Λ, their inference from a traced
graph, numerical checks and the rescaling ψ_α."""

from .check import RateCheck, check_rates, rescale
from .graph import Constraint, RateGraph, trace_constraints
from .rates import RateFamily, Rates, infer_rates
from .rules import Call, register_rule

__all__ = [
    "Call",
    "Constraint",
    "RateCheck",
    "RateFamily",
    "RateGraph",
    "Rates",
    "check_rates",
    "infer_rates",
    "register_rule",
    "rescale",
    "trace_constraints",
]
