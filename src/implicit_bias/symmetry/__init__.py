"""Quasi-homogeneity (Kunin, Yamamura, Ma & Ganguli 2023): per-parameter rates Λ, their inference from a traced
graph, numerical checks and the rescaling ψ_α."""

from .check import RateCheck, check_rates, rescale
from .graph import Constraint, RateGraph, trace_constraints
from .rates import RateFamily, Rates, infer_rates

__all__ = [
    "Constraint",
    "RateCheck",
    "RateFamily",
    "RateGraph",
    "Rates",
    "check_rates",
    "infer_rates",
    "rescale",
    "trace_constraints",
]
