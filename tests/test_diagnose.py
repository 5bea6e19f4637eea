"""ib.diagnose against hand-derived values: planted weights, planted collapse, known singular values."""

import copy
import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import implicit_bias as ib
from implicit_bias.data import Dataset
from implicit_bias.diagnosis import COLUMNS, Diagnosis, diagnose, read_csv
from implicit_bias.errors import InvalidArgumentError

SRC = Path(__file__).resolve().parents[1] / "src"


class TwoLayer(nn.Module):
    """relu(W1 x) then W2, bias-free: 2-homogeneous (Lyu & Li 2020)."""

    def __init__(self, W1: torch.Tensor, W2: torch.Tensor) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(W1.shape[1], W1.shape[0], bias=False), nn.ReLU())
        self.head = nn.Linear(W2.shape[1], W2.shape[0], bias=False)
        with torch.no_grad():
            self.hidden[0].weight.copy_(W1)
            self.head.weight.copy_(W2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


def planted_two_layer() -> tuple[TwoLayer, torch.Tensor, torch.Tensor]:
    model = TwoLayer(torch.eye(2, dtype=torch.float64), 2 * torch.eye(2, dtype=torch.float64)).double()
    X = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 10.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    return model, X, y


def test_bias_free_relu_mlp_has_degree_two_and_the_hand_computed_margins():
    model, X, y = planted_two_layer()
    # outputs 2x: margins q = (2, 6, 20); ‖θ‖² = ‖I‖² + ‖2I‖² = 2 + 8 = 10
    d = diagnose(model, (X, y), kkt=False)
    assert d.value("architecture", "homogeneity_degree") == 2.0
    assert d.value("margins", "accuracy", variant="train") == 1.0
    assert d.value("margins", "min_margin") == pytest.approx(2.0, rel=1e-14)
    assert d.value("margins", "normalized_margin") == pytest.approx(2.0 / 10.0, rel=1e-14)
    # exponential loss, two classes: ℒ = Σ_n e^{−q_n}; γ̃ = −log ℒ / ‖θ‖²
    smoothed = -math.log(math.exp(-2) + math.exp(-6) + math.exp(-20)) / 10.0
    assert d.value("margins", "smoothed_margin") == pytest.approx(smoothed, rel=1e-13)
    assert d.value("margins", "support_count") == 2  # q − q_min ≤ 3 log 10 = 6.9: q = 2 and 6
    assert d.summary["normalized_margin"] == pytest.approx(0.2, rel=1e-14)
    # Λ = I/L for a bias-free depth-2 network, both weights at λ_max = 1/2
    for name in ("hidden.0.weight", "head.weight"):
        assert d.value("rates", "lambda", layer=name, variant="top") == pytest.approx(0.5, abs=1e-9)
    assert d.value("rates", "check_euler_error") < 1e-12


def test_linear_model_at_the_max_margin_direction_has_margin_one_and_zero_kkt_residual():
    # points ±(1, 0), ±(2, 1): the max-margin unit direction is (1, 0) with margin 1 (the support points ±(1, 0))
    X = torch.tensor([[1.0, 0.0], [2.0, 1.0], [-1.0, 0.0], [-2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 0])
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0.0]]))
    d = diagnose(model, (X, y))
    assert d.value("architecture", "homogeneity_degree") == 1.0
    assert d.value("margins", "normalized_margin") == pytest.approx(1.0, rel=1e-14)
    # KKT: θ̃ = θ/q_min = (1, 0) = μ₁ x₁ + μ₂ x₂ with ∇q = y x = (1, 0) for both supports: ε = δ = 0
    assert d.value("margins", "kkt_epsilon") < 1e-10
    assert abs(d.value("margins", "kkt_delta")) < 1e-10
    assert any(reason.startswith("collapse: the model has no feature layers") for reason in d.skipped), d.skipped


