"""Checkpoints as safetensors files: parameters, buffers, optimizer state, RNG state, step and history.

Tensors go into the safetensors payload; everything else (step, optimizer hyperparameters, non-tensor optimizer
state, logged history) into its JSON metadata. Nothing is ever unpickled, so loading a checkpoint cannot run
code. Files are written atomically, so a run killed mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..errors import CorruptFileError, MissingFileError
from .history import History
from .rundir import atomic_write

FORMAT = "implicit-bias-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """What a training run needs to continue exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    history: History
    extra: dict[str, Any]


def _pack_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        plain_state[str(index)] = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().clone().contiguous()
            else:
                plain_state[str(index)][key] = value
    return tensors, {"state": plain_state, "param_groups": state["param_groups"]}


def _unpack_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in meta["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: History,
    extra: dict[str, Any] | None = None,
) -> None:
    """Atomically write a checkpoint of ``model``, ``optimizer``, the global torch RNG and ``history``."""
    tensors = {f"model/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_meta = _pack_optimizer(optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "optimizer": json.dumps(optimizer_meta),
        "history": json.dumps(history.rows),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, save_safetensors({k: v.cpu() for k, v in tensors.items()}, metadata=metadata))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {str(path)!r}")
    raw = path.read_bytes()
    try:
        tensors = load_safetensors(raw)
        header_size = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_size]).get("__metadata__", {})
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r} is not {FORMAT!r}")
        return Checkpoint(
            step=int(metadata["step"]),
            model={k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")},
            optimizer=_unpack_optimizer(tensors, json.loads(metadata["optimizer"])),
            rng=tensors["rng/torch"],
            history=History(json.loads(metadata["history"])),
            extra=json.loads(metadata["extra"]),
        )
    except (
        SafetensorError,
        ValueError,
        KeyError,
        TypeError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as error:
        raise CorruptFileError(f"{str(path)!r} is not a readable implicit-bias checkpoint: {error}") from None


def restore(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the checkpoint's model and optimizer state and its RNG state, in place."""
    try:
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
    except (RuntimeError, ValueError, KeyError) as error:
        raise CorruptFileError(f"the checkpoint does not match this model or optimizer: {error}") from None
    torch.set_rng_state(checkpoint.rng)
