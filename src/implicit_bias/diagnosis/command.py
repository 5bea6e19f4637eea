"""``implicit-bias diagnose``: a model named on the command line, its weights and data, to a report folder.

The folder (``report.html``, ``metrics.csv``, ``skipped.txt``, ``figures/`` in PNG and PDF) is written into a
temporary sibling and renamed into place at the end, so a failure never leaves a half-written report.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data import LOADERS, Dataset, load
from ..errors import CorruptFileError, InvalidArgumentError
from ..models.loading import build_model, load_weights, read_state_dict
from .api import diagnose
from .result import Diagnosis

REPORT_FILES = ("report.html", "metrics.csv", "skipped.txt", "figures")
TENSOR_KEYS = ("X", "y", "X_test", "y_test")


def load_data(data: str, options: Mapping[str, Any]) -> Dataset:
    """A built-in dataset by name (:data:`~implicit_bias.data.LOADERS`, with ``options``), or a tensors file
    (``.safetensors`` or ``.pt``) holding ``X`` and ``y`` (and optionally ``X_test``, ``y_test``)."""
    if data in LOADERS or not Path(data).suffix:
        return load(data, **options)
    if options:
        raise InvalidArgumentError(f"--data-option applies to built-in datasets; {data!r} is a file")
    tensors = read_state_dict(data)
    absent = [key for key in ("X", "y") if key not in tensors]
    if absent:
        raise CorruptFileError(
            f"data file {data!r} lacks {absent}: it must hold tensors {list(TENSOR_KEYS[:2])} (optionally "
            f"{list(TENSOR_KEYS[2:])}), got {sorted(tensors)}"
        )
    labels = [tensors[key] for key in ("y", "y_test") if key in tensors]
    num_classes = max(2, max(int(y.max()) for y in labels) + 1)
    name = Path(data).name
    test = Dataset(tensors["X_test"], tensors["y_test"], num_classes, name) if "X_test" in tensors else None
    return Dataset(tensors["X"], tensors["y"], num_classes, name, test)


def diagnose_to_folder(
    *,
    model: str,
    weights: str | Path | None,
    data: str,
    data_options: Mapping[str, Any],
    out: Path,
    layers: Sequence[str] | None = None,
    batch_size: int = 1024,
    device: str | None = None,
    kkt: bool = True,
    progress: bool = False,
) -> Diagnosis:
    """Build ``model`` (a ``MODULE:FACTORY`` or a spec), load ``weights``, diagnose it on ``data`` and write
    the report folder ``out`` (replacing an earlier report there)."""
    dataset = load_data(data, data_options)
    network = build_model(model, dataset.input_shape, dataset.num_classes)
    if weights is not None:
        load_weights(network, weights)
    network = network.to(device or "cpu")
    result = diagnose(network, dataset, layers=layers, batch_size=batch_size, kkt=kkt, progress=progress)
    write_folder(result, out)
    return result


def check_out(out: Path) -> Path:
    """``out`` as a Path, refused when it is a file or a folder holding anything but an earlier report."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {str(out)!r} is a file; give a folder")
    if out.is_dir() and any(child.name not in REPORT_FILES for child in out.iterdir()):
        raise InvalidArgumentError(
            f"--out {str(out)!r} holds files other than a diagnosis report; choose an empty or new folder"
        )
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``out`` to write a report into, renamed to ``out`` (replacing an earlier
    report) when the block succeeds and removed when it fails: ``out`` is never half-written."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield scratch
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            scratch.rename(out)
            shutil.rmtree(old)
        else:
            scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def write_folder(result: Diagnosis, out: Path) -> Path:
    """Write the report folder ``out``: metrics.csv, skipped.txt, report.html and figures/ (PNG and PDF)."""
    with staged(out) as scratch:
        result.to_csv(scratch / "metrics.csv")
        (scratch / "skipped.txt").write_text("".join(f"{line}\n" for line in result.skipped), encoding="utf-8")
        result.to_html(scratch / "report.html", figures=scratch / "figures")
    return out