class Planted(nn.Module):
    """Features = the inputs (a Flatten layer), then a linear classifier."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.embed = nn.Flatten()
        self.head = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(W)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def planted_collapse(per_class: int = 5) -> tuple[Planted, Dataset]:
    """Every sample sits exactly on its class mean 3 e_c (K = 3 in D = 4); W = the centred class means."""
    means = torch.zeros(3, 4, dtype=torch.float64)
    means[:, :3] = 3 * torch.eye(3, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(per_class)
    centred = means - means.mean(dim=0)
    return Planted(centred).double(), Dataset(means[y], y, 3, "planted")


def test_planted_collapse_has_nc1_zero_and_hand_computed_spectra_and_margins():
    model, data = planted_collapse(per_class=5)
    d = diagnose(model, data, batch_size=4)
    for metric in ("nc1", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance", "self_duality"):
        assert abs(d.value("collapse", metric, layer="embed", variant="train")) < 1e-12, metric
    assert d.value("collapse", "ncc_mismatch", layer="embed", variant="train") == 0.0
    assert d.value("collapse", "ncc_accuracy", layer="embed", variant="train") == 1.0
    assert d.value("effective depth", "depth", layer="embed") == 1
    # H has 5 rows 3 e_c per class: HᵀH = 45 diag(1, 1, 1, 0), so σ = √45 three times, rank 3
    assert d.value("feature spectra", "sigma_1", layer="embed", variant="features") == pytest.approx(math.sqrt(45))
    assert d.value("feature spectra", "rank", layer="embed", variant="features: σ_i > 1e-3 σ_1") == 3
    assert d.value("feature spectra", "stable_rank", layer="embed", variant="centred class means: ‖A‖²_F / σ_1²") == (
        pytest.approx(2.0)
    )  # centred simplex: K − 1 = 2 equal singular values
    # W rows (2, −1, −1, 0) etc.: outputs 9δ − 3, margin 9 everywhere; ‖θ‖² = ‖W‖² = 18 (bias 0), degree 1
    assert d.value("architecture", "homogeneity_degree") == 1.0
    assert d.value("margins", "normalized_margin") == pytest.approx(9 / math.sqrt(18), rel=1e-13)


def test_known_singular_values_give_ranks_by_hand_in_both_conventions():
    model = TwoLayer(torch.diag(torch.tensor([4.0, 3.0, 0.0045], dtype=torch.float64)), torch.eye(3)).double()
    X = torch.eye(3, dtype=torch.float64)
    d = diagnose(model, (X, torch.tensor([0, 1, 2])), kkt=False)
    layer = "hidden.0.weight"
    # relative: σ > 1e-3 · 4 = 0.004 keeps 0.0045; Frobenius: σ > 1e-3 · ‖A‖_F = 0.005000002 drops it
    assert d.value("weight spectra", "rank", layer=layer) == 3
    assert d.value("weight spectra", "rank_frobenius", layer=layer) == 2
    assert d.value("weight spectra", "stable_rank", layer=layer) == pytest.approx((16 + 9 + 0.0045**2) / 16)
    p = torch.tensor([4.0, 3.0, 0.0045], dtype=torch.float64)
    p = p / p.sum()
    assert d.value("weight spectra", "effective_rank", layer=layer) == pytest.approx(
        float(torch.exp(-(p * p.log()).sum()))
    )
    assert [d.value("weight spectra", f"sigma_{i}", layer=layer) for i in (1, 2, 3)] == pytest.approx([4, 3, 0.0045])
    variants = {row.variant for row in d.rows("weight spectra", metric="rank_frobenius")}
    assert variants == {"σ_i > 1e-3 ‖A‖_F (Galanti et al. 2022)"}


def test_misclassified_samples_skip_the_normalized_margins_with_the_count():
    model, X, _ = planted_two_layer()
    d = diagnose(model, (X, torch.tensor([1, 0, 1])))  # the first two are now wrong: q = −2, −6, 20
    assert d.value("margins", "accuracy", variant="train") == pytest.approx(1 / 3)
    assert d.value("margins", "misclassified", variant="train, q_n ≤ 0") == 2
    assert "margins: 2 of 3 samples misclassified" in " ".join(d.skipped)
    assert not list(d.rows("margins", metric="normalized_margin"))


def test_biases_make_the_model_quasi_homogeneous_with_the_asymmetric_margin_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([0.5, -0.25]))
    X = torch.randn(20, 3, dtype=torch.float64)
    y = model(X).argmax(dim=1)  # labels the model fits
    d = diagnose(model, (X, y), kkt=False)
    assert any(r.startswith("architecture: homogeneity degree: the model is not homogeneous") for r in d.skipped)
    # uniform rates of a depth-2 MLP with biases: λ_W = 1/2, λ_b1 = 1/2, λ_b2 = 1 = λ_max (Kunin et al. 2023)
    assert d.value("rates", "lambda", layer="2.bias", variant="top") == pytest.approx(1.0, abs=1e-9)
    out = model(X).detach()
    q = out.gather(1, y[:, None]).squeeze(1) - out.masked_fill(nn.functional.one_hot(y, 2).bool(), -math.inf).amax(1)
    expected = float(q.min()) / float(model[2].bias.detach().norm())
    assert d.value("margins", "asymmetric_margin") == pytest.approx(expected, rel=1e-12)
    assert any("smoothed margin and KKT residual: defined for homogeneous models" in r for r in d.skipped)


class ScaledLogits(nn.Module):
    """A temperature after the last linear layer: the logits are not an nn.Linear's output, so there is no W."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x)) / 0.5


def test_a_model_without_a_linear_classifier_skips_nc3_nc4_and_reports_the_rest():
    data = ib.data.load("gaussians", num_classes=3, dim=4, per_class=10, seed=0)
    d = diagnose(ScaledLogits().double(), data, kkt=False)
    reasons = [r for r in d.skipped if r.startswith("collapse: NC3")]
    assert reasons and "the model's output is not the output of an nn.Linear" in reasons[0], d.skipped
    assert list(d.rows("collapse", metric="nc1"))
    assert not list(d.rows("collapse", metric="self_duality"))


