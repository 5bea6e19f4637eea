"""Training runs: ``fit`` (the Python API), probes, history, checkpoints and run directories."""

from .checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, resume_run, run
from .history import History
from .loop import as_dataset, fit
from .probes import (
    PROBES,
    AsymmetricMarginProbe,
    CollapseProbe,
    MarginProbe,
    Probe,
    ProbeContext,
    make_probe,
    norms_probe,
)

__all__ = [
    "PROBES",
    "AsymmetricMarginProbe",
    "Checkpoint",
    "CollapseProbe",
    "History",
    "MarginProbe",
    "Probe",
    "ProbeContext",
    "TrainConfig",
    "as_dataset",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "make_probe",
    "norms_probe",
    "resume_run",
    "run",
    "save_checkpoint",
]
