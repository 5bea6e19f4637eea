"""Neural collapse and the normalized margin of a LightningModule, measured on its validation data by a
``lightning.Callback`` and logged through ``pl_module.log_dict`` (so every Lightning logger receives them).

The callback hooks the network's feature layers while a validation epoch runs, accumulates with the torchmetrics
adapters (:class:`~implicit_bias.integrations.torchmetrics.NeuralCollapse`,
:class:`~implicit_bias.integrations.torchmetrics.NormalizedMargin`: running sums synced across ranks by
torchmetrics), computes on every rank at the end of the epoch and removes its hooks again.

References
----------
.. [1] Papyan, V., Han, X. Y. & Donoho, D. L. (2020). Prevalence of neural collapse during the terminal phase of
       deep learning training. PNAS 117(40). NC1 = tr(Σ_W Σ_B^†)/K (Fig. 6).
.. [2] Lyu, K. & Li, J. (2020). Gradient descent maximizes the margin of homogeneous neural networks. ICLR.
       Normalized margin γ̄ = q_min / ‖θ‖^L (§3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "implicit_bias.integrations.lightning needs lightning: pip install 'implicit-bias[lightning]'"
    ) from error

from ..errors import InvalidArgumentError
from ..metrics.layerwise import FeatureReducer
from ..models.features import capture_features, check_layer_names, feature_names, hook_layer
from ..validation import check_scalar
from .torchmetrics import SCALAR_FIELDS, NeuralCollapse, NormalizedMargin

MEASURES = ("collapse", "margin")


def default_labels(batch: Any) -> torch.Tensor:
    """The labels of an ``(x, y, ...)`` batch: ``batch[1]``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    raise InvalidArgumentError(
        f"ImplicitBiasCallback reads the labels as batch[1] of an (x, y) batch, got a {type(batch).__name__}; pass "
        "batch_to_labels= (e.g. lambda batch: batch['label'])"
    )


def default_network(pl_module: nn.Module) -> nn.Module:
    """The network whose layers are measured: ``pl_module`` itself when it has ``feature_names`` or not exactly
    one child holding all its parameters; otherwise that child (the usual ``self.model = net``)."""
    if getattr(pl_module, "feature_names", None) is not None:
        return pl_module
    total = sum(1 for _ in pl_module.parameters())
    holders = [child for child in pl_module.children() if sum(1 for _ in child.parameters()) == total > 0]
    return holders[0] if len(holders) == 1 else pl_module


