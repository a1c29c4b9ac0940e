"""The two shapes a dataset comes in: decoded tensors in memory, or a list of image files."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UserError


@dataclass
class InMemoryImages:
    """A whole split decoded once into uint8 tensors, so the loader batches and augments without PIL.

    `mean` and `std` are per-channel statistics in 0..1 units; the loader normalises with them.
    `skipped` lists the files that could not be decoded and were left out. `wnids` keeps the
    WordNet ids of ImageNet-derived datasets (None otherwise); `classes` holds readable names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    skipped: list[str] = field(default_factory=list)
    wnids: list[str] | None = None

    def __post_init__(self):
        # Users may build one from their own arrays; catch shape mistakes here, not deep in a batch.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise UserError(
                f"{self.name}: images must be a uint8 tensor of shape N x 3 x H x W, got {self.images.dtype} "
                f"{tuple(self.images.shape)}; convert with (x * 255).round().to(torch.uint8)."
            )
        if self.labels.shape != (len(self.images),):
            raise UserError(
                f"{self.name}: labels must have shape ({len(self.images)},) to match the images, "
                f"got {tuple(self.labels.shape)}."
            )
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise UserError(
                f"{self.name}: labels must be class indices in 0..{len(self.classes) - 1} for its "
                f"{len(self.classes)} classes, got values from {int(self.labels.min())} to {int(self.labels.max())}; "
                "fix the labels or list every class in `classes`."
            )
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageFiles:
    """Image files decoded on the fly by the loader (datasets too large to hold in memory).

    Files carry no normalisation statistics (`mean`/`std` are None): the model's timm data
    config decides input size, interpolation and normalisation.
    """

    samples: list[tuple[str, int]]
    classes: list[str]
    name: str
    skipped: list[str] = field(default_factory=list)
    wnids: list[str] | None = None
    mean = None
    std = None

    def __post_init__(self):
        bad = [(path, label) for path, label in self.samples if not 0 <= label < len(self.classes)]
        if bad:
            raise UserError(f"{self.name}: {len(bad)} sample(s) have labels outside 0..{len(self.classes) - 1} "
                            f"(the {len(self.classes)} classes), e.g. {bad[0]}; fix the labels or list every class.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)
