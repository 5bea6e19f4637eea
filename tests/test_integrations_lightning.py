"""ImplicitBiasCallback in a real lightning.Trainer against numpy brute force on the validation features,
captured by hand from snapshots of the weights at each validation epoch."""

import copy
import csv
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")
import lightning as L
from lightning.pytorch.loggers import CSVLogger

from implicit_bias.data import load
from implicit_bias.errors import InvalidArgumentError
from implicit_bias.integrations.lightning import ImplicitBiasCallback, default_labels
from implicit_bias.models import MLP

K, DIM, DEPTH = 3, 4, 3


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = MLP((DIM,), K, depth=DEPTH, width=12, bias=False).double()
        self.lr = lr

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Snapshot(L.Callback):
    """The network's weights at the end of every real validation epoch; and checks that no hook is registered
    while training or during the sanity check."""

    def __init__(self) -> None:
        self.states = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.states.append(copy.deepcopy(pl_module.model.state_dict()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert hook_count(pl_module) == 0

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            assert hook_count(pl_module) == 0


def hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def loaders():
    data = load(
        "gaussians",
        num_classes=K,
        dim=DIM,
        n_per_class=30,
        test_per_class=20,
        separation=8.0,
        noise=0.5,
        seed=3,
        dtype=torch.float64,
    )
    train = DataLoader(TensorDataset(data.X, data.y), batch_size=15, shuffle=True)
    val = DataLoader(TensorDataset(data.test.X, data.test.y), batch_size=16)  # last batch of 12
    return train, val, data.test


def fit(tmp_path, callback, lr=0.5, **trainer_options):
    train, val, test = loaders()
    module, snapshot = Tiny(lr), Snapshot()
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    options = {"max_epochs": 2, "accelerator": "cpu", "logger": CSVLogger(tmp_path), **quiet, **trainer_options}
    trainer = L.Trainer(callbacks=[callback, snapshot], **options)
    trainer.fit(module, train, val)
    return trainer, module, snapshot, test


def logged_rows(trainer, key="nc1/layer1"):
    with open(f"{trainer.logger.log_dir}/metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get(key)]


def nc1_numpy(H, y):
    """tr(Σ_W Σ_B^†)/K with the class means first, then the centred features (Papyan et al. 2020, Fig. 6)."""
    means = np.stack([H[y == c].mean(axis=0) for c in range(K)])
    M = (means - means.mean(axis=0)).T
    within = H - means[y]
    sigma_w, sigma_b = within.T @ within / len(y), M @ M.T / K
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / K


def brute_force(module, state, X, y):
    """NC1 of both hidden layers and q_min / ‖θ‖^L (Lyu & Li 2020, §3), in numpy float64."""
    net = copy.deepcopy(module.model)
    net.load_state_dict(state)
    with torch.no_grad():
        h1 = net.layer1(X)
        h2 = net.layer2(h1)
        out = net.head(h2).numpy()
    y = y.numpy()
    result = {}
    for name, H in (("layer1", h1.numpy()), ("layer2", h2.numpy())):
        result[f"nc1/{name}"] = nc1_numpy(H, y)
    others = out.copy()
    others[np.arange(len(y)), y] = -np.inf
    q = out[np.arange(len(y)), y] - others.max(axis=1)
    theta = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    result["unfit_fraction"] = np.mean(q <= 0)
    result["normalized_margin"] = q.min() / np.linalg.norm(theta) ** DEPTH if q.min() > 0 else None
    return result


def test_logged_values_equal_brute_force_per_epoch_and_hooks_removed(tmp_path):
    trainer, module, snapshot, test = fit(tmp_path, ImplicitBiasCallback())
    rows = logged_rows(trainer)
    assert len(rows) == len(snapshot.states) == 2  # one row per real validation epoch, none for the sanity check
    for row, state in zip(rows, snapshot.states, strict=True):
        truth = brute_force(module, state, test.X, test.y)
        for key, value in truth.items():
            if value is None:
                assert row[key] == ""
            else:
                assert float(row[key]) == pytest.approx(value, rel=1e-8, abs=0), key
    assert rows[-1]["normalized_margin"] != ""  # the run fits the data by its last epoch: the margin is logged
    assert float(trainer.callback_metrics["nc1/layer2"]) == pytest.approx(float(rows[-1]["nc1/layer2"]), rel=1e-12)
    assert hook_count(module) == 0


def test_sanity_check_and_training_passes_not_recorded(tmp_path):
    # lr = 0 keeps θ fixed, so any extra sample recorded (the sanity batch counted twice, training batches)
    # would change NC1 and the unfit fraction from the brute force over the validation set once
    callback = ImplicitBiasCallback(degree=DEPTH)
    _, module, snapshot, test = fit(tmp_path, callback, lr=0.0, max_epochs=1, num_sanity_val_steps=1)
    truth = brute_force(module, snapshot.states[0], test.X, test.y)
    assert 0 < truth["unfit_fraction"] < 1 and truth["normalized_margin"] is None  # the initial network misfits
    assert sorted(callback.logged_) == ["nc1/layer1", "nc1/layer2", "unfit_fraction"]  # no margin while unfit
    for key in callback.logged_:
        assert callback.logged_[key] == pytest.approx(truth[key], rel=1e-8, abs=0), key
    assert hook_count(module) == 0


def test_every_n_epochs_detected_degree(tmp_path):
    callback = ImplicitBiasCallback(layers=["layer2"], every_n_epochs=2, collapse_fields=("nc1", "cdnv"))
    trainer, module, snapshot, test = fit(tmp_path, callback)
    assert callback._margin.degree == DEPTH  # bias-free depth-3 ReLU MLP: 3-homogeneous
    assert sorted(callback.logged_) == ["cdnv/layer2", "nc1/layer2", "normalized_margin", "unfit_fraction"]
    assert [row["epoch"] for row in logged_rows(trainer, "nc1/layer2")] == ["1"]  # epoch 0 not measured
    truth = brute_force(module, snapshot.states[1], test.X, test.y)
    assert callback.logged_["nc1/layer2"] == pytest.approx(truth["nc1/layer2"], rel=1e-8, abs=0)
    assert callback.logged_["normalized_margin"] == pytest.approx(truth["normalized_margin"], rel=1e-8, abs=0)
    assert math.isfinite(callback.logged_["cdnv/layer2"])


def test_unknown_layer_lists_the_available_ones(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"available: flatten, layer1, layer1\.0, layer1\.1, layer2") as info:
        fit(tmp_path, ImplicitBiasCallback(layers=["layer9"]))
    assert "\n" not in str(info.value) and "layer9" in str(info.value)


class Twice(Tiny):
    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self(x), self(x)  # e.g. test-time augmentation: which pass holds the features is ambiguous


def test_network_run_twice_per_batch_is_refused_and_hooks_removed(tmp_path):
    train, val, _ = loaders()
    module = Twice()
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[ImplicitBiasCallback()], **quiet)
    with pytest.raises(InvalidArgumentError, match=r"the network \(MLP\) ran 2 times in validation batch 0"):
        trainer.fit(module, train, val)
    assert hook_count(module) == 0


def test_default_labels_refuses_a_dict_batch():
    assert torch.equal(default_labels((torch.zeros(2, 3), torch.tensor([1, 0]))), torch.tensor([1, 0]))
    with pytest.raises(
        InvalidArgumentError, match=r"batch\[1\] of an \(x, y\) batch, got a dict; pass batch_to_labels"
    ):
        default_labels({"x": torch.zeros(2, 3), "label": torch.tensor([1, 0])})


class Conv(Tiny):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.model = torch.nn.Sequential(
            torch.nn.Unflatten(1, (1, DIM)),
            torch.nn.Conv1d(1, 5, 3, bias=False),  # (B, 5, DIM − 2) feature maps
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(5 * (DIM - 2), K, bias=False),
        ).double()


def test_conv_maps_are_average_pooled(tmp_path):
    train, val, test = loaders()
    module, callback = Conv(), ImplicitBiasCallback(layers=["2"], measures=("collapse",))
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[callback], **quiet)
    trainer.fit(module, train, val)
    with torch.no_grad():
        H = module.model[:3](test.X).mean(dim=2).numpy()  # (N, 5): the spatial mean of each channel
    assert callback._collapse["2"].dim == 5
    logged = float(logged_rows(trainer, "nc1/2")[0]["nc1/2"])
    assert logged == pytest.approx(nc1_numpy(H, test.y.numpy()), rel=1e-8, abs=0)


class HeadFirstNet(torch.nn.Module):
    """Ordinary PyTorch style: the classifier declared first, a functional ReLU before it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc2 = torch.nn.Linear(12, K)
        self.fc1 = torch.nn.Linear(DIM, 12)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class HeadFirst(Tiny):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.model = HeadFirstNet().double()


def test_a_user_network_is_traced_on_the_first_batch_and_its_classifier_input_measured(tmp_path):
    train, val, test = loaders()
    module, callback, snapshot = HeadFirst(), ImplicitBiasCallback(measures=("collapse",)), Snapshot()
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[callback, snapshot], **quiet
    )
    trainer.fit(module, train, val)
    assert callback._layers == ("fc1", "fc2:input")  # call order; fc2's input is F.relu's output, no module's
    net = HeadFirstNet().double()
    for row, state in zip(logged_rows(trainer, "nc1/fc2:input"), snapshot.states, strict=True):
        net.load_state_dict(state)
        with torch.no_grad():
            pre = net.fc1(test.X)
        assert float(row["nc1/fc1"]) == pytest.approx(nc1_numpy(pre.numpy(), test.y.numpy()), rel=1e-8, abs=0)
        relu = F.relu(pre).numpy()
        assert float(row["nc1/fc2:input"]) == pytest.approx(nc1_numpy(relu, test.y.numpy()), rel=1e-8, abs=0)
    assert hook_count(module) == 0
