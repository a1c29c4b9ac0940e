"""CIFAR-10 and CIFAR-100, read straight from the official python-pickle directories.

There is no labelled validation set in CIFAR; split "val" is a seeded stratified holdout of
`val_size` (default 5000) images from the training files, and split "train" then excludes them.
`val_size=0` keeps all 50,000 training images and disables "val". "test" is the official test file.
"""
from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from ..errors import UserError
from .containers import InMemoryImages
from .files import missing_files_error, resize_images, resolve_root
from .splits import choose_classes, relabel, stratified_holdout

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    name: str
    directory: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str


CIFAR10 = CifarLayout(
    "cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", "labels", "label_names",
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10",
)
CIFAR100 = CifarLayout(
    "cifar100", "cifar-100-python", "cifar-100-python.tar.gz",
    ("train",), ("test",), "meta", "fine_labels", "fine_label_names",
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100",
)


def load_cifar_split(layout: CifarLayout, root, split: str, *, seed: int, classes, num_classes, image_size,
                     download: bool, val_size: int = 5000) -> InMemoryImages:
    _check_val_size(layout, split, val_size)
    files = layout.test_files if split == "test" else layout.train_files
    directory = _locate(layout, resolve_root(root), (*files, layout.meta_file), download)
    data, labels, names = _read_split(directory, files, layout)
    if split != "test" and val_size:
        advice = f"Pass a val_size between {len(names)} and {len(labels) - len(names)}, or 0 to disable val."
        kept, held = stratified_holdout(labels, val_size, seed, advice)
        part = held if split == "val" else kept
        data, labels = data[part], labels[part]
    chosen = choose_classes(names, classes, num_classes, seed, layout.name)
    keep, labels = relabel(labels, chosen, len(names))
    images = torch.from_numpy(data[keep].reshape(-1, 3, 32, 32))
    if image_size:
        images = resize_images(images, image_size)
    class_names = [names[i] for i in chosen]
    return InMemoryImages(images, torch.from_numpy(labels), class_names, layout.mean, layout.std,
                          name=layout.name)


def _check_val_size(layout: CifarLayout, split: str, val_size) -> None:
    if not isinstance(val_size, int) or val_size < 0:
        raise UserError(f"{layout.name}: val_size must be a non-negative integer, got {val_size!r}.")
    if split == "val" and val_size == 0:
        raise UserError(f"{layout.name}: split 'val' is held out of the training files and val_size=0 "
                        "disables it; pass val_size > 0 or use split 'test'.")


def _read_split(directory: Path, files: tuple[str, ...], layout: CifarLayout):
    """(N x 3072 uint8 pixels, N labels, class names) of the given batch files."""
    batches = [_read_batch(directory / name, layout) for name in files]
    data, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    names = _read_class_names(directory / layout.meta_file, layout)
    if labels.size and not 0 <= labels.min() <= labels.max() < len(names):
        raise UserError(f"{layout.name}: labels in {', '.join(files)} fall outside 0..{len(names) - 1}, "
                        f"the classes of {directory / layout.meta_file}; re-extract {layout.archive} "
                        f"from {CIFAR_URL}.")
    return data, labels, names


def _locate(layout: CifarLayout, root: Path, files: tuple[str, ...], download: bool) -> Path:
    """The batches directory: `root` itself or `root/<batches dir>`, fetched first if asked to."""
    expected = root if root.name == layout.directory else root / layout.directory
    for directory in (expected, root):
        if all((directory / name).is_file() for name in files):
            return directory
    if download:
        _download(layout, expected.parent)
        return _locate(layout, root, files, download=False)
    raise missing_files_error(
        layout.name, root, expected, [name for name in files if not (expected / name).is_file()],
        f"Pass download=True (CLI: --download) to fetch them, or download {layout.archive} from {CIFAR_URL} "
        f"and extract it into {expected.parent}, the folder to pass as root (or as $REUSENET_DATA).",
    )


def _download(layout: CifarLayout, parent: Path) -> None:
    try:
        getattr(torchvision.datasets, layout.torchvision_class)(str(parent), train=True, download=True)
    except Exception as err:  # offline shows up as URLError, OSError or RuntimeError depending on the stage
        raise UserError(
            f"{layout.name}: download failed ({type(err).__name__}: {err}). Download {layout.archive} from "
            f"{CIFAR_URL} by hand and extract it so that {parent / layout.directory} holds "
            f"{', '.join((*layout.train_files, *layout.test_files, layout.meta_file))}."
        ) from None


def _read_class_names(path: Path, layout: CifarLayout) -> list[str]:
    names = _unpickle(path).get(layout.names_key)
    if not isinstance(names, list) or not names:
        raise UserError(f"{path} has no {layout.names_key!r} list of class names, so it is not the "
                        f"{layout.name} meta file. Re-extract {layout.archive} from {CIFAR_URL}.")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    data, labels = entry.get("data"), entry.get(layout.label_key)
    is_batch = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3072 and labels is not None and len(labels) == len(data))
    if not is_batch:
        raise UserError(
            f"{path} is not a {layout.name} batch: expected b'data' (N x 3072 uint8) and "
            f"b'{layout.label_key}' (N labels). Re-extract {layout.archive} from {CIFAR_URL}."
        )
    return data, np.asarray(labels, dtype=np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Allows only what CIFAR pickles contain (numpy arrays, py2-compatible bytes): nothing executable."""

    _reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy.core vs numpy._core, whichever is installed
    SAFE = {
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    }

    def find_class(self, module, name):
        if (module, name) not in self.SAFE:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return self.SAFE[(module, name)]


def _unpickle(path: Path) -> dict:
    """A pickled dict with keys decoded to str (py2 files give bytes keys)."""
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="bytes").load()
    except Exception as err:  # garbage input surfaces as any of a dozen exception types inside pickle
        raise UserError(
            f"{path} is not a CIFAR python pickle ({type(err).__name__}: {err}). Re-extract the archive from "
            f"{CIFAR_URL}; the python version is the one with 'python' in its name."
        ) from None
    if not isinstance(entry, dict):
        raise UserError(f"{path} holds a {type(entry).__name__}, not the dict of a CIFAR pickle.")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}
