"""Tiny ImageNet (200 classes, 64x64), decoded once into memory.

The official test images carry no labels, so, following the ResFuse/RefiNet paper's protocol, the
10,000 labelled validation images are split 50/50 (stratified, seeded) into "val" and "test".
That split is made over all 200 classes before any class subset is taken, so an image lands in
the same split whatever subset is requested.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.datasets.utils import download_and_extract_archive

from ..errors import UserError
from .containers import InMemoryImages
from .files import decode_images, missing_files_error, resolve_root, warn_skipped
from .splits import choose_classes, stratified_holdout

TINY_DIRECTORY = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_FILES = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")


def load_tiny_imagenet_split(root, split: str, *, seed: int, classes, num_classes, image_size,
                             download: bool) -> InMemoryImages:
    """`classes` are wnids (e.g. "n01443537"); `num_classes` draws a subset with `seed`, the same for
    every split. Unreadable images are skipped, listed in `skipped` and warned about."""
    directory = _locate(resolve_root(root), download)
    wnids = _read_wnids(directory / "wnids.txt")
    chosen = choose_classes(wnids, classes, num_classes, seed, "tiny-imagenet")
    if split == "train":
        paths, labels = _train_samples(directory, wnids, chosen)
    else:
        paths, labels = _labelled_val_samples(directory, wnids, chosen, split, seed)
    images, readable = decode_images(paths, image_size or 64)
    skipped = [path for path, ok in zip(paths, readable, strict=True) if not ok]
    warn_skipped("tiny-imagenet", skipped)
    chosen_wnids = [wnids[i] for i in chosen]
    return InMemoryImages(
        images, torch.from_numpy(labels[readable]), _class_names(directory / "words.txt", chosen_wnids),
        IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, name="tiny-imagenet", skipped=skipped,
        wnids=chosen_wnids,
    )


def _locate(root: Path, download: bool) -> Path:
    expected = root if root.name == TINY_DIRECTORY else root / TINY_DIRECTORY
    for directory in (expected, root):
        if all((directory / name).exists() for name in TINY_FILES):
            return directory
    if download:
        try:
            download_and_extract_archive(TINY_URL, download_root=str(expected.parent), md5=TINY_MD5)
        except Exception as err:  # offline shows up as URLError, OSError or RuntimeError, by stage
            raise UserError(
                f"tiny-imagenet: download failed ({type(err).__name__}: {err}). Download {TINY_URL} by hand "
                f"and unzip it into {expected.parent}."
            ) from None
        return _locate(root, download=False)
    missing = [name for name in TINY_FILES if not (expected / name).exists()]
    raise missing_files_error(
        "tiny-imagenet", root, expected, missing,
        f"Pass download=True (CLI: --download) to fetch it, or download {TINY_URL} and unzip it into "
        f"{expected.parent}, the folder to pass as root (or as $REUSENET_DATA). Expected layout: wnids.txt, "
        "words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt.",
    )


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise UserError(f"{path} must list each class wnid once, one per line; it is empty or has "
                        "duplicates.")
    return wnids


def _class_names(words_path: Path, wnids: list[str]) -> list[str]:
    """The first synonym in words.txt ("n01443537<TAB>goldfish, Carassius auratus" -> "goldfish")."""
    first_name = {}
    for line in words_path.read_text().splitlines():
        wnid, _, names = line.partition("\t")
        first_name[wnid.strip()] = names.split(",")[0].strip()
    missing = [w for w in wnids if not first_name.get(w)]
    if missing:
        raise UserError(f"{words_path} has no name for {missing[:5]}; expected lines "
                        "'wnid<TAB>name, synonyms'.")
    return [first_name[w] for w in wnids]


def _train_samples(directory: Path, wnids: list[str], chosen: list[int]) -> tuple[list[str], np.ndarray]:
    paths, labels = [], []
    for label, index in enumerate(chosen):
        images_dir = directory / "train" / wnids[index] / "images"
        files = sorted(str(path) for path in images_dir.glob("*")
                       if has_file_allowed_extension(path.name, IMG_EXTENSIONS))
        if not files:
            raise UserError(f"tiny-imagenet: no training images in {images_dir}; expected "
                            f"train/<wnid>/images/*.JPEG for every wnid in wnids.txt.")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def _labelled_val_samples(directory: Path, wnids: list[str], chosen: list[int], split: str,
                          seed: int) -> tuple[list[str], np.ndarray]:
    names, labels = _read_val_annotations(directory / "val" / "val_annotations.txt", wnids)
    advice = "The labelled val set needs at least 2 images per class to be halved into val and test."
    val_half, test_half = stratified_holdout(labels, 0.5, seed, advice)
    half = val_half if split == "val" else test_half
    new_label = {index: label for label, index in enumerate(chosen)}
    picked = [i for i in half if labels[i] in new_label]
    paths = [str(directory / "val" / "images" / names[i]) for i in picked]
    return paths, np.asarray([new_label[labels[i]] for i in picked], dtype=np.int64)


def _read_val_annotations(path: Path, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    """File names and labels from lines 'val_0.JPEG<TAB>n03444034<TAB>x<TAB>y<TAB>w<TAB>h'."""
    index = {wnid: i for i, wnid in enumerate(wnids)}
    names, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{path}:{number}: expected 'file<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h' with a wnid "
                            f"from wnids.txt, got {line!r}.")
        names.append(fields[0])
        labels.append(index[fields[1]])
    return names, np.asarray(labels, dtype=np.int64)
