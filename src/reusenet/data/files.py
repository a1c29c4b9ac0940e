"""Where datasets live on disk, and decoding image files without letting one bad file stop a run."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError

# What PIL raises for corrupt, truncated or non-image files (UnidentifiedImageError is an OSError).
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def resolve_root(root) -> Path:
    """`root`, else $REUSENET_DATA, else ~/.cache/reusenet/datasets."""
    if root is None:
        root = os.environ.get("REUSENET_DATA") or Path.home() / ".cache" / "reusenet" / "datasets"
    return Path(root).expanduser()


def missing_files_error(dataset: str, root: Path, directory: Path, missing: list[str], how_to_get: str):
    """The UserError for files missing from `directory` under the dataset `root`."""
    listed = ", ".join(str(directory / name) for name in missing)
    no_root = "" if root.is_dir() else f"The root {root} does not exist. "
    return UserError(f"{dataset}: expected files are missing: {listed}. {no_root}{how_to_get}")


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_rgb(path) -> Image.Image:
    """Decode fully (so truncation shows up here) and convert any mode to 8-bit RGB.

    Grayscale is replicated, alpha is dropped, palettes (with or without transparency) are expanded, and
    16-bit images are scaled to 8 bits (PIL's own convert would clip every value above 255 to white).
    """
    with Image.open(path) as image:
        if image.mode in SIXTEEN_BIT_MODES:
            values = np.asarray(image, dtype=np.float64)
            scale = 257.0 if image.mode != "I" or values.max() > 255 else 1.0
            image = Image.fromarray(np.clip(np.round(values / scale), 0, 255).astype(np.uint8), mode="L")
        elif image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert("RGB")


def decode_images(paths: list[str], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Decode `paths` on a thread pool (PIL releases the GIL) into a uint8 N x 3 x size x size tensor.

    Returns the tensor of the readable images and the boolean mask of which paths were readable.
    """
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def decode_into(index: int) -> bool:
        try:
            image = open_rgb(paths[index])
        except UNREADABLE:
            return False
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        out[index] = np.asarray(image).transpose(2, 0, 1)
        return True

    with ThreadPoolExecutor() as pool:
        readable = np.fromiter(pool.map(decode_into, range(len(paths))), dtype=bool, count=len(paths))
    images = out if readable.all() else out[readable]
    return torch.from_numpy(images), readable


def warn_skipped(dataset: str, skipped: list[str], shown: int = 10) -> None:
    if not skipped:
        return
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    listed = ", ".join(skipped[:shown]) + more
    warnings.warn(f"{dataset}: skipped {len(skipped)} unreadable image file(s): {listed}", stacklevel=3)


def resize_images(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Bilinear resize of a uint8 N x 3 x H x W tensor, in chunks to bound the float copy."""
    if images.shape[-2:] == (size, size):
        return images
    resized = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        .round_().clamp_(0, 255).to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(resized) if resized else images.new_empty((0, 3, size, size))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in 0..1 units, accumulated in float64 chunks."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for part in images.split(chunk):
        values = part.to(torch.float64) / 255
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
