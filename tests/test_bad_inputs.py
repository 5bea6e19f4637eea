"""Every bad input, as two tables (issue 14, part 7).

CLI rows: the ``implicit-bias`` command answers with exit code 2, exactly one line ``error: …`` on stderr naming
what was wrong, and no traceback (usage errors too — an unknown option, a value of the wrong type — end with a
pointer to the command's --help). Rows refused before training also leave their ``--run-dir`` / ``--out``
unwritten. Two rows run the real console process to prove the exit code a shell sees.

API rows: the call raises one :mod:`implicit_bias.errors` type whose message names the argument.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

import implicit_bias
from implicit_bias import errors
from implicit_bias.cli import app
from implicit_bias.data import Dataset, load, read_idx
from implicit_bias.dynamics import make_optimizer
from implicit_bias.experiments import reproduce
from implicit_bias.losses import inverse_loss, log_loss
from implicit_bias.metrics import (
    CollapseAccumulator,
    collapse_by_layer,
    effective_rank,
    empirical_rates,
    feature_spectra,
    hard_margin_svm,
    homogeneity_degree,
    kkt_residual,
    margins,
    normalized_margin,
    numerical_rank,
    singular_values,
    smoothed_margin,
)
from implicit_bias.models import build
from implicit_bias.symmetry import check_rates, infer_rates
from implicit_bias.train import TrainConfig, fit, load_checkpoint, make_probe, resume_run, run
from implicit_bias.train.history import History


# ------------------------------------------------------------------------------------------- the bad files
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (LeCun's MNIST format): magic 0 0 type ndim, big-endian int32 sizes, big-endian data."""
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
    """The four MNIST files, 4 train and 4 test 2×2 images; ``images`` / ``labels`` replace the training ones."""
    folder.mkdir(parents=True)
    good_images = np.arange(16, dtype=np.uint8).reshape(4, 2, 2)
    good_labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    files = {
        "train-images-idx3-ubyte": idx_bytes(good_images if images is None else images),
        "train-labels-idx1-ubyte": idx_bytes(good_labels if labels is None else labels),
        "t10k-images-idx3-ubyte": idx_bytes(good_images),
        "t10k-labels-idx1-ubyte": idx_bytes(good_labels),
    }
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return folder


