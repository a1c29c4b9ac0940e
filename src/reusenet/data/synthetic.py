"""Generated images for tests and benchmarks: learnable, deterministic from the seed, instant to build."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .containers import InMemoryImages
from .splits import derive_seed

# Independent random streams: the class patterns are shared by all splits, the samples are not.
STREAMS = {"patterns": 0, "train": 1, "val": 2, "test": 3}
DEFAULT_SAMPLES = {"train": 1000, "val": 200, "test": 200}
NOISE_STD = 0.15
PATTERN_GRID = 4  # a class pattern is a random 4x4 field upsampled smoothly to the image size


def load_synthetic_split(split: str, *, seed: int, num_classes, image_size,
                         num_samples=None) -> InMemoryImages:
    """Each class is a smooth spatial pattern plus a colour; each sample is its class pattern plus
    Gaussian pixel noise. mean/std are the generator's expected statistics (balanced classes)."""
    num_classes = 10 if num_classes is None else num_classes
    size = image_size or 32
    count = DEFAULT_SAMPLES[split] if num_samples is None else num_samples
    if not isinstance(count, int) or count < 1:
        raise UserError(f"synthetic: num_samples must be a positive integer, got {num_samples!r}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"synthetic: num_classes must be a positive integer, got {num_classes!r}.")
    patterns = _class_patterns(num_classes, size, seed)
    generator = torch.Generator().manual_seed(derive_seed(seed, STREAMS[split]))
    labels = torch.randperm(count, generator=generator) % num_classes
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    for chunk in torch.arange(count).split(256):  # bounds the float copy at large image sizes
        noise = torch.randn((len(chunk), 3, size, size), generator=generator)
        noisy = patterns[labels[chunk]] + NOISE_STD * noise
        images[chunk] = noisy.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    mean = patterns.mean(dim=(0, 2, 3))
    std = (patterns.var(dim=(0, 2, 3), unbiased=False) + NOISE_STD**2).sqrt()
    return InMemoryImages(images, labels, [f"class_{i}" for i in range(num_classes)],
                          tuple(mean.tolist()), tuple(std.tolist()), name="synthetic")


def _class_patterns(num_classes: int, size: int, seed: int) -> torch.Tensor:
    """num_classes x 3 x size x size patterns in 0.2..0.8, leaving room for the noise."""
    generator = torch.Generator().manual_seed(derive_seed(seed, STREAMS["patterns"]))
    field = torch.rand((num_classes, 1, PATTERN_GRID, PATTERN_GRID), generator=generator)
    colour = torch.rand((num_classes, 3, 1, 1), generator=generator)
    spatial = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return 0.2 + 0.3 * colour + 0.3 * spatial
