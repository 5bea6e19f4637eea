"""Standard dataset files read from disk: MNIST and Fashion-MNIST in IDX format, CIFAR-10 python batches.

CIFAR-10 batches are pickles. They are read with :class:`CifarUnpickler`, which admits only the handful of
globals that format needs (numpy's array reconstruction), so a malicious file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import CorruptFileError, MissingFileError
from .dataset import Dataset

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, name: str, what: str, expected: list[str]) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"{what}: no file {name!r} (or {name}.gz) in {str(folder)!r}; expected the files {', '.join(expected)}"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed, recognised by its content) into a numpy array of its declared
    type and shape."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no IDX file at {str(path)!r}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"cannot read IDX file {str(path)!r}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptFileError(f"{str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptFileError(
            f"IDX file {str(path)!r} declares shape {shape} ({expected} bytes) but holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_dataset(folder: Path, name: str) -> Dataset:
    """The train and test splits of an MNIST-layout IDX folder (the four :data:`MNIST_FILES`, ``.gz`` accepted):
    uint8 images scaled to [0, 1] (float images taken as they are), shape (N, 1, H, W), labels 0..9."""
    expected = [file for pair in MNIST_FILES.values() for file in pair]
    splits = {}
    for split, (images_name, labels_name) in MNIST_FILES.items():
        images = read_idx(_find(folder, images_name, name, expected))
        labels = read_idx(_find(folder, labels_name, name, expected))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CorruptFileError(
                f"{name} {split} files disagree: images of shape {images.shape}, labels of shape {labels.shape}"
            )
        if images.dtype == np.uint8:
            X = torch.as_tensor(images, dtype=torch.float32)[:, None] / 255.0
        elif images.dtype.kind == "f":  # preprocessed images stored as IDX floats: taken as they are
            X = torch.as_tensor(images)[:, None]
        else:
            raise CorruptFileError(
                f"{name} {split} images must be unsigned bytes (IDX type 0x08) or floats (0x0D, 0x0E), "
                f"got {images.dtype}"
            )
        if labels.dtype.kind not in "ui":  # a float label file would be truncated to integers silently
            raise CorruptFileError(f"{name} {split} labels must be integers (IDX type 0x08-0x0C), got {labels.dtype}")
        splits[split] = Dataset(X, torch.as_tensor(labels.astype(np.int64)), 10, name)
    return splits["train"].replace(test=splits["test"])


def mnist(*, path: str | Path | None = None) -> Dataset:
    """MNIST from the four standard IDX files in folder ``path`` (``.gz`` accepted): images scaled to [0, 1],
    shape (N, 1, 28, 28), with the official 10 000-image test split."""
    return _idx_dataset(_require_folder(path, "mnist"), "mnist")


def fashion_mnist(*, path: str | Path | None = None) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its four IDX files, named and laid out as MNIST's, in
    folder ``path``, by default :data:`FASHION_MNIST_ROOT` where the Debian package ``dataset-fashion-mnist``
    installs them: 60 000 training and 10 000 test images (N, 1, 28, 28) in [0, 1], 6000 / 1000 per class
    (0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot)."""
    fix = (
        "pass path=<folder holding train-images-idx3-ubyte(.gz) and the other three IDX files>, "
        f"or install them into {FASHION_MNIST_ROOT} with `apt-get install dataset-fashion-mnist`"
    )
    folder = _require_folder(FASHION_MNIST_ROOT if path is None else path, "fashion-mnist", fix)
    return _idx_dataset(folder, "fashion-mnist")


class CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR python batch uses; anything else is refused."""

    ALLOWED: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self.ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(*target)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) uint8 and labels (n,) of one CIFAR-10 python batch, read safely."""
    try:
        with open(path, "rb") as handle:
            batch = CifarUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise CorruptFileError(f"{str(path)!r} is not a readable CIFAR-10 batch: {error}") from None
    if not isinstance(batch, dict):
        raise CorruptFileError(f"{str(path)!r} is not a CIFAR-10 batch: it holds a {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3072:
        raise CorruptFileError(f"{str(path)!r} lacks a (n, 3072) 'data' array and a 'labels' list")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise CorruptFileError(f"{str(path)!r} has {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10(*, path: str | Path | None = None) -> Dataset:
    """CIFAR-10 from the python batches (``data_batch_1``…``data_batch_5``, ``test_batch``) in folder ``path``
    or its ``cifar-10-batches-py`` subfolder: images scaled to [0, 1], shape (N, 3, 32, 32)."""
    folder = _require_folder(path, "cifar10")
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    expected = [*CIFAR_TRAIN, CIFAR_TEST]
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(
            f"cifar10: {str(folder)!r} lacks {', '.join(missing)}; expected the python batches {', '.join(expected)}"
        )

    def split(names: list[str]) -> Dataset:
        parts = [read_cifar_batch(folder / name) for name in names]
        X = torch.as_tensor(np.concatenate([p[0] for p in parts]), dtype=torch.float32) / 255.0
        return Dataset(X, torch.as_tensor(np.concatenate([p[1] for p in parts])), 10, "cifar10")

    return split(list(CIFAR_TRAIN)).replace(test=split([CIFAR_TEST]))


def _require_folder(path: str | Path | None, name: str, fix: str = "") -> Path:
    if path is None:
        raise MissingFileError(f"{name} is read from disk: pass path=<folder holding the files>")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingFileError(f"{name}: folder {str(folder)!r} does not exist" + (f"; {fix}" if fix else ""))
    return folder
