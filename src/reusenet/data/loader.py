"""`build_loader`: batches of (normalised float images, int64 labels) for one rank of a run.

In-memory datasets are batched and augmented as whole uint8 tensors (the airbench approach): no
per-sample Python, no worker processes. Order is drawn from a generator seeded by (seed, epoch) and
augmentation from one seeded by (seed, epoch, rank, batch), so a run resumed at any batch of any epoch
sees exactly the batches it would have seen (`set_epoch(epoch, start_batch)`).
File datasets go through a torch DataLoader with timm transforms and skip unreadable files.
Training shards follow DistributedSampler (padded to equal length); evaluation shards are not padded,
so metric sums over ranks count every image exactly once.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, create_transform
from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import UserError
from .containers import ImageFiles, InMemoryImages
from .files import UNREADABLE, open_rgb, warn_skipped
from .splits import derive_seed

# The keys of timm's resolve_data_config that shape the transform.
TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def build_loader(dataset: InMemoryImages | ImageFiles, batch_size: int, *, train: bool, seed: int = 0,
                 crop_padding: int = 4, hflip: bool = True, data_config: dict | None = None, workers: int = 2,
                 rank: int = 0, world_size: int = 1, drop_last: bool | None = None, auto_augment: str | None = None):
    """A loader with `set_epoch(epoch)`, `len()` (batches per epoch on this rank) and `skipped`.

    Training shuffles and augments; evaluation keeps dataset order and never augments. Each rank
    gets every world_size-th sample of the epoch's order, padded like DistributedSampler.
    drop_last defaults to True for training and False for evaluation.

    In-memory datasets: random crop from a `crop_padding` zero-padded image and random horizontal
    flip (`hflip`), normalised with the dataset's mean/std; `data_config` and `workers` are unused.
    File datasets: timm transforms from `data_config` (timm.data.resolve_data_config(model=model)),
    random-resized-crop + flip for training, resize + centre crop for evaluation; `crop_padding` is unused.
    `auto_augment` (training only) is a timm policy string such as "rand-m9-mstd0.5-inc1" (RandAugment).
    """
    _check_loader_arguments(batch_size, seed, crop_padding, workers, rank, world_size)
    if not isinstance(dataset, InMemoryImages | ImageFiles):
        raise UserError(f"build_loader takes the InMemoryImages or ImageFiles that build_dataset returns, "
                        f"got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise UserError(f"{dataset.name}: the dataset is empty, so there is nothing to load; check its "
                        "split and class subset.")
    drop_last = train if drop_last is None else drop_last
    mean = getattr(dataset, "mean", None) or IMAGENET_DEFAULT_MEAN
    policy = policy_transform(auto_augment, mean) if train and auto_augment else None
    if isinstance(dataset, InMemoryImages):
        return InMemoryLoader(dataset, batch_size, train=train, seed=seed, crop_padding=crop_padding,
                              hflip=hflip, rank=rank, world_size=world_size, drop_last=drop_last, policy=policy)
    return FileLoader(dataset, batch_size, train=train, seed=seed, hflip=hflip, data_config=data_config,
                      workers=workers, rank=rank, world_size=world_size, drop_last=drop_last,
                      auto_augment=auto_augment)


def policy_transform(auto_augment: str, mean) -> Callable:
    """timm's RandAugment / AutoAugment / AugMix for a policy string, on PIL images."""
    hparams = {"translate_const": 10, "img_mean": tuple(round(255 * m) for m in mean)}
    try:
        if auto_augment.startswith("rand"):
            return rand_augment_transform(auto_augment, hparams)
        if auto_augment.startswith("augmix"):
            return augment_and_mix_transform(auto_augment, hparams)
        return auto_augment_transform(auto_augment, hparams)
    except (AssertionError, KeyError, ValueError, IndexError) as err:
        raise UserError(f"auto_augment {auto_augment!r} is not a timm augmentation policy ({err}); use e.g. "
                        "rand-m9-mstd0.5-inc1 (RandAugment), augmix-m5-w4-d2 or original (AutoAugment).") from None


