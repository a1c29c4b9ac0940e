"""scikit-learn's embedded handwritten digits: 1797 real 8x8 scans, the dataset that needs no download."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from .containers import InMemoryImages
from .files import channel_stats, resize_images
from .splits import choose_classes, relabel, stratified_holdout

DIGIT_CLASSES = [str(d) for d in range(10)]
DIGITS_SPLIT_SEED = 0  # the split is part of the dataset definition, not of a run


def load_digits_split(split: str, *, seed: int, classes, num_classes, image_size) -> InMemoryImages:
    """One split of the fixed stratified 70/10/20 train/val/test partition, upsampled to 32x32.

    Pixel values 0..16 become 0..255; the single channel is replicated to three so every model's
    RGB stem applies. `seed` only draws a class subset (`num_classes`); mean/std come from the
    train split at the final image size.
    """
    digits = load_digits()
    split_indices = _split_indices(digits.target)
    chosen = choose_classes(DIGIT_CLASSES, classes, num_classes, seed, "digits")
    size = image_size or 32

    def images_of(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        indices = split_indices[name]
        keep, labels = relabel(digits.target[indices], chosen, len(DIGIT_CLASSES))
        pixels = digits.images[indices[keep]] * (255 / 16)
        gray = torch.from_numpy(np.round(pixels).astype(np.uint8))[:, None]
        return resize_images(gray, size).expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(labels)

    images, labels = images_of(split)
    mean, std = channel_stats(images if split == "train" else images_of("train")[0])
    return InMemoryImages(images, labels, [DIGIT_CLASSES[i] for i in chosen], mean, std, name="digits")


def _split_indices(targets: np.ndarray) -> dict[str, np.ndarray]:
    advice = "This cannot happen with the scikit-learn digits; report it as a bug."
    rest, test = stratified_holdout(targets, 0.2, DIGITS_SPLIT_SEED, advice)
    train, val = stratified_holdout(targets[rest], 0.125, DIGITS_SPLIT_SEED, advice)  # 10% of the total
    return {"train": rest[train], "val": rest[val], "test": test}
