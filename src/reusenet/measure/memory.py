"""Peak memory of inference or of a training step, on a GPU or on a CPU.

What is counted: everything the measured passes hold at their peak for this model: parameters and
buffers, the input batch, activations kept for backward, gradients, optimizer state (SGD momentum),
kernel workspaces and whatever the allocator keeps for them. Not counted: Python, torch and their
libraries, i.e. what a process holds before the model exists. Two passes are measured (the first one
creates the optimizer state and picks kernels) and the larger peak is reported. See `workload` for what a
pass is.

GPU: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus what was allocated
before the model was built; measured in this process (the CUDA caching allocator's peak can be reset).

CPU: the process-wide peak of this process cannot be reset, and freed memory may stay resident, so each
model is measured in a fresh child process (running `main()` of this module). The child first runs a
tiny conv net in the same mode and precision, so that torch's kernels and thread pools are loaded, and one
discarded measurement per mode (one-off costs of the model's first pass). Then, for each setting: collect
garbage and return free heap to the OS (`malloc_trim`), read the resident set (VmRSS: the baseline, no
model), build the model and batch, reset the resident-set high-water mark (Linux: writing 5 to
/proc/self/clear_refs, so construction temporaries are not counted), run the passes and read the
high-water mark (VmHWM). peak = VmHWM - baseline. Resident memory is counted in pages the process
touched, so it is an upper bound on what tensors need, as the GPU figure is for the caching
allocator. Needs Linux's /proc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UserError
from .workload import Settings, build_model, check_settings, make_step, prepare_model, synchronize

__all__ = ["MemoryResult", "peak_memories", "peak_memory"]

MEASURED_PASSES = 2
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class MemoryResult:
    """Peak bytes a pass of `model` holds (see the module docstring), with the settings measured at."""
    model: str
    peak_bytes: int
    model_bytes: int  # parameters and buffers alone, counted from their tensors
    input_size: tuple[int, ...]
    batch_size: int
    mode: str
    precision: str
    channels_last: bool
    device: str
    num_classes: int | None = None
    model_args: dict = field(default_factory=dict)
    method: str = ""

    @property
    def mib(self) -> float:
        return self.peak_bytes / 2**20

    def __str__(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return (f"{self.model} {self.mode} batch {self.batch_size} at {'x'.join(map(str, self.input_size))}: "
                f"peak {self.mib:.1f} MiB [{self.device} {self.precision} {layout}; {self.method}]")


def peak_memory(model: str, *, input_size=(3, 32, 32), batch_size: int = 32, mode: str = "train",
                precision: str = "fp32", channels_last: bool = False, device: str = "cpu",
                num_classes: int | None = None, model_args: dict | None = None) -> MemoryResult:
    """Peak memory of one pass of a registered model (a fresh process on a CPU)."""
    return peak_memories(model, input_size=input_size, batch_sizes=[batch_size], modes=[mode], precision=precision,
                         channels_last=channels_last, device=device, num_classes=num_classes,
                         model_args=model_args)[0]


def peak_memories(model: str, *, input_size=(3, 32, 32), batch_sizes=(32,), modes=("train", "inference"),
                  precision: str = "fp32", channels_last: bool = False, device: str = "cpu",
                  num_classes: int | None = None, model_args: dict | None = None) -> list[MemoryResult]:
    """`peak_memory` for every (mode, batch size), in that order; on a CPU all in one fresh process."""
    if not isinstance(model, str):
        raise UserError("peak memory is measured on a model name (the model is rebuilt in a fresh process); "
                        f"got {type(model).__name__}.")
    settings = [check_settings(input_size, batch_size, mode, precision, channels_last, device)
                for mode in modes for batch_size in batch_sizes]
    if device == "cuda":
        peaks = [_cuda_peak(model, num_classes, model_args, s) for s in settings]
    else:
        peaks = _cpu_peaks_in_child(model, num_classes, model_args, settings)
    method = ("cuda max_memory_allocated" if device == "cuda"
              else "cpu resident-set high-water mark of a fresh process minus its baseline")
    return [MemoryResult(model, peak, model_bytes, s.input_size, s.batch_size, s.mode, s.precision, s.channels_last,
                         s.device, num_classes, dict(model_args or {}), method)
            for s, (peak, model_bytes) in zip(settings, peaks, strict=True)]


def tensor_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _cuda_peak(name: str, num_classes, model_args, settings: Settings) -> tuple[int, int]:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model, execution = prepare_model(build_model(name, num_classes, model_args), settings, copy_first=False)
    step = make_step(model, execution, settings)
    for _ in range(MEASURED_PASSES):
        step()
    synchronize("cuda")
    peak, model_bytes = torch.cuda.max_memory_allocated() - baseline, tensor_bytes(model)
    del model, step
    return peak, model_bytes


def _cpu_peaks_in_child(name: str, num_classes, model_args, settings: list[Settings]) -> list[tuple[int, int]]:
    if not CLEAR_REFS.exists():
        raise UserError("CPU peak memory needs Linux's /proc (a resettable resident-set high-water mark); "
                        "measure on Linux, or on a GPU with device cuda.")
    job = {"model": name, "num_classes": num_classes, "model_args": model_args or {},
           "threads": torch.get_num_threads(), "settings": [asdict(s) for s in settings]}
    command = [sys.executable, "-c", f"from {__name__} import main; main()"]
    child = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True)
    lines = child.stdout.strip().splitlines()
    reply = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if "error" in reply:
        raise UserError(reply["error"])
    if child.returncode or "peaks" not in reply:
        tail = "\n".join(child.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the memory-measuring process for {name} failed (exit {child.returncode}):\n{tail}")
    return [tuple(peak) for peak in reply["peaks"]]


# ---- the child process -------------------------------------------------------------------------------------

def _status_bytes(key: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{key} missing from {STATUS}")


def _release_free_memory(libc) -> None:
    gc.collect()
    if libc is not None:
        libc.malloc_trim(0)


def _warm_up_runtime(settings: Settings) -> None:
    """Load the kernels and thread pools every model uses, so they land in the baseline, not the peak."""
    tiny = nn.Sequential(nn.Conv2d(settings.input_size[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    small = Settings(settings.input_size, 2, settings.mode, settings.precision, settings.channels_last, "cpu")
    model, execution = prepare_model(tiny, small, copy_first=False)
    make_step(model, execution, small)()


def _measure_setting(job: dict, settings: Settings, libc) -> tuple[int, int]:
    _release_free_memory(libc)
    baseline = _status_bytes("VmRSS")
    model, execution = prepare_model(build_model(job["model"], job["num_classes"], job["model_args"]),
                                     settings, copy_first=False)
    step = make_step(model, execution, settings)
    CLEAR_REFS.write_text("5")  # high-water mark := current resident set
    for _ in range(MEASURED_PASSES):
        step()
    measured = (_status_bytes("VmHWM") - baseline, tensor_bytes(model))
    del model, step, execution
    _release_free_memory(libc)
    return measured


def _measure_in_this_process(job: dict) -> list[tuple[int, int]]:
    torch.set_num_threads(job["threads"])
    libc_path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_path) if libc_path else None
    libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
    peaks, rehearsed = [], set()
    for values in job["settings"]:
        settings = Settings(**{**values, "input_size": tuple(values["input_size"])})
        if settings.mode not in rehearsed:
            # A discarded first measurement per mode: one-off costs of the model's first pass (kernels for
            # its shapes, autograd and allocator state) would otherwise land on the first batch size only.
            _warm_up_runtime(settings)
            _measure_setting(job, settings, libc)
            rehearsed.add(settings.mode)
        peaks.append(_measure_setting(job, settings, libc))
    return peaks


def main() -> None:
    import reusenet  # noqa: F401  (registers the models with timm)

    job = json.loads(sys.stdin.read())
    try:
        print(json.dumps({"peaks": _measure_in_this_process(job)}))
    except UserError as err:
        print(json.dumps({"error": str(err)}))
