"""The pass that memory and latency are measured on: one model, one batch, one execution, one mode.

"inference" is a forward pass under `torch.inference_mode()` in eval mode. "train" is a training step:
forward, cross-entropy, backward and an SGD step with momentum 0.9 (the papers' optimizer, whose momentum
buffers are part of a training step's memory), gradients set to None between steps as the engine does.
Inputs are random (a fixed generator, so the global RNG is untouched) and already on the device in the
requested memory format; precision and memory format come from `engine.precision.Execution`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.precision import Execution, bf16_conv_hazards, candidates, resolve_device
from ..errors import UserError
from ..models import create_model

MODES = ("inference", "train")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Settings:
    """What a measured figure depends on; recorded with every result."""
    input_size: tuple[int, ...]
    batch_size: int
    mode: str
    precision: str
    channels_last: bool
    device: str

    def as_dict(self) -> dict:
        return {"input_size": "x".join(map(str, self.input_size)), "batch_size": self.batch_size,
                "mode": self.mode, "precision": self.precision, "channels_last": self.channels_last,
                "device": self.device}


def check_settings(input_size, batch_size, mode: str, precision: str, channels_last, device: str) -> Settings:
    """Settings with every value checked; mistakes are UserErrors naming the fix."""
    input_size = tuple(input_size)
    if len(input_size) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size):
        raise UserError(f"input_size must be three positive integers (channels, height, width), got {input_size}.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, got {device!r}.")
    resolve_device(device)  # refuses cuda without a GPU
    candidates(torch.device(device), precision, bool(channels_last))  # refuses fp16 on CPU, bf16 without support
    return Settings(input_size, batch_size, mode, precision, bool(channels_last), device)


def build_model(model: str | nn.Module, num_classes: int | None = None, model_args: dict | None = None) -> nn.Module:
    """A registered model built from its name, or the caller's module (never modified: see `prepare_model`)."""
    if isinstance(model, nn.Module):
        if num_classes is not None or model_args:
            raise UserError("num_classes and model_args apply to a model name, not to a built model.")
        return model
    if not isinstance(model, str):
        raise UserError(f"model must be a model name or an nn.Module, got {type(model).__name__}.")
    return create_model(model, num_classes=num_classes, **(model_args or {}))


def model_name(model: str | nn.Module) -> str:
    if isinstance(model, str):
        return model
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def prepare_model(model: nn.Module, settings: Settings, copy_first: bool) -> tuple[nn.Module, Execution]:
    """The model on the device, in the memory format and mode of `settings`, with its Execution.

    A training step changes weights, so a caller's module is measured on a copy (`copy_first`).
    bf16 training is refused where oneDNN computes wrong weight gradients (see `bf16_conv_hazards`).
    """
    execution = Execution(torch.device(settings.device), settings.precision, settings.channels_last)
    if copy_first:
        model = copy.deepcopy(model)
    model = model.to(execution.device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.mode == "train" and settings.precision == "bf16" and execution.device.type == "cpu":
        hazards = bf16_conv_hazards(model, settings.input_size)
        if hazards:
            raise UserError(f"bf16 training on this CPU computes wrong gradients for {', '.join(hazards[:3])} at "
                            f"input size {'x'.join(map(str, settings.input_size))} (a oneDNN bug); "
                            "measure it in fp32 or at a larger input size.")
    return model.train(settings.mode == "train"), execution


def output_classes(model: nn.Module, settings: Settings) -> int:
    """Width of the model's output, for labels of a training step (any module, not just timm's)."""
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and num_classes > 0:
        return num_classes
    was_training = model.training
    with torch.no_grad():
        width = model.eval()(torch.zeros(1, *settings.input_size, device=settings.device)).shape[-1]
    model.train(was_training)
    return width


def make_step(model: nn.Module, execution: Execution, settings: Settings):
    """A function running one measured pass on a fixed random batch."""
    generator = torch.Generator().manual_seed(0)
    images = execution.prepare(torch.randn(settings.batch_size, *settings.input_size, generator=generator))
    if settings.mode == "inference":
        def infer():
            with torch.inference_mode(), execution.autocast():
                model(images)
        return infer

    labels = torch.randint(0, output_classes(model, settings), (settings.batch_size,), generator=generator)
    labels = labels.to(execution.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        with execution.autocast():
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return train_step


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