class InMemoryLoader:
    """Batches indexed straight out of the dataset's uint8 tensors, augmented a whole batch at a time."""

    def __init__(self, dataset: InMemoryImages, batch_size: int, *, train: bool, seed: int, crop_padding: int,
                 hflip: bool, rank: int, world_size: int, drop_last: bool, policy: Callable | None = None):
        self.dataset = dataset
        self.policy = policy
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        self.skipped = list(dataset.skipped)
        # (x/255 - mean)/std folded into one multiply-add.
        std = torch.tensor(dataset.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = 1 / (255 * std)
        self._shift = -torch.tensor(dataset.mean, dtype=torch.float32).view(1, 3, 1, 1) / std

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields `epoch`'s batches from `start_batch` on (a resumed run's position)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.dataset) / self.world_size) if self.train else \
            len(range(self.rank, len(self.dataset), self.world_size))
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in batch order."""
        count = len(self.dataset)
        if not self.train:
            return torch.arange(self.rank, count, self.world_size)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(count, generator=generator)
        padded = math.ceil(count / self.world_size) * self.world_size
        order = order.repeat(math.ceil(padded / count))[:padded]  # pad by repeating the head
        return order[self.rank::self.world_size]

    def __iter__(self):
        batches = self.epoch_indices().split(self.batch_size)[: len(self)]
        for index in range(self.start_batch, len(batches)):
            images = self.dataset.images[batches[index]]
            if self.train:
                generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, index))
                images = self._augment(images, generator)
            yield torch.addcmul(self._shift, images.float(), self._scale), self.dataset.labels[batches[index]]
        self.start_batch = 0

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.policy is not None:  # per-image PIL policy, drawn from Python's `random` like timm's loaders
            images = torch.stack([self._apply_policy(image) for image in images])
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.hflip:
            images = random_hflip(images, generator)
        return images


    def _apply_policy(self, image: torch.Tensor) -> torch.Tensor:
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        return torch.from_numpy(np.array(self.policy(picture))).permute(2, 0, 1)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image cropped at its own random offset from a zero-padded copy, in two gathers.

    Gathering rows then columns keeps the whole batch in one tensor op instead of a per-sample loop.
    """
    count, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    rows = (top + torch.arange(height))[:, None, :, None].expand(count, channels, height, width + 2 * padding)
    columns = (left + torch.arange(width))[:, None, None, :].expand(count, channels, height, width)
    return padded.gather(2, rows).gather(3, columns)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class FileLoader:
    """A DataLoader over image files whose epochs survive unreadable files (collected in `skipped`)."""

    def __init__(self, dataset: ImageFiles, batch_size: int, *, train: bool, seed: int, hflip: bool,
                 data_config: dict | None, workers: int, rank: int, world_size: int, drop_last: bool,
                 auto_augment: str | None = None):
        files = _TransformedFiles(dataset.samples, _file_transform(data_config, train, hflip, auto_augment))
        self.name = dataset.name
        self.sampler = ResumableSampler(files, num_replicas=world_size, rank=rank, shuffle=train, seed=seed) \
            if train else ShardSampler(len(files), rank, world_size)
        self.batch_size = batch_size
        self.loader = DataLoader(
            files, batch_size, sampler=self.sampler, num_workers=workers, persistent_workers=workers > 0,
            collate_fn=collate_readable, drop_last=drop_last, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(derive_seed(seed, rank)),  # seeds workers' augmentation
        )
        self.skipped = list(dataset.skipped)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Next iteration: `epoch`'s batches from `start_batch` on (order resumes exactly; the random
        augmentation of worker processes does not)."""
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * self.batch_size

    def __len__(self) -> int:
        """Batches in a whole epoch, whatever `start_batch` is."""
        full = self.sampler.num_samples
        return full // self.batch_size if self.loader.drop_last else math.ceil(full / self.batch_size)

    def __iter__(self):
        """Batches of readable images; a batch whose files were all unreadable is left out."""
        for images, labels, unreadable in self.loader:
            new = [path for path in dict.fromkeys(unreadable) if path not in self.skipped]
            self.skipped += new
            warn_skipped(self.name, new)
            if images is not None:
                yield images, labels


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way, at sample `start` of this rank's share."""

    start = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        self.start = 0
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Every world_size-th index from `rank`, unpadded, so evaluation counts each image once."""

    def __init__(self, count: int, rank: int, world_size: int):
        self.indices = range(rank, count, world_size)
        self.num_samples = len(self.indices)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


def _file_transform(data_config: dict | None, train: bool, hflip: bool, auto_augment: str | None = None):
    if data_config is None or "input_size" not in data_config:
        raise UserError(
            "image-file datasets need data_config with at least input_size, e.g. "
            "timm.data.resolve_data_config(model=model), to decide resizing and normalisation."
        )
    arguments = {key: data_config[key] for key in TRANSFORM_KEYS if key in data_config}
    if train:  # random resized crop and flip, no colour jitter (the papers' ImageNet recipe)
        return create_transform(**arguments, is_training=True, hflip=0.5 if hflip else 0.0, color_jitter=None,
                                auto_augment=auto_augment)
    return create_transform(**arguments, is_training=False)


class _TransformedFiles(Dataset):
    """(image, label, None) for a readable file, (None, label, path) for an unreadable one."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = open_rgb(path)
        except UNREADABLE:
            return None, label, path
        return self.transform(image), label, None


def collate_readable(batch):
    """(images, labels, unreadable paths): the batch without its unreadable files, which are reported."""
    readable = [(image, label) for image, label, path in batch if path is None]
    unreadable = [path for _, _, path in batch if path is not None]
    if not readable:
        return None, None, unreadable
    images, labels = zip(*readable, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), unreadable


def _check_loader_arguments(batch_size, seed, crop_padding, workers, rank, world_size) -> None:
    at_least = (("batch_size", batch_size, 1), ("seed", seed, 0), ("crop_padding", crop_padding, 0),
                ("workers", workers, 0), ("world_size", world_size, 1))
    for argument, value, least in at_least:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise UserError(f"{argument} must be an integer >= {least}, got {value!r}.")
    if not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
        raise UserError(f"rank must be in 0..{world_size - 1} for world_size={world_size}, got {rank!r}.")