def write_cifar(folder: Path, first_batch: bytes) -> Path:
    """The six CIFAR-10 python batches; ``data_batch_1`` (read first) is ``first_batch``."""
    folder.mkdir(parents=True)
    good = pickle.dumps({b"data": np.zeros((1, 3072), dtype=np.uint8), b"labels": [0]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_1").write_bytes(first_batch)
    return folder


TINY = {"dataset": "linear-separable", "log_points": 2, "probes": [], "steps": 2}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Every bad file the rows point at, written once."""
    root = tmp_path_factory.mktemp("bad")
    for name, text in {
        "malformed.yaml": "steps: [1, 2\n",
        "list.yaml": "- steps\n- 3\n",
        "empty.yaml": "",
        "wrong-type.yaml": "steps: many\n",
        "unknown-key.yaml": "stepz: 3\n",
    }.items():
        (root / name).write_text(text)
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81")
    (root / "plain").mkdir()

    run(TrainConfig(model="linear:bias=false", **TINY), root / "run-linear", progress=False)
    run(TrainConfig(model="mlp:width=4,bias=false", **TINY), root / "run-mlp", progress=False)
    checkpoint = "checkpoint.safetensors"
    for name in ("truncated", "not-safetensors", "other-model", "bad-metrics", "bad-config", "existing"):
        shutil.copytree(root / "run-linear", root / name)
    payload = (root / "run-linear" / checkpoint).read_bytes()
    (root / "truncated" / checkpoint).write_bytes(payload[: len(payload) // 2])
    (root / "not-safetensors" / checkpoint).write_text("a text file that claims to be a checkpoint\n")
    shutil.copy(root / "run-mlp" / checkpoint, root / "other-model" / checkpoint)
    (root / "bad-metrics" / "metrics.csv").write_text("step,log_loss\n0,not-a-number\n")
    (root / "bad-config" / "config.yaml").write_text("model: [\n")
    save_file({"weight": torch.zeros(2)}, root / "foreign.safetensors")  # valid safetensors, not ours

    X, y = toy()
    fit(linear(), (X, y), optimizer="gd", lr=0.1, steps=4, run_dir=root / "python-run", progress=False, log_points=2)

    images = np.arange(16, dtype=np.uint8).reshape(4, 2, 2)
    truncated = idx_bytes(images)[:-3]
    corrupt_gzip = bytearray(gzip.compress(idx_bytes(np.arange(1024, dtype=np.uint8).reshape(4, 16, 16))))
    corrupt_gzip[12:20] = b"\xff" * 8
    with_nan = images.astype(np.float64)
    with_nan[2, 1, 0] = np.nan
    write_mnist(root / "idx-magic")
    (root / "idx-magic" / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04 a zip file")
    write_mnist(root / "idx-truncated")
    (root / "idx-truncated" / "train-images-idx3-ubyte").write_bytes(truncated)
    write_mnist(root / "idx-gzip")
    (root / "idx-gzip" / "train-images-idx3-ubyte").unlink()
    (root / "idx-gzip" / "train-images-idx3-ubyte.gz").write_bytes(bytes(corrupt_gzip))
    write_mnist(root / "idx-count", labels=np.array([0, 1, 2], dtype=np.uint8))
    write_mnist(root / "idx-int-images", images=images.astype(np.int32))
    write_mnist(root / "idx-float-labels", labels=np.array([0.0, 1.5, 2.0, 3.0], dtype=np.float32))
    write_mnist(root / "idx-label-range", labels=np.array([0, 1, 12, 3], dtype=np.uint8))
    write_mnist(root / "idx-nan", images=with_nan)
    write_mnist(root / "idx-no-test")
    (root / "idx-no-test" / "t10k-labels-idx1-ubyte").unlink()

    write_cifar(root / "cifar-global", pickle.dumps(os.getcwd))  # a global outside the allowed few
    write_cifar(root / "cifar-list", pickle.dumps([1, 2, 3]))
    write_cifar(root / "cifar-shape", pickle.dumps({b"data": np.zeros((2, 10), dtype=np.uint8), b"labels": [0, 1]}))
    write_cifar(root / "cifar-truncated", pickle.dumps({b"data": np.zeros((1, 3072), dtype=np.uint8)})[:40])

    (root / "full-out" / "homogeneous-margin").mkdir(parents=True)
    (root / "full-out" / "homogeneous-margin" / "result.json").write_text("{}")

    def clone(name: str) -> Path:
        """A private copy of the workspace folder ``name`` (for rows that might write into it)."""
        copy = root / f"{name}-copy-{len(list(root.iterdir()))}"
        shutil.copytree(root / name, copy)
        return copy

    return SimpleNamespace(root=root, clone=clone)


# ----------------------------------------------------------------------------------------------- CLI table
NEW = "{new}"  # a fresh path for --run-dir / --out: a refusal must leave it unwritten
# fmt: off
TRAIN = ["train", "--no-progress", "--dataset", "linear-separable", "--model", "linear:bias=false", "--steps", "1",
         "--run-dir", NEW]  # the rows' later options override these
# fmt: on


def cli(id: str, *args: str, match: str, marks=()):
    return pytest.param("error", list(args), match, id=id, marks=marks)


def process(id: str, *args: str, match: str):
    return pytest.param("process", list(args), match, id=id)


# fmt: off
CLI_ROWS = [
    # config files
    cli("config-missing", "train", "--config", "{ws}/none.yaml", match=r"no such file: '.*none\.yaml'"),
    cli("config-is-a-folder", "train", "--config", "{ws}/plain", match=r"no such file: '.*plain'"),
    cli("config-malformed-yaml", "train", "--config", "{ws}/malformed.yaml", match=r"not valid YAML at line 2"),
    cli("config-not-text", "train", "--config", "{ws}/binary.yaml", match=r"binary\.yaml' is not a text file"),
    cli("config-is-a-list", "train", "--config", "{ws}/list.yaml", match=r"must hold a mapping .*got list"),
    cli("config-empty", "train", "--config", "{ws}/empty.yaml", match=r"must hold a mapping .*got NoneType"),
    cli("config-wrong-type", "train", "--config", "{ws}/wrong-type.yaml", match=r"steps must be int, got str 'many'"),
    cli("config-unknown-key", "train", "--config", "{ws}/unknown-key.yaml", match=r"option\(s\) 'stepz'; allowed"),
    # unknown names and options
    cli("unknown-dataset", *TRAIN, "--dataset", "imagenet", match=r"unknown dataset 'imagenet'"),
    cli("unknown-model", *TRAIN, "--model", "transformer", match=r"unknown model 'transformer'"),
    cli("unknown-loss", *TRAIN, "--loss", "hinge", match=r"unknown loss 'hinge'; expected one of"),
    cli("unknown-optimizer", *TRAIN, "--optimizer", "lbfgs", match=r"unknown optimizer 'lbfgs'"),
    cli("unknown-probe", *TRAIN, "--probe", "accuracy", match=r"unknown probe 'accuracy'"),
    cli("unknown-model-option", *TRAIN, "--model", "linear:biass=false",
        match=r"unknown model 'linear' option\(s\) 'biass'; allowed: bias"),
    cli("unknown-optimizer-option", *TRAIN, "-o", "momentum=0.9",
        match=r"unknown optimizer 'gd' option\(s\) 'momentum'; allowed: weight_decay"),
    cli("unknown-data-option", *TRAIN, "-d", "dims=3", match=r"unknown dataset 'linear-separable' option\(s\) 'dims'"),
    cli("option-without-equals", *TRAIN, "-o", "momentum",
        match=r"--optimizer-option 'momentum' must look like key=value"),
    cli("model-spec-without-equals", *TRAIN, "--model", "mlp:depth",
        match=r"model spec 'mlp:depth': model option 'depth' must look like key=value"),
    # wrong values and types
    cli("data-option-wrong-type", *TRAIN, "-d", "dim=three", match=r"dim must be int, got str"),
    cli("model-option-wrong-type", *TRAIN, "--model", "mlp:width=wide", match=r"width must be int, got str 'wide'"),
    cli("model-bool-typo", *TRAIN, "--model", "mlp:bias=flase,width=4", match=r"bias"),
    cli("negative-steps", *TRAIN, "--steps", "-1", match=r"steps must be >= 0, got -1"),
    cli("zero-lr", *TRAIN, "--lr", "0", match=r"lr must be > 0.0, got 0.0"),
    cli("negative-lr", *TRAIN, "--lr", "-0.5", match=r"lr must be > 0\.0, got -0\.5"),
    cli("zero-batch-size", *TRAIN, "--batch-size", "0", match=r"batch_size must be >= 1, got 0"),
    cli("empty-data", *TRAIN, "-d", "n=0", match=r"\bn must be >= \d+, got 0"),
    cli("one-class", *TRAIN, "--dataset", "gaussians", "-d", "classes=[1]",
        match=r"classes must list at least two distinct labels, got \[1\]"),
    cli("class-out-of-range", *TRAIN, "--dataset", "gaussians", "-d", "classes=[0,7]",
        match=r"classes \[7\] do not exist in dataset 'gaussians'"),
    cli("dtype-unknown", *TRAIN, "--dtype", "float33", match=r"dtype must be .* got 'float33'"),
    cli("dtype-integer", *TRAIN, "--dtype", "int64", match=r"dtype must be .* got 'int64'"),
    cli("dtype-half", *TRAIN, "--dtype", "float16", match=r"^error: (?!probe).*float16"),
    cli("device-unknown", *TRAIN, "--device", "tpu", match=r"device must be 'cpu', .* got 'tpu'"),
    cli("device-cuda-absent", *TRAIN, "--device", "cuda", match=r"device 'cuda' .* no CUDA GPU",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    # data files
    cli("data-folder-missing", *TRAIN, "--dataset", "mnist", "-d", "path={ws}/none",
        match=r"mnist: folder '.*none' does not exist"),
    cli("data-file-missing", *TRAIN, "--dataset", "mnist", "-d", "path={ws}/idx-no-test",
        match=r"no file 't10k-labels-idx1-ubyte' \(or t10k-labels-idx1-ubyte\.gz\)"),
    cli("data-nan", *TRAIN, "--dataset", "mnist", "-d", "path={ws}/idx-nan",
        match=r"dataset 'mnist': X holds NaN at index \(2, 0, 1, 0\)"),
    cli("data-label-out-of-range", *TRAIN, "--dataset", "mnist", "-d", "path={ws}/idx-label-range",
        match=r"labels of dataset 'mnist' must lie in 0\.\.9, got 0\.\.12"),
    cli("data-not-idx", *TRAIN, "--dataset", "mnist", "-d", "path={ws}/idx-magic",
        match=r"is not an IDX file \(bad magic number 504b0304\)"),
    # run folders and checkpoints
    cli("train-into-existing-run", *TRAIN, "--run-dir", "{ws}/existing", match=r"existing' already holds a run"),
    cli("resume-missing-folder", "resume", "{ws}/none", "--no-progress", match=r"no such file: '.*none/config\.yaml'"),
    cli("resume-not-a-run", "resume", "{ws}/plain", "--no-progress", match=r"no such file: '.*plain/config\.yaml'"),
    cli("resume-bad-config", "resume", "{ws}/bad-config", "--no-progress", match=r"config\.yaml' is not valid YAML"),
    cli("resume-truncated-checkpoint", "resume", "{ws}/truncated", "--no-progress",
        match=r"checkpoint\.safetensors' is not a readable implicit-bias checkpoint"),
    cli("resume-text-checkpoint", "resume", "{ws}/not-safetensors", "--no-progress",
        match=r"checkpoint\.safetensors' is not a readable implicit-bias checkpoint"),
    cli("resume-other-models-checkpoint", "resume", "{ws}/other-model", "--no-progress",
        match=r"checkpoint .*model"),
    cli("show-not-a-run", "show", "{ws}/plain", match=r"plain' is not a run directory: it holds no metrics\.csv"),
    cli("show-bad-metrics", "show", "{ws}/bad-metrics", match=r"metrics\.csv' is not a readable metrics table"),
    # rates and reproduce
    cli("rates-unknown-model", "rates", "transformer", "--data", "gaussians", match=r"unknown model 'transformer'"),
    cli("rates-unknown-mode", "rates", "mlp:width=4", "--mode", "test", match=r"unknown mode 'test'"),
    cli("rates-unknown-choice", "rates", "mlp:width=4", "--data", "gaussians", "--choice", "bogus",
        match=r"choice must be one of \['uniform', 'last-layer'\] .* got 'bogus'"),
    cli("rates-unknown-data", "rates", "mlp:width=4", "--data", "imagenet", match=r"unknown dataset 'imagenet'"),
    cli("reproduce-unknown", "reproduce", "nonexistent", "--out", NEW, match=r"unknown experiment 'nonexistent'"),
    cli("reproduce-nothing", "reproduce", match=r"give either an experiment NAME or --all"),
    cli("reproduce-name-and-all", "reproduce", "lyu-li-2020", "--all", match=r"give either an experiment NAME or"),
    cli("reproduce-set-with-all", "reproduce", "--all", "--set", "steps=3", "--out", NEW,
        match=r"--set applies to one experiment; it cannot be combined with --all"),
    cli("reproduce-set-unknown-key", "reproduce", "homogeneous-margin", "--quick", "--set", "stepz=3", "--out", NEW,
        match=r"unknown experiment 'homogeneous-margin' option\(s\) 'stepz'"),
    cli("reproduce-set-wrong-type", "reproduce", "homogeneous-margin", "--quick", "--set", "steps=many", "--out", NEW,
        match=r"experiment 'homogeneous-margin' option steps must be int, got str 'many'; allowed: .*steps: int"),
    cli("reproduce-set-without-equals", "reproduce", "homogeneous-margin", "--set", "steps", "--out", NEW,
        match=r"--set 'steps' must look like key=value"),
    cli("reproduce-into-full-folder", "reproduce", "homogeneous-margin", "--quick", "--out", "{ws}/full-out",
        match=r"homogeneous-margin' is not empty .*pass --force .* or choose a new output folder \(--out\)"),
    pytest.param("failed", ["reproduce", "homogeneous-margin", "--quick", "--set", "steps=3", "--no-progress",
                            "--out", NEW], r"FAILED", id="reproduce-failed-claim-exits-1"),
    # usage errors (parsed by typer's click): one line too
    cli("steps-not-an-integer", *TRAIN, "--steps", "abc",
        match=r"Invalid value for '--steps': .*integer \(see implicit-bias train --help\)$"),
    cli("lr-not-a-number", *TRAIN, "--lr", "fast", match=r"Invalid value for '--lr'"),
    cli("unknown-flag", *TRAIN, "--stepz", "3", match=r"No such option: --stepz .*--steps"),
    cli("unknown-command", "trian", match=r"No such command 'trian'"),
    cli("reproduce-unknown-flag", "reproduce", "soudry-2018", "--quik",
        match=r"No such option: --quik .*\(see implicit-bias reproduce --help\)"),
    # the real console process
    process("process-config-missing", "train", "--config", "{ws}/none.yaml", match=r"no such file: '.*none\.yaml'"),
    process("process-resume-not-a-run", "resume", "{ws}/plain", match=r"no such file: '.*plain/config\.yaml'"),
]
# fmt: on

runner = CliRunner()


def fill(args: list[str], ws: SimpleNamespace, new: Path) -> list[str]:
    return [a.replace("{ws}", str(ws.root)).replace("{new}", str(new)) for a in args]


@pytest.fixture(scope="module")
def processes(request, ws):
    """The selected ``process`` rows, started together in the background when the first CLI row runs, so their
    interpreter start-up (seconds: torch's import) overlaps the in-process rows."""
    started = {}
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(implicit_bias.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    selected = {item.callspec.id for item in request.session.items if hasattr(item, "callspec")}
    for row in CLI_ROWS:
        kind, args, _ = row.values
        if kind == "process" and row.id in selected:
            command = [sys.executable, "-m", "implicit_bias.cli", *fill(args, ws, ws.root / "unused")]
            started[row.id] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
            )
    yield started
    for child in started.values():
        if child.poll() is None:
            child.kill()
        child.communicate()


@pytest.mark.parametrize(("kind", "args", "match"), CLI_ROWS)
def test_cli_refuses(kind, args, match, ws, processes, tmp_path, request):
    new = tmp_path / "new"
    if kind == "process":
        stdout, stderr = processes[request.node.callspec.id].communicate(timeout=120)
        code = processes[request.node.callspec.id].returncode
    else:
        result = runner.invoke(app, fill(args, ws, new))
        stdout, stderr, code = result.stdout, result.stderr, result.exit_code
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in stdout + stderr
    if kind == "failed":
        assert code == 1, stdout + stderr
        assert re.search(match, stdout + stderr), stdout + stderr
        return
    assert code == 2, stdout + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and re.search(match, lines[0]), lines[0]
    assert not new.exists(), f"refused, but {new} was written"


# ----------------------------------------------------------------------------------------------- API table
def toy(n: int = 8, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """n float64 points in ℝ^d, labelled by the sign of their first coordinate (separable by e₁)."""
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return X, (X[:, 0] > 0).long()


def linear(d: int = 3, outputs: int = 1) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(d, outputs, bias=False).double()


def mlp(classes: int = 3, spec: str = "mlp:width=4") -> nn.Module:
    return build(spec, (3,), classes, seed=0).double()


def with_value(X: torch.Tensor, index: tuple[int, int], value: float) -> torch.Tensor:
    X = X.clone()
    X[index] = value
    return X


def accumulate(*batches: tuple[torch.Tensor, torch.Tensor], classes: int = 3, dim: int = 2) -> CollapseAccumulator:
    accumulator = CollapseAccumulator(classes, dim)
    for features, labels in batches:
        accumulator.update(features, labels)
    return accumulator


X, y = toy()
Y3 = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # three classes over the toy points
H = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
L3 = torch.tensor([0, 1, 2, 0, 1, 2])
QUIET = {"progress": False, "log_points": 1}
GAUSS = {"dim": 3, "n_per_class": 4, "test_per_class": 0}


def train(model=None, data=None, **options):
    return fit(
        linear() if model is None else model, (X, y) if data is None else data, **{"steps": 1, **QUIET, **options}
    )


def api(id: str, call, error: type[Exception], match: str, marks=()):
    return pytest.param(call, error, match, id=id, marks=marks)


Invalid, Unknown, Missing, Corrupt = (
    errors.InvalidArgumentError,
    errors.UnknownNameError,
    errors.MissingFileError,
    errors.CorruptFileError,
)

# fmt: off
API_ROWS = [
    # fit's arguments
    api("fit-negative-steps", lambda ws: train(steps=-1), Invalid, r"steps must be >= 0, got -1"),
    api("fit-float-steps", lambda ws: train(steps=2.0), Invalid, r"steps must be int, got float 2\.0"),
    api("fit-zero-lr", lambda ws: train(lr=0.0, optimizer="gd"), Invalid, r"lr must be > 0\.0, got 0\.0"),
    api("fit-negative-lr", lambda ws: train(lr=-1.0, optimizer="gd"), Invalid, r"lr must be > 0\.0, got -1\.0"),
    api("fit-nan-lr", lambda ws: train(lr=float("nan"), optimizer="gd"), Invalid, r"lr must be a number, got nan"),
    api("fit-string-lr", lambda ws: train(lr="0.1", optimizer="gd"), Invalid, r"lr must be int or float, got str"),
    api("fit-zero-batch-size", lambda ws: train(batch_size=0), Invalid, r"batch_size must be >= 1, got 0"),
    api("fit-float-batch-size", lambda ws: train(batch_size=2.5), Invalid, r"batch_size must be int, got float"),
    api("fit-loss-based-minibatch", lambda ws: train(optimizer="loss-based", batch_size=2), Invalid, r"batch_size"),
    api("fit-log-points-zero", lambda ws: fit(linear(), (X, y), steps=1, progress=False, log_points=0), Invalid,
        r"log_points must be >= 1, got 0"),
    api("fit-float-seed", lambda ws: train(seed=1.5), Invalid, r"seed must be int, got float 1\.5"),
    api("fit-unknown-reduction", lambda ws: train(reduction="max"), Unknown, r"unknown reduction 'max'"),
    api("fit-unknown-loss", lambda ws: train(loss="hinge"), Unknown, r"unknown loss 'hinge'; expected one of"),
    api("fit-unknown-optimizer", lambda ws: train(optimizer="lbfgs"), Unknown, r"unknown optimizer 'lbfgs'"),
    api("fit-unknown-optimizer-option", lambda ws: train(optimizer="gd", optimizer_options={"momentum": 0.9}),
        Unknown, r"unknown optimizer 'gd' option\(s\) 'momentum'"),
    api("fit-optimizer-of-wrong-type", lambda ws: train(optimizer=3), Invalid, r"optimizer must be a name or a"),
    api("fit-unknown-dtype", lambda ws: train(dtype="float65"), Invalid, r"dtype must be .* got 'float65'"),
    api("fit-integer-dtype", lambda ws: train(dtype="int64"), Invalid, r"dtype must be .* got 'int64'"),
    api("fit-unknown-device", lambda ws: train(device="tpu"), Invalid, r"device must be 'cpu', .* got 'tpu'"),
    api("fit-model-without-parameters", lambda ws: train(model=nn.ReLU()), Invalid, r"model ReLU has no parameters"),
    # fit's data
    api("fit-not-a-pair", lambda ws: train(data=(X, y, y)), Invalid, r"data must be a Dataset .* or a pair"),
    api("fit-numpy-data", lambda ws: train(data=(X.numpy(), y.numpy())), Invalid, r"X must be a torch tensor, got ndarray"),
    api("fit-length-mismatch", lambda ws: train(data=(X, y[:5])), Invalid,
        r"X and y must hold the same number of samples, got X of shape \(8, 3\) and y of shape \(5,\)"),
    api("fit-empty-data", lambda ws: train(data=(X[:0], y[:0])), Invalid, r"X is empty \(shape \(0, 3\)\)"),
    api("fit-integer-features", lambda ws: train(data=(X.long(), y)), Invalid, r"X must be a floating-point tensor"),
    api("fit-float-labels", lambda ws: train(data=(X, y.double())), Invalid, r"y must be a 1-D integer tensor"),
    api("fit-bool-labels", lambda ws: train(data=(X, y.bool())), Invalid, r"y must be a 1-D integer tensor"),
    api("fit-2d-labels", lambda ws: train(data=(X, y[:, None])), Invalid, r"y must be .* shape \(8, 1\)"),
    api("fit-nan-feature", lambda ws: train(data=(with_value(X, (2, 1), float("nan")), y)), Invalid,
        r"X holds NaN at index \(2, 1\) \(the only non-finite value\)"),
    api("fit-inf-feature", lambda ws: train(data=(with_value(X, (1, 2), float("inf")), y)), Invalid,
        r"X holds inf at index \(1, 2\)"),
    api("fit-binary-label-out-of-range", lambda ws: train(data=(X, 3 * y)), Invalid,
        r"single-output model needs binary labels in \{0, 1\} or \{-1, \+1\}, got labels \[0, 3\]"),
    api("fit-label-above-outputs", lambda ws: train(model=linear(3, 2), data=(X, Y3)), Invalid,
        r"labels must lie in 0\.\.1 for a model with 2 outputs, got labels from 0 to 2"),
    api("fit-negative-label", lambda ws: train(model=linear(3, 3), data=(X, Y3 - 1)), Invalid, r"-1\.\.1"),
    api("fit-wrong-input-width", lambda ws: train(model=linear(4)), Invalid,
        r"model Linear cannot take inputs of shape \(N, 3\): .* the data has 3 features per sample"),
    api("fit-flat-data-for-a-cnn", lambda ws: train(model=build("cnn:padding=same", (1, 8, 8), 2, seed=0)),
        Invalid, r"model CNN cannot take inputs of shape \(N, 3\)"),
    # run folders and checkpoints
    api("fit-into-existing-run", lambda ws: train(run_dir=ws.clone("python-run")), Invalid, r"already holds a run"),
    api("fit-resume-not-a-run", lambda ws: train(run_dir=ws.root / "plain", resume=True), Invalid,
        r"cannot resume: '.*plain' is not a run directory \(no config\.yaml\)"),
    api("fit-resume-other-models-checkpoint", lambda ws: train(run_dir=ws.clone("run-mlp"), resume=True), Invalid,
        r"cannot resume .* with other settings than it was trained with: .*model: mlp:width=4,bias=false"),
    api("fit-resume-with-another-lr",
        lambda ws: fit(linear(), (X, y), optimizer="gd", lr=0.5, steps=4, run_dir=ws.clone("python-run"),
                       resume=True, **QUIET), Invalid, r"\blr\b"),
    api("fit-resume-below-checkpoint-step",
        lambda ws: fit(linear(), (X, y), optimizer="gd", lr=0.1, steps=2, run_dir=ws.clone("python-run"),
                       resume=True, **QUIET), Invalid, r"\bsteps\b"),
    api("resume-run-not-a-run", lambda ws: resume_run(ws.root / "plain"), Missing, r"no such file: '.*config\.yaml'"),
    api("checkpoint-missing", lambda ws: load_checkpoint(ws.root / "none.safetensors"), Missing, r"no checkpoint at"),
    api("checkpoint-truncated", lambda ws: load_checkpoint(ws.root / "truncated" / "checkpoint.safetensors"),
        Corrupt, r"is not a readable implicit-bias checkpoint"),
    api("checkpoint-not-safetensors", lambda ws: load_checkpoint(ws.root / "not-safetensors/checkpoint.safetensors"),
        Corrupt, r"is not a readable implicit-bias checkpoint"),
    api("checkpoint-foreign-safetensors", lambda ws: load_checkpoint(ws.root / "foreign.safetensors"), Corrupt,
        r"format None is not 'implicit-bias-checkpoint/2'"),
    api("config-missing-file", lambda ws: TrainConfig.from_file(ws.root / "none.yaml"), Missing, r"no such file"),
    api("config-list-file", lambda ws: TrainConfig.from_file(ws.root / "list.yaml"), Corrupt, r"must hold a mapping"),
    api("config-half-dtype", lambda ws: TrainConfig(dtype="float16"), Invalid,
        r"dtype must be float64 or float32, got 'float16'"),
    api("config-mapping-unknown-key", lambda ws: TrainConfig.from_mapping({"stepz": 3}), Unknown,
        r"option\(s\) 'stepz'"),
    api("config-string-steps", lambda ws: TrainConfig.from_mapping({"steps": "3"}), Invalid,
        r"config option steps must be int, got str '3'; allowed: .*probes: list\[str\]"),
    api("config-bool-steps", lambda ws: TrainConfig.from_mapping({"steps": True}), Invalid, r"got bool True"),
    # datasets and data files
    api("load-unknown-dataset", lambda ws: load("imagenet"), Unknown, r"unknown dataset 'imagenet'"),
    api("load-unknown-option", lambda ws: load("gaussians", dims=3), Unknown, r"'gaussians' option\(s\) 'dims'"),
    api("load-option-wrong-type", lambda ws: load("gaussians", dim="3"), Invalid, r"dim must be int, got str '3'"),
    api("load-no-samples", lambda ws: load("gaussians", n_per_class=0), Invalid, r"n_per_class must be >= 1"),
    api("load-too-many-per-class", lambda ws: load("gaussians", per_class=1000), Invalid,
        r"per_class=1000 is more than dataset 'gaussians' holds"),
    api("load-bad-dtype", lambda ws: load("gaussians", dtype="float33"), Invalid, r"dtype must be .* 'float33'"),
    api("load-mnist-without-path", lambda ws: load("mnist"), Missing, r"mnist is read from disk: pass path="),
    api("load-cifar-missing-batches", lambda ws: load("cifar10", path=str(ws.root / "plain")), Missing,
        r"cifar10: '.*plain' lacks data_batch_1, .*test_batch"),
    api("read-idx-missing-file", lambda ws: read_idx(ws.root / "none-idx3-ubyte"), Missing, r"no IDX file at"),
    api("idx-truncated", lambda ws: load("mnist", path=str(ws.root / "idx-truncated")), Corrupt,
        r"declares shape \(4, 2, 2\) \(32 bytes\) but holds 29 bytes"),
    api("idx-corrupt-gzip", lambda ws: load("mnist", path=str(ws.root / "idx-gzip")), Corrupt,
        r"cannot read IDX file '.*train-images-idx3-ubyte\.gz'"),
    api("idx-count-mismatch", lambda ws: load("mnist", path=str(ws.root / "idx-count")), Corrupt,
        r"mnist train files disagree: images of shape \(4, 2, 2\), labels of shape \(3,\)"),
    api("idx-integer-images", lambda ws: load("mnist", path=str(ws.root / "idx-int-images")), Corrupt,
        r"images must be unsigned bytes .* got int32"),
    api("idx-float-labels", lambda ws: load("mnist", path=str(ws.root / "idx-float-labels")), Corrupt,
        r"mnist train labels must be integers .* got float32"),
    api("cifar-disallowed-global", lambda ws: load("cifar10", path=str(ws.root / "cifar-global")), Corrupt,
        r"not a readable CIFAR-10 batch: global \w+\.getcwd is not allowed"),
    api("cifar-not-a-dict", lambda ws: load("cifar10", path=str(ws.root / "cifar-list")), Corrupt,
        r"is not a CIFAR-10 batch: it holds a list"),
    api("cifar-wrong-shape", lambda ws: load("cifar10", path=str(ws.root / "cifar-shape")), Corrupt,
        r"lacks a \(n, 3072\) 'data' array"),
    api("cifar-truncated", lambda ws: load("cifar10", path=str(ws.root / "cifar-truncated")), Corrupt,
        r"is not a readable CIFAR-10 batch"),
    api("dataset-labels-out-of-range", lambda ws: Dataset(X, 5 * y, 2, "mine"), Invalid,
        r"labels of dataset 'mine' must lie in 0\.\.1, got 0\.\.5"),
    api("dataset-one-class", lambda ws: Dataset(X, 0 * y, 1), Invalid, r"num_classes must be >= 2, got 1"),
    api("dataset-nan", lambda ws: Dataset(with_value(X, (0, 0), float("nan")), y, 2, "mine"), Invalid,
        r"dataset 'mine': X holds NaN at index \(0, 0\)"),
    # models, optimizers, probes, experiments
    api("build-unknown-model", lambda ws: build("transformer", (3,), 2), Unknown, r"unknown model 'transformer'"),
    api("build-unknown-option", lambda ws: build("mlp:depthh=3", (3,), 2), Unknown, r"option\(s\) 'depthh'"),
    api("build-option-wrong-type", lambda ws: build("mlp:depth=abc", (3,), 2), Invalid, r"depth must be int"),
    api("build-bool-typo", lambda ws: build("mlp:bias=flase", (3,), 2), Invalid, r"bias"),
    api("build-zero-depth", lambda ws: build("mlp:depth=0", (3,), 2), Invalid, r"depth must be >= 1, got 0"),
    api("build-one-class", lambda ws: build("mlp", (3,), 1), Invalid, r"num_classes must be >= 2, got 1"),
    api("build-empty-spec", lambda ws: build("", (3,), 2), Invalid, r"model spec must be a non-empty string"),
    api("build-cnn-for-flat-input", lambda ws: build("cnn", (3,), 2), Invalid, r"input shape \(3,\) is too small"),
    api("build-unknown-activation", lambda ws: build("mlp:activation=tanhh", (3,), 2), Unknown, r"'tanhh'"),
    api("optimizer-unknown", lambda ws: make_optimizer("rmsprop", linear().parameters(), lr=0.1), Unknown,
        r"unknown optimizer 'rmsprop'"),
    api("optimizer-three-betas", lambda ws: make_optimizer("adam", linear().parameters(), lr=0.1, betas=[0.9, 0.9, 0.9]),
        Invalid, r"option betas must be tuple\[float, float\], got list \[0\.9, 0\.9, 0\.9\]"),
    api("optimizer-negative-momentum",
        lambda ws: make_optimizer("sgd", linear().parameters(), lr=0.1, momentum=-1.0), Invalid,
        r"optimizer 'sgd': Invalid momentum value: -1\.0"),
    api("probe-unknown", lambda ws: make_probe("accuracy"), Unknown, r"unknown probe 'accuracy'"),
    api("experiment-unknown", lambda ws: reproduce("nonexistent", ws.root / "e"), Unknown, r"'nonexistent'"),
    api("experiment-unknown-override", lambda ws: reproduce("homogeneous-margin", ws.root / "e", quick=True,
                                                            overrides={"stepz": 3}), Unknown, r"'stepz'"),
    # losses
    api("loss-unknown", lambda ws: log_loss(torch.zeros(3), y[:3], "hinge"), Unknown, r"unknown loss 'hinge'"),
    api("loss-float-labels", lambda ws: log_loss(torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), "logistic"),
        Invalid, r"labels y must be a 1-D integer tensor .* dtype torch\.float32"),
    api("loss-2d-labels", lambda ws: log_loss(torch.zeros(2, 1), torch.tensor([[0], [1]]), "exponential"),
        Invalid, r"labels y must be a 1-D integer tensor .* shape \(2, 1\)"),
    api("loss-label-out-of-range", lambda ws: log_loss(torch.zeros(3, 2), torch.tensor([0, 1, 2]), "exponential"),
        Invalid, r"labels must lie in 0\.\.1 for a model with 2 outputs"),
    api("loss-outputs-3d", lambda ws: log_loss(torch.zeros(3, 2, 2), y[:3], "exponential"), Invalid,
        r"model outputs must have shape \(N,\) or \(N, K\) with N = len\(y\) = 3, got \(3, 2, 2\)"),
    api("loss-outputs-nan", lambda ws: log_loss(torch.tensor([[0.0, float("nan")]]), y[:1], "exponential"),
        Invalid, r"model outputs holds NaN at index \(0, 1\)"),
    api("inverse-loss-mse", lambda ws: inverse_loss("mse", -3.0), Unknown, r"unknown loss 'mse'"),
    # margins and KKT
    api("margins-nan", lambda ws: margins(linear(), with_value(X, (3, 0), float("nan")), y), Invalid,
        r"X holds NaN at index \(3, 0\)"),
    api("margins-length-mismatch", lambda ws: margins(linear(), X, y[:3]), Invalid, r"same number of samples"),
    api("margins-float-labels", lambda ws: margins(linear(), X, y.double()), Invalid, r"y must be a 1-D integer"),
    api("margins-wrong-input-width", lambda ws: margins(linear(4), X, y), Invalid,
        r"model Linear cannot take inputs of shape \(N, 3\): .*the data has 3 features per sample"),
    api("normalized-margin-p", lambda ws: normalized_margin(linear(), X, y, p=3), Invalid, r"p must be 1, 2 or inf"),
    api("normalized-margin-not-separated", lambda ws: normalized_margin(linear(), X, 1 - y), errors.NotSeparatedError,
        r"samples have margin <= 0"),
    api("homogeneity-with-biases", lambda ws: homogeneity_degree(mlp(2, "mlp:width=4,depth=3"), X),
        errors.NotHomogeneousError, r"the model is not homogeneous"),
    api("homogeneity-empty", lambda ws: homogeneity_degree(linear(), X[:0]), Invalid, r"X is empty \(shape \(0, 3\)\)"),
    api("smoothed-margin-mse", lambda ws: smoothed_margin(linear(), X, y, loss="mse"), Unknown, r"unknown loss 'mse'"),
    api("kkt-not-separated", lambda ws: kkt_residual(linear(), X, 1 - y), errors.NotSeparatedError, r"margin <= 0"),
    api("kkt-negative-slack", lambda ws: kkt_residual(linear(), X, y, slack=-1.0), Invalid, r"slack must be >= 0"),
    api("svm-float-labels", lambda ws: hard_margin_svm(X, y.double()), Invalid, r"y must be a 1-D integer tensor"),
    # neural collapse
    api("collapse-one-class-accumulator", lambda ws: CollapseAccumulator(1, 3), Invalid, r"num_classes must be >= 2"),
    api("collapse-integer-dtype", lambda ws: CollapseAccumulator(3, 2, dtype=torch.int32), Invalid,
        r"dtype must be a floating torch dtype or None, got torch\.int32"),
    api("collapse-unknown-global-mean", lambda ws: CollapseAccumulator(3, 2, global_mean="median"), Unknown,
        r"unknown global_mean 'median'"),
    api("collapse-wrong-feature-width", lambda ws: accumulate((torch.zeros(4, 3, dtype=torch.float64), L3[:4])),
        Invalid, r"features must have shape \(B, 2\), got \(4, 3\)"),
    api("collapse-label-out-of-range", lambda ws: accumulate((H, L3 + 1)), Invalid, r"labels must lie in 0\.\.2"),
    api("collapse-float-labels", lambda ws: accumulate((H, L3.double())), Invalid,
        r"labels must be a 1-D integer tensor .* torch\.float64"),
    api("collapse-bool-labels", lambda ws: accumulate((H, L3 > 0)), Invalid,
        r"labels must be a 1-D integer tensor .* torch\.bool"),
    api("collapse-nan-feature", lambda ws: accumulate((with_value(H, (4, 1), float("nan")), L3)), Invalid,
        r"features holds NaN at index \(4, 1\)"),
    api("collapse-single-class", lambda ws: accumulate((H, 0 * L3)).compute(), Invalid,
        r"needs samples of at least two classes; got samples of 1"),
    api("collapse-merge-mismatch", lambda ws: CollapseAccumulator(3, 2).merge(CollapseAccumulator(4, 2)), Invalid,
        r"cannot merge the other accumulator: its num_classes is 4, this accumulator's is 3"),
    api("collapse-classifier-shape", lambda ws: accumulate((H, L3)).compute(weight=torch.zeros(2, 2)), Invalid,
        r"weight must have shape \(3, 2\)"),
    api("collapse-by-layer-unknown-layer", lambda ws: collapse_by_layer(mlp(), load("gaussians", **GAUSS),
                                                                        layers=["nope"]),
        Invalid, r"model has no layer\(s\) \['nope'\]; available"),
    api("collapse-by-layer-batch-size", lambda ws: collapse_by_layer(mlp(), (X, Y3), num_classes=3, batch_size=0),
        Invalid, r"batch_size must be >= 1, got 0"),
    api("collapse-by-layer-reduction", lambda ws: collapse_by_layer(mlp(), (X, Y3), num_classes=3, reduction="mean"),
        Unknown, r"unknown reduction 'mean'"),
    api("collapse-by-layer-without-classes", lambda ws: collapse_by_layer(mlp(), (X, Y3)), Invalid,
        r"pass num_classes= when data is not a Dataset"),
    api("collapse-by-layer-one-shot-generator",
        lambda ws: collapse_by_layer(mlp(), ((X[i : i + 4], Y3[i : i + 4]) for i in (0, 4)), num_classes=3),
        Invalid, r"\bdata\b"),
    # spectra
    api("spectrum-of-a-3d-tensor", lambda ws: singular_values(torch.zeros(2, 2, 2)), Invalid,
        r"expected a matrix \(2 dimensions\), got shape \(2, 2, 2\)"),
    api("spectrum-nan", lambda ws: singular_values(torch.tensor([[1.0, float("nan")]])), Invalid, r"NaN or infinite"),
    api("spectrum-zero-matrix", lambda ws: effective_rank(torch.zeros(3, 3)), Invalid, r"the matrix is zero"),
    api("spectrum-negative-tol", lambda ws: numerical_rank(torch.eye(3), tol=-1.0), Invalid, r"tol must be positive"),
    api("feature-spectra-label-out-of-range", lambda ws: feature_spectra(mlp(), (X, Y3 + 3), num_classes=3),
        Invalid, r"y must lie in 0\.\.2, got 3\.\.5"),
    api("feature-spectra-without-classes", lambda ws: feature_spectra(mlp(), (X, Y3)), Invalid, r"num_classes="),
    # rates (Kunin et al. 2023)
    api("infer-rates-unknown-choice", lambda ws: infer_rates(linear(), X, "bogus"), Invalid, r"choice must be one of"),
    api("rates-tanh-output", lambda ws: infer_rates(nn.Sequential(nn.Linear(3, 1), nn.Tanh()).double(), X),
        errors.NotQuasiHomogeneousError, r"applies Tanh .* not quasi-homogeneous"),
    api("rates-wrong-input-width", lambda ws: infer_rates(linear(4), X), Invalid,
        r"cannot run on the example input of shape \(8, 3\)"),
    api("rates-no-parameters", lambda ws: infer_rates(nn.ReLU(), X), Invalid, r"the model has no parameters"),
    api("rates-unknown-parameter", lambda ws: check_rates(linear(), {"nope": 1.0}, X), Invalid,
        r"rates given for unknown parameters \['nope'\]; the model has \['weight'\]"),
    api("empirical-rates-tail", lambda ws: empirical_rates(History([{"step": 0}]), tail=2.0), Invalid,
        r"tail must be in \(0, 1\], got 2\.0"),
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "match"), API_ROWS)
def test_api_refuses(call, error, match, ws):
    with pytest.raises(error, match=match) as raised:
        call(ws)
    assert isinstance(raised.value, errors.ImplicitBiasError)


def test_the_tables_are_large_and_their_ids_unique():
    ids = [row.id for row in CLI_ROWS + API_ROWS]
    assert len(ids) == len(set(ids))
    assert len(CLI_ROWS) >= 40 and len(API_ROWS) >= 40
