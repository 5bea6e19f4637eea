"""A training run described by one flat config: what the CLI's ``train`` takes and ``resume`` reads back."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import Dataset, load
from ..errors import InvalidArgumentError
from ..models import build
from ..validation import dataclass_from_mapping
from .history import History
from .loop import fit
from .probes import make_probe
from .rundir import CONFIG_FILE, read_yaml

TRAIN_DTYPES = ("float64", "float32")  # half precisions underflow in the terminal phase (metrics refuse them too)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Unknown keys and wrong types are rejected."""

    dataset: str = "gaussians"  # a name from implicit_bias.data.LOADERS
    data_options: dict[str, Any] = field(default_factory=dict)  # passed to implicit_bias.data.load
    model: str = "mlp:depth=2,width=100,bias=false"  # a spec for implicit_bias.models.build
    loss: str = "exponential"  # exponential | logistic | cross-entropy | mse
    optimizer: str = "gd"  # a name from implicit_bias.dynamics.OPTIMIZERS
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # e.g. {momentum: 0.9, weight_decay: 5e-4}
    steps: int = 1000
    lr: float = 0.05
    batch_size: int | None = None  # None: full batch
    eval_batch_size: int | None = None  # samples per forward pass at logged steps and in probes; None: all at once
    dtype: str = "float64"  # terminal-phase numerics; fit called directly keeps a model's own dtype instead
    device: str = "cpu"
    seed: int = 0  # model initialization, minibatch order, dropout
    reduction: str = "mean"  # the objective: mean or sum of the per-sample losses
    log_points: int = 100  # about this many log-spaced logged steps
    probes: list[str] = field(default_factory=lambda: ["margins"])  # names from implicit_bias.train.PROBES
    checkpoint_seconds: float = 30.0  # save a checkpoint at least this often (and at the end)
    snapshots: str | None = None  # "log": weights at ~20 log-spaced steps in RUN/snapshots (implicit-bias diagnose)

    def __post_init__(self) -> None:
        if self.dtype not in TRAIN_DTYPES:
            raise InvalidArgumentError(
                f"dtype must be {' or '.join(TRAIN_DTYPES)}, got {self.dtype!r} (half precisions underflow in the "
                "terminal phase)"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build a config from a mapping, checking keys and value types."""
        return dataclass_from_mapping(cls, values, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML config (``yaml.safe_load``); run directories' extra keys (``versions``) are ignored."""
        values = read_yaml(path)
        values.pop("versions", None)
        return cls.from_mapping(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_data(config: TrainConfig) -> Dataset:
    """The run's dataset: ``config.dataset`` with its options, seeded by ``config.seed`` unless they say."""
    options = dict(config.data_options)
    options.setdefault("seed", config.seed)
    return load(config.dataset, **options)


def run(config: TrainConfig, run_dir: str | Path | None, *, resume: bool = False, progress: bool = True) -> History:
    """Load the data, build the model and :func:`fit` it as ``config`` says, writing into ``run_dir``."""
    data = load_data(config)
    model = build(config.model, data.input_shape, data.num_classes, seed=config.seed)
    probes = [make_probe(name) for name in config.probes]
    return fit(
        model,
        data,
        loss=config.loss,
        optimizer=config.optimizer,
        optimizer_options=config.optimizer_options,
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        dtype=config.dtype,
        device=config.device,
        seed=config.seed,
        reduction=config.reduction,
        log_points=config.log_points,
        probes=probes,
        run_dir=run_dir,
        checkpoint_seconds=config.checkpoint_seconds,
        resume=resume,
        progress=progress,
        record=config.to_dict(),
        snapshots=config.snapshots,
    )


def run_config(run_dir: str | Path, *, fix: str) -> TrainConfig:
    """The :class:`TrainConfig` of a run directory started from a config (the CLI's ``train``, or :func:`run`);
    ``fix`` completes the error for a run started from Python with a model of its own."""
    config_path = Path(run_dir) / CONFIG_FILE
    values = read_yaml(config_path)
    if "dataset" not in values or "model" not in values:
        raise InvalidArgumentError(
            f"{str(config_path)!r} does not name a dataset and model (the run was started from Python with a "
            f"model of its own); {fix}"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_mapping({k: v for k, v in values.items() if k in fields}, source=str(config_path))


def resume_run(run_dir: str | Path, *, steps: int | None = None, progress: bool = True) -> History:
    """Continue the run in ``run_dir`` from its last good checkpoint, as its ``config.yaml`` describes.

    ``steps`` extends the run (recorded in ``config.yaml`` and ``train.log``); every other setting is the
    run's own: a ``config.yaml`` edited since the checkpoint was written is refused.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir, fix="resume it with implicit_bias.train.fit(..., run_dir=..., resume=True)")
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    return run(config, run_dir, resume=True, progress=progress)
