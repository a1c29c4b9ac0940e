"""Seeded, stratified splits and class subsets shared by every dataset."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import UserError, did_you_mean


def derive_seed(*parts: int) -> int:
    """One 64-bit seed mixed from several integers, so (seed, epoch, rank) streams never collide."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0])


def stratified_holdout(labels, size, seed: int, advice: str) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of `labels` into (kept, held out), each class represented in proportion.

    `size` is a fraction or a count, as in sklearn's train_test_split. Both index arrays come back
    sorted so storage order follows the source files. `advice` tells the user how to avoid the
    error when the split is impossible (too few images per class).
    """
    labels = np.asarray(labels)
    try:
        kept, held = train_test_split(np.arange(len(labels)), test_size=size, stratify=labels,
                                      random_state=seed)
    except ValueError as err:
        raise UserError(
            f"cannot hold out a stratified split of size {size} from {len(labels)} images in "
            f"{len(np.unique(labels))} classes ({err}). {advice}"
        ) from None
    return np.sort(kept), np.sort(held)


def choose_classes(available: list[str], classes, num_classes, seed: int, dataset: str) -> list[int]:
    """Indices (in dataset order) of the requested class subset; all classes when none is requested.

    `classes` names them explicitly; `num_classes` draws that many with `seed`. Labels are later
    re-indexed in dataset order, so the same subset gets the same labels however it was requested.
    """
    if classes is not None:
        return _named_classes(available, list(classes), num_classes, dataset)
    if num_classes is None:
        return list(range(len(available)))
    if not 1 <= num_classes <= len(available):
        raise UserError(f"{dataset}: num_classes must be between 1 and {len(available)}, got {num_classes}.")
    drawn = np.random.default_rng(seed).choice(len(available), size=num_classes, replace=False)
    return sorted(int(i) for i in drawn)


def _named_classes(available: list[str], requested: list[str], num_classes, dataset: str) -> list[int]:
    position = {name: i for i, name in enumerate(available)}
    for name in requested:
        if name not in position:
            raise UserError(
                f"{dataset}: unknown class {name!r}; classes are named like {available[:3]}."
                + did_you_mean(str(name), available)
            )
    if len(set(requested)) != len(requested):
        raise UserError(f"{dataset}: classes lists a class more than once: {requested}.")
    if num_classes is not None and num_classes != len(requested):
        raise UserError(
            f"{dataset}: num_classes={num_classes} contradicts the {len(requested)} classes given; "
            "pass only one of them."
        )
    return sorted(position[name] for name in requested)


def relabel(labels, chosen: list[int], num_available: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of samples in the chosen classes, their labels re-indexed 0..len(chosen)-1)."""
    new_label = np.full(num_available, -1, dtype=np.int64)
    new_label[chosen] = np.arange(len(chosen))
    mapped = new_label[np.asarray(labels, dtype=np.int64)]
    keep = mapped >= 0
    return keep, mapped[keep]
