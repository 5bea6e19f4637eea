"""Weight snapshots of a run at log-spaced steps (``fit(..., snapshots="log")``), for diagnosing a model's
implicit biases as trends over training (``implicit-bias diagnose RUN_DIR``)."""

from __future__ import annotations

import re
from pathlib import Path

from safetensors.torch import save
from torch import nn

from .rundir import atomic_write

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_POINTS = 20  # about this many log-spaced steps (0 and the last always among them)
SNAPSHOT_SCHEDULES = ("log",)
_NAME = re.compile(r"step_(\d+)\.safetensors")


def snapshot_path(run_path: Path, step: int) -> Path:
    """``run_path/snapshots/step_000123.safetensors``."""
    return Path(run_path) / SNAPSHOT_DIR / f"step_{step:06d}.safetensors"


def save_snapshot(run_path: Path, step: int, model: nn.Module) -> Path:
    """Write the model's state dict (CPU copies, its own dtype) at ``step`` atomically."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    path = snapshot_path(run_path, step)
    atomic_write(path, save(state, metadata={"step": str(step)}))
    return path


def list_snapshots(run_path: Path) -> dict[int, Path]:
    """The snapshots of a run by step, in increasing order (temporary files of an interrupted write ignored)."""
    folder = Path(run_path) / SNAPSHOT_DIR
    found = {int(m.group(1)): p for p in folder.glob("step_*.safetensors") if (m := _NAME.fullmatch(p.name))}
    return dict(sorted(found.items()))
