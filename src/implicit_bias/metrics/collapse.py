"""Neural collapse (Papyan, Han & Donoho 2020) in one streaming pass: an accumulator with update / merge / sync /
state_dict and a report of NC1–NC4 and related metrics.

State (all running totals, each with its merge rule — see :meth:`CollapseAccumulator.merge`)
-----------------------------------------------------------------------------------------------
counts n_c             int64 (K,)      sum
shift s_c              (K, D)          a fixed reference point per class: its first batch's class mean
shifted sum u_c        (K, D)          Σ_{i∈c} (h_i − s_c)
shifted scatter T      (D, D)          Σ_i (h_i − s_{y_i})(h_i − s_{y_i})ᵀ
shifted squares q_c    (K,)            Σ_{i∈c} ‖h_i − s_c‖²

The class means are μ_c = s_c + u_c/n_c and the pooled within-class scatter is the shifted-data identity
S_W = T − Σ_c n_c d_c d_cᵀ with d_c = u_c/n_c. Because s_c is close to μ_c, h − s_c is formed exactly
(Sterbenz) and the correction is small, so the result keeps its precision at collapse, where the naive
Σ hhᵀ − Σ n_c μ_c μ_cᵀ loses every digit. Each batch costs the lower block triangle of one D×D GEMM of inner
size B (less than HᵀH itself) plus scatter-adds; merging two states re-centres one onto the other's shifts
exactly (Chan et al.'s pairwise update in shifted form).

Conventions (explicit, also recorded in the report)
---------------------------------------------------
Σ_W = S_W / N (N = all samples); Σ_B = (1/K) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ with μ_G the **unweighted** mean of the
class means (``global_mean="unweighted"``, Papyan's balanced setting) or the sample mean (``"weighted"``).
Metrics that use class means range over the classes that have samples; classes with none, or with a single
sample (whose spread is 0 by necessity), are listed in the report.

References
----------
Papyan, Han & Donoho (2020), PNAS, "Prevalence of neural collapse during the terminal phase of deep learning
training" (NC1 = tr(Σ_W Σ_B^†)/K, Fig. 6; NC2 Figs. 2–3; NC3 Fig. 5; NC4 Fig. 7).
Galanti, György & Hutter (2022), ICLR (CDNV). Zhu et al. (2021), NeurIPS (NC3 via WM̃).
Chan, Golub & LeVeque (1983), "Algorithms for computing the sample variance".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from ..errors import InvalidArgumentError
from ..validation import check_choice, check_features_labels, check_finite, check_scalar

STATE = (
    "counts",
    "shifts",
    "seen",
    "shifted_sums",
    "shifted_scatter",
    "shifted_squares",
    "ncc_mismatches",
    "ncc_total",
    "ncc_reduced",
)
COMPUTE_STRIP = 256  # the widest strip of columns compute() forms its K×D float64 quantities in
METADATA = ("num_classes", "dim", "dtype", "global_mean", "rcond", "synced")  # also in the state dict, as tensors


def _text_tensor(text: str) -> torch.Tensor:
    """A string as a uint8 tensor of its UTF-8 bytes (safetensors holds tensors only)."""
    return torch.tensor(list(text.encode()), dtype=torch.uint8)


def _tensor_text(tensor: torch.Tensor) -> str:
    return bytes(tensor.to(torch.uint8).cpu().tolist()).decode()


@dataclass(frozen=True)
class CollapseReport:
    """Neural-collapse metrics of one layer (see :class:`CollapseAccumulator` for the conventions).

    Attributes
    ----------
    nc1 : float
        tr(Σ_W Σ_B^†)/K (Papyan et al. 2020), Σ_B^† through the SVD of M̃ with relative tolerance ``rcond``.
    nc1_trace : float
        tr Σ_W / tr Σ_B.
    cdnv : float
        mean over c ≠ c' of (σ²_c + σ²_c')/(2‖μ_c − μ_c'‖²), σ²_c = mean_{i∈c} ‖h_i − μ_c‖² (Galanti et al. 2022).
    equinorm : float
        std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖ (NC2); ``equinorm_w`` the same for the rows of W.
    equiangularity : float
        std over c ≠ c' of cos(μ_c − μ_G, μ_c' − μ_G) (NC2).
    max_angle : float
        mean over c ≠ c' of |cos + 1/(K−1)| (NC2).
    etf_distance : float
        ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F, G = M̃ᵀM̃; ``etf_floor`` its smallest possible value, √(2 − 2√(D/(K−1)))
        when K − 1 > D (no simplex ETF fits in D dimensions), else 0.
    self_duality : float
        ‖Wᵀ/‖W‖_F − M̃/‖M̃‖_F‖²_F (Papyan's NC3); ``self_duality_wh`` ‖WM̃/‖WM̃‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu
        et al.). None without a classifier.
    ncc_mismatch : float
        NC4: fraction of samples whose classifier decision argmax_c(⟨w_c, h⟩ + b_c) differs from the nearest
        class mean; None until :meth:`CollapseAccumulator.ncc_update` has seen data.
    num_classes : int
        The number of classes with samples (the K of every formula above); ``missing_classes`` lists the others.
    class_counts, class_mean_norms, class_variances : list
        One entry per class 0 … K−1 of the accumulator, present or not: n_c, ‖μ_c − μ_G‖ and σ²_c, with count
        0 and NaN norm and variance for a class in ``missing_classes`` (a singleton's variance is 0).
    """

    num_samples: int
    num_classes: int
    dim: int
    nc1: float
    nc1_trace: float
    cdnv: float
    equinorm: float
    equiangularity: float
    max_angle: float
    etf_distance: float
    etf_floor: float
    equinorm_w: float | None
    self_duality: float | None
    self_duality_wh: float | None
    ncc_mismatch: float | None
    class_counts: list[int]
    class_mean_norms: list[float]
    class_variances: list[float]
    missing_classes: list[int]
    singleton_classes: list[int]
    conventions: dict[str, str] = field(default_factory=dict)


class CollapseAccumulator:
    """Streaming neural-collapse statistics of D-dimensional features over K classes.

    Parameters
    ----------
    num_classes, dim : int
        K and D.
    dtype : floating torch dtype or None
        The precision of the running totals (every batch is cast to it); float64 by default, whatever the
        features' dtype. None: the first batch's dtype, promoted to at least float32.
    device : device or None
        Where the running totals live (every batch is moved there). None: the first batch's device.
    global_mean : {"unweighted", "weighted"}
    rcond : float
        Relative tolerance of Σ_B's pseudo-inverse.

    Features must be finite floats and labels integers in 0..K−1 (:func:`~implicit_bias.validation.check_labels`):
    NaN / inf features (with the first bad index) and float, boolean or out-of-range labels are refused, batch
    by batch. :meth:`state_dict` holds the running totals and the metadata (K, D, dtype, ``global_mean``,
    ``rcond``, synced) as tensors, ready for ``safetensors.torch.save_file``; :meth:`merge` and
    :meth:`load_state_dict` refuse a state whose metadata differ, and :meth:`sync` is idempotent.

    Memory (itemsize: the dtype's bytes; k ≤ K the classes with samples)

    - state: (D² + 2KD + K)·itemsize + 9K bytes (T, s, u, q; counts, seen) — 95 MiB for D = 4 096, K = 1 000
      in float32 — whatever the number of samples;
    - :meth:`update`, above the state: one row chunk at a time (max(256, ⌈D/4⌉) rows: ≤ D²/4 + D entries from
      D = 1 024 on, whatever the batch size) — h − s, plus a cast copy of the chunk where the features' dtype or
      device is not the state's, plus on a batch with unseen classes a copy of their rows — at most
      2·rows·D·itemsize, and the BLAS library's buffers;
    - :meth:`compute`, above the state: the k×k float64 Gram matrix throughout, with two k×k temporaries for
      NC2 and, for NC1, A (D × k, itemsize) and the Cholesky factor in the Gram matrix's place, and a strip's
      k × 256 float64 temporaries (a few, 2 MB each at k = 1 000): ≈ max(24k², 8k² + D·k·itemsize) bytes plus
      those strips; never a D×D matrix nor a K×D float64 copy. Only the SVD fallback of Σ_B^† (K > D + 1, or
      means too ill-conditioned for the Cholesky path) adds M̃ and its U whole, 2·8·k·D bytes.

    Measured (``python benchmarks/collapse.py --scale``: D = 4 096, K = 1 000, 200 000 float32 samples): peak
    resident memory 119 MB above the baseline for the 95 MB state with glibc's mmap threshold fixed
    (``MALLOC_MMAP_THRESHOLD_=1048576``), 159–176 MB with glibc's default, which keeps freed blocks resident.

    >>> acc = CollapseAccumulator(num_classes=3, dim=2)
    >>> acc.update(torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.0, 1.0], [0.0, 1.2], [-1.0, -1.0], [-1.0, -0.9]]),
    ...            torch.tensor([0, 0, 1, 1, 2, 2]))
    >>> round(acc.compute().nc1_trace, 6)
    0.003566
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        dtype: torch.dtype | None = torch.float64,
        device: torch.device | str | None = None,
        global_mean: str = "unweighted",
        rcond: float = 1e-10,
    ) -> None:
        check_scalar("num_classes", num_classes, int, low=2)
        check_scalar("dim", dim, int, low=1)
        check_choice("global_mean", global_mean, ("unweighted", "weighted"))
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise InvalidArgumentError(f"dtype must be a floating torch dtype or None, got {dtype!r}")
        self.num_classes, self.dim = num_classes, dim
        self.dtype = dtype if dtype is not None else torch.float64  # until the first batch, where None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._open_dtype, self._open_device = dtype is None, device is None
        self.global_mean, self.rcond = global_mean, rcond
        self.reset()

    def _adopt(self, reference: torch.Tensor) -> None:
        """Fix the dtype / device left open (None) at construction from the first data seen (nothing has been
        accumulated yet, so the empty state is simply reallocated there, if it must move at all)."""
        if not (self._open_dtype or self._open_device):
            return
        dtype = torch.promote_types(reference.dtype, torch.float32) if self._open_dtype else self.dtype
        device = reference.device if self._open_device else self.device
        self._open_dtype = self._open_device = False
        if (dtype, device) != (self.dtype, self.device):
            self.dtype, self.device = dtype, device
            self.reset()

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything seen so far."""
        for name in STATE:  # release the old totals first: the new ones take their place, not twice the memory
            self.__dict__.pop(name, None)
        k, d, options = self.num_classes, self.dim, {"dtype": self.dtype, "device": self.device}
        self.counts = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.seen = torch.zeros(k, dtype=torch.bool, device=self.device)
        self.shifts = torch.zeros(k, d, **options)
        self.shifted_sums = torch.zeros(k, d, **options)
        self.shifted_scatter = torch.zeros(d, d, **options)
        self.shifted_squares = torch.zeros(k, **options)
        self.ncc_mismatches = torch.zeros((), dtype=torch.int64, device=self.device)
        self.ncc_total = torch.zeros((), dtype=torch.int64, device=self.device)
        self.ncc_reduced = torch.zeros(2, dtype=torch.int64, device=self.device)  # (mismatches, total) all-reduced
        self.synced = False
        self._edges = gram_edges(d)

    def _scatter(self) -> torch.Tensor:
        """The full symmetric T from its valid lower triangle."""
        lower = torch.tril(self.shifted_scatter)
        return lower + torch.tril(self.shifted_scatter, diagonal=-1).T

    def metadata(self) -> dict[str, object]:
        """What a state means beyond its numbers: K, D, dtype, ``global_mean``, ``rcond`` and whether it is
        synced (see :meth:`sync`)."""
        return {
            "num_classes": self.num_classes,
            "dim": self.dim,
            "dtype": str(self.dtype).removeprefix("torch."),
            "global_mean": self.global_mean,
            "rcond": self.rcond,
            "synced": self.synced,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every running total and the :meth:`metadata`, all as tensors (strings as UTF-8 bytes), so that
        ``safetensors.torch.save_file(acc.state_dict(), path)`` stores it whole and ``load_file`` reads it back."""
        state = {name: getattr(self, name).clone() for name in STATE}
        state["shifted_scatter"] = self._scatter()
        meta = self.metadata()
        state.update(
            num_classes=torch.tensor(self.num_classes, dtype=torch.int64),
            dim=torch.tensor(self.dim, dtype=torch.int64),
            dtype=_text_tensor(meta["dtype"]),
            global_mean=_text_tensor(self.global_mean),
            rcond=torch.tensor(self.rcond, dtype=torch.float64),
            synced=torch.tensor(self.synced),
        )
        return state

    def _refuse_mismatch(self, other: dict[str, object], action: str) -> None:
        """One line naming the first field of ``other``'s metadata that differs from this accumulator's."""
        ours = self.metadata()
        for name in ("num_classes", "dim", "dtype", "global_mean", "rcond"):
            if other[name] != ours[name] and not (name == "dtype" and self._open_dtype):
                fix = f"torch.{other[name]}" if name == "dtype" else repr(other[name])
                raise InvalidArgumentError(
                    f"cannot {action}: its {name} is {other[name]!r}, this accumulator's is {ours[name]!r}; "
                    f"build the accumulator with {name}={fix}"
                )

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state from :meth:`state_dict` (e.g. to resume a half-finished pass); a state of another K, D,
        dtype, ``global_mean`` or ``rcond`` is refused, naming the field."""
        missing = [name for name in (*STATE, *METADATA) if name not in state]
        if missing:
            raise InvalidArgumentError(
                f"collapse state lacks {', '.join(missing)}: it is not a CollapseAccumulator.state_dict() of this version"
            )
        meta = {
            "num_classes": int(state["num_classes"]),
            "dim": int(state["dim"]),
            "dtype": _tensor_text(state["dtype"]),
            "global_mean": _tensor_text(state["global_mean"]),
            "rcond": float(state["rcond"]),
        }
        self._refuse_mismatch(meta, "load this collapse state")
        self._adopt(state["shifts"])
        for name in STATE:
            current = getattr(self, name)
            value = state[name]
            if value.shape != current.shape or value.dtype != current.dtype:
                raise InvalidArgumentError(
                    f"collapse state {name!r} has shape {tuple(value.shape)} and dtype {value.dtype}, expected "
                    f"{tuple(current.shape)} and {current.dtype}"
                )
            setattr(self, name, value.to(device=current.device).clone())
        self.synced = bool(state["synced"])

    # ---------------------------------------------------------------- update
    def _check(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_feature_batch(features, labels, self.num_classes, self.dim)
        self._adopt(features)
        labels = labels.to(device=self.device, dtype=torch.int64)
        return features.to(device=self.device, dtype=self.dtype), labels

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of features (B, D) with their labels (B,) (any floating dtype and device: each row chunk
        is cast on the way, so a batch is never copied whole)."""
        self._refuse_synced("update")
        check_feature_batch(features, labels, self.num_classes, self.dim)
        self._adopt(features)
        labels = labels.to(device=self.device, dtype=torch.int64)
        if not len(labels):
            return
        batch_counts = torch.bincount(labels, minlength=self.num_classes)
        new = (batch_counts > 0) & ~self.seen
        if bool(new.any()):  # first sight of a class: its shift is this batch's class mean, summed chunk by chunk
            self.shifts[new] = 0
            for rows in batch_chunks(len(labels), self.dim):
                chunk_labels = labels[rows]
                fresh = new[chunk_labels]
                chunk = features[rows].to(device=self.device, dtype=self.dtype)
                self.shifts.index_add_(0, chunk_labels[fresh], chunk[fresh])
            self.shifts /= torch.where(new, batch_counts, 1)[:, None].to(self.dtype)  # in place, x/1 = x elsewhere
            self.seen |= new
        add_shifted_batch(
            features, labels, self.shifts, self.shifted_sums, self.shifted_squares, self.shifted_scatter, self._edges
        )
        self.counts += batch_counts

    @torch.no_grad()
    def ncc_update(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> None:
        """NC4's pass: count samples whose classifier decision differs from the nearest class mean.

        Needs the final class means, so it runs after the :meth:`update` pass (a second, cheap pass).
        """
        features, labels = self._check(features, labels)
        weight, bias = self._classifier(weight, bias)
        decisions = features @ weight.T + (bias if bias is not None else 0.0)
        self.ncc_mismatches += int((decisions.argmax(dim=1) != self.nearest_class_mean(features)).sum())
        self.ncc_total += len(labels)

    @torch.no_grad()
    def nearest_class_mean(self, features: torch.Tensor) -> torch.Tensor:
        """argmin_c ‖h − μ_c‖ over the classes seen so far: the nearest-class-centre (NCC) classifier."""
        features = check_finite("features", features).to(device=self.device, dtype=self.dtype)
        distances = torch.cdist(features, self._means())
        distances[:, self.counts == 0] = math.inf
        return distances.argmin(dim=1)

    # ----------------------------------------------------------------- merge
    @torch.no_grad()
    def _reshift(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, T, q) of this state expressed around the shifts ``target`` instead of its own (exact algebra):
        with δ_c = s_c − t_c: u' = u + n δ, q' = q + 2⟨u, δ⟩ + n‖δ‖²,
        T' = T + Σ_c (u_c δ_cᵀ + δ_c u_cᵀ + n_c δ_c δ_cᵀ)."""
        delta = torch.where(self.seen[:, None], self.shifts - target, torch.zeros_like(target))
        n = self.counts.to(self.dtype)
        cross = self.shifted_sums.T @ delta
        scatter = self._scatter() + cross + cross.T + (delta * n[:, None]).T @ delta
        sums = self.shifted_sums + n[:, None] * delta
        squares = self.shifted_squares + 2 * (self.shifted_sums * delta).sum(dim=1) + n * delta.square().sum(dim=1)
        return sums, scatter, squares

    def _refuse_synced(self, action: str) -> None:
        if self.synced:
            raise InvalidArgumentError(
                f"cannot {action} a synced accumulator: it holds every rank's data already, and one rank's "
                "additions would be counted once where the others' are not; add data to the ranks' local "
                "accumulators before sync(), or reset() this one"
            )

    @torch.no_grad()
    def merge(self, other: CollapseAccumulator) -> None:
        """Fold another accumulator (a shard of the same data) into this one; the result equals one pass over both.

        Both must have the same K, D, dtype, ``global_mean`` and ``rcond`` (a difference is refused, naming the
        field; an accumulator whose dtype is still open takes the other's), and neither may be synced."""
        self._refuse_synced("merge into")
        other._refuse_synced("merge")
        theirs = other.metadata()
        if other._open_dtype:  # nothing seen yet: any dtype will do
            theirs["dtype"] = self.metadata()["dtype"]
        self._refuse_mismatch(theirs, "merge the other accumulator")
        if not other._open_dtype:
            self._adopt(other.shifts)
        other_view = _on(other, self.device)
        adopt = other_view.seen & ~self.seen
        self.shifts[adopt] = other_view.shifts[adopt]
        self.seen |= other_view.seen
        sums, scatter, squares = other_view._reshift(self.shifts)
        self.shifted_sums += sums
        self.shifted_scatter += scatter
        self.shifted_squares += squares
        self.counts += other_view.counts
        self.ncc_mismatches += other_view.ncc_mismatches
        self.ncc_total += other_view.ncc_total

    @torch.no_grad()
    def sync(self, group: object | None = None) -> None:
        """All-reduce the state across a ``torch.distributed`` process group (gloo on CPU works), in place.

        Every rank re-centres its state on common shifts (the global class means, from an all-reduce of counts
        and sums), then the running totals are summed: afterwards every rank holds the state of one pass over
        all ranks' data, marked synced (``synced`` in :meth:`metadata` and the state dict).

        Idempotent: syncing a synced state leaves its class statistics as they are (a second all-reduce would
        count every sample world-size times). A synced accumulator refuses :meth:`update` and :meth:`merge`;
        :meth:`ncc_update` — NC4's second pass, which needs the global class means — is allowed, and only the
        NCC counts added since the last sync are summed by the next one. Every rank must call sync() alike.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InvalidArgumentError("sync() needs torch.distributed to be initialized (init_process_group)")
        pending = torch.stack([self.ncc_mismatches, self.ncc_total]) - self.ncc_reduced
        dist.all_reduce(pending, group=group)
        self.ncc_reduced += pending
        self.ncc_mismatches, self.ncc_total = self.ncc_reduced[0].clone(), self.ncc_reduced[1].clone()
        if self.synced:
            return
        n = self.counts.to(self.dtype)
        totals = torch.cat([n[:, None], self.shifts * n[:, None] + self.shifted_sums], dim=1)
        dist.all_reduce(totals, group=group)
        global_counts = totals[:, 0]
        common = torch.where(
            global_counts[:, None] > 0,
            totals[:, 1:] / global_counts.clamp(min=1)[:, None],
            torch.zeros_like(self.shifts),
        )
        sums, scatter, squares = self._reshift(common)
        for tensor in (sums, scatter, squares, self.counts):
            dist.all_reduce(tensor, group=group)
        self.shifts, self.shifted_sums, self.shifted_scatter, self.shifted_squares = (
            common,
            sums,
            scatter,
            squares,
        )
        self.seen = self.counts > 0
        self.synced = True

    # --------------------------------------------------------------- compute
    def _means(self) -> torch.Tensor:
        n = self.counts.clamp(min=1).to(self.dtype)
        return self.shifts + self.shifted_sums / n[:, None]

    def _classifier(self, weight: torch.Tensor | None, bias: torch.Tensor | None):
        if weight is None:
            return None, None
        weight = check_finite("weight", weight.detach()).to(device=self.device, dtype=self.dtype)
        if weight.shape != (self.num_classes, self.dim):
            raise InvalidArgumentError(
                f"weight must have shape ({self.num_classes}, {self.dim}) (one row per class), "
                f"got {tuple(weight.shape)}"
            )
        if bias is not None:
            bias = check_finite("bias", bias.detach()).to(device=self.device, dtype=self.dtype)
            if bias.shape != (self.num_classes,):
                raise InvalidArgumentError(f"bias must have shape ({self.num_classes},), got {tuple(bias.shape)}")
        return weight, bias

    def _pseudo_inverse_factor(self, strip, edges: list[int], gram: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """A (D × r), in the accumulator's dtype, with AAᵀ = Σ_j u_j u_jᵀ/s_j² over the singular triplets of
        M̃ = U S Vᵀ with s_j > rcond·s_max, so that Σ_B^† = K·AAᵀ. ``strip(start, stop)`` gives M̃ᵀ's columns
        start:stop in float64, for the strips ``edges``; ``null`` spans M̃'s structural null space (the centring:
        M̃·null = 0). ``gram`` = G = M̃ᵀM̃ is overwritten (it becomes a Cholesky factor).

        Fast path (k − 1 ≤ D): with e = null/‖null‖, G' = G + (tr G/k)·eeᵀ is positive definite when M̃ has full
        rank k − 1, and A = M̃G'⁻¹ (one Cholesky factorization in place of G, one solve per strip) satisfies
        AAᵀ = M̃(G^†)²M̃ᵀ = U S⁻² Uᵀ. ‖A‖²_F = tr G^† = Σ 1/s_j², so tr G·‖A‖²_F bounds the condition number
        κ(G) = (s_max/s_min)² from above at no cost; the path is taken only when that bound is ≤ 1e8 (the solve then
        loses ≤ ~1e−8 relative, and every s_j ≥ 1e−4·s_max, so the SVD would keep the same triplets). Memory: G's
        k×k, A, and one strip's k × width temporaries. Otherwise — K > D + 1, a near-degenerate M̃, or
        rcond > 1e−4 — the SVD of M̃ itself, which resolves singular values down to ~1e−16·s_max; it forms M̃ whole
        (k × D float64) and its U (D × k float64), the one path whose memory grows with 2·8·k·D bytes."""
        k = gram.shape[0]
        if k - 1 <= self.dim and self.rcond <= 1e-4:
            e = null / null.norm()
            trace = float(gram.diagonal().sum())
            factor = gram.addr_(e, e, alpha=trace / k)  # G', then its Cholesky factor, in G's storage
            _, info = torch.linalg.cholesky_ex(
                factor, out=(factor, torch.empty((), dtype=torch.int32, device=factor.device))
            )
            if int(info) == 0 and trace > 0:
                scaled = torch.empty(self.dim, k, dtype=self.dtype, device=self.device)
                squares = 0.0
                for start, stop in itertools.pairwise(edges):  # G'⁻¹M̃ᵀ by two triangular solves (cholesky_solve
                    # would copy the factor on every call); the rows of its transpose M̃G'⁻¹ are A's
                    half = torch.linalg.solve_triangular(factor, strip(start, stop), upper=False)
                    solved = torch.linalg.solve_triangular(factor.T, half, upper=True).T
                    squares += float(solved.square().sum())
                    scaled[start:stop] = solved
                if trace * squares <= 1e8:
                    return scaled
                del scaled
        centred = torch.cat([strip(start, stop) for start, stop in itertools.pairwise(edges)], dim=1)
        u, s, _ = torch.linalg.svd(centred.T, full_matrices=False)  # M̃ = U S Vᵀ
        keep = s > self.rcond * s.max() if s.numel() and float(s.max()) > 0 else torch.zeros_like(s, dtype=torch.bool)
        return (u[:, keep] / s[keep]).to(self.dtype)

    @torch.no_grad()
    def compute(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> CollapseReport:
        """The :class:`CollapseReport` of everything seen (``weight``/``bias``: the classifier after this layer).

        Memory: see the class docstring. The K×D quantities (offsets O, centred means M̃ᵀ, the classifier's rows)
        are formed in float64 a strip of ≤ ``COMPUTE_STRIP`` columns at a time; NC2 and the CDNV are read off the
        Gram matrix first, then NC1 consumes it (its Cholesky factor takes its place)."""
        weight, bias = self._classifier(weight, bias)
        present = self.counts > 0
        k = int(present.sum())
        if k < 2:
            raise InvalidArgumentError(
                f"neural collapse needs samples of at least two classes; got samples of {k} (counts "
                f"{self.counts.tolist()[:20]}{'…' if self.num_classes > 20 else ''})"
            )
        f64 = torch.float64
        chosen = None if k == self.num_classes else present  # the rows of the present classes, or all of them

        def rows(vector: torch.Tensor) -> torch.Tensor:
            return (vector if chosen is None else vector[chosen]).to(f64)

        counts = rows(self.counts)
        total = float(counts.sum())
        centre_weights = torch.ones_like(counts) if self.global_mean == "unweighted" else counts
        fine = refined_edges(self._edges, COMPUTE_STRIP)  # compute's strips: T's blocks, cut narrower

        # compute forms its K×D quantities a strip of columns at a time, never whole (float64, k × width, afresh)
        def offsets(start: int, stop: int) -> torch.Tensor:
            """Columns start:stop of O, whose rows are the present classes' d_c = u_c/n_c."""
            return _present_strip(self.shifted_sums, chosen, start, stop).div_(counts[:, None])

        def centred(start: int, stop: int, offsets: torch.Tensor) -> torch.Tensor:
            """The same columns of M̃ᵀ (rows μ_c − μ_G; μ_G is a per-column mean) from O's."""
            means = _present_strip(self.shifts, chosen, start, stop).add_(offsets)
            return means.sub_((centre_weights @ means) / centre_weights.sum())

        gram = torch.zeros(k, k, dtype=f64, device=self.device)  # M̃ᵀM̃ (k × k), strip by strip
        offset_squares = torch.zeros(k, dtype=f64, device=self.device)  # ‖d_c‖²
        for start, stop in itertools.pairwise(fine):
            part = offsets(start, stop)
            offset_squares += part.square().sum(dim=1)
            part = centred(start, stop, part)
            gram.addmm_(part, part.T)
        del part
        diagonal = self.shifted_scatter.diagonal()  # T's diagonal; S_W = T − Oᵀ diag(n) O is never formed
        variances = ((rows(self.shifted_squares) - counts * offset_squares) / counts).clamp(min=0)
        within_trace = (float(diagonal.sum(dtype=f64)) - float((counts * offset_squares).sum())) / total
        squared_norms = gram.diagonal().clone()
        norms = squared_norms.sqrt()
        sigma_b_trace = float(squared_norms.sum()) / k

        # NC2 and the CDNV from G, at most two k×k temporaries at a time (then G goes to NC1)
        cosines = torch.outer(norms, norms).clamp_(min=1e-300)
        torch.div(gram, cosines, out=cosines)
        off = _off_diagonal(cosines)
        report = {"equiangularity": float(off.std()), "max_angle": float(off.add_(1.0 / (k - 1)).abs_().mean())}
        del cosines, off
        distances = torch.add(squared_norms[:, None], squared_norms[None, :]).sub_(gram, alpha=2).clamp_(min=0)
        pairs = torch.add(variances[:, None], variances[None, :]).div_(2).div_(distances)  # (σ²_a + σ²_b)/2‖μ_a − μ_b‖²
        report["cdnv"] = float(_off_diagonal(pairs).mean())
        del distances, pairs
        etf = torch.full((k, k), -1.0 / k, dtype=f64, device=gram.device)
        etf.diagonal().add_(1.0)
        etf /= math.sqrt(k - 1)  # (I − 11ᵀ/K)/√(K − 1)
        report["etf_distance"] = float((gram / gram.norm()).sub_(etf).norm())
        equinorm_w = self_duality = self_duality_wh = None
        if weight is not None:
            classifier_norms = torch.zeros(k, dtype=f64, device=self.device)
            for start, stop in itertools.pairwise(fine):
                classifier_norms += _present_strip(weight, chosen, start, stop).square().sum(dim=1)
            scale, centred_scale = float(classifier_norms.sum()) ** 0.5, float(squared_norms.sum()) ** 0.5
            classifier_norms.sqrt_()
            equinorm_w = float(classifier_norms.std() / classifier_norms.mean())
            self_duality, product = 0.0, torch.zeros(k, k, dtype=f64, device=self.device)  # (W M̃), present classes
            for start, stop in itertools.pairwise(fine):
                classifier, part = (
                    _present_strip(weight, chosen, start, stop),
                    centred(start, stop, offsets(start, stop)),
                )
                self_duality += float((classifier / scale - part / centred_scale).square().sum())
                product.addmm_(classifier, part.T)
            self_duality_wh = float((product / product.norm()).sub_(etf).norm())
            del product
        del etf

        # NC1 = tr(Σ_W Σ_B^†)/K = tr(Aᵀ S_W A)/N = (tr(AᵀTA) − ‖diag(√n)·O·A‖²_F)/N, A from G (consumed)
        scaled = self._pseudo_inverse_factor(lambda a, b: centred(a, b, offsets(a, b)), fine, gram, centre_weights)
        del gram
        # T is valid on its lower block triangle (add_lower_gram's strips): tr(AᵀTA) = Σ_{i≥j} (2 − [i = j])
        # tr(A_iᵀ T_ij A_j) over its blocks, read from views of T (never copied or mirrored). The products run in the
        # accumulator's dtype (T and A carry that precision already; float32 halves the D×D×K product's time)
        blocks = list(itertools.pairwise(self._edges))
        within = torch.zeros((), dtype=f64, device=scaled.device)
        for i, (start, stop) in enumerate(blocks):
            for begin, end in blocks[: i + 1]:
                tile = (self.shifted_scatter[start:stop, begin:end] @ scaled[begin:end]).mul_(scaled[start:stop])
                within += (1 if begin == start else 2) * tile.sum(dtype=f64)
        product = torch.zeros(k, scaled.shape[1], dtype=f64, device=scaled.device)  # O·A, strip by strip
        for start, stop in itertools.pairwise(fine):
            product.addmm_(offsets(start, stop), scaled[start:stop].to(f64))
        correction = product.mul_(counts.sqrt()[:, None]).square_().sum()  # ‖diag(√n)·O·A‖²_F
        del product
        report["nc1"] = float(within - correction) / total if scaled.shape[1] else math.inf
        del scaled

        report.update(
            nc1_trace=within_trace / sigma_b_trace if sigma_b_trace > 0 else math.inf,
            equinorm=float(norms.std() / norms.mean()),
            etf_floor=math.sqrt(max(0.0, 2 - 2 * math.sqrt(self.dim / (k - 1)))) if k - 1 > self.dim else 0.0,
        )
        ncc = float(self.ncc_mismatches) / float(self.ncc_total) if int(self.ncc_total) > 0 else None
        return CollapseReport(
            num_samples=int(total),
            num_classes=k,
            dim=self.dim,
            **report,
            equinorm_w=equinorm_w,
            self_duality=self_duality,
            self_duality_wh=self_duality_wh,
            ncc_mismatch=ncc,
            class_counts=self.counts.tolist(),
            class_mean_norms=_per_class(norms, present),
            class_variances=_per_class(variances, present),
            missing_classes=torch.nonzero(~present).flatten().tolist(),
            singleton_classes=torch.nonzero(self.counts == 1).flatten().tolist(),
            conventions={
                "global_mean": self.global_mean,
                "sigma_w": "S_W / N",
                "sigma_b": "Σ (μ_c−μ_G)(μ_c−μ_G)ᵀ / K",
                "pseudo_inverse": f"SVD of M̃ (a Cholesky solve when κ ≤ 1e4), singular values > {self.rcond:g}·max",
            },
        )


def check_feature_batch(features: torch.Tensor, labels: torch.Tensor, num_classes: int, dim: int) -> None:
    """The checks of every collapse update: finite float features of shape (B, D), integer labels in 0..K−1."""
    check_features_labels(features, labels, names=("features", "labels"), num_classes=num_classes, allow_empty=True)
    if features.ndim != 2 or features.shape[1] != dim:
        raise InvalidArgumentError(
            f"features must have shape (B, {dim}), got {tuple(features.shape)}; flatten or pool first"
        )


def gram_edges(dim: int) -> list[int]:
    """The column strips of :func:`add_lower_gram`: 4 from D = 256 on, else 1."""
    blocks = 4 if dim >= 256 else 1
    return [round(i * dim / blocks) for i in range(blocks + 1)]


def refined_edges(edges: list[int], width: int) -> list[int]:
    """``edges`` with every strip split evenly into strips of at most ``width`` columns. A block (a, b) with a ≥ b
    of the refined partition lies in a block (i, j) with i ≥ j of the original one: inside T's valid region."""
    refined = [0]
    for start, stop in itertools.pairwise(edges):
        pieces = -(-(stop - start) // width)
        refined += [start + round(i * (stop - start) / pieces) for i in range(1, pieces + 1)]
    return refined


def batch_chunks(size: int, dim: int) -> list[slice]:
    """The row chunks an update is made of: max(256, ⌈D/4⌉) rows each, so that a chunk's (rows × D) temporaries
    take at most max(256·D, D²/4 + D) entries — a quarter of T's D² from D = 1 024 on — whatever the batch size."""
    rows = max(256, -(-dim // 4))
    return [slice(start, start + rows) for start in range(0, size, rows)]


def add_lower_gram(scatter: torch.Tensor, centred: torch.Tensor, edges: list[int]) -> None:
    """scatter += CᵀC on the lower block triangle only (the symmetric rank-k update PyTorch lacks): with the
    columns of C in strips (``edges``), strip j adds the rows from its own start down against its columns in one
    GEMM — 10/16 of the full product's work for 4 strips. Column strips (rather than row strips) keep one inner
    and one output width for every GEMM, so MKL's buffer cache holds one size: measured 3.5 MB of it retained
    against 18.7 MB for row strips (D = 4 096, B = 1 024, float32). Only the lower triangle of ``scatter`` is valid
    afterwards."""
    for start, stop in itertools.pairwise(edges):
        scatter[start:, start:stop].addmm_(centred[:, start:].T, centred[:, start:stop])


def add_shifted_batch(
    features: torch.Tensor,
    labels: torch.Tensor,
    shifts: torch.Tensor,
    shifted_sums: torch.Tensor,
    shifted_squares: torch.Tensor,
    shifted_scatter: torch.Tensor,
    edges: list[int],
) -> None:
    """The additive part of an update around fixed per-class shifts s_c, in place: u_c += Σ_{i∈c} (h_i − s_c),
    q_c += Σ_{i∈c} ‖h_i − s_c‖², T += Σ_i (h_i − s_{y_i})(h_i − s_{y_i})ᵀ (lower block triangle, see
    :func:`add_lower_gram`), in the row chunks of :func:`batch_chunks` (one chunk of h − s at a time, plus a cast
    copy of the chunk where the features' dtype or device is not the totals'). ``features`` and ``labels`` must be
    checked; ``labels`` on the totals' device, int64."""
    for rows in batch_chunks(len(labels), shifts.shape[1]):
        chunk_labels = labels[rows]
        centred = shifts.index_select(0, chunk_labels)
        torch.sub(features[rows].to(device=shifts.device, dtype=shifts.dtype), centred, out=centred)  # exact (Sterbenz)
        shifted_sums.index_add_(0, chunk_labels, centred)
        shifted_squares.index_add_(0, chunk_labels, torch.linalg.vector_norm(centred, dim=1).square())
        add_lower_gram(shifted_scatter, centred, edges)


def _present_strip(tensor: torch.Tensor, present: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """Columns start:stop of the rows ``present`` (None: all rows) of a (K, D) tensor, as a new float64 tensor."""
    chosen = tensor[:, start:stop] if present is None else tensor[present, start:stop]
    return chosen.to(torch.float64, copy=present is None)


def _per_class(values: torch.Tensor, present: torch.Tensor) -> list[float]:
    """The present classes' ``values`` spread over all K classes, NaN for a class without samples."""
    full = torch.full(present.shape, math.nan, dtype=torch.float64, device=values.device)
    full[present] = values.to(torch.float64)
    return full.tolist()


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The k(k − 1) off-diagonal entries of a k×k matrix as a (k − 1, k) view (no boolean mask)."""
    k = matrix.shape[0]
    return matrix.flatten()[1:].view(k - 1, k + 1)[:, :-1]


def _on(accumulator: CollapseAccumulator, device: torch.device) -> CollapseAccumulator:
    """``accumulator`` itself, or a copy of its state on another device."""
    if accumulator.device == device:
        return accumulator
    copy = CollapseAccumulator(
        accumulator.num_classes,
        accumulator.dim,
        dtype=accumulator.dtype,
        device=device,
        global_mean=accumulator.global_mean,
        rcond=accumulator.rcond,
    )
    copy.load_state_dict(accumulator.state_dict())
    return copy
