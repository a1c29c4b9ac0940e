"""Device, numeric precision and memory format of a run.

On CPUs with AMX-BF16, bf16 autocast with channels_last trains a CIFAR ResNet-18 ~1.6x faster than fp32
but is slower for small models, so `precision: auto` decides by timing a few real training steps of the
actual model at the actual batch size for each candidate, never by a rule of thumb.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass
from functools import partial

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Execution:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device.type} {self.precision} {layout}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was requested but no CUDA GPU is available; use device=cpu or auto.")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def candidates(device: torch.device, precision: str, channels_last) -> list[Execution]:
    """Every (precision, layout) the config allows on this device."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA GPU; on a CPU use bf16, fp32 or auto.")
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise UserError("this CPU has no bf16 support in oneDNN; use precision fp32 or auto.")
    if precision == "auto":
        if device.type == "cuda":
            precisions = ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]
        else:
            precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]
    else:
        precisions = [precision]
    layouts = [True, False] if channels_last == "auto" else [bool(channels_last)]
    return [Execution(device, p, cl) for p in precisions for cl in layouts]


def bf16_conv_hazards(model: torch.nn.Module, input_size) -> list[str]:
    """Names of convolutions whose bf16 weight gradient oneDNN computes wrongly at this input size.

    A strided conv with a kernel larger than 1x1 whose input feature map is 1x1 (torch 2.14.1, AVX-512/AMX
    CPU): the off-centre taps of its weight gradient get uninitialised memory, relative errors up to 1e32
    and NaN, different on every call, while fp32 is exact. Repro: Conv2d(192, 96, 3, stride=2, padding=1)
    on a (16, 192, 1, 1) input under bf16 autocast, compared with the fp32 gradient. Such layers appear
    when an ImageNet-stem model sees tiny inputs (timm's test_resnet at 16x16).
    """
    suspects = {name: module for name, module in model.named_modules()
                if isinstance(module, torch.nn.Conv2d) and max(module.stride) > 1 and max(module.kernel_size) > 1}
    if not suspects:
        return []
    hazards = []

    def record(name, module, inputs):
        if inputs[0].shape[-2:] == (1, 1):
            hazards.append(name)

    hooks = [module.register_forward_pre_hook(partial(record, name)) for name, module in suspects.items()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return hazards


def time_training_step(model, execution: Execution, batch_size: int, input_size, num_classes: int,
                       steps: int = 3) -> float:
    """Median seconds of a forward+backward+SGD step on a throwaway copy of the model."""
    trial = copy.deepcopy(model).to(execution.device).train()
    if execution.channels_last:
        trial = trial.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(trial.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)  # keeps the global RNG, and so the run, untouched
    images = execution.prepare(torch.randn(batch_size, *input_size, generator=generator))
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(execution.device)
    times = []
    for _ in range(steps + 1):  # the first step warms up kernels and allocator
        start = time.perf_counter()
        with execution.autocast():
            loss = torch.nn.functional.cross_entropy(trial(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if execution.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def choose_execution(model, config, input_size, num_classes: int, log=print) -> Execution:
    """The fastest allowed execution for this model and batch size (measured when there is a choice)."""
    device = resolve_device(config.device)
    options = candidates(device, config.precision, config.channels_last)
    if device.type == "cpu" and any(option.precision == "bf16" for option in options):
        hazards = bf16_conv_hazards(model, input_size)
        if hazards and config.precision == "bf16":
            raise UserError(f"bf16 on this CPU computes wrong gradients for {', '.join(hazards[:3])} (a strided conv "
                            f"on a 1x1 feature map at input size {'x'.join(map(str, input_size[1:]))}, a oneDNN "
                            "bug); use precision fp32 or auto, or larger inputs.")
        if hazards:
            log(f"bf16 left out: oneDNN computes wrong bf16 gradients for {', '.join(hazards[:3])} at this input size")
            options = [option for option in options if option.precision != "bf16"]
    if len(options) == 1:
        return options[0]
    rng_state = torch.get_rng_state()
    timed = {opt: time_training_step(model, opt, config.batch_size, input_size, num_classes) for opt in options}
    torch.set_rng_state(rng_state)
    best = min(timed, key=timed.get)
    log("execution measured: " + ", ".join(f"{o.describe()} {t * 1e3:.0f} ms/step" for o, t in timed.items())
        + f" -> {best.describe()}")
    return best
