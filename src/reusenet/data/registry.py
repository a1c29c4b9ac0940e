"""`build_dataset`: one entry point for every dataset, with its arguments checked up front."""
from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..errors import UserError, did_you_mean
from .cifar import CIFAR10, CIFAR100, load_cifar_split
from .containers import ImageFiles, InMemoryImages
from .digits import load_digits_split
from .folders import load_folder_split, load_imagenet_subset_split
from .synthetic import load_synthetic_split
from .tiny_imagenet import load_tiny_imagenet_split

SPLITS = ("train", "val", "test")
CLASS_ARGUMENTS = ("seed", "classes", "num_classes")
DOWNLOADABLE = ("root", *CLASS_ARGUMENTS, "image_size", "download")


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., InMemoryImages | ImageFiles]
    takes: tuple[str, ...]  # which of build_dataset's common arguments the loader uses
    splits: tuple[str, ...] = SPLITS
    options: tuple[str, ...] = ()  # keywords only this dataset accepts


_SPECS = {
    "digits": DatasetSpec(load_digits_split, (*CLASS_ARGUMENTS, "image_size")),
    "cifar10": DatasetSpec(partial(load_cifar_split, CIFAR10), DOWNLOADABLE, options=("val_size",)),
    "cifar100": DatasetSpec(partial(load_cifar_split, CIFAR100), DOWNLOADABLE, options=("val_size",)),
    "tiny-imagenet": DatasetSpec(load_tiny_imagenet_split, DOWNLOADABLE),
    "imagenet-subset": DatasetSpec(load_imagenet_subset_split, ("root", *CLASS_ARGUMENTS), ("train", "val")),
    "folder": DatasetSpec(load_folder_split, ("root", *CLASS_ARGUMENTS)),
    "synthetic": DatasetSpec(load_synthetic_split, ("seed", "num_classes", "image_size"),
                             options=("num_samples",)),
}
DATASETS = tuple(_SPECS)

# Arguments a dataset cannot honour are errors, except these two, which simply have nothing to do:
# digits and synthetic need no files, and folder/imagenet-subset cannot be fetched automatically.
_IGNORABLE = ("root", "download")

_FILES_RESIZED = "File datasets are resized by build_loader to the data_config's input_size."
_WHY_NOT = {
    ("folder", "image_size"): _FILES_RESIZED,
    ("imagenet-subset", "image_size"): _FILES_RESIZED,
    ("synthetic", "classes"): "Use num_classes to choose how many classes to generate.",
}


def build_dataset(name: str, root=None, split: str = "train", *, seed: int = 0, classes=None,
                  num_classes=None, image_size=None, download: bool = False,
                  **options) -> InMemoryImages | ImageFiles:
    """Load one split of a dataset.

    Args:
        name: one of DATASETS.
        root: where the dataset lives; None means $REUSENET_DATA, else ~/.cache/reusenet/datasets.
            Ignored by digits and synthetic, which need no files.
        split: "train", "val" or "test" (imagenet-subset has no labelled test split).
        seed: draws class subsets, the CIFAR val holdout, the Tiny ImageNet val/test halves, the
            carved folder splits and the synthetic data. The digits split is fixed whatever the seed.
        classes: restrict to these classes (names; wnids for the ImageNet datasets).
        num_classes: restrict to this many classes drawn with `seed` (synthetic: how many to generate).
            Labels of a subset are re-indexed 0..N-1 in the dataset's own class order.
        image_size: resize in-memory datasets to image_size x image_size. File datasets take their
            size from the model's data config in build_loader instead.
        download: fetch missing CIFAR or Tiny ImageNet files.
        **options: dataset-specific: val_size (cifar10, cifar100), num_samples (synthetic).

    Returns InMemoryImages for digits, cifar10, cifar100, tiny-imagenet and synthetic, ImageFiles
    for folder and imagenet-subset.
    """
    key, spec = _canonical(name), _spec(name)
    _check_split(key, split, spec.splits)
    _check_options(key, options, spec.options)
    given = {"root": root, "seed": _check_seed(seed), "classes": _check_classes(classes),
             "num_classes": _check_positive("num_classes", num_classes),
             "image_size": _check_positive("image_size", image_size), "download": bool(download)}
    for argument, value in given.items():
        if argument not in spec.takes and argument not in _IGNORABLE and value is not None:
            raise UserError(f"{key} does not take {argument}. {_WHY_NOT.get((key, argument), '')}".rstrip())
    return spec.load(split=split, **{argument: given[argument] for argument in spec.takes}, **options)


def dataset_splits(name: str, **options) -> tuple[str, ...]:
    """The splits `name` has; with val_size=0 (cifar10, cifar100) there is no "val"."""
    splits = _spec(name).splits
    return tuple(s for s in splits if s != "val") if options.get("val_size") == 0 else splits


def _spec(name: str) -> DatasetSpec:
    key = _canonical(name)
    if key not in _SPECS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}." + _suggest(key))
    return _SPECS[key]


def _suggest(key: str) -> str:
    """Names extending what was typed come first ("imagenet" -> imagenet-subset), then close spellings."""
    extending = [name for name in DATASETS if name.startswith(key)]
    return f" Did you mean: {', '.join(extending)}?" if key and extending else did_you_mean(key, DATASETS)


def _canonical(name: str) -> str:
    return str(name).lower().replace("_", "-")


def _check_split(name: str, split: str, available: tuple[str, ...]) -> None:
    if split not in available:
        raise UserError(f"{name} has no split {split!r}; available splits: {', '.join(available)}."
                        + did_you_mean(str(split), available))


def _check_options(name: str, options: dict, accepted: tuple[str, ...]) -> None:
    for option in options:
        if option not in accepted:
            if not accepted:
                raise UserError(f"{name} takes no extra keywords, got {option}=.")
            raise UserError(f"{name} does not take {option}=; its extra keywords are: {', '.join(accepted)}."
                            + did_you_mean(option, accepted))


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_seed(seed) -> int:
    if not _is_integer(seed) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_positive(argument: str, value):
    if value is None:
        return None
    if not _is_integer(value) or value < 1:
        raise UserError(f"{argument} must be a positive integer or None, got {value!r}.")
    return int(value)


def _check_classes(classes):
    if classes is None:
        return None
    if isinstance(classes, str) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"classes must be a non-empty list of class names (None for all), got {classes!r}.")
    return list(classes)
