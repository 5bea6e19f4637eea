"""The collapse accumulator against a plain float64 full-matrix reference, planted geometries, streaming,
merging, resuming and a two-process gloo sync."""

import math

import numpy as np
import pytest
import torch

from implicit_bias.errors import InvalidArgumentError
from implicit_bias.metrics.collapse import CollapseAccumulator


def reference(H, y, K, W=None, b=None):
    """Textbook formulas on the whole feature matrix in float64 (numpy), no streaming."""
    H, y = np.asarray(H, dtype=np.float64), np.asarray(y)
    N = H.shape[0]
    means = np.stack([H[y == c].mean(axis=0) for c in range(K)])
    mu_g = means.mean(axis=0)
    M = (means - mu_g).T  # D×K
    within = H - means[y]
    sigma_w = within.T @ within / N
    sigma_b = M @ M.T / K
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / K
    variances = np.array([np.mean(np.sum((H[y == c] - means[c]) ** 2, axis=1)) for c in range(K)])
    cdnv = np.mean(
        [
            (variances[i] + variances[j]) / (2 * np.sum((means[i] - means[j]) ** 2))
            for i in range(K)
            for j in range(K)
            if i != j
        ]
    )
    norms = np.linalg.norm(M, axis=0)
    cos = (M / norms).T @ (M / norms)
    off = ~np.eye(K, dtype=bool)
    G = M.T @ M
    etf = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    out = {
        "nc1": nc1,
        "nc1_trace": np.trace(sigma_w) / np.trace(sigma_b),
        "cdnv": cdnv,
        "equinorm": norms.std(ddof=1) / norms.mean(),
        "equiangularity": cos[off].std(ddof=1),
        "max_angle": np.abs(cos[off] + 1 / (K - 1)).mean(),
        "etf_distance": np.linalg.norm(G / np.linalg.norm(G) - etf),
    }
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        out["equinorm_w"] = np.linalg.norm(W, axis=1).std(ddof=1) / np.linalg.norm(W, axis=1).mean()
        out["self_duality"] = np.sum((W.T / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
        WM = W @ M
        out["self_duality_wh"] = np.linalg.norm(WM / np.linalg.norm(WM) - etf)
        logits = H @ W.T + (np.asarray(b) if b is not None else 0)
        nearest = np.argmin(((H[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        out["ncc_mismatch"] = np.mean(logits.argmax(1) != nearest)
    return out


def gaussian_features(K=5, D=8, per_class=40, spread=1.0, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(K, D, generator=g, dtype=torch.float64)
    y = torch.arange(K).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    H = means[y] + spread * torch.randn(len(y), D, generator=g, dtype=torch.float64)
    return H.to(dtype), y


def full_report(H, y, K, W=None, b=None, batch=7, **options):
    acc = CollapseAccumulator(K, H.shape[1], **options)
    for chunk, labels in zip(H.split(batch), y.split(batch)):
        acc.update(chunk, labels)
    if W is not None:
        for chunk, labels in zip(H.split(batch), y.split(batch)):
            acc.ncc_update(chunk, labels, W, b)
    return acc, acc.compute(W, b)


@pytest.mark.parametrize("K,D", [(5, 8), (3, 2), (12, 4)])  # the last has K > D
def test_matches_the_full_matrix_reference(K, D):
    H, y = gaussian_features(K=K, D=D, seed=K)
    g = torch.Generator().manual_seed(1)
    W, b = (
        torch.randn(K, D, generator=g, dtype=torch.float64),
        torch.randn(K, generator=g, dtype=torch.float64),
    )
    _, report = full_report(H, y, K, W, b)
    expected = reference(H.numpy(), y.numpy(), K, W.numpy(), b.numpy())
    for key, value in expected.items():
        assert getattr(report, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("smallest,expect_svd", [(0.2, False), (1e-4, True)])
def test_pseudo_inverse_fast_path_and_svd_fallback(monkeypatch, smallest, expect_svd):
    # Class means with planted singular values (3, 1, 0.2, smallest): well-conditioned means go through the
    # Cholesky solve, κ(M̃)² ≥ 1e8 through the SVD; both must equal tr(Σ_W pinv(M̃)ᵀ pinv(M̃)) (numpy's SVD).
    K, D, per_class = 5, 8, 30
    g = torch.Generator().manual_seed(4)
    centred_basis, _ = torch.linalg.qr(torch.cat([torch.ones(K, 1), torch.randn(K, K - 1, generator=g)], 1).double())
    features_basis, _ = torch.linalg.qr(torch.randn(D, K - 1, generator=g, dtype=torch.float64))
    singular = torch.tensor([3.0, 1.0, 0.2, smallest], dtype=torch.float64)
    means = 7.0 + (features_basis * singular) @ centred_basis[:, 1:].T  # (D, K), columns sum to 7K
    y = torch.arange(K).repeat_interleave(per_class)
    H = means.T[y] + 1e-6 * torch.randn(len(y), D, generator=g, dtype=torch.float64)
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    _, report = full_report(H, y, K)
    Hn, yn = H.numpy(), y.numpy()
    class_means = np.stack([Hn[yn == c].mean(0) for c in range(K)])
    within = Hn - class_means[yn]
    pinv = np.linalg.pinv((class_means - class_means.mean(0)).T, rcond=1e-10)
    # rel 1e−7: with κ(M̃) = 3e4 both sides carry rounding of order ε·κ² ≈ 1e−8
    assert report.nc1 == pytest.approx(np.trace(within.T @ within / len(yn) @ pinv.T @ pinv), rel=1e-7)
    assert bool(calls) == expect_svd


def test_planted_simplex_etf_is_perfectly_collapsed():
    K, D, per_class = 4, 6, 5
    etf = math.sqrt(K / (K - 1)) * (torch.eye(K) - 1.0 / K)  # K unit vectors with cos = −1/(K−1)
    means = torch.zeros(K, D, dtype=torch.float64)
    means[:, :K] = etf.double()
    y = torch.arange(K).repeat(per_class)
    H = 5.0 * means[y]
    W = means.clone()  # self-dual classifier, W = M̃ᵀ up to scale
    _, report = full_report(H, y, K, W, None)
    assert report.nc1 == pytest.approx(0, abs=1e-20) and report.nc1_trace == pytest.approx(0, abs=1e-20)
    assert report.etf_distance == pytest.approx(0, abs=1e-12) and report.etf_floor == 0
    assert report.self_duality == pytest.approx(0, abs=1e-20) and report.self_duality_wh == pytest.approx(0, abs=1e-12)
    assert report.equinorm == pytest.approx(0, abs=1e-12) and report.max_angle == pytest.approx(0, abs=1e-12)
    assert report.ncc_mismatch == 0


def test_analytic_gaussian_nc1():
    # Two classes at ±m e₁ in D dims, isotropic spread σ²: Σ_B = m² e₁e₁ᵀ, Σ_W → σ²I, so NC1 → σ²/(2m²)
    # and the trace ratio → Dσ²/m². Large N, so sampling error is ~1%.
    D, m, sigma, n = 3, 2.0, 0.5, 40_000
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(n)
    means = torch.zeros(2, D, dtype=torch.float64)
    means[0, 0], means[1, 0] = m, -m
    H = means[y] + sigma * torch.randn(2 * n, D, generator=g, dtype=torch.float64)
    _, report = full_report(H, y, 2, batch=4096)
    assert report.nc1 == pytest.approx(sigma**2 / (2 * m**2), rel=0.03)
    assert report.nc1_trace == pytest.approx(D * sigma**2 / m**2, rel=0.03)


def test_float32_stays_accurate_under_collapse():
    # means ≈ 50 and spread 1e−3: the naive Σhhᵀ − Σ n μμᵀ loses every digit in float32
    H64, y = gaussian_features(K=6, D=10, per_class=200, spread=1e-3, scale=50.0, seed=3)
    H32 = H64.float()
    expected = reference(H32.double().numpy(), y.numpy(), 6)
    _, report = full_report(H32, y, 6, batch=64, dtype=torch.float32)
    for key in ("nc1", "nc1_trace", "cdnv"):
        assert getattr(report, key) == pytest.approx(expected[key], rel=1e-3), key


def test_etf_floor_when_there_are_more_classes_than_dimensions():
    H, y = gaussian_features(K=10, D=3, per_class=20, spread=0.01, seed=2)
    _, report = full_report(H, y, 10)
    assert report.etf_floor == pytest.approx(math.sqrt(2 - 2 * math.sqrt(3 / 9)))
    assert report.etf_distance >= report.etf_floor - 1e-12


def test_batch_order_and_size_do_not_matter():
    H, y = gaussian_features(seed=4)
    _, one = full_report(H, y, 5, batch=len(y))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(9))
    _, shuffled = full_report(H[order], y[order], 5, batch=3)
    for key in ("nc1", "nc1_trace", "cdnv", "equinorm", "etf_distance"):
        assert getattr(shuffled, key) == pytest.approx(getattr(one, key), rel=1e-11), key


def largest_allocation(action) -> int:
    """The most bytes any one torch operation inside ``action()`` allocates (the profiler's memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        action()
    return max(event.cpu_memory_usage for event in prof.events())


def test_wide_features_in_one_large_batch_match_the_reference_with_bounded_temporaries():
    # D = 1 100: T in 4 column strips of 275, compute's strips cut to ≤ 256 columns; one batch of 1 500 rows is
    # added in row chunks of max(256, ⌈D/4⌉) = 275. The result must match the full-matrix reference, float32
    # features must give a float64 accumulator exactly the state their float64 cast gives (cast chunk by chunk),
    # and no single operation may allocate more than one row chunk in update (not the batch, not D×D) nor more
    # than A (D × K in the accumulator's float32) in compute (no K×D float64 copy, no D×D).
    K, D = 6, 1100
    H, y = gaussian_features(K=K, D=D, per_class=250, seed=6)
    W = torch.randn(K, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    acc = CollapseAccumulator(K, D)
    acc.update(H, y)
    expected = reference(H.numpy(), y.numpy(), K, W.numpy())
    report = acc.compute(W)
    for key in ("nc1", "nc1_trace", "cdnv", "equinorm", "equiangularity", "etf_distance", "self_duality"):
        assert getattr(report, key) == pytest.approx(expected[key], rel=1e-9), key
    single = CollapseAccumulator(K, D)
    single.update(H.float(), y)
    cast = CollapseAccumulator(K, D)
    cast.update(H.float().double(), y)
    for name, value in single.state_dict().items():
        assert torch.equal(value, cast.state_dict()[name]), name

    low = CollapseAccumulator(K, D, dtype=torch.float32)
    H32, W32 = H.float(), W.float()
    assert largest_allocation(lambda: low.update(H32, y)) <= 275 * D * 4 < len(y) * D * 4
    assert largest_allocation(lambda: low.compute(W32)) <= D * K * 4 < K * D * 8


def test_merged_shards_equal_one_pass_and_state_dict_resumes():
    H, y = gaussian_features(seed=5)
    _, expected = full_report(H, y, 5)
    first, second = CollapseAccumulator(5, 8), CollapseAccumulator(5, 8)
    first.update(H[:70], y[:70])
    second.update(H[70:], y[70:])
    first.merge(second)
    resumed = CollapseAccumulator(5, 8)
    resumed.load_state_dict(first.state_dict())
    for key in ("nc1", "nc1_trace", "cdnv", "equiangularity"):
        assert getattr(resumed.compute(), key) == pytest.approx(getattr(expected, key), rel=1e-11), key


def test_missing_and_singleton_classes_are_reported():
    H, y = gaussian_features(K=4, D=3, per_class=5, seed=6)
    keep = y != 3
    keep[torch.nonzero(y == 2).flatten()[1:]] = False  # class 2 keeps one sample, class 3 none
    acc = CollapseAccumulator(4, 3)
    acc.update(H[keep], y[keep])
    report = acc.compute()
    assert report.missing_classes == [3] and report.singleton_classes == [2] and report.num_classes == 3


def test_bad_inputs_are_refused():
    acc = CollapseAccumulator(3, 4)
    with pytest.raises(InvalidArgumentError, match=r"shape \(B, 4\)"):
        acc.update(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="labels must lie in 0..2"):
        acc.update(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(InvalidArgumentError, match="at least two classes"):
        acc.update(torch.zeros(2, 4), torch.tensor([1, 1]))
        acc.compute()


def _sync_worker(rank, world, path, H, y, W):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    acc = CollapseAccumulator(5, 8)
    acc.update(H[rank::world], y[rank::world])
    acc.sync()
    acc.sync()  # idempotent: the class statistics are not summed again
    try:
        acc.update(H[:1], y[:1])
    except InvalidArgumentError as error:
        refused = str(error)
    acc.ncc_update(H[rank::world], y[rank::world], W)  # NC4's pass against the global class means
    acc.sync()
    acc.sync()
    torch.save({**acc.state_dict(), "refused": refused}, f"{path}.{rank}.pt")
    dist.destroy_process_group()


def test_two_process_gloo_sync_equals_one_process_and_is_idempotent(tmp_path):
    import torch.multiprocessing as mp

    H, y = gaussian_features(seed=7)
    W = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path = str(tmp_path / "rendezvous")
    mp.spawn(_sync_worker, args=(2, path, H, y, W), nprocs=2, join=True)
    truth = reference(H, y, 5, W)
    for rank in range(2):
        state = torch.load(f"{path}.{rank}.pt", weights_only=True)
        assert state.pop("refused").startswith("cannot update a synced accumulator")
        acc = CollapseAccumulator(5, 8)
        acc.load_state_dict(state)
        assert acc.synced and acc.counts.tolist() == [40] * 5 and int(acc.ncc_total) == 200
        report = acc.compute(W)
        for key in ("nc1", "nc1_trace", "cdnv", "equinorm", "etf_distance", "ncc_mismatch"):
            assert getattr(report, key) == pytest.approx(truth[key], rel=1e-10), key


class Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


def test_collapse_by_layer_matches_the_accumulator_on_the_raw_features():
    from collections import OrderedDict

    from implicit_bias.metrics import collapse_by_layer

    H, y = gaussian_features(K=4, D=6, per_class=30, seed=8)
    head = torch.nn.Linear(6, 4).double()
    model = torch.nn.Sequential(OrderedDict(first=Scale(1.0), second=Scale(3.0), head=head))
    result = collapse_by_layer(model, (H, y), layers=["first", "second"], num_classes=4, batch_size=17)
    _, direct = full_report(H, y, 4)
    assert result["first"].train.nc1 == pytest.approx(direct.nc1, rel=1e-11)
    assert result["second"].train.nc1 == pytest.approx(direct.nc1, rel=1e-11)  # NC1 is scale-invariant
    assert result["second"].train.self_duality is not None and result["first"].train.self_duality is None
    nearest = torch.cdist(H, torch.stack([H[y == c].mean(0) for c in range(4)])).argmin(1)
    assert result["first"].ncc_train_accuracy == pytest.approx(float((nearest == y).double().mean()))
    again = collapse_by_layer(model, (H, y), layers=["first"], num_classes=4, batch_size=1000)
    assert again["first"].train.nc1 == pytest.approx(result["first"].train.nc1, rel=1e-12)


def test_conv_maps_are_average_pooled_by_default():
    from collections import OrderedDict

    from implicit_bias.metrics import collapse_by_layer

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(40, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(4).repeat(10)
    maps += 2 * y[:, None, None, None]
    model = torch.nn.Sequential(
        OrderedDict(conv=Scale(1.0), flat=torch.nn.Flatten(), head=torch.nn.Linear(48, 4).double())
    )
    result = collapse_by_layer(model, (maps, y), layers=["conv"], num_classes=4)
    _, pooled = full_report(maps.mean(dim=(2, 3)), y, 4)
    assert result["conv"].train.nc1 == pytest.approx(pooled.nc1, rel=1e-11)
    flattened = collapse_by_layer(model, (maps, y), layers=["conv"], num_classes=4, reduction="flatten")
    assert flattened["conv"].train.dim == 48
    projected = collapse_by_layer(
        model, (maps, y), layers=["conv"], num_classes=4, reduction="projection", projection_dim=16
    )
    assert projected["conv"].train.dim == 16


# ------------------------------------------------------------------ state: metadata, mismatches, safetensors
def test_state_dict_round_trips_through_safetensors_with_its_metadata(tmp_path):
    from safetensors.torch import load_file, save_file

    H, y = gaussian_features(seed=11)
    acc = CollapseAccumulator(5, 8, dtype=torch.float32, global_mean="weighted", rcond=1e-8)
    acc.update(H[:100], y[:100])
    save_file(acc.state_dict(), tmp_path / "collapse.safetensors")
    resumed = CollapseAccumulator(5, 8, dtype=None, global_mean="weighted", rcond=1e-8)  # dtype from the file
    resumed.load_state_dict(load_file(tmp_path / "collapse.safetensors"))
    assert resumed.dtype == torch.float32 and resumed.metadata() == acc.metadata()
    resumed.update(H[100:], y[100:])
    _, expected = full_report(H, y, 5, dtype=torch.float32, global_mean="weighted", rcond=1e-8)
    for key in ("nc1", "nc1_trace", "cdnv", "equinorm"):
        assert getattr(resumed.compute(), key) == pytest.approx(getattr(expected, key), rel=1e-5), key


@pytest.mark.parametrize(
    "options, field, theirs, ours",
    [
        ({"num_classes": 4}, "num_classes", "4", "5"),
        ({"dim": 7}, "dim", "7", "8"),
        ({"dtype": torch.float32}, "dtype", "'float32'", "'float64'"),
        ({"global_mean": "weighted"}, "global_mean", "'weighted'", "'unweighted'"),
        ({"rcond": 1e-6}, "rcond", "1e-06", "1e-10"),
    ],
)
def test_merge_and_load_state_dict_refuse_a_mismatch_naming_the_field(options, field, theirs, ours):
    H, y = gaussian_features(seed=12)
    kwargs = {"num_classes": 5, "dim": 8, **options}
    other = CollapseAccumulator(kwargs.pop("num_classes"), kwargs.pop("dim"), **kwargs)
    if field not in ("num_classes", "dim"):
        other.update(H, y)
    this = CollapseAccumulator(5, 8)
    this.update(H[:10], y[:10])
    fragment = f"its {field} is {theirs}, this accumulator's is {ours}"
    with pytest.raises(InvalidArgumentError, match=f"^cannot merge the other accumulator: {fragment}"):
        this.merge(other)
    with pytest.raises(InvalidArgumentError, match=f"^cannot load this collapse state: {fragment}"):
        this.load_state_dict(other.state_dict())
    assert int(this.counts.sum()) == 10  # nothing was folded in


def test_per_class_fields_have_one_entry_per_class_nan_where_missing():
    H, y = gaussian_features(K=4, D=3, per_class=5, seed=6)
    keep = y != 1
    acc = CollapseAccumulator(4, 3)
    acc.update(H[keep], y[keep])
    report = acc.compute()
    assert report.class_counts == [5, 0, 5, 5]
    assert len(report.class_mean_norms) == len(report.class_variances) == 4
    assert math.isnan(report.class_mean_norms[1]) and math.isnan(report.class_variances[1])
    H3, y3 = H[keep].numpy(), y[keep].numpy()
    means = {c: H3[y3 == c].mean(axis=0) for c in (0, 2, 3)}
    centre = np.mean(list(means.values()), axis=0)
    for c in (0, 2, 3):  # against the textbook per-class values of the present classes
        assert report.class_mean_norms[c] == pytest.approx(np.linalg.norm(means[c] - centre), rel=1e-12)
        spread = np.mean(np.sum((H3[y3 == c] - means[c]) ** 2, axis=1))
        assert report.class_variances[c] == pytest.approx(spread, rel=1e-10)


class OnceOnly:
    """An iterable that hands out its batches on the first pass only (e.g. a wrapper around a generator)."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __iter__(self):
        batches, self.batches = self.batches, []
        return iter(batches)


def test_collapse_by_layer_refuses_data_it_cannot_read_twice():
    from collections import OrderedDict

    from implicit_bias.metrics import collapse_by_layer

    H, y = gaussian_features(K=3, D=4, per_class=10, seed=13)
    model = torch.nn.Sequential(OrderedDict(first=Scale(1.0), head=torch.nn.Linear(4, 3).double()))
    batches = [(H[i : i + 10], y[i : i + 10]) for i in range(0, 30, 10)]
    with pytest.raises(InvalidArgumentError, match=r"^data must be read more than once: .* got a one-shot generator$"):
        collapse_by_layer(model, (b for b in batches), layers=["first"], num_classes=3)
    with pytest.raises(InvalidArgumentError, match=r"^test must be read more than once: .*one-shot list_iterator$"):
        collapse_by_layer(model, batches, layers=["first"], num_classes=3, test=iter(batches))
    with pytest.raises(InvalidArgumentError, match=r"^data yielded 0 samples on a second pass where the first gave 30"):
        collapse_by_layer(model, OnceOnly(batches), layers=["first"], num_classes=3)
    with pytest.raises(InvalidArgumentError, match=r"^data yielded no samples$"):
        collapse_by_layer(model, [], layers=["first"], num_classes=3)
    result = collapse_by_layer(model, batches, layers=["first"], num_classes=3)  # a list is read twice
    _, direct = full_report(H, y, 3)
    assert result["first"].train.nc1 == pytest.approx(direct.nc1, rel=1e-11)