class ImplicitBiasCallback(Callback):
    """Log neural collapse per layer (Papyan, Han & Donoho 2020) and the normalized margin (Lyu & Li 2020) of the
    validation data, every ``every_n_epochs`` epochs.

    At the end of a measured validation epoch it logs, with ``pl_module.log_dict`` (on every rank, values already
    synced by torchmetrics, so ``sync_dist=False``):

    - ``<field>/<layer>`` for each field of ``collapse_fields`` (default ``nc1/<layer>``, NC1 = tr(Σ_W Σ_B^†)/K)
      and each layer, from the layer's outputs on the validation batches — conv maps (B, C, *spatial)
      average-pooled to (B, C) as in :func:`~implicit_bias.metrics.collapse_by_layer`; D is learned from the
      first batch. The sums of an epoch are taken around the class means of the previous one, which keeps the
      cancellation of :class:`NeuralCollapse` (see its Notes) near zero once training settles.
    - ``normalized_margin`` = q_min / ‖θ‖_p^L over the validation samples, q_n the output margin of the network's
      output on sample n and θ the network's parameters, when every sample is fit (q_n > 0), and always
      ``unfit_fraction``, the fraction with q_n ≤ 0 (the normalized margin is undefined until it is 0).

    Sanity-check epochs are skipped; the forward hooks exist only during measured validation epochs (training
    forward passes are never recorded) and are removed at the epoch's end, on an exception and at teardown.
    For the margin of the *training* set, add the training data as a second validation loader and pass
    ``dataloader_idx=1``. Under DDP every rank must see at least one batch of the measured loader (the
    ``DistributedSampler`` default), since all ranks take part in the sync.

    Usage: ``Trainer(callbacks=[ImplicitBiasCallback()], logger=CSVLogger("logs"))``; ``validation_step`` calls
    ``self(x)`` on an ``(x, y)`` batch. The last logged values are in ``callback.logged_`` too.

    Parameters
    ----------
    layers : sequence of str or None
        Module names inside the network (``network.named_modules()``, or ``NAME:input``); None:
        ``feature_names(network)`` — the hidden layers of an :class:`~implicit_bias.models.MLP`, or for a network not
        built here the layers its forward runs, in call order, traced on the first measured batch.
    measures : subset of {"collapse", "margin"}
    every_n_epochs : int
        Measure the validation epochs of training epochs n − 1, 2n − 1, … (0-based; 1: every epoch).
    num_classes : int or None
        K; None: the width of the network's output (2 for a (B,) output).
    network : str or None
        The module path of the measured network in the LightningModule; None: see :func:`default_network`
        (the LightningModule, or its only child holding every parameter). Its forward must run once per
        validation batch (``validation_step`` calls ``self(x)`` or ``self.model(x)``); its output is the one
        whose margins are taken, and a layer must run once per batch too (otherwise a precise error).
    collapse_fields : sequence of str
        Fields of :class:`NeuralCollapse`'s ``compute`` to log per layer.
    degree : float or None
        L; None: detected with :func:`~implicit_bias.metrics.homogeneity_degree` on the first validation batch.
    p : {1, 2, inf}
        The norm of θ.
    batch_to_labels : callable or None
        batch → labels (B,); None: ``batch[1]`` of an ``(x, y)`` tuple or list.
    dataloader_idx : int
        The validation loader measured (the others are ignored).
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        measures: Sequence[str] = MEASURES,
        every_n_epochs: int = 1,
        num_classes: int | None = None,
        *,
        network: str | None = None,
        collapse_fields: Sequence[str] = ("nc1",),
        degree: float | None = None,
        p: float = 2,
        batch_to_labels: Callable[[Any], torch.Tensor] | None = None,
        dataloader_idx: int = 0,
    ) -> None:
        measures = tuple(measures)
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            raise InvalidArgumentError(f"measures must be a non-empty subset of {MEASURES}, got {measures}")
        unknown = [f for f in collapse_fields if f not in SCALAR_FIELDS]
        if unknown:
            raise InvalidArgumentError(f"collapse_fields must be among {SCALAR_FIELDS}, got unknown {unknown}")
        check_scalar("every_n_epochs", every_n_epochs, int, low=1)
        check_scalar("dataloader_idx", dataloader_idx, int, low=0)
        if num_classes is not None:
            check_scalar("num_classes", num_classes, int, low=2)
        if degree is not None:
            check_scalar("degree", degree, (int, float), low=0.0, low_inclusive=False)
        if p not in (1, 2, math.inf):
            raise InvalidArgumentError(f"p must be 1, 2 or inf, got {p!r}")
        self.layers = None if layers is None else tuple(layers)
        self.measures, self.every_n_epochs, self.num_classes = measures, every_n_epochs, num_classes
        self.network, self.collapse_fields, self.degree, self.p = network, tuple(collapse_fields), degree, p
        self.batch_to_labels = default_labels if batch_to_labels is None else batch_to_labels
        self.dataloader_idx = dataloader_idx
        self.logged_: dict[str, float] = {}  # the values logged at the last measured epoch
        self._reducer = FeatureReducer("avgpool")
        self._collapse: dict[str, NeuralCollapse] = {}
        self._margin: NormalizedMargin | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._recording = False
        self._batches = 0
        self._captured: dict[str, list[torch.Tensor]] = {}

    # --- setup: resolve and check the names once, before any epoch ---------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        modules = dict(pl_module.named_modules())
        if self.network is not None and self.network not in modules:
            raise InvalidArgumentError(
                f"ImplicitBiasCallback: network={self.network!r} is not a module of {type(pl_module).__name__}; "
                f"available: {', '.join(n for n in modules if n) or '(none)'}"
            )
        self._network = default_network(pl_module) if self.network is None else modules[self.network]
        available = ", ".join(n for n, _ in self._network.named_modules() if n) or "(none)"
        self._layers: tuple[str, ...] | None = ()  # the margin alone reads the network's output only
        if "collapse" in self.measures:
            if self.layers is None and getattr(self._network, "feature_names", None) is None:
                self._layers = None  # a user's network: traced on the first measured batch (feature_names)
                return
            self._layers = tuple(feature_names(self._network) if self.layers is None else self.layers)
            try:
                check_layer_names(self._network, self._layers)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"ImplicitBiasCallback: {type(self._network).__name__}: {error}") from None
            if not self._layers:
                raise InvalidArgumentError(
                    f"ImplicitBiasCallback: {type(self._network).__name__} has no feature layers to measure; pass "
                    f"layers=[...] from: {available}"
                )

    # --- hooks: registered for a measured validation epoch only --------------------------------------------------
    def _due(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        self._remove_hooks()
        for metric in (*self._collapse.values(), *([self._margin] if self._margin is not None else [])):
            metric.reset()  # drop what an interrupted epoch left (a collapse metric keeps its shift)
        self._batches = 0
        self._hook_layers()
        self._handles.append(self._network.register_forward_hook(self._network_recorder))

    def _hook_layers(self) -> None:
        for name in self._layers or ():
            self._handles.append(hook_layer(self._network, name, self._recorder(name)))

    def _recorder(self, name: str) -> Callable[[torch.Tensor], None]:
        def record(tensor: torch.Tensor) -> None:
            if self._recording:
                self._captured.setdefault(name, []).append(tensor.detach())

        return record

    def _network_recorder(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._recording:
            self._captured.setdefault("", []).append(output.detach())
            self._captured.setdefault("inputs", []).append(args[0].detach())

    def _trace_layers(self) -> None:
        """Find a user network's feature layers on this batch's inputs (trace_layers: call order, the classifier's
        input), measure this batch by running it once more, and hook the layers for the batches that follow."""
        inputs = self._captured["inputs"][0]
        with torch.no_grad():
            self._layers = feature_names(self._network, inputs)
            if not self._layers:
                raise InvalidArgumentError(
                    f"ImplicitBiasCallback: {type(self._network).__name__} has no feature layers to measure; pass "
                    "layers=[...]"
                )
            _, features = capture_features(self._network, inputs, self._layers)
        self._captured.update({name: [tensor.detach()] for name, tensor in features.items()})
        self._hook_layers()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._recording = False

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._captured = {}
        self._recording = bool(self._handles) and dataloader_idx == self.dataloader_idx

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._recording:
            return
        self._recording = False  # nothing below (e.g. the degree detection) is recorded
        self._batches += 1
        if self._layers is None:
            self._trace_layers()
        captured = {name: self._once(name, batch_idx) for name in ("", *self._layers)}
        labels = self.batch_to_labels(batch)
        outputs = captured[""]
        k = self.num_classes or (outputs.shape[1] if outputs.ndim == 2 else 2)
        if "collapse" in self.measures:
            for name in self._layers:
                features = self._reducer(name, captured[name])
                if name not in self._collapse:
                    self._collapse[name] = NeuralCollapse(k, features.shape[1]).to(features.device)
                try:
                    self._collapse[name].update(features, labels)
                except InvalidArgumentError as error:
                    raise InvalidArgumentError(f"layer {name!r}, validation batch {batch_idx}: {error}") from None
        if "margin" in self.measures:
            if self._margin is None:
                inputs = None if self.degree is not None else self._captured["inputs"][0]
                self._margin = NormalizedMargin(self._network, degree=self.degree, inputs=inputs, p=self.p)
                self._margin.to(outputs.device)
            self._margin.update(outputs, labels)

    def _once(self, name: str, batch_idx: int) -> torch.Tensor:
        calls = self._captured.get(name, [])
        if len(calls) != 1:
            what = f"layer {name!r}" if name else f"the network ({type(self._network).__name__})"
            raise InvalidArgumentError(
                f"ImplicitBiasCallback: {what} ran {len(calls)} times in validation batch {batch_idx}, expected "
                "once; call the network once per validation_step (or pass network=/layers= that run once)"
            )
        return calls[0]

    # --- epoch end: compute on every rank, log, reset -------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._handles:
            return
        self._remove_hooks()
        if self._batches == 0:
            return
        values: dict[str, torch.Tensor] = {}
        for name, metric in self._collapse.items():
            computed = metric.compute()
            values.update({f"{field}/{name}": computed[field] for field in self.collapse_fields})
            metric.reset(shift=metric.class_means())  # next epoch's sums around these means: no cancellation
        if self._margin is not None:
            margin = self._margin
            with margin.sync_context(dist_sync_fn=margin.dist_sync_fn, should_sync=margin._to_sync):
                unfit, total = int(margin.num_unfit), int(margin.num_samples)
            values["unfit_fraction"] = torch.tensor(unfit / total, dtype=torch.float64)
            if unfit == 0:
                values["normalized_margin"] = margin.compute()
        if values:
            pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)
        self.logged_ = {key: float(value) for key, value in values.items()}

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
