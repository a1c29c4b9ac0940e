"""REAF and REAF+ convolutions (Zhu, Al-Ars, Hofstee, "REAF: Reducing Approximation of channels by Reducing
Feature reuse within convolution", IEEE Access 2020), plus `fold` and `reafify`.

REAF (Eq. 5-6): the C_in input channels form G_I contiguous groups of A_in channels and the C_out output
channels G_O contiguous groups of B_out channels, with G_O = C(G_I, G_M). Output group l reads the l-th
G_M-combination of input groups, in `itertools.combinations` (lexicographic) order, so each output group sees
its own subset of the input. G_M = 1 is a grouped convolution with G_I groups; G_M = G_I a dense one.

Execution. The compact weight (C_out, G_M * A_in, k, k) is scattered into a block-masked dense weight and one
dense conv runs on it. On a 2-core AMX CPU (N=128, 72->72, 32x32, 4-3-4, forward+backward) that cost 0.92-1.17x
the dense conv, while gathering the G_M groups of every output group into one tensor for a grouped conv costs
2.5-6.5x and per-group convs + cat 2.3-3x: gathers copy activations, the scatter only touches the weight.
G_M = 1 runs the native grouped conv (the masked weight would waste G_I - 1 of every G_I MACs) and G_M = G_I
the plain dense conv. MACs, as counted by `reusenet.measure`, are those of the active weights only.

REAF+ (Eq. 8): the conv's input O' gets g_O (norm, activation) pairs, one per output group, so every output
group convolves its own normalized copy of O'. It replaces the single norm + activation the base model has in
front of that conv, hence costs (g_O - 1) * 2 * C_in parameters (BN weight and bias) and no MACs. The g_O
copies are concatenated and convolved with a grouped conv (groups=g_O) whose weight is the masked dense weight,
one kernel call instead of g_O.
"""
import fnmatch
import itertools
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['REAFConv2d', 'REAFPlusConv2d', 'BranchedNormAct', 'fold', 'reafify', 'reaf_configs']

_IMPLS = ('masked', 'grouped', 'dense')


def reaf_configs(in_channels: int, out_channels: int, max_groups: int = 16) -> list[tuple[int, int, int]]:
    """Every valid (G_I, G_M, G_O) with G_I <= max_groups for these channel counts, sorted by G_I then G_M."""
    return [(g_in, g_merge, math.comb(g_in, g_merge))
            for g_in in range(1, max_groups + 1) if in_channels % g_in == 0
            for g_merge in range(1, g_in + 1) if out_channels % math.comb(g_in, g_merge) == 0]


