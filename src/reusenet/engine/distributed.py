"""Data-parallel training with torch.distributed, launched by `torchrun`; a plain run is world size 1.

`torchrun` sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous variables; `setup()` reads them, joins the
process group (NCCL on GPUs, gloo on CPUs) and pins each rank to its GPU. Everything else in the engine asks
the returned `Distributed` for its rank, reduces metric sums through it and lets only rank 0 write files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UserError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def restart_count(self) -> int:
        """How often torchrun has restarted this worker group (`--max-restarts`)."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so counts stay exact)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object: a path, an execution choice)."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def from_environment() -> Distributed:
    """The launch torchrun describes in the environment (world size 1 without torchrun)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise UserError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers ({err}); launch with torchrun.") from None
    return Distributed(rank, local_rank, world_size)


def setup(device: str) -> tuple[Distributed, str]:
    """Join the process group torchrun prepared; returns it and the device this rank should use."""
    context = from_environment()
    if not context.enabled:
        return context, device
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
        device = f"cuda:{context.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return context, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(sum) with its gradient: every rank's output depends on every rank's input, so the gradient
    is summed back the same way. (torch.distributed.nn.functional.all_reduce does this but is deprecated, and
    its functional-collectives replacement has no autograd.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CPUSyncBatchNorm(_BatchNorm):
    """Synchronised BatchNorm for CPU ranks (gloo): torch's SyncBatchNorm refuses CPU tensors, and DDP refuses
    any nn.SyncBatchNorm on a CPU module, so this is a plain _BatchNorm that synchronises itself.

    Batch mean and variance are taken over every rank's samples with two differentiable all-reduces (sum,
    then sum of squared deviations), so the gradient flows across ranks exactly as in torch's CUDA kernel,
    and a run on N ranks of batch B matches one process of batch N x B.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dtype, input = input.dtype, input.float()  # statistics in fp32 under bf16/fp16 autocast, as torch's BN
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = torch.tensor([input.numel() / input.shape[1]], dtype=input.dtype, device=input.device)
        sums = _SumOverRanks.apply(torch.cat([input.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        output = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output.to(dtype)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2D input (got {input.dim()}D)")


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm becomes a SyncBatchNorm (torch's on GPUs, CPUSyncBatchNorm elsewhere)."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cpu":
        for module in model.modules():
            if type(module) is nn.SyncBatchNorm:
                module.__class__ = CPUSyncBatchNorm
    return model
