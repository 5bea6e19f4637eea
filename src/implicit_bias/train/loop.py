"""``fit``: the training loop — full-batch or minibatch, float64 log-space losses, log-time logging, probes,
atomic checkpoints and exact resumption."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from ..data import Dataset
from ..dynamics import LossBasedLR, log_spaced_steps, make_optimizer, steps_on_log_loss
from ..errors import ImplicitBiasError, InvalidArgumentError, NumericalError
from ..losses import LOSSES, canonical_labels, log_loss, output_margins
from ..metrics.layerwise import FeatureReducer
from ..models.features import capture_features
from ..models.inference import evaluation, predict, to_model
from ..validation import check_choice, check_features_labels, check_float_dtype, check_model_input, check_scalar
from .checkpoint import latest_checkpoint, restore, save_checkpoint
from .history import History
from .probes import Probe, ProbeContext, probe_name
from .rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    atomic_write,
    read_yaml,
    remove_temporaries,
    versions,
    write_yaml,
)
from .snapshots import SNAPSHOT_POINTS, SNAPSHOT_SCHEDULES, save_snapshot
from .stepping import Stepper

logger = logging.getLogger("implicit_bias.train")


def as_dataset(data: Dataset | tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    """A :class:`Dataset` from a dataset or a plain ``(X, y)`` pair (labels 0..K−1, or ±1 for binary data)."""
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise InvalidArgumentError(
            f"data must be a Dataset from implicit_bias.data.load or a pair (X, y), got {type(data).__name__}"
        )
    X, y = check_features_labels(*data)
    if bool((y == -1).any()) and set(torch.unique(y).tolist()) <= {-1, 1}:
        y = (y + 1) // 2
    return Dataset(X, y, max(2, int(y.max()) + 1), "tensors")


def resolve_device(device: torch.device | str) -> torch.device:
    """A torch device, refusing one that is not available here."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device 'cuda' was asked for but this machine has no CUDA GPU; use --device cpu")
    return resolved


