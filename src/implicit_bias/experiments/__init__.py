"""Registered reproductions of the literature's claims: ``reproduce(name, out_dir, quick=...)``."""

from . import (  # noqa: F401  (importing a module registers its experiments)
    cai_2025,
    galanti_2022,
    garrod_keating_2024,
    homogeneous_margin,
    ji_telgarsky_2020,
    kunin_2023,
    low_rank,
    lyu_li_2020,
    papyan_2020,
    poggio_liao_2020,
    schechtman_2025,
    soudry_2018,
    sukenik,
    telgarsky_2023,
    tsilivis_2024,
    wang_jacot_2024,
)
from .criteria import Criterion
from .registry import (
    EXPERIMENTS,
    Experiment,
    ExperimentError,
    Outcome,
    register,
    reproduce,
    reproduce_all,
    resolve_config,
)

__all__ = [
    "EXPERIMENTS",
    "Criterion",
    "Experiment",
    "ExperimentError",
    "Outcome",
    "register",
    "reproduce",
    "reproduce_all",
    "resolve_config",
]
