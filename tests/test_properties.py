"""Property-based tests (hypothesis, derandomized and without an example database: every run draws the same examples).

(a) Neural collapse in one streaming pass: whatever the split of the data into batches, their order, the empty
    batches among them, how they are spread over accumulators, the order in which those are merged, and a
    state_dict round trip on the way, :class:`CollapseAccumulator` holds the counts, class means and within-class
    scatter of a brute-force numpy computation on the whole data, and reports the same NC metrics (Papyan, Han &
    Donoho 2020) as one pass over everything.
(b) The log-space losses deep in the terminal phase: log ℒ of the exponential, logistic and cross-entropy losses at
    margins from 1e1 to 1e6 (log ℒ down to about −1e6, where ℒ itself underflows every float format) against
    mpmath at 50 digits, and ℓ⁻¹(ℒ) of the logistic loss.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_bias.losses import inverse_loss, log_loss
from implicit_bias.metrics import CollapseAccumulator

EPS = float(np.finfo(np.float64).eps)  # 2.2e-16
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)  # the same examples every run


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded torch for these tiny tensors: on a loaded machine each intra-op parallel region waits for a
    time slice (measured: torch.tril of a 4×4 matrix 15 ms with 2 threads at load 8, 3.5 µs with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- (a) collapse accumulator
def brute_force(H: np.ndarray, y: np.ndarray, K: int, weighted: bool, W: np.ndarray) -> dict[str, object]:
    """The statistics and NC metrics on the whole feature matrix, two-pass, per class, in float64 numpy."""
    counts = np.array([np.sum(y == c) for c in range(K)])
    means = np.stack([H[y == c].mean(axis=0) for c in range(K)])
    centred_samples = H - means[y]
    scatter = centred_samples.T @ centred_samples  # S_W = Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ
    centre = (counts[:, None] * means).sum(0) / counts.sum() if weighted else means.mean(axis=0)
    M = means - centre  # rows μ_c − μ_G
    sigma_w, sigma_b = scatter / len(H), M.T @ M / K
    eigenvalues, vectors = np.linalg.eigh(sigma_b)  # Σ_B^† from its eigenpairs above 1e-12·λ_max
    keep = eigenvalues > 1e-12 * eigenvalues.max()
    pinv = (vectors[:, keep] / eigenvalues[keep]) @ vectors[:, keep].T
    variances = np.array([np.mean(np.sum((H[y == c] - means[c]) ** 2, axis=1)) for c in range(K)])
    pairs = [(a, b) for a in range(K) for b in range(K) if a != b]
    norms = np.linalg.norm(M, axis=1)
    cosines = np.array([M[a] @ M[b] / (norms[a] * norms[b]) for a, b in pairs])
    gram = M @ M.T
    etf = (np.eye(K) - 1.0 / K) / math.sqrt(K - 1)
    return {
        "counts": counts,
        "means": means,
        "scatter": scatter,
        "nc1": np.trace(sigma_w @ pinv) / K,
        "nc1_trace": np.trace(sigma_w) / np.trace(sigma_b),
        "cdnv": np.mean([(variances[a] + variances[b]) / (2 * np.sum((means[a] - means[b]) ** 2)) for a, b in pairs]),
        "equinorm": norms.std(ddof=1) / norms.mean(),
        "equiangularity": cosines.std(ddof=1),
        "max_angle": np.mean(np.abs(cosines + 1 / (K - 1))),
        "etf_distance": np.linalg.norm(gram / np.linalg.norm(gram) - etf),
        "self_duality": np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2),
        "class_variances": variances,
        "class_mean_norms": norms,
    }


METRICS = ("nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance", "self_duality")


def state_of(accumulator: CollapseAccumulator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, class means μ_c = s_c + u_c/n_c, S_W = T − Σ_c n_c d_cd_cᵀ) from the public state_dict."""
    state = {k: v.numpy() for k, v in accumulator.state_dict().items()}
    n = state["counts"].astype(np.float64)
    offsets = state["shifted_sums"] / n[:, None]
    scatter = state["shifted_scatter"] - (n[:, None] * offsets).T @ offsets
    return state["counts"], state["shifts"] + offsets, scatter


