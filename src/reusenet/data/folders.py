"""Datasets read from class-folder trees: any ImageFolder ("folder") and ImageNet class subsets.

Both return ImageFiles; the loader decodes and transforms the files with the model's data config.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension, make_dataset

from ..errors import UserError
from .containers import ImageFiles
from .files import resolve_root
from .splits import choose_classes, relabel, stratified_holdout

FOLDER_LAYOUT = ("either <root>/<class>/<image> (val and test are then carved out of it), or <root>/train/"
                 "<class>/<image> with optional <root>/val/<class>/<image> and <root>/test/<class>/<image>")
IMAGENET_LAYOUT = ("<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (the class-folder layout of "
                   "ILSVRC2012; ImageNet cannot be downloaded automatically, get it from https://image-net.org)")
CARVED_FRACTION = 0.1  # of the source images, for each of val and test when their folders are absent


def load_folder_split(root, split: str, *, seed: int, classes, num_classes) -> ImageFiles:
    """One split of an ImageFolder tree.

    Classes are the non-empty class folders of the training source (empty ones are ignored with a
    warning). Missing val/test folders are carved from the source: a seeded stratified 10% each
    (80/10/10 when both are missing), carved before any class subset so splits never overlap.
    """
    root = _existing_directory(resolve_root(root), "folder", FOLDER_LAYOUT)
    source = root / "train" if (root / "train").is_dir() else root
    samples, names = _nonempty_classes(source)
    split_dirs = {s: root / s for s in ("val", "test") if source != root and (root / s).is_dir()}
    if split in split_dirs:
        samples = _scan_split_dir(split_dirs[split], names)
    else:
        samples = _carve(samples, [s for s in ("val", "test") if s not in split_dirs], split, seed)
    chosen = choose_classes(names, classes, num_classes, seed, "folder")
    return _restrict(samples, names, chosen, "folder", split)


def load_imagenet_subset_split(root, split: str, *, seed: int, classes, num_classes) -> ImageFiles:
    """ImageNet restricted to `classes` (wnids) or `num_classes` drawn with `seed` (ImageNet-100/200/300).

    Class indices come from the train folder, so train and val agree for the same subset.
    """
    root = _existing_directory(resolve_root(root), "imagenet-subset", IMAGENET_LAYOUT)
    train_dir, split_dir = root / "train", root / split
    for directory in {train_dir, split_dir}:
        if not directory.is_dir():
            raise UserError(f"imagenet-subset: {directory} does not exist; expected {IMAGENET_LAYOUT}.")
    _reject_flat_val(split_dir)
    wnids = _class_folders(train_dir, "imagenet-subset", IMAGENET_LAYOUT)
    chosen = choose_classes(wnids, classes, num_classes, seed, "imagenet-subset")
    chosen_wnids = [wnids[i] for i in chosen]
    samples = _scan(split_dir, chosen_wnids)
    if not samples:
        raise UserError(f"imagenet-subset: no images of the chosen classes in {split_dir}; "
                        f"expected {IMAGENET_LAYOUT}.")
    return ImageFiles(samples, chosen_wnids, name="imagenet-subset", wnids=chosen_wnids)


def _existing_directory(root: Path, dataset: str, layout: str) -> Path:
    if not root.is_dir():
        raise UserError(f"{dataset}: root {root} is not a directory; expected {layout}.")
    return root


def _class_folders(directory: Path, dataset: str, layout: str) -> list[str]:
    try:
        return find_classes(str(directory))[0]
    except FileNotFoundError:
        raise UserError(f"{dataset}: no class folders in {directory}; expected {layout}.") from None


def _scan(directory: Path, names: list[str]) -> list[tuple[str, int]]:
    """(path, label) for every image under directory/<name>/, warning about classes without images."""
    class_to_idx = {name: index for index, name in enumerate(names)}
    samples = make_dataset(str(directory), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        warnings.warn(f"{directory}: class folder(s) without images: {', '.join(empty)}; ignored.",
                      stacklevel=2)
    return samples


def _nonempty_classes(source: Path) -> tuple[list[tuple[str, int]], list[str]]:
    all_names = _class_folders(source, "folder", FOLDER_LAYOUT)
    samples = _scan(source, all_names)
    if not samples:
        raise UserError(f"folder: no images ({', '.join(IMG_EXTENSIONS)}) under {source}; "
                        f"expected {FOLDER_LAYOUT}.")
    present = sorted({label for _, label in samples})
    _, labels = relabel([label for _, label in samples], present, len(all_names))
    relabelled = [(path, int(label)) for (path, _), label in zip(samples, labels, strict=True)]
    return relabelled, [all_names[i] for i in present]


def _scan_split_dir(directory: Path, names: list[str]) -> list[tuple[str, int]]:
    unknown = sorted(set(_class_folders(directory, "folder", FOLDER_LAYOUT)) - set(names))
    if unknown:
        raise UserError(f"folder: {directory} has class folders the training data lacks: "
                        f"{', '.join(unknown)}. Every val/test class needs training images; remove or "
                        "rename these folders.")
    return _scan(directory, names)


def _carve(samples, carved: list[str], split: str, seed: int) -> list[tuple[str, int]]:
    """The part of `samples` that is `split` once each split in `carved` took its stratified share."""
    labels = np.asarray([label for _, label in samples])
    remaining = np.arange(len(samples))
    parts = {}
    advice = (f"Each split needs at least one image per class; add images or provide {', '.join(carved)} "
              "folders next to train.")
    size = max(1, round(CARVED_FRACTION * len(samples)))
    for name in carved:
        kept, held = stratified_holdout(labels[remaining], size, seed, advice)
        parts[name], remaining = remaining[held], remaining[kept]
    parts["train"] = remaining
    return [samples[i] for i in parts[split]]


def _restrict(samples, names: list[str], chosen: list[int], dataset: str, split: str) -> ImageFiles:
    keep, labels = relabel([label for _, label in samples], chosen, len(names))
    paths = [path for (path, _), kept in zip(samples, keep, strict=True) if kept]
    if not paths:
        raise UserError(f"{dataset}: split {split!r} has no images of the chosen classes.")
    kept = list(zip(paths, labels.tolist(), strict=True))
    return ImageFiles(kept, [names[i] for i in chosen], name=dataset)


def _reject_flat_val(directory: Path) -> None:
    """Loose images carry no label; ILSVRC2012 ships val that way, to be sorted into wnid folders first."""
    loose = [path for path in directory.iterdir()
             if path.is_file() and has_file_allowed_extension(path.name, IMG_EXTENSIONS)]
    if loose:
        raise UserError(
            f"imagenet-subset: {directory} holds {len(loose)} image files directly (e.g. {loose[0].name}), "
            f"but labels come from class folders: expected {directory}/<wnid>/*.JPEG. Move each image into "
            "the folder of its wnid (e.g. with the valprep.sh script of the PyTorch ImageNet example)."
        )
