"""Checkpoints as safetensors files: parameters, buffers, optimizer state, RNG states, probe states, the run's
resolved config, step and history.

Tensors go into the safetensors payload; everything else (step, config, optimizer hyperparameters, non-tensor
optimizer state, probe names, logged history) into its JSON metadata, with a SHA-256 digest of both, so a
truncated or bit-flipped file is detected rather than resumed. Nothing is ever unpickled, so loading a
checkpoint cannot run code. A run directory keeps two files: each write goes to a temporary file that is
flushed to disk before the current checkpoint becomes ``checkpoint.prev.safetensors`` and the new one takes
its name; :func:`latest_checkpoint` falls back to the previous file when the newest is missing or unreadable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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
from .probes import Probe, probe_name
from .rundir import PREVIOUS_CHECKPOINT_FILE, atomic_write

FORMAT = "implicit-bias-checkpoint/2"
OLD_FORMATS = ("implicit-bias-checkpoint/1",)


@dataclass(frozen=True)
class Checkpoint:
    """What a training run needs to continue exactly where it stopped.

    ``probes`` holds, for each probe of the run in order, its name and its ``state_dict()`` (empty for a probe
    without state); ``cuda_rng`` is the generator state of the model's GPU (None for a CPU run).
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    history: History
    extra: dict[str, Any]
    config: dict[str, Any]
    probes: list[tuple[str, dict[str, torch.Tensor]]]
    cuda_rng: torch.Tensor | None = None


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


def _pack_probes(probes: Sequence[Probe]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``probe/<position>/<name>/<key>`` tensors of every probe with a ``state_dict``, and the probes' names."""
    tensors: dict[str, torch.Tensor] = {}
    for position, probe in enumerate(probes):
        state = probe.state_dict() if hasattr(probe, "state_dict") else {}
        for key, value in state.items():
            tensors[f"probe/{position}/{probe_name(probe)}/{key}"] = value.detach().clone().contiguous()
    return tensors, [probe_name(probe) for probe in probes]


def _unpack_probes(tensors: dict[str, torch.Tensor], names: list[str]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    states: list[tuple[str, dict[str, torch.Tensor]]] = [(name, {}) for name in names]
    for key, value in tensors.items():
        if key.startswith("probe/"):
            _, position, name, slot = key.split("/", 3)
            if states[int(position)][0] != name:
                raise ValueError(f"probe tensor {key!r} does not belong to probe {states[int(position)][0]!r}")
            states[int(position)][1][slot] = value
    return states


def _digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 of the metadata and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(dict(metadata), sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _cuda_device(model: nn.Module) -> torch.device | None:
    device = next(iter(model.parameters())).device
    return device if device.type == "cuda" else None


def save_checkpoint(
    path: str | Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: History,
    config: Mapping[str, Any] | None = None,
    probes: Sequence[Probe] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint of ``model``, ``optimizer``, the global torch RNG (and the model's GPU's), the
    ``probes``' states, the run's resolved ``config`` and ``history``; the file it replaces is kept as
    ``checkpoint.prev.safetensors`` beside it (see :func:`latest_checkpoint`)."""
    tensors = {f"model/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_meta = _pack_optimizer(optimizer.state_dict())
    probe_tensors, probe_names = _pack_probes(probes)
    tensors.update({**optimizer_tensors, **probe_tensors, "rng/torch": torch.get_rng_state()})
    device = _cuda_device(model)
    if device is not None:
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors = {k: v.cpu() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "optimizer": json.dumps(optimizer_meta),
        "history": json.dumps(history.rows),
        "config": json.dumps(dict(config or {})),
        "probes": json.dumps(probe_names),
        "extra": json.dumps(extra or {}),
    }
    metadata["sha256"] = _digest(tensors, metadata)
    path = Path(path)
    atomic_write(path, save_safetensors(tensors, metadata=metadata), keep=path.with_name(PREVIOUS_CHECKPOINT_FILE))


def _read_metadata(raw: bytes) -> dict[str, str]:
    header_size = int.from_bytes(raw[:8], "little")
    metadata = json.loads(raw[8 : 8 + header_size]).get("__metadata__", {})
    if metadata.get("format") in OLD_FORMATS:
        raise ValueError(
            f"it has the old format {metadata['format']!r}, without the run's config, probe states and digest "
            f"that exact resumption needs (this version reads {FORMAT!r}); start a new run (its weights stay "
            "readable with safetensors.torch.load_file, keys model/…)"
        )
    if metadata.get("format") != FORMAT:
        raise ValueError(f"format {metadata.get('format')!r} is not {FORMAT!r}")
    return metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else, or a file whose digest does not
    match its contents (truncated, bit-flipped), is a :class:`CorruptFileError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {str(path)!r}")
    raw = path.read_bytes()
    try:
        metadata = _read_metadata(raw)
        tensors = load_safetensors(raw)
        stored = metadata.pop("sha256")
        if _digest(tensors, metadata) != stored:
            raise ValueError("its contents do not match their SHA-256 digest (the file was damaged)")
        return Checkpoint(
            step=int(metadata["step"]),
            model={k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")},
            optimizer=_unpack_optimizer(tensors, json.loads(metadata["optimizer"])),
            rng=tensors["rng/torch"],
            history=History(json.loads(metadata["history"])),
            extra=json.loads(metadata["extra"]),
            config=json.loads(metadata["config"]),
            probes=_unpack_probes(tensors, json.loads(metadata["probes"])),
            cuda_rng=tensors.get("rng/cuda"),
        )
    except (
        SafetensorError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as error:
        raise CorruptFileError(f"{str(path)!r} is not a readable implicit-bias checkpoint: {error}") from None


def latest_checkpoint(path: str | Path) -> tuple[Checkpoint | None, str]:
    """The checkpoint at ``path`` or, when it is missing or unreadable, the previous one kept beside it, with a
    line saying so (naming both files and the step it falls back to; empty when the newest was read); None
    when neither exists.

    Raises
    ------
    CorruptFileError
        If a checkpoint exists but neither file is readable.
    """
    path = Path(path)
    previous = path.with_name(PREVIOUS_CHECKPOINT_FILE)
    if not path.exists() and not previous.exists():
        return None, ""
    try:
        return load_checkpoint(path), ""
    except (CorruptFileError, MissingFileError) as error:
        if not previous.exists():
            raise
        try:
            fallback = load_checkpoint(previous)
        except CorruptFileError as second:
            raise CorruptFileError(f"no readable checkpoint: {error}; and {second}") from None
        reason = "is missing" if isinstance(error, MissingFileError) else "is unreadable"
        return fallback, (
            f"checkpoint {str(path)!r} {reason}; resuming from the previous one, {str(previous)!r}, at step "
            f"{fallback.step}"
        )


def restore(
    checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, probes: Sequence[Probe]
) -> None:
    """Load the checkpoint's model, optimizer and probe states and its RNG states, in place (the probes must be
    those the checkpoint was written with, in the same order)."""
    try:
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
    except (RuntimeError, ValueError, KeyError) as error:
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line
        raise CorruptFileError(f"the checkpoint does not match this model or optimizer: {reason}") from None
    device = next(iter(model.parameters())).device
    for probe, (_, state) in zip(probes, checkpoint.probes, strict=True):
        if hasattr(probe, "load_state_dict"):
            probe.load_state_dict({key: value.to(device) for key, value in state.items()})
    torch.set_rng_state(checkpoint.rng)
    if checkpoint.cuda_rng is not None:
        torch.cuda.set_rng_state(checkpoint.cuda_rng, device)
