"""Parameters and multiply-accumulates (MACs), counted the way the papers count them.

The papers' "FLOPs" are multiply-accumulates of convolutions and linear layers only: normalization,
activations, pooling, additions and biases are free. We count them analytically from the shapes each
layer sees in one forward pass of a single image (as pycls does), rather than with
`torch.utils.flop_counter`, which reports 2 FLOPs per MAC, counts every matmul and cannot be told what
a custom layer really needs.

    conv:             output elements x (in_channels / groups) x kernel elements
    transposed conv:  input elements x (out_channels / groups) x kernel elements
    linear:           output elements x in_features (any leading dims: (N, H, W, C) inputs work)

A layer whose cost is not one of these (a REAF conv counts only its active weights, whatever kernel
executes it) defines `macs(self, inputs: tuple, output) -> int`, the MACs of that call for its whole
batch; it is then counted by that method alone and its submodules are skipped.

The pass runs on a copy of the model on the 'meta' device, so nothing is computed and no memory is
used; if some operation has no meta kernel it runs on a CPU copy instead. The caller's model is never
touched: no hooks are left on it and it keeps its device and train/eval mode.
"""
import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models import get_model_input_config

from ..errors import UserError
from ..models import create_model

__all__ = ['Complexity', 'complexity', 'count_macs', 'count_params']

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_COUNTED_LAYERS = (*_CONVS, *_TRANSPOSED_CONVS, nn.Linear)


@dataclass(frozen=True)
class Complexity:
    """Size and per-image cost of a model. MACs are multiply-accumulates of conv and linear layers."""
    params: int
    macs: int
    input_size: tuple[int, ...]

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def __str__(self) -> str:
        size = 'x'.join(map(str, self.input_size))
        return (f'{self.mparams:.2f}M params, {self.gmacs:.3f} GMACs per {size} input '
                f'(multiply-accumulates of conv and linear layers)')


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; a parameter shared by several modules counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> int:
    """Multiply-accumulates of conv and linear layers for one input of `input_size` (C, H, W)."""
    input_size = tuple(input_size)
    if not input_size or not all(isinstance(s, int) and s > 0 for s in input_size):
        raise UserError(f'input_size must be positive integers such as (3, 224, 224), got {input_size}')
    try:
        return _count_macs_on(model, input_size, torch.device('meta'))
    except (NotImplementedError, RuntimeError):  # an operation without a meta kernel, or data-dependent
        pass
    try:
        return _count_macs_on(model, input_size, torch.device('cpu'))
    except RuntimeError as err:
        raise UserError(
            f'{type(model).__name__} cannot run on a {"x".join(map(str, input_size))} input: {err}') from err


def complexity(
        model_or_name: nn.Module | str,
        input_size: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        **model_kwargs,
) -> Complexity:
    """Parameters and MACs of a model, or of a registered model built (on 'meta') from its name.

    `input_size` defaults to the model's own input size (its pretrained_cfg, e.g. 3x32x32 for the
    `_cifar` models); `num_classes` and `model_kwargs` are arguments of the model to build.
    """
    if isinstance(model_or_name, str):
        model = _build_on_meta(model_or_name, num_classes=num_classes, **model_kwargs)
    elif num_classes is not None or model_kwargs:
        raise UserError('num_classes and model arguments apply to a model name, not to a built model')
    else:
        model = model_or_name
    input_size = tuple(input_size or get_model_input_config(model)['input_size'])
    return Complexity(params=count_params(model), macs=count_macs(model, input_size), input_size=input_size)


def _build_on_meta(name: str, **kwargs) -> nn.Module:
    """Build without allocating or initializing any weights, unless the constructor needs real tensors."""
    try:
        with torch.device('meta'):
            return create_model(name, **kwargs)
    except (NotImplementedError, RuntimeError):  # a constructor that computes on its tensors
        return create_model(name, **kwargs)


def _count_macs_on(model: nn.Module, input_size: tuple[int, ...], device: torch.device) -> int:
    model = _copy_to(model, device).eval()
    macs = []
    for module in _counted_modules(model):
        module.register_forward_hook(lambda m, inputs, output: macs.append(_macs(m, inputs, output)))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    with torch.no_grad():
        model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    return sum(macs)


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy with every parameter and buffer on `device`.

    Tensors are placed in deepcopy's memo so they are moved, not copied first: a meta copy costs no
    memory and a CPU copy of a CPU model shares its storage (safe: the pass runs in eval mode under
    no_grad, so nothing writes to it). Meta tensors have no data to move; zeros stand in for them.
    """
    memo = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        moved = torch.zeros_like(tensor, device=device) if tensor.is_meta else tensor.detach().to(device)
        if isinstance(tensor, nn.Parameter):
            moved = nn.Parameter(moved, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = moved
    return copy.deepcopy(model, memo)


def _counted_modules(module: nn.Module, seen: set[int] | None = None) -> Iterator[nn.Module]:
    """Modules whose calls cost MACs: those with a `macs` method (not their submodules), convs, linears."""
    seen = set() if seen is None else seen
    if id(module) in seen:
        return
    seen.add(id(module))
    if callable(getattr(module, 'macs', None)) or isinstance(module, _COUNTED_LAYERS):
        yield module
        return
    for child in module.children():
        yield from _counted_modules(child, seen)


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if callable(getattr(module, 'macs', None)):
        return int(module.macs(inputs, output))
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel_elements = math.prod(module.kernel_size)
    if isinstance(module, _TRANSPOSED_CONVS):
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel_elements
    return output.numel() * (module.in_channels // module.groups) * kernel_elements
