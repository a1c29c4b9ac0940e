"""Datasets and loaders: data flows dataset -> loader -> model, never back.

`build_dataset(name, root, split, ...)` returns one split as either `InMemoryImages` (decoded uint8
tensors: digits, cifar10, cifar100, tiny-imagenet, synthetic) or `ImageFiles` (paths decoded on the
fly: folder, imagenet-subset). `build_loader(dataset, batch_size, train=...)` turns either into
normalised float batches for one rank, deterministic in (seed, epoch, rank).
"""
from .containers import ImageFiles, InMemoryImages
from .loader import build_loader
from .registry import DATASETS, build_dataset, dataset_splits

__all__ = ["DATASETS", "ImageFiles", "InMemoryImages", "build_dataset", "build_loader", "dataset_splits"]
