"""The torchmetrics adapters against numpy two-pass references, the CollapseAccumulator, and torchmetrics'
own machinery: batches, forward, reset, MetricCollection, a two-process gloo sync."""

import math
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")
from torchmetrics import MetricCollection

from implicit_bias.errors import InvalidArgumentError, NotSeparatedError, NumericalError
from implicit_bias.integrations.torchmetrics import NeuralCollapse, NormalizedMargin
from implicit_bias.metrics import CollapseAccumulator

FIELDS = ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "max_angle", "etf_distance")
EPS = 2.0**-52


def two_pass(H, y, K, W=None, weighted=False):
    """Textbook neural-collapse formulas in float64 numpy: class means first, then the centred features."""
    H, y = np.asarray(H, dtype=np.float64), np.asarray(y)
    N = len(y)
    counts = np.bincount(y, minlength=K)
    means = np.stack([H[y == c].mean(axis=0) for c in range(K)])
    mu_g = H.mean(axis=0) if weighted else means.mean(axis=0)
    M = (means - mu_g).T  # D × K
    within = H - means[y]
    sigma_w, sigma_b = within.T @ within / N, M @ M.T / K
    u, s, _ = np.linalg.svd(M, full_matrices=False)
    keep = s > 1e-10 * s.max()
    pinv_b = K * (u[:, keep] / s[keep] ** 2) @ u[:, keep].T  # (M Mᵀ / K)^†
    variances = np.array([np.sum(within[y == c] ** 2) / counts[c] for c in range(K)])
    pairs = [(i, j) for i in range(K) for j in range(K) if i != j]
    norms = np.linalg.norm(M, axis=0)
    cos = np.array([M[:, i] @ M[:, j] / (norms[i] * norms[j]) for i, j in pairs])
    G = M.T @ M
    etf = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    out = {
        "nc1": np.trace(sigma_w @ pinv_b) / K,
        "nc1_trace": np.trace(sigma_w) / np.trace(sigma_b),
        "cdnv": np.mean([(variances[i] + variances[j]) / (2 * np.sum((means[i] - means[j]) ** 2)) for i, j in pairs]),
        "equinorm": norms.std(ddof=1) / norms.mean(),
        "equiangularity": cos.std(ddof=1),
        "max_angle": np.abs(cos + 1 / (K - 1)).mean(),
        "etf_distance": np.linalg.norm(G / np.linalg.norm(G) - etf),
        "means": means,
    }
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        out["self_duality"] = np.sum((W.T / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
        out["equinorm_w"] = np.linalg.norm(W, axis=1).std(ddof=1) / np.linalg.norm(W, axis=1).mean()
    return out


def features(K=5, D=8, per_class=40, spread=1.0, offset=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = offset + 3.0 * torch.randn(K, D, generator=g, dtype=torch.float64)
    y = torch.arange(K).repeat_interleave(per_class)[torch.randperm(K * per_class, generator=g)]
    H = centres[y] + spread * torch.randn(len(y), D, generator=g, dtype=torch.float64)
    return H.to(dtype), y


def batches(n, sizes=(7, 31, 64, 3)):
    start, i = 0, 0
    while start < n:
        stop = min(n, start + sizes[i % len(sizes)])
        yield slice(start, stop)
        start, i = stop, i + 1


def test_neural_collapse_over_batches_equals_a_numpy_two_pass_and_the_accumulator():
    H, y = features(dtype=torch.float32)  # float32 features, float64 totals
    classifier = torch.nn.Linear(8, 5)
    metric, accumulator = NeuralCollapse(5, 8, classifier=classifier), CollapseAccumulator(5, 8)
    for s in batches(len(y)):
        metric.update(H[s], y[s])
        accumulator.update(H[s], y[s])
    values = metric.compute()
    truth = two_pass(H, y, 5, classifier.weight.detach())
    expected = accumulator.compute(classifier.weight, classifier.bias)
    assert sorted(values) == sorted((*FIELDS, "etf_floor", "equinorm_w", "self_duality", "self_duality_wh"))
    assert all(v.dtype == torch.float64 and v.ndim == 0 for v in values.values())
    for key in (*FIELDS, "self_duality", "equinorm_w"):
        assert float(values[key]) == pytest.approx(truth[key], rel=1e-10), key
    for key in values:
        assert float(values[key]) == pytest.approx(getattr(expected, key), rel=1e-12), key
    report = metric.report()
    assert report.class_counts == [40] * 5 and report.num_samples == 200 and report.self_duality is not None
    np.testing.assert_allclose(metric.class_means().numpy(), truth["means"], rtol=1e-13)


def test_forward_returns_the_batch_value_and_accumulates_the_union():
    H, y = features(seed=1)
    metric = NeuralCollapse(5, 8, global_mean="weighted")
    first = metric(H[:120], y[:120])
    metric(H[120:], y[120:])
    for key in FIELDS:
        assert float(first[key]) == pytest.approx(two_pass(H[:120], y[:120], 5, weighted=True)[key], rel=1e-10)
        assert float(metric.compute()[key]) == pytest.approx(two_pass(H, y, 5, weighted=True)[key], rel=1e-10)


def test_reset_forgets_the_data_and_can_take_a_new_shift():
    H, y = features(seed=2)
    H2, y2 = features(seed=3)
    metric = NeuralCollapse(5, 8)
    metric.update(H, y)
    metric.compute()
    metric.reset()
    assert int(metric.counts.sum()) == 0 and float(metric.shifted_scatter.abs().sum()) == 0
    metric.update(H2, y2)
    means = metric.class_means()
    metric.reset(shift=means)  # sums around the class means from now on; reset() keeps that shift
    metric.reset()
    assert torch.equal(metric.shift, means)
    metric.update(H2, y2)
    assert float(metric.shifted_sums.abs().max()) < 1e-12 * float(H2.abs().max())  # Σ(h − μ_c) = 0 by definition
    truth = two_pass(H2, y2, 5)
    for key in FIELDS:
        assert float(metric.compute()[key]) == pytest.approx(truth[key], rel=1e-10), key


def test_cancellation_stays_within_the_stated_bound_and_a_shift_removes_it():
    """Offset 1e3 per coordinate and within-class spread 1: ρ = Σ n‖μ_c‖² / Σ n σ²_c ≈ 1.05e6, so the default
    (zero) shift may lose up to 3Nε(1 + ρ) ≈ 1.4e−7 relative (measured: 6.9e−10 on NC1, 1.4e−10 on tr Σ_W/tr Σ_B,
    4.9e−11 on CDNV); a shift at the class means rounded to integers loses nothing (≤ 1.2e−13)."""
    H, y = features(per_class=40, spread=1.0, offset=1e3, seed=4)
    truth = two_pass(H, y, 5)
    within = (H - torch.as_tensor(truth["means"])[y]).square().sum()
    rho = float((torch.as_tensor(truth["means"])[y].square().sum()) / within)
    bound = 3 * len(y) * EPS * (1 + rho)
    raw = NeuralCollapse(5, 8)
    shifted = NeuralCollapse(5, 8, shift=torch.as_tensor(truth["means"]).round())  # means to ±0.5
    for s in batches(len(y)):
        raw.update(H[s], y[s])
        shifted.update(H[s], y[s])
    for key in ("nc1", "nc1_trace", "cdnv"):
        raw_error = abs(float(raw.compute()[key]) / truth[key] - 1)
        shifted_error = abs(float(shifted.compute()[key]) / truth[key] - 1)
        assert raw_error <= bound, (key, raw_error, bound)
        assert shifted_error <= 1e-12, (key, shifted_error)


def test_features_far_from_the_shift_are_refused_not_returned_wrong():
    H, y = features(per_class=20, spread=1e-3, offset=1e6, seed=5)  # κ ≈ 1e18: every digit of Σ_W is lost
    metric = NeuralCollapse(5, 8)
    metric.update(H, y)
    with pytest.raises(NumericalError, match="pass shift= near the class means"):
        metric.compute()
    metric.reset(shift=metric.class_means())
    metric.update(H, y)
    assert float(metric.compute()["nc1_trace"]) == pytest.approx(two_pass(H, y, 5)["nc1_trace"], rel=1e-9)


def test_metric_collection_routes_features_and_outputs_and_prefixes_duplicate_keys():
    H, clusters = features(K=3, D=4, per_class=20, offset=0.0, seed=6)
    head = torch.nn.Linear(4, 3, bias=False).double()
    with torch.no_grad():
        means = torch.as_tensor(two_pass(H, clusters, 3)["means"])
        head.weight.copy_(means - means.mean(0))
    y = head(H).argmax(1).detach()  # the head fits these labels: every q_n > 0
    assert np.bincount(y.numpy(), minlength=3).min() >= 2
    collection = MetricCollection(
        {
            "nc": NeuralCollapse(3, 4),
            "ncw": NeuralCollapse(3, 4, global_mean="weighted"),
            "margin": NormalizedMargin(head, degree=1),
        }
    )
    for s in batches(len(y)):
        collection.update(features=H[s], outputs=head(H[s]).detach(), labels=y[s])
    values = collection.compute()
    for key in FIELDS:
        assert float(values[f"nc_{key}"]) == pytest.approx(two_pass(H, y, 3)[key], rel=1e-10)
        assert float(values[f"ncw_{key}"]) == pytest.approx(two_pass(H, y, 3, weighted=True)[key], rel=1e-10)
    logits = (H @ head.weight.detach().T).numpy()
    q = logits[np.arange(len(y)), y] - np.where(np.eye(3, dtype=bool)[y], -np.inf, logits).max(1)
    assert float(values["margin"]) == pytest.approx(q.min() / np.linalg.norm(head.weight.detach()), rel=1e-12)
    collection.reset()
    assert all(int(m.counts.sum()) == 0 for name, m in collection.items() if name != "margin")


def _bias_free_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 4, bias=False)
    ).double()


def hand_margin(net, X, y):
    """min_n Φ_{y_n} − max_{j≠y_n} Φ_j over numpy outputs, over ‖θ‖₂² (a 2-homogeneous net)."""
    logits = net(X).detach().numpy()
    q = np.array([logits[n, y[n]] - np.delete(logits[n], y[n]).max() for n in range(len(y))])
    norm = np.sqrt(sum(float((p.detach().numpy() ** 2).sum()) for p in net.parameters()))
    return q.min() / norm**2


def test_normalized_margin_equals_the_hand_min_margin_over_the_norm_and_is_scale_invariant():
    net = _bias_free_net()
    X = torch.randn(90, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = net(X).argmax(1)  # the net fits its own labels: q_min > 0
    metric = NormalizedMargin(net, inputs=X[:10])  # degree detected: 2
    assert metric.degree == 2.0
    for s in batches(len(y)):
        metric.update(net(X[s]), y[s])
    truth = hand_margin(net, X, y)
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)
    with torch.no_grad():  # θ → 3θ: q_min × 9, ‖θ‖² × 9
        for p in net.parameters():
            p.mul_(3.0)
    metric.reset()
    metric.update(net(X), y)
    assert float(metric.compute()) == pytest.approx(truth, rel=1e-12)
    assert list(metric.parameters()) == [] and "0.weight" not in metric.state_dict()  # the model is not a submodule
    assert pickle.loads(pickle.dumps(metric)).compute() == pytest.approx(truth, rel=1e-12)


def test_normalized_margin_binary_outputs_and_its_refusals():
    w = torch.nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        w.weight.copy_(torch.tensor([[3.0, 4.0]]))
    X = torch.tensor([[1.0, 0.0], [0.0, -1.0], [2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1, -1, 1])
    metric = NormalizedMargin(w, degree=1, p=math.inf)
    metric.update(w(X).squeeze(1), y)
    assert float(metric.compute()) == pytest.approx(3.0 / 4.0)  # margins 3, 4, 14; ‖θ‖_∞ = 4
    metric.update(w(X[:1]).squeeze(1), torch.tensor([-1]))
    with pytest.raises(NotSeparatedError, match="1 of 4 samples have margin <= 0"):
        metric.compute()
    metric.reset()
    with pytest.raises(InvalidArgumentError, match="seen no samples"), pytest.warns(UserWarning):
        metric.compute()
    with pytest.raises(InvalidArgumentError, match="needs degree= .* or inputs="):
        NormalizedMargin(w)


def test_bad_arguments_are_one_line_naming_them():
    with pytest.raises(InvalidArgumentError, match=r"shift must be a float tensor of shape \(4,\) or \(3, 4\)"):
        NeuralCollapse(3, 4, shift=torch.zeros(2, 4))
    with pytest.raises(InvalidArgumentError, match=r"classifier must be a layer with a weight of shape \(3, 4\)"):
        NeuralCollapse(3, 4, classifier=torch.nn.Linear(3, 4))
    with pytest.raises(InvalidArgumentError, match=r"features must have shape \(B, 4\)"):
        NeuralCollapse(3, 4).update(torch.zeros(2, 5), torch.tensor([0, 1]))
    margin = NormalizedMargin(torch.nn.Linear(4, 3, bias=False), degree=1)
    with pytest.raises(InvalidArgumentError, match="outputs holds NaN at index"):
        margin.update(torch.tensor([[0.0, math.nan, 1.0]]), torch.tensor([0]))
    with pytest.raises(InvalidArgumentError, match=r"labels must lie in 0\.\.2"):
        margin.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(InvalidArgumentError, match="p must be 1, 2 or inf"):
        NormalizedMargin(torch.nn.Linear(4, 3), degree=1, p=3)


def _sync_worker(rank, world, path, H, y, net, X):
    import torch.distributed as dist

    torch.set_num_threads(1)  # no inherited OpenMP pool after the fork
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    metric, margin = NeuralCollapse(5, 8), NormalizedMargin(net, degree=2)
    shard = slice(rank, None, world)
    for s in batches(len(y[shard]), sizes=(13, 50)):
        metric.update(H[shard][s], y[shard][s])
    margin.update(net(X[shard]).detach(), net(X[shard]).argmax(1))
    values = {key: float(v) for key, v in metric.compute().items()}
    counts = metric.report().class_counts
    local = int(metric.counts.sum())  # compute unsyncs: the rank keeps accumulating its own data
    disagree = NeuralCollapse(5, 8, shift=torch.full((8,), float(rank)))
    disagree.update(H[shard], y[shard])
    try:
        disagree.compute()
        refused = ""
    except InvalidArgumentError as error:
        refused = str(error)
    torch.save(
        {"values": values, "counts": counts, "local": local, "refused": refused, "margin": float(margin.compute())},
        f"{path}.{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_process_gloo_sync_equals_one_process_on_the_union(tmp_path):
    import torch.multiprocessing as mp

    H, y = features(seed=7)
    net = _bias_free_net(seed=3)
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    path = str(tmp_path / "rendezvous")
    # fork: the children inherit the imported torch and torchmetrics (spawn re-imports them, ~10 s on 2 cores)
    mp.start_processes(_sync_worker, args=(2, path, H, y, net, X), nprocs=2, join=True, start_method="fork")
    truth, margin = two_pass(H, y, 5), hand_margin(net, X, net(X).argmax(1))
    for rank in range(2):
        state = torch.load(f"{path}.{rank}.pt", weights_only=True)
        assert state["counts"] == [40] * 5 and state["local"] == 100
        for key in FIELDS:
            assert state["values"][key] == pytest.approx(truth[key], rel=1e-10), key
        assert state["refused"].startswith("NeuralCollapse's shift differs between the ranks")
        assert state["margin"] == pytest.approx(margin, rel=1e-12)


def test_copies_share_the_live_classifier_and_merge_state_adds_shards():
    H, y = features(seed=8)
    classifier = torch.nn.Linear(8, 5)
    left, right = NeuralCollapse(5, 8, classifier=classifier), NeuralCollapse(5, 8)
    left.update(H[:90], y[:90])
    right.update(H[90:], y[90:])
    copy = left.clone()
    with torch.no_grad():
        classifier.weight.mul_(-1.0)  # W → −W: self_duality becomes ‖−Wᵀ/‖W‖ − M̃/‖M̃‖‖² (read at compute)
    copy.merge_state(right)
    truth = two_pass(H, y, 5, classifier.weight.detach())
    assert float(copy.compute()["self_duality"]) == pytest.approx(truth["self_duality"], rel=1e-10)
    assert float(copy.compute()["nc1"]) == pytest.approx(truth["nc1"], rel=1e-10)
    restored = pickle.loads(pickle.dumps(copy))
    assert float(restored.compute()["nc1"]) == pytest.approx(truth["nc1"], rel=1e-10)
    assert list(copy.parameters()) == []  # the classifier is referenced, not a submodule


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_move_takes_the_states_and_leaves_the_model():
    H, y = features(seed=9, dtype=torch.float32)
    net = _bias_free_net()
    metric, margin = NeuralCollapse(5, 8).to("cuda"), NormalizedMargin(net, degree=2).to("cuda")
    assert metric.shifted_scatter.device.type == "cuda" and next(net.parameters()).device.type == "cpu"
    metric.update(H, y)  # CPU batches are moved to the states' device
    metric.update(H.cuda(), y.cuda())
    doubled = torch.cat([H, H]), torch.cat([y, y])
    for key in FIELDS:
        assert float(metric.compute()[key]) == pytest.approx(two_pass(*doubled, 5)[key], rel=1e-9), key
    X = torch.randn(20, 3, dtype=torch.float64)
    margin.update(net(X).cuda(), net(X).argmax(1).cuda())
    assert float(margin.compute()) == pytest.approx(hand_margin(net, X, net(X).argmax(1)), rel=1e-12)