@st.composite
def streams(draw):
    """Data with every class present, and one way of streaming it: an order, batches (some empty), an assignment
    of batches to accumulators, a merge order, and which accumulators pass through a state_dict first."""
    K = draw(st.integers(2, 5))
    D = draw(st.integers(1, 6))
    counts = draw(st.lists(st.integers(1, 6), min_size=K, max_size=K))
    seed = draw(st.integers(0, 2**32 - 1))
    offset = draw(st.sampled_from([0.0, 1e3]))  # features far from the origin: the shifted sums must hold up
    noise = draw(st.floats(0.05, 2.0))
    rng = np.random.default_rng(seed)
    means = offset * rng.standard_normal(D) + 4.0 * rng.standard_normal((K, D))
    y = np.repeat(np.arange(K), counts)
    H = means[y] + noise * rng.standard_normal((len(y), D))
    order = np.array(draw(st.permutations(range(len(y)))))
    cuts = [i for i in range(1, len(y)) if draw(st.booleans())]
    groups = draw(st.integers(1, 4))
    batches = [
        (part, draw(st.integers(0, groups - 1)), draw(st.booleans()))
        for part in np.split(order, cuts)  # (indices, its accumulator, an empty batch before it)
    ]
    merge_order = draw(st.permutations(range(groups)))
    restored = [draw(st.booleans()) for _ in range(groups)]
    weighted = draw(st.booleans())
    W = rng.standard_normal((K, D))
    return H, y, K, batches, merge_order, restored, weighted, W


