"""One table row per (model, batch size): size, cost, peak memory and speed of inference and training."""
from __future__ import annotations

import math

from ..errors import UserError
from .complexity import complexity
from .memory import peak_memories
from .timing import latency

NOTES = ("GMACs: multiply-accumulates of conv and linear layers per image (the papers' 'FLOPs'). "
         "Peak MiB: most memory a pass holds (weights, batch, activations, gradients, SGD momentum; "
         "CPU: resident-set high-water mark of a fresh process minus its baseline). "
         "ms/image and images/s: median of the timed repeats; IQR: their interquartile range.")


def parse_batch_sizes(text: str) -> list[int]:
    """'32,64,128' -> [32, 64, 128]; anything else is a UserError."""
    try:
        sizes = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        raise UserError(f"batch sizes must be positive integers separated by commas, e.g. 32,64,128; got {text!r}.")
    return sizes


def bench_model(model: str, *, batch_sizes, input_size=None, precision: str = "fp32", channels_last: bool = False,
                device: str = "cpu", num_classes: int | None = None, model_args: dict | None = None,
                warmup: int = 2, repeats: int = 5, memory: bool = True) -> list[dict]:
    """Rows of params, GMACs, peak train/inference memory and latency per image, one per batch size.

    `input_size` (C, H, W) defaults to the model's own (3x32x32 for the `_cifar` models)."""
    model_args = dict(model_args or {})
    info = complexity(model, input_size=input_size, num_classes=num_classes, **model_args)
    input_size = info.input_size
    common = dict(input_size=input_size, precision=precision, channels_last=channels_last, device=device,
                  num_classes=num_classes, model_args=model_args)
    peaks = {}
    if memory:
        peaks = {(r.mode, r.batch_size): r.mib for r in peak_memories(model, batch_sizes=batch_sizes, **common)}
    rows = []
    for batch_size in batch_sizes:
        row = {"model": model, "input": "x".join(map(str, input_size[1:])), "batch": batch_size,
               "params_M": info.mparams, "GMACs": info.gmacs,
               "train_peak_MiB": peaks.get(("train", batch_size), math.nan),
               "inference_peak_MiB": peaks.get(("inference", batch_size), math.nan)}
        for mode in ("inference", "train"):
            timing = latency(model, batch_size=batch_size, mode=mode, warmup=warmup, repeats=repeats, **common)
            row[f"{mode}_ms_per_image"] = timing.per_image_ms
            row[f"{mode}_IQR_ms_per_image"] = 1e3 * timing.spread_s / batch_size
            row[f"{mode}_images_per_s"] = timing.images_per_s
        row.update(precision=precision, layout="channels_last" if channels_last else "contiguous", device=device)
        rows.append(row)
    return rows