def _check_config(in_channels: int, out_channels: int, g_in: int, g_merge: int, g_out: int) -> None:
    problems = []
    if not (isinstance(g_in, int) and isinstance(g_merge, int) and 1 <= g_merge <= g_in):
        problems.append(f'need integers 1 <= g_merge <= g_in, got g_in={g_in}, g_merge={g_merge}')
    elif g_out != math.comb(g_in, g_merge):
        problems.append(f'g_out must be C(g_in, g_merge) = C({g_in}, {g_merge}) = {math.comb(g_in, g_merge)}, '
                        f'got {g_out}')
    if isinstance(g_in, int) and g_in > 0 and in_channels % g_in:
        problems.append(f'in_channels {in_channels} is not divisible by g_in={g_in}')
    if isinstance(g_out, int) and g_out > 0 and out_channels % g_out:
        problems.append(f'out_channels {out_channels} is not divisible by g_out={g_out}')
    if problems:
        valid = ', '.join('-'.join(map(str, c)) for c in reaf_configs(in_channels, out_channels)) or 'none'
        raise ValueError(f'invalid REAF configuration for {in_channels}->{out_channels} channels: '
                         f'{"; ".join(problems)}. Valid g_in-g_merge-g_out choices (g_in <= 16): {valid}')


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """x's layout, for the conv weight: a weight in another layout than the input makes oneDNN reorder it."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class REAFConv2d(nn.Module):
    """Convolution whose output group l reads only the l-th G_M-combination of the G_I input groups (Eq. 5-6).

    `weight` is compact, (C_out, G_M * A_in, k, k): row j holds the weights of output channel j over the input
    channels of its combination, in channel order. `impl` picks the kernel; the default follows the module
    docstring ('grouped' for G_M = 1, 'dense' for G_M = G_I, otherwise 'masked'), 'masked' works for any config.
    """

    def __init__(
            self,
            in_ch: int,
            out_ch: int,
            kernel_size: int,
            stride: int = 1,
            padding: int | None = None,
            dilation: int = 1,
            *,
            g_in: int,
            g_merge: int,
            g_out: int,
            bias: bool = False,
            impl: str | None = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        _check_config(in_ch, out_ch, g_in, g_merge, g_out)
        self.in_channels, self.out_channels = in_ch, out_ch
        self.g_in, self.g_merge, self.g_out = g_in, g_merge, g_out
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.dilation = (dilation, dilation)
        padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        self.padding = (padding, padding)
        self.impl = impl or ('dense' if g_merge == g_in else 'grouped' if g_merge == 1 else 'masked')
        if self.impl not in _IMPLS or (self.impl == 'grouped' and g_merge != 1) or (
                self.impl == 'dense' and g_merge != g_in):
            raise ValueError(f"impl must be 'masked', 'grouped' (only for g_merge=1) or 'dense' (only for "
                             f"g_merge=g_in), got {impl!r} for {g_in}-{g_merge}-{g_out}")
        group_in = in_ch // g_in
        self.weight = nn.Parameter(torch.empty(
            out_ch, g_merge * group_in, kernel_size, kernel_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_ch, device=device, dtype=dtype)) if bias else None
        # Input channel of every compact weight column: output group l reads the groups of combination l.
        columns = [[g * group_in + c for g in combo for c in range(group_in)]
                   for combo in itertools.combinations(range(g_in), g_merge)]
        index = torch.tensor(columns, device=device).repeat_interleave(out_ch // g_out, dim=0)
        self.register_buffer('input_index', index, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialization, with the fan-in of the active weights (as for a grouped conv)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def masked_weight(self, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """The equivalent dense weight (C_out, C_in, k, k): the compact weight, zeros where REAF has no link.

        Built by two kernels (zeros, in-place scatter) directly in `memory_format`: under CPU contention every
        small multi-threaded op can cost an OpenMP barrier, so the fewer the better.
        """
        if self.g_merge == self.g_in:
            return self.weight.contiguous(memory_format=memory_format)
        dense = torch.empty((self.out_channels, self.in_channels, *self.kernel_size), device=self.weight.device,
                            dtype=self.weight.dtype, memory_format=memory_format).zero_()
        return dense.scatter_(1, self.input_index[:, :, None, None].expand_as(self.weight), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == 'grouped':
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.g_in)
        return F.conv2d(x, self.masked_weight(_memory_format(x)), self.bias, self.stride, self.padding, self.dilation)

    def macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """Active weights only: every output element sums G_M * A_in * k * k products."""
        return output.numel() * self.weight[0].numel()

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}, reaf={self.g_in}-{self.g_merge}-{self.g_out}, '
                f'impl={self.impl}, bias={self.bias is not None}')


class BranchedNormAct(nn.Module):
    """REAF+'s g_O (norm, activation) pairs applied to one input, outputs concatenated along channels."""

    def __init__(self, channels: int, branches: int, norm_layer: Callable = nn.BatchNorm2d,
                 act_layer: Callable = nn.ReLU, device=None, dtype=None):
        super().__init__()
        self.norms = nn.ModuleList(norm_layer(channels, device=device, dtype=dtype) for _ in range(branches))
        self.acts = nn.ModuleList(act_layer() for _ in range(branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([act(norm(x)) for norm, act in zip(self.norms, self.acts, strict=True)], dim=1)


class REAFPlusConv2d(REAFConv2d):
    """REAF+ (Eq. 8): a REAF conv whose `norm_groups` output groups each see their own norm + activation of x.

    It takes the pre-norm input O' and replaces the base model's single norm + activation in front of the conv.
    `norm_groups` is the paper's g_O; it must divide C_out and is independent of the REAF config (g_in=g_merge=
    g_out=1 is a dense conv, as on MobileNetV2's and ResNeXt's last pointwise conv in Table 7).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int | None = None,
                 dilation: int = 1, *, norm_groups: int, g_in: int = 1, g_merge: int = 1, g_out: int = 1,
                 norm_layer: Callable = nn.BatchNorm2d, act_layer: Callable = nn.ReLU, bias: bool = False,
                 impl: str | None = None, device=None, dtype=None):
        if not (isinstance(norm_groups, int) and norm_groups >= 1 and out_ch % norm_groups == 0):
            raise ValueError(f'norm_groups must be a positive divisor of out_ch={out_ch}, got {norm_groups}')
        super().__init__(in_ch, out_ch, kernel_size, stride, padding, dilation, g_in=g_in, g_merge=g_merge,
                         g_out=g_out, bias=bias, impl=impl, device=device, dtype=dtype)
        self.norm_groups = norm_groups
        self.branches = BranchedNormAct(in_ch, norm_groups, norm_layer, act_layer, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.branches(x)
        if self.norm_groups == 1:
            return super().forward(x)
        return F.conv2d(x, self.masked_weight(_memory_format(x)), self.bias, self.stride, self.padding,
                        self.dilation, self.norm_groups)


def _plain_conv(conv: REAFConv2d, weight: torch.Tensor, in_channels: int, groups: int) -> nn.Conv2d:
    plain = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      groups=groups, bias=conv.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain


def _folded(module: REAFConv2d) -> nn.Module:
    with torch.no_grad():
        if isinstance(module, REAFPlusConv2d):
            conv = _plain_conv(module, module.masked_weight(), module.in_channels * module.norm_groups,
                               module.norm_groups)
            return nn.Sequential(module.branches, conv)
        if module.impl == 'grouped':
            return _plain_conv(module, module.weight, module.in_channels, module.g_in)
        return _plain_conv(module, module.masked_weight(), module.in_channels, 1)


def fold(model: nn.Module) -> nn.Module:
    """Replace every REAF conv in `model` (in place; returned) by standard modules computing the same outputs.

    A REAFConv2d becomes an nn.Conv2d holding its masked dense weight (a grouped nn.Conv2d for G_M = 1), for
    export and deployment. A REAFPlusConv2d becomes nn.Sequential(its BranchedNormAct, a grouped nn.Conv2d
    over the g_O concatenated branches): the REAF mask folds into the conv, but the per-group norms cannot fold
    into it because each is followed by its activation. A bare REAF conv passed as `model` is returned folded.
    """
    if isinstance(model, REAFConv2d):
        return _folded(model)
    for name, child in list(model.named_children()):
        if isinstance(child, REAFConv2d):
            setattr(model, name, _folded(child))
        else:
            fold(child)
    return model


def reafify(model: nn.Module, config: tuple[int, int, int], where: str | Iterable[str] | Callable) -> nn.Module:
    """Turn the nn.Conv2d layers of `model` selected by `where` into REAF convs (in place; returns `model`).

    `where` is a module-name glob ('layer*.*.conv2'), a list of globs, or a callable (name, module) -> bool.
    Widths are kept: each converted conv keeps the weights of its active links (a trained model becomes its
    masked version) and loses the others, so parameters and MACs drop by G_M / G_I on those convs. To compare at
    a matched budget, widen the model where you want before converting (for ResNets, the `width` arguments of
    reusenet's REAF-ResNet models do it). A selected conv that cannot take the config (grouped, or channels not
    divisible) raises ValueError naming it; nothing is converted then.
    """
    g_in, g_merge, g_out = config
    if callable(where):
        selected = where
    else:
        patterns = [where] if isinstance(where, str) else list(where)
        selected = lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)  # noqa: E731
    targets = [(name, m) for name, m in model.named_modules() if name and type(m) is nn.Conv2d and selected(name, m)]
    if not targets:
        raise ValueError(f'reafify: no nn.Conv2d of {type(model).__name__} matches where={where!r}')
    replacements = {}
    for name, conv in targets:
        square = all(len(set(v)) == 1 for v in (conv.kernel_size, conv.stride, conv.padding, conv.dilation))
        if conv.groups != 1 or not square or isinstance(conv.padding, str) or conv.padding_mode != 'zeros':
            raise ValueError(f'reafify: {name} is grouped or has non-square, string or non-zero padding, which '
                             f'REAFConv2d does not take; leave it out of `where`')
        try:
            reaf = REAFConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                              conv.padding[0], conv.dilation[0], g_in=g_in, g_merge=g_merge, g_out=g_out,
                              bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        except ValueError as err:
            raise ValueError(f'reafify: cannot convert {name}: {err}') from None
        with torch.no_grad():
            index = reaf.input_index[:, :, None, None].expand_as(reaf.weight)
            reaf.weight.copy_(conv.weight.gather(1, index))
            if conv.bias is not None:
                reaf.bias.copy_(conv.bias)
        replacements[name] = reaf
    for name, reaf in replacements.items():
        parent, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent), attr, reaf)
    return model
