"""benchmarks/gpu_check.py, smoke-run on CPU: every section present, the numerical checks (terminal phase, the
library's margins and NC metrics against brute-force NumPy) pass; the timing targets are not asserted here (the
quick shapes are overhead-bound on a shared CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_brute_force_collapse_reference_is_zero_on_an_exact_simplex_etf(gpu_check):
    # K = 4 features exactly at the vertices of a centred simplex (rows of I − 11ᵀ/K), 3 samples each, and a
    # classifier W = M̃: NC1 = NC2 = ETF distance = self-duality = 0 in closed form; nc1 = tr(Σ_W Σ_B^†)/K = 0.
    K = 4
    vertices = np.eye(K) - 1 / K
    y = np.repeat(np.arange(K), 3)
    reference = gpu_check.brute_force_collapse(vertices[y] + 5.0, y, K, vertices)
    for field in ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance"):
        assert reference[field] == pytest.approx(0.0, abs=1e-12), field
    assert reference["self_duality"] == pytest.approx(0.0, abs=1e-12)


def test_hand_margins_of_a_two_layer_relu_net(gpu_check):
    # Φ(x) = Σ_j a_j relu(⟨w_j, x⟩) by hand: w_1 = (1, 0), w_2 = (0, 1), a = (2, −1).
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
    X = np.array([[1.0, 3.0], [-1.0, 2.0], [2.0, -5.0]])
    y = np.array([1, 0, 1])  # signs +1, −1, +1; Φ = 2 − 3, 0 − 2, 4 − 0
    np.testing.assert_allclose(gpu_check.hand_margins(model, X, y), [-1.0, 2.0, 4.0])


@pytest.mark.slow
def test_cpu_quick_run_writes_every_section_and_its_numerical_checks_pass(gpu_check, tmp_path):
    path = tmp_path / "gpu.json"
    code = gpu_check.main(["--device", "cpu", "--quick", "--json", str(path)])
    result = json.loads(path.read_text())
    assert code == (0 if all(row["passed"] for row in result["checks"]) else 1)
    assert {"environment", "collapse", "fit", "terminal", "agreement", "checks"} <= result.keys()
    assert result["errors"] == {}
    assert len(result["collapse"]) == 4  # two shapes × two dtypes
    assert all(row["ratio"] > 0 and math.isfinite(row["ratio"]) for row in result["collapse"] + result["fit"])
    assert len(result["fit"]) == 3
    assert result["terminal"]["min_log_loss"] <= -1e4 and result["terminal"]["finite"]
    compared = {(row["quantity"].split(" (")[0], row["dtype"]) for row in result["agreement"]}
    for dtype in ("float64", "float32"):
        assert ("margins, random ReLU MLP", dtype) in compared
        assert (gpu_check.GAMMA, dtype) in compared
        assert {(f"NC {field}", dtype) for field in gpu_check.NC_FIELDS} <= compared
    numerical = [row for row in result["checks"] if row["section"] in ("terminal", "agreement")]
    assert len(numerical) == 3 + len(result["agreement"])
    failed = [row for row in numerical if not row["passed"]]
    assert not failed, failed


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_without_cuda_the_default_device_is_refused_in_one_line(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cpu" in err