class HeadFirst(nn.Module):
    """Ordinary PyTorch style: the classifier declared first, functional ReLUs, float32."""

    def __init__(self) -> None:
        super().__init__()
        self.fc3 = nn.Linear(16, 3)
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(nn.functional.relu(self.fc2(nn.functional.relu(self.fc1(x)))))


def test_a_head_declared_first_behind_functional_relus_is_found_by_call_order():
    data = ib.data.load("gaussians", num_classes=3, dim=4, per_class=20, seed=1)
    torch.manual_seed(0)
    model = HeadFirst()  # float32
    d = diagnose(model, data, kkt=False)
    # The features the classifier reads are fc3's input (post-ReLU): no module outputs them.
    assert [r.layer for r in d.rows("architecture", metric="feature_layer")] == ["fc1", "fc2", "fc3:input"]
    assert d.value("architecture", "classifier_outputs", layer="fc3") == 3
    assert not [r for r in d.skipped if "NC3" in r], d.skipped
    with torch.no_grad():  # NC3 by hand, in float64, from the definition (Papyan, Han & Donoho 2020)
        H = nn.functional.relu(model.fc2(nn.functional.relu(model.fc1(data.X.float())))).double()
        means = torch.stack([H[data.y == c].mean(0) for c in range(3)])
        centred = means - means.mean(0)
        W = model.fc3.weight.double()
        expected = float((W / W.norm() - centred / centred.norm()).square().sum())
    assert d.value("collapse", "self_duality", layer="fc3:input", variant="train") == pytest.approx(expected, rel=1e-5)


def test_table_round_trips_through_csv_dictreader(tmp_path):
    model, data = planted_collapse()
    d = diagnose(model, data, kkt=False)
    text = d.to_csv(tmp_path / "metrics.csv")
    assert (tmp_path / "metrics.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS == ("section", "layer", "metric", "value", "variant")
    assert [(r["section"], r["layer"], r["metric"], float(r["value"]), r["variant"]) for r in rows] == [
        tuple(row) for row in d.table
    ]
    assert read_csv(text) == d.table
    assert all(math.isfinite(row.value) for row in d.table)


def test_batches_a_dataloader_and_the_whole_dataset_give_the_same_numbers():
    model, data = planted_collapse(per_class=7)
    whole = diagnose(model, data, batch_size=10_000, kkt=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.X, data.y), batch_size=4)
    batched = diagnose(model, loader, kkt=False)
    values = {(r.section, r.layer, r.metric, r.variant): r.value for r in whole.table}
    # the DataLoader carries no test split: compare the rows measured on the training data
    for row in batched.table:
        assert row.value == pytest.approx(values[row.section, row.layer, row.metric, row.variant], abs=1e-12), row


def test_the_model_is_left_untouched():
    model, data = planted_collapse()
    model.train()
    before = copy.deepcopy(model.state_dict())
    diagnose(model, data)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_inputs_are_one_line_errors():
    model, X, y = planted_two_layer()
    with pytest.raises(InvalidArgumentError, match=r"cannot take inputs of shape \(N, 5\)") as error:
        diagnose(model, (torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 0, 1])))
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidArgumentError, match="read more than once"):
        diagnose(model, ((X[i : i + 1], y[i : i + 1]) for i in range(3)))
    with pytest.raises(InvalidArgumentError, match=r"model has no layer\(s\) \['nope'\]; available: "):
        diagnose(model, (X, y), layers=["nope"])
    with pytest.raises(InvalidArgumentError, match="model must be a torch.nn.Module"):
        diagnose("mlp", (X, y))
    with pytest.raises(InvalidArgumentError, match="the model has 2 outputs but the data has 3 classes"):
        diagnose(model, Dataset(X, torch.tensor([0, 1, 2]), 3))
    with pytest.raises(InvalidArgumentError, match="num_classes=4 but the dataset has 2 classes"):
        diagnose(model, Dataset(X, y, 2), num_classes=4)


def test_the_progress_bar_changes_no_number():
    model, data = planted_collapse()
    quiet, shown = diagnose(model, data, kkt=False), diagnose(model, data, kkt=False, progress=True)
    assert quiet.table == shown.table and quiet.skipped == shown.skipped


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_ib_diagnose_is_the_function_and_importing_the_package_stays_cheap():
    assert ib.diagnose is diagnose and isinstance(diagnose(*planted_collapse(), kkt=False), Diagnosis)
    code = (
        "import sys, implicit_bias as ib\n"
        "assert 'torch' not in sys.modules\n"
        "assert 'diagnose' in dir(ib) and 'diagnosis' in dir(ib)\n"
        "import implicit_bias.diagnosis as d\n"
        "assert ib.diagnose is d.diagnose and ib.diagnosis is d\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