def as_tensors(H: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(H), torch.from_numpy(y).long()


@PROPERTY
@given(streams())
def test_collapse_accumulator_any_split_order_and_merge_is_the_one_pass_result(stream):
    H, y, K, batches, merge_order, restored, weighted, W = stream
    D = H.shape[1]
    options = {"global_mean": "weighted" if weighted else "unweighted"}
    parts = [CollapseAccumulator(K, D, **options) for _ in merge_order]
    for indices, group, empty_first in batches:
        if empty_first:
            parts[group].update(torch.zeros(0, D, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
        parts[group].update(*as_tensors(H[indices], y[indices]))
    for group, restore in enumerate(restored):
        if restore:
            fresh = CollapseAccumulator(K, D, **options)
            fresh.load_state_dict(parts[group].state_dict())
            parts[group] = fresh
    merged = parts[merge_order[0]]
    for group in merge_order[1:]:
        merged.merge(parts[group])
    one_pass = CollapseAccumulator(K, D, **options)
    one_pass.update(*as_tensors(H, y))
    truth = brute_force(H, y, K, weighted, W)

    # S_W from shifted sums: each h − s_c is rounded once, by ε·|s_c| ≤ ε·(|offset| + 12) against a spread ≥ noise,
    # so ≲ 2e4·ε relative at the worst corner (offset 1e3, noise 0.05), times ≤ 30 summed samples: the 1e-10
    # tolerance relative to ‖S_W‖ is that budget (measured ≤ 5e-16 over 150 examples).
    counts, means, scatter = state_of(merged)
    np.testing.assert_array_equal(counts, truth["counts"])
    np.testing.assert_allclose(means, truth["means"], rtol=0, atol=1e-12 * np.abs(truth["means"]).max())
    np.testing.assert_allclose(scatter, truth["scatter"], rtol=0, atol=1e-10 * np.linalg.norm(truth["scatter"]))

    weight = torch.from_numpy(W)
    streamed, whole = merged.compute(weight), one_pass.compute(weight)
    assert streamed.class_counts == whole.class_counts == truth["counts"].tolist()
    for report in (streamed, whole):
        # NC1's Σ_B^† takes a Cholesky solve only when κ(M̃ᵀM̃) ≤ 1e8, losing ≤ 1e-8 relative (collapse.py): that is
        # its tolerance (measured ≤ 8e-12); the other metrics are ratios of the moments above (measured ≤ 2e-13)
        assert math.isclose(report.nc1, truth["nc1"], rel_tol=1e-8)
        for name in METRICS:
            assert math.isclose(getattr(report, name), truth[name], rel_tol=1e-10, abs_tol=1e-12), name
        np.testing.assert_allclose(report.class_variances, truth["class_variances"], rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(report.class_mean_norms, truth["class_mean_norms"], rtol=1e-10)


# ------------------------------------------------------------------------------------- (b) log-space losses
mpmath.mp.dps = 50  # far more than the 17 digits compared; mpmath's exponent range holds e^(−1e6) exactly

# The float64 budget of log ℒ: each gap Φ_j − Φ_y is one rounded subtraction (ε/2 relative to |gap|, hence to
# |log ℓ_n|); shifting by the largest gap is exact (Sterbenz) or costs ε·|x − m| in a term e^{x−m} ≤ 1, at most
# ε/e absolute; the ≤ 60 terms (N ≤ 12, K ≤ 5) sum to S ≥ 1, so log S is off by ≤ 60ε absolute, ≤ 10ε relative to
# |log ℒ| ≥ 10 − log 60 ≈ 6. Total ≤ 12ε; the tolerance is 32ε ≈ 7e−15, measured ≤ 1ε.
LOSS_RTOL = 32 * EPS


@st.composite
def terminal_outputs(draw):
    """Outputs (N,) of a binary model (K = 1) or (N, K) with every margin gap Φ_y − Φ_j log-uniform in [1e1, 1e6],
    on top of a per-sample offset up to 1e6 (so the gaps are formed by subtracting large numbers), and labels."""
    K = draw(st.sampled_from([1, 2, 3, 5]))
    N = draw(st.integers(1, 12))
    exponents = st.floats(1.0, 6.0)
    gaps = np.array([[10 ** draw(exponents) for _ in range(max(K, 2))] for _ in range(N)])
    y = np.array([draw(st.integers(0, max(K, 2) - 1)) for _ in range(N)])
    if K == 1:
        return np.where(y == 1, 1.0, -1.0) * gaps[:, 0], y
    base = np.array([draw(st.floats(-1e6, 1e6)) for _ in range(N)])
    outputs = base[:, None] - gaps
    outputs[np.arange(N), y] = base
    return outputs, y


def mp_log_loss(outputs: np.ndarray, y: np.ndarray, loss: str, reduction: str) -> mpmath.mpf:
    """log ℒ at 50 digits from the exact float64 outputs: ℓ_n = Σ_{j≠y} e^{Φ_j − Φ_y} (exponential) or
    log(1 + that) (logistic, cross-entropy); binary Φ: ℓ_n = e^{−yΦ} with y ∈ {±1}."""
    total = mpmath.mpf(0)
    for n in range(len(y)):
        if outputs.ndim == 1:
            s = mpmath.exp(-(1 if y[n] == 1 else -1) * mpmath.mpf(outputs[n]))
        else:
            true = mpmath.mpf(outputs[n, y[n]])
            s = mpmath.fsum(mpmath.exp(mpmath.mpf(v) - true) for j, v in enumerate(outputs[n]) if j != y[n])
        total += s if loss == "exponential" else mpmath.log1p(s)
    return mpmath.log(total) - (mpmath.log(len(y)) if reduction == "mean" else 0)


@settings(PROPERTY, max_examples=40)
@given(terminal_outputs())
def test_log_losses_match_mpmath_deep_in_the_terminal_phase(data):
    outputs, y = data
    for loss in ("exponential", "logistic", "cross-entropy"):
        for reduction in ("sum", "mean"):
            got = float(log_loss(torch.from_numpy(outputs), torch.from_numpy(y), loss, reduction=reduction))
            reference = float(mp_log_loss(outputs, y, loss, reduction))
            assert reference < -5  # the regime under test: ℒ ≤ e^{-5}, down to e^{-1e6}
            assert math.isclose(got, reference, rel_tol=LOSS_RTOL), (loss, reduction, got, reference)


@settings(PROPERTY, max_examples=60)
@given(st.floats(1.0, 6.0))
def test_logistic_inverse_loss_matches_mpmath(exponent):
    """ℓ⁻¹(ℒ) = −log(e^ℒ − 1) from log ℒ = −10^exponent: for log ℒ < −30 the series −log ℒ − ℒ/2 (next term
    ℒ²/24, below 1e−26 relative), else exp / expm1 / log, each correctly rounded to ≤ 1 ulp: 4ε relative."""
    log_value = -(10.0**exponent)
    reference = -mpmath.log(mpmath.expm1(mpmath.exp(mpmath.mpf(log_value))))
    assert math.isclose(inverse_loss("logistic", log_value), float(reference), rel_tol=4 * EPS)
