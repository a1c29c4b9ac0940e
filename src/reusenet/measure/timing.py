"""Latency and throughput of inference or of a training step.

`warmup` untimed passes first (kernel selection, allocator growth, lazily created optimizer state), then
`repeats` timed passes of the same batch. The figure is the median; the spread is the interquartile range
(upper minus lower quartile of the repeats, `statistics.quantiles(method="inclusive")`), which one
descheduled pass on a shared machine does not move the way it moves a min-max range. On a GPU every pass
ends with `torch.cuda.synchronize()` so the clock sees the kernels, not their launch.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch.nn as nn

from ..errors import UserError
from .workload import build_model, check_settings, make_step, model_name, prepare_model, synchronize

__all__ = ["Timing", "latency"]


@dataclass(frozen=True)
class Timing:
    """Seconds per pass of a whole batch, with the settings they were measured at."""
    model: str
    mode: str
    batch_size: int
    input_size: tuple[int, ...]
    precision: str
    channels_last: bool
    device: str
    warmup: int
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def spread_s(self) -> float:
        """Interquartile range of the repeats (0 with a single repeat)."""
        if len(self.times_s) < 2:
            return 0.0
        lower, _, upper = statistics.quantiles(self.times_s, n=4, method="inclusive")
        return upper - lower

    @property
    def per_image_ms(self) -> float:
        return 1e3 * self.median_s / self.batch_size

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_s

    def __str__(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return (f"{self.model} {self.mode} batch {self.batch_size}: {self.median_s * 1e3:.2f} ms "
                f"(IQR {self.spread_s * 1e3:.2f} ms over {len(self.times_s)} repeats), "
                f"{self.per_image_ms:.3f} ms/image, {self.images_per_s:.1f} images/s "
                f"[{self.device} {self.precision} {layout}]")


def latency(model: str | nn.Module, *, input_size=(3, 32, 32), batch_size: int = 32, mode: str = "inference",
            precision: str = "fp32", channels_last: bool = False, device: str = "cpu", warmup: int = 2,
            repeats: int = 5, num_classes: int | None = None, model_args: dict | None = None) -> Timing:
    """Time `repeats` passes (after `warmup` untimed ones) of a model name or module on a random batch.

    A module passed in is never changed: a training step runs on a copy.
    """
    settings = check_settings(input_size, batch_size, mode, precision, channels_last, device)
    if not isinstance(warmup, int) or warmup < 0 or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"warmup must be >= 0 and repeats >= 1 (integers), got warmup={warmup!r}, repeats={repeats!r}.")
    built = build_model(model, num_classes, model_args)
    copy_first = isinstance(model, nn.Module) and (mode == "train" or device != "cpu" or channels_last)
    was_training = built.training
    prepared, execution = prepare_model(built, settings, copy_first=copy_first)
    try:
        step = make_step(prepared, execution, settings)
        for _ in range(warmup):
            step()
        synchronize(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        if not copy_first:
            built.train(was_training)
    return Timing(model_name(model), mode, batch_size, settings.input_size, precision, settings.channels_last,
                  device, warmup, tuple(times))