def placement(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The one floating dtype and the one device of ``model``'s parameters; a model split across dtypes or devices,
    or without parameters, is refused."""
    parameters = list(model.parameters())
    if not parameters:
        raise InvalidArgumentError(f"model {type(model).__name__} has no parameters to train")
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in parameters if p.is_floating_point()})
    devices = sorted({str(p.device) for p in parameters})
    if len(dtypes) != 1:
        raise InvalidArgumentError(
            f"model {type(model).__name__} has parameters of dtypes {', '.join(dtypes) or '(none floating)'}; "
            "pass dtype= to fit to cast it to one"
        )
    if len(devices) > 1:
        raise InvalidArgumentError(
            f"model {type(model).__name__} has parameters on devices {', '.join(devices)}; "
            "pass device= to fit to move it to one"
        )
    return getattr(torch, dtypes[0]), parameters[0].device


def batch_indices(step: int, n: int, batch_size: int, seed: int, cache: dict[int, torch.Tensor]) -> torch.Tensor:
    """Indices of the minibatch of ``step``: epochs are seeded permutations, so a batch depends on the step alone
    (which makes resumption exact without storing a sampler state). A single leftover sample joins an epoch's
    last batch (then ``batch_size`` + 1), as in :func:`~implicit_bias.models.inference.sample_slices`: BatchNorm
    in training mode cannot normalize a batch of one."""
    per_epoch = max(1, n // batch_size) if n % batch_size == 1 else math.ceil(n / batch_size)
    epoch, position = divmod(step, per_epoch)
    if epoch not in cache:
        cache.clear()
        cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    stop = n if position == per_epoch - 1 else (position + 1) * batch_size
    return cache[epoch][position * batch_size : stop]


def _accuracy(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return float((output_margins(outputs, y, validate=False) > 0).to(torch.float64).mean())


def _evaluate(
    model: nn.Module, data: Dataset, loss: str, eval_batch_size: int | None
) -> tuple[torch.Tensor, float, float]:
    outputs = predict(model, data.X, batch_size=eval_batch_size).to(torch.float64)
    return outputs, *_loss_and_accuracy(outputs, data, loss)


def _loss_and_accuracy(outputs: torch.Tensor, data: Dataset, loss: str) -> tuple[float, float]:
    return float(log_loss(outputs, data.y, loss, reduction="sum", validate=False)), _accuracy(outputs, data.y)


def _evaluate_with_features(
    model: nn.Module, data: Dataset, loss: str, layers: Sequence[str]
) -> tuple[torch.Tensor, float, float, dict[str, torch.Tensor]]:
    """:func:`_evaluate` in one pass that also keeps the average-pooled features of ``layers`` (for probes)."""
    reducer = FeatureReducer("avgpool")
    with evaluation(model), torch.no_grad():
        outputs, captured = capture_features(model, to_model(model, data.X), layers)
    outputs = outputs.to(torch.float64)
    features = {name: reducer(name, output) for name, output in captured.items()}
    return outputs, *_loss_and_accuracy(outputs, data, loss), features


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("log objective {task.fields[log_loss]}  batch acc {task.fields[accuracy]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def fit(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    loss: str = "cross-entropy",
    optimizer: str | torch.optim.Optimizer = "sgd",
    steps: int = 1000,
    lr: float = 0.1,
    batch_size: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    probes: Sequence[Probe] = (),
    run_dir: str | Path | None = None,
    optimizer_options: Mapping[str, Any] | None = None,
    reduction: str = "mean",
    log_points: int = 100,
    eval_batch_size: int | None = None,
    checkpoint_seconds: float = 30.0,
    resume: bool = False,
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
    snapshots: str | None = None,
) -> History:
    """Train ``model`` on ``data`` and return the :class:`History` of logged steps.

    The objective is ℒ/N (``reduction="mean"``, the usual PyTorch scale for ``lr``) or the sum ℒ
    (``"sum"``), always evaluated in float64 log space (:mod:`implicit_bias.losses`), so the run goes on when ℒ
    is far below 1e−308. Logged rows hold ``log_loss`` = log ℒ with ℒ = Σ_n ℓ(q_n) over the training set
    (the sum, as in Lyu & Li 2020), ``accuracy``, ``test_log_loss`` and ``test_accuracy`` where a test split
    exists (the same sum over the test set), the learning rate, and every probe's values; rows are written at about ``log_points`` geometrically spaced steps and at
    the end.

    Parameters
    ----------
    model : nn.Module
        Trained in place. It stays on its own device and dtype unless ``device`` / ``dtype`` are given.
    data : Dataset or (X, y)
        Finite floating inputs and integer labels (checked once, before training); moved and cast to the
        model's device and dtype.
    loss : {"exponential", "logistic", "cross-entropy", "mse"}
    optimizer : str or torch.optim.Optimizer
        A name from :data:`implicit_bias.dynamics.OPTIMIZERS` (built over ``model.parameters()`` with ``lr``
        and ``optimizer_options``) or an optimizer already built over the model's parameters.
    steps : int
        Number of optimizer steps.
    batch_size : int, optional
        Minibatch size (epochs of seeded permutations); None means full-batch gradient descent.
    eval_batch_size : int, optional
        Samples per forward pass when a logged row evaluates the training and test sets, and in the probes' own
        passes (a probe's own ``batch_size`` wins); None: each set in one pass.
    dtype, device : optional
        Cast / move ``model`` in place first (e.g. ``dtype=torch.float64`` for terminal-phase numerics, the
        default of :class:`~implicit_bias.train.TrainConfig`, the CLI and the experiments). None: the model's own.
        ``config.yaml`` records the dtype and device the run actually used.
    seed : int
        Seeds the global torch RNG (dropout) inside the run and the minibatch order; the caller's RNG state is
        left untouched.
    probes : sequence of callables
        Called at every logged step with a :class:`ProbeContext`; their values join the row.
    run_dir : path, optional
        Where to write ``config.yaml``, ``metrics.csv``, ``train.log`` and ``checkpoint.safetensors``
        (atomically, at least every ``checkpoint_seconds`` and at the end; the one before is kept as
        ``checkpoint.prev.safetensors`` and used if the newest is missing or damaged, with a warning).
    resume : bool
        Continue from ``run_dir``'s checkpoint; the result — parameters and every logged value but ``time`` —
        is bit-identical to an uninterrupted run. Every setting, the ``record`` and the probes (names, in order)
        must be the run's own, and ``config.yaml`` must still match the copy inside the checkpoint; a
        difference is refused in one line ``key: old → new``. Only ``steps`` may change, to no fewer than the
        checkpoint's step: the change is recorded in ``config.yaml`` and ``train.log``; the rows already logged
        stay and new rows follow the log-spaced schedule of the new ``steps`` beyond the checkpoint's step.
    record : mapping, optional
        Extra entries for ``config.yaml`` (the CLI stores the dataset and model specs there).
    snapshots : {"log"}, optional
        Keep the model's weights at about 20 log-spaced steps (0 and the last among them) as
        ``run_dir/snapshots/step_<step>.safetensors`` (atomic writes) for ``implicit-bias diagnose RUN_DIR``.
    """
    check_choice("loss", loss, LOSSES)
    check_choice("reduction", reduction, ("sum", "mean"))
    check_scalar("steps", steps, int, low=0)
    check_scalar("seed", seed, int)
    check_scalar("log_points", log_points, int, low=1)
    if batch_size is not None:
        check_scalar("batch_size", batch_size, int, low=1)
    if eval_batch_size is not None:
        check_scalar("eval_batch_size", eval_batch_size, int, low=1)
    if snapshots is not None:
        check_choice("snapshots", snapshots, SNAPSHOT_SCHEDULES)
        if run_dir is None:
            raise InvalidArgumentError("snapshots= are written into the run directory: pass run_dir= too")
    dataset = as_dataset(data)
    if dtype is not None or device is not None:
        model.to(
            device=resolve_device(device) if device is not None else None,
            dtype=check_float_dtype(dtype) if dtype is not None else None,
        )
    dtype, device = placement(model)
    try:
        dataset = dataset.to(dtype=dtype, device=device)
    except InvalidArgumentError as error:  # the data were finite: the cast to a narrower dtype overflowed
        raise InvalidArgumentError(
            f"{error} after the cast to the model's dtype {str(dtype).removeprefix('torch.')} (largest "
            f"{torch.finfo(dtype).max:.3g}); rescale the data or pass dtype=torch.float64"
        ) from None
    if isinstance(optimizer, str):
        optimizer_name = optimizer
        optimizer = make_optimizer(optimizer, model.parameters(), lr=lr, **dict(optimizer_options or {}))
    elif isinstance(optimizer, torch.optim.Optimizer):
        optimizer_name = type(optimizer).__name__
    else:
        raise InvalidArgumentError(
            f"optimizer must be a name or a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(optimizer, LossBasedLR) and batch_size is not None and batch_size < len(dataset):
        raise InvalidArgumentError(
            f"optimizer {optimizer_name!r} trains full-batch only, got batch_size={batch_size} for {len(dataset)} "
            "samples: its rollback undoes a step when ℒ rose, and the losses of two different minibatches are not "
            "comparable; pass batch_size=None"
        )
    on_log_loss = steps_on_log_loss(optimizer)
    first = check_model_input(model, dataset.X)
    canonical_labels(first[:1].expand(len(dataset), *first.shape[1:]), dataset.y)  # outputs fit the labels

    run_path = Path(run_dir) if run_dir is not None else None
    settings = {
        "loss": loss,
        "optimizer": optimizer_name,
        "optimizer_options": dict(optimizer_options or {}),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "eval_batch_size": eval_batch_size,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "seed": seed,
        "reduction": reduction,
        "log_points": log_points,
    }
    config = _plain({**dict(record or {}), **settings, "snapshots": snapshots})
    if snapshots is None:  # runs without snapshots keep the config they always had (and stay resumable)
        config.pop("snapshots")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        opened = _Start() if run_path is None else _open_run(run_path, resume, model, optimizer, probes, config)
        handler = _attach_log(run_path)
        try:
            for level, note in opened.notes:
                logger.log(level, note)
            return _loop(
                model,
                dataset,
                optimizer,
                on_log_loss,
                loss=loss,
                reduction=reduction,
                steps=steps,
                start=opened.step,
                batch_size=batch_size,
                seed=seed,
                probes=probes,
                run_path=run_path,
                config=config,
                history=opened.history,
                elapsed=opened.elapsed,
                log_steps=log_spaced_steps(steps, log_points),
                snapshot_steps=log_spaced_steps(steps, SNAPSHOT_POINTS) if snapshots else [],
                eval_batch_size=eval_batch_size,
                checkpoint_seconds=checkpoint_seconds,
                progress=progress,
            )
        finally:
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()


@dataclass(frozen=True)
class _Start:
    """Where a run starts: its step, the history so far, the seconds already trained, and what to log first."""

    step: int = 0
    history: History = field(default_factory=History)
    elapsed: float = 0.0
    notes: tuple[tuple[int, str], ...] = ()  # (logging level, line) for train.log


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON stores them (tuples become lists), so that a stored config compares equal to it."""
    return json.loads(json.dumps(dict(values)))


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``key: old → new`` for every key but ``steps`` whose value differs, joined by "; " (empty if none)."""
    absent = object()

    def shown(value: Any) -> str:
        return "(absent)" if value is absent else value if isinstance(value, str) else repr(value)

    keys = [k for k in {**old, **new} if k != "steps" and old.get(k, absent) != new.get(k, absent)]
    return "; ".join(f"{k}: {shown(old.get(k, absent))} → {shown(new.get(k, absent))}" for k in keys)


def _open_run(
    run_path: Path,
    resume: bool,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    probes: Sequence[Probe],
    config: dict[str, Any],
) -> _Start:
    """Create a new run directory; or check that ``config`` and ``probes`` are those of the run being resumed
    (only ``steps`` may change, to no fewer than the checkpoint's step) and restore its latest good checkpoint."""
    if not resume:
        _create_run(run_path, config)
        return _Start()
    recorded = _recorded_config(run_path)
    remove_temporaries(run_path, CHECKPOINT_FILE)
    checkpoint, fallback = latest_checkpoint(run_path / CHECKPOINT_FILE)
    stored = recorded if checkpoint is None else checkpoint.config
    step = 0 if checkpoint is None else checkpoint.step
    probe_names = (
        None if checkpoint is None else ([name for name, _ in checkpoint.probes], list(map(probe_name, probes)))
    )
    _check_unchanged(run_path, recorded, stored, config, step, probe_names)
    notes = []
    if fallback:
        warnings.warn(fallback, RuntimeWarning, stacklevel=3)
        notes.append((logging.WARNING, fallback))
    if config["steps"] != stored.get("steps") or config["steps"] != recorded.get("steps"):
        notes.append((logging.INFO, _change_steps(run_path, stored.get("steps"), config["steps"], step)))
    if checkpoint is None:  # stopped before its first checkpoint: start over, same config
        return _Start(notes=(*notes, (logging.INFO, "no checkpoint yet; starting from step 0")))
    restore(checkpoint, model, optimizer, probes)
    return _Start(checkpoint.step, checkpoint.history, float(checkpoint.extra.get("elapsed", 0.0)), tuple(notes))


def _create_run(run_path: Path, config: dict[str, Any]) -> None:
    if (run_path / CHECKPOINT_FILE).exists() or (run_path / CONFIG_FILE).exists():
        raise InvalidArgumentError(
            f"{str(run_path)!r} already holds a run; resume it (implicit-bias resume) or choose a new run directory"
        )
    run_path.mkdir(parents=True, exist_ok=True)
    write_yaml(run_path / CONFIG_FILE, {**config, "versions": versions()})


def _recorded_config(run_path: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` without its ``versions``."""
    if not (run_path / CONFIG_FILE).is_file():
        raise InvalidArgumentError(f"cannot resume: {str(run_path)!r} is not a run directory (no {CONFIG_FILE})")
    recorded = read_yaml(run_path / CONFIG_FILE)
    recorded.pop("versions", None)
    return recorded


def _check_unchanged(
    run_path: Path,
    recorded: dict[str, Any],
    stored: dict[str, Any],
    config: dict[str, Any],
    step: int,
    probe_names: tuple[list[str], list[str]] | None,
) -> None:
    """Refuse an edited ``config.yaml``, a resumption with other settings or probes (``probe_names``: the
    checkpoint's and the given ones, whose states are restored by position) than the run's, or fewer steps
    than the checkpoint has already taken."""
    edited = _changes(stored, recorded)
    if edited:
        raise InvalidArgumentError(
            f"cannot resume {str(run_path)!r}: its {CONFIG_FILE} no longer matches the configuration stored in "
            f"its checkpoint at step {step}: {edited}; undo the edit (to train longer, resume with --steps N)"
        )
    changed = _changes(stored, config)
    if probe_names is not None and probe_names[0] != probe_names[1]:
        listed = [f"[{', '.join(names)}]" for names in probe_names]
        changed = "; ".join(filter(None, [changed, f"probes: {listed[0]} → {listed[1]}"]))
    if changed:
        raise InvalidArgumentError(
            f"cannot resume {str(run_path)!r} with other settings than it was trained with: {changed}; only steps "
            "may change on resume (to extend the run): start a new run directory for other settings or probes"
        )
    if config["steps"] < step:
        raise InvalidArgumentError(
            f"cannot resume {str(run_path)!r} with steps={config['steps']}: its checkpoint is already at step "
            f"{step}; pass steps >= {step}"
        )


def _change_steps(run_path: Path, old: int | None, new: int, step: int) -> str:
    """Record a change of ``steps`` in ``config.yaml``; returns the line that says so in the log."""
    write_yaml(run_path / CONFIG_FILE, {**read_yaml(run_path / CONFIG_FILE), "steps": new})
    return (
        f"steps changed from {old} to {new} at step {step} ({CONFIG_FILE} updated): the rows already logged "
        f"stay; new rows follow the log-spaced schedule of {new} steps beyond step {step}"
    )


def _attach_log(run_path: Path | None) -> logging.Handler | None:
    logger.setLevel(logging.INFO)
    if run_path is None:
        return None
    handler = logging.FileHandler(run_path / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return handler


def _loop(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    on_log_loss: bool,
    *,
    loss: str,
    reduction: str,
    steps: int,
    start: int,
    batch_size: int | None,
    seed: int,
    probes: Sequence[Probe],
    run_path: Path | None,
    config: dict[str, Any],
    history: History,
    elapsed: float,
    log_steps: list[int],
    snapshot_steps: list[int],
    eval_batch_size: int | None,
    checkpoint_seconds: float,
    progress: bool,
) -> History:
    to_log = [s for s in log_steps if s >= start and s > history.last.get("step", -1)]
    snapshot_at = set(snapshot_steps)
    next_log = 0
    clock = time.perf_counter() - elapsed
    last_save = time.perf_counter()
    refresh = max(1, steps // 500)
    epoch_cache: dict[int, torch.Tensor] = {}
    dropped: set[str] = set()

    guard = _Guard()
    stepper = Stepper(optimizer)

    def check_guard() -> None:
        tripped = guard.read(allow_exact_fit=loss == "mse")
        if tripped is not None:
            _check_objective(tripped[1], tripped[0], loss, data.X.dtype, optimizer, run_path)

    def save(step: int) -> None:
        nonlocal last_save
        check_guard()  # a checkpoint is never written after a non-finite step
        if run_path is not None:
            save_checkpoint(
                run_path / CHECKPOINT_FILE,
                step=step,
                model=model,
                optimizer=optimizer,
                history=history,
                config=config,
                probes=probes,
                extra={"elapsed": time.perf_counter() - clock},
            )
            last_save = time.perf_counter()

    logger.info("%s at step %d of %d", "resuming" if start else "starting", start, steps)
    with _progress(progress) as bar:
        task = bar.add_task("train", total=steps, completed=start, log_loss="…", accuracy="…")
        for step in range(start, steps + 1):
            if next_log < len(to_log) and step == to_log[next_log]:
                next_log += 1
                check_guard()
                row = _log_row(model, data, optimizer, loss, step, probes, eval_batch_size, dropped, run_path)
                row["time"] = time.perf_counter() - clock
                history.append(row)
                logger.info("step %d  %s", step, "  ".join(f"{k}={v:.6g}" for k, v in row.items() if k != "step"))
                if run_path is not None:
                    atomic_write(run_path / METRICS_FILE, history.to_csv())
            if step in snapshot_at and run_path is not None:
                save_snapshot(run_path, step, model)
            if step == steps:
                break
            if batch_size is None or batch_size >= len(data):
                X, y = data.X, data.y
            else:
                index = batch_indices(step, len(data), batch_size, seed, epoch_cache).to(data.X.device)
                X, y = data.X[index], data.y[index]
            outputs = model(X)
            objective = log_loss(outputs, y, loss, reduction=reduction, validate=False)
            stepper.zero_grad()
            if on_log_loss:  # the one host sync of the step: a log-frame optimizer takes the value
                value = float(objective.detach())
                _check_objective(value, step, loss, outputs.dtype, optimizer, run_path)
                if value == -math.inf:  # an exact fit (mse): ∇ℒ = 0; only weight decay or momentum can still move θ
                    for parameter in model.parameters():
                        parameter.grad = torch.zeros_like(parameter)
                    if getattr(optimizer, "steps_at_exact_fit", False):
                        stepper.step(log_loss=value)
                else:
                    stepper.backward(objective)
                    stepper.step(log_loss=value)
            else:  # no sync: the guard keeps log ℒ on the device; at an exact fit ℒ = 0 and so is its gradient
                detached = objective.detach()
                if guard.record(step, detached):
                    check_guard()
                stepper.backward(objective, torch.exp(detached))  # ∇ℒ = ℒ·∇log ℒ, as exp's backward, one node less
                stepper.step()
            done = step + 1
            if time.perf_counter() - last_save >= checkpoint_seconds:
                save(done)
            if progress and (done % refresh == 0 or done == steps):
                bar.update(
                    task,
                    completed=done,
                    log_loss=f"{float(objective.detach()):.4g}",
                    accuracy=f"{_accuracy(outputs.detach(), y):.3f}",
                )
        save(steps)
    logger.info("finished at step %d", steps)
    return history


class _Guard:
    """The NaN / overflow guard of the steps whose log ℒ stays on the device: each step's value (a 0-d tensor) is
    kept, not read (no host sync); :meth:`read`, at log steps, checkpoints and whenever ``capacity`` values are
    kept, finds the first non-finite one and its step in one stacked pass, so that the error names the step where
    training first went wrong."""

    def __init__(self, capacity: int = 4096) -> None:
        self.values: list[torch.Tensor] = []
        self.capacity, self.start = capacity, 0

    def record(self, step: int, value: torch.Tensor) -> bool:
        """Keep log ℒ of ``step`` (consecutive since the last read); True when ``capacity`` values are kept."""
        if not self.values:
            self.start = step
        self.values.append(value)
        return len(self.values) == self.capacity

    def read(self, *, allow_exact_fit: bool) -> tuple[int, float] | None:
        """(step, log ℒ) of the first non-finite value since the last read, or None; −inf passes when
        ``allow_exact_fit`` (mse). Empties the guard."""
        if not self.values:
            return None
        values, self.values = torch.stack(self.values), []
        bad = values.isnan() | (values.isinf() if not allow_exact_fit else values == math.inf)
        if not bool(bad.any()):
            return None
        index = int(bad.to(torch.uint8).argmax())
        return self.start + index, float(values[index])


def _check_objective(
    value: float, step: int, loss: str, dtype: torch.dtype, optimizer: torch.optim.Optimizer, run_path: Path | None
) -> None:
    """Refuse a non-finite log ℒ at ``step`` with its likely cause (−inf is an exact fit only for ``mse``)."""
    if value == -math.inf and loss != "mse":
        raise NumericalError(
            f"log ℒ became −inf at step {step}: the model's outputs overflowed "
            f"{str(dtype).removeprefix('torch.')} (‖θ‖ has grown "
            "without bound — loss-normalized steps grow with ‖θ‖ on networks of degree > 1); lower lr or "
            "the number of steps"
            + ("" if dtype == torch.float64 else ", or train in float64 (dtype=torch.float64)")
        )
    if math.isnan(value) or value == math.inf:
        raise NumericalError(
            f"the training loss became {value} at step {step} (log ℒ = {value}); the learning rate "
            f"{optimizer.param_groups[0]['lr']:g} is probably too large"
            + (
                f"; the checkpoint in {str(run_path)!r} is intact"
                if run_path is not None and (run_path / CHECKPOINT_FILE).exists()
                else ""
            )
        )


def _none(_model: nn.Module, _X: torch.Tensor) -> tuple[str, ...]:
    return ()


def _log_row(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    loss: str,
    step: int,
    probes: Sequence[Probe],
    eval_batch_size: int | None,
    dropped: set[str],
    run_path: Path | None,
) -> dict[str, float]:
    wanted = tuple(  # layers whose features a probe reads; kept only when the whole set is evaluated at once
        dict.fromkeys(name for probe in probes for name in getattr(probe, "feature_layers", _none)(model, data.X))
    )
    features: dict[str, torch.Tensor] = {}
    if wanted and eval_batch_size is None:
        outputs, log_value, accuracy, features = _evaluate_with_features(model, data, loss, wanted)
    else:
        outputs, log_value, accuracy = _evaluate(model, data, loss, eval_batch_size)
    _check_objective(log_value, step, loss, outputs.dtype, optimizer, run_path)
    row: dict[str, float] = {"step": step, "log_loss": log_value, "accuracy": accuracy}
    if data.test is not None:
        _, row["test_log_loss"], row["test_accuracy"] = _evaluate(model, data.test, loss, eval_batch_size)
    row["lr"] = float(optimizer.param_groups[0]["lr"])
    context = ProbeContext(
        step, model, data.X, data.y, outputs, log_value, loss, optimizer, data.num_classes, eval_batch_size, features
    )
    for probe in probes:
        try:
            values = probe(context)
        except ImplicitBiasError as error:
            raise type(error)(f"probe {probe_name(probe)} failed at step {step}: {error}") from None
        for key, value in values.items():
            if math.isfinite(value):
                row[key] = float(value)
            elif key not in dropped:
                dropped.add(key)
                logger.warning("probe value %s is %s at step %d; left out of the table", key, value, step)
    return row
