"""ResFRI and Split-ResFRI blocks: Inception's four groups linked by information-interaction passages

Paper: `Residual Feature-Reutilization Inception Network for Image Classification` (arXiv 2412.19433,
papers/resfri-summary.txt; earlier version: `GoogLe2Net: Going Transverse with Convolutions`, arXiv 2301.00424).
The summary is the specification; every choice it leaves open is listed here and in models/resfri.py.

A block has the four parallel groups of an Inception module, each ending in Conv-BN-ReLU:

    group 1: 1x1 conv                                      -> c1
    group 2: 1x1 reduce (r3) | passage from group 1 | 3x3  -> c3
    group 3: 1x1 reduce (r5) | passage from group 2 | 5x5  -> c5
    group 4: (its input)     | passage from group 3 | 3x3 pool, 1x1 conv -> cp

and, as in Res2Net, group i's output enters group i+1 before that group's spatial operation ("|" above):
`h + P(y_i)` (fusion "add") or `fuse(cat(h, P(y_i)))` (fusion "concat", `fuse` a 1x1 Conv-BN-ReLU back to
h's width). The four outputs are concatenated and the block input is added back, then ReLU.

Choices the summary leaves open (with the reason):
* Where a passage enters: after the group's 1x1 reduce, before its 3x3 / 5x5 ("before its spatial conv"),
  so the later group's larger kernel works on the earlier group's features too and the receptive fields
  grow along the chain, as in Res2Net. The pool group's spatial operation is its pool, so its passage enters
  before the pool, on the group's input. That group has no reduce conv, so its passage works at the input's
  width: with concat, its fuse conv (2C x C for C input channels) holds most of the concat version's extra
  parameters (ResFRI concat 14.9M vs add 9.0M at 32x32, 100 classes; Split-ResFRI's 1/8 slice shrinks it 64x).
* Passage projection `P`: a 1x1 conv + BN (no ReLU, like ResNet's projection shortcut: a linear path) where
  the widths differ, the identity where they match. The add and concat versions share it, so the ablation
  differs in the fusion only. Passage convs are `PassageConv2d`, the only weights that passage pruning
  touches; identity passages and the fuse convs (which carry the group's own features) are the essential
  paths it keeps.
* 5x5 group: two stacked 3x3 convs by default (`branch5x5='two3x3'`), a true 5x5 with `branch5x5='5x5'`.
  The host network is the CIFAR GoogLeNet of kuangliu/pytorch-cifar, which builds its 5x5 branch this way;
  keeping it makes the plain-GoogLeNet baseline that common network and gives the same receptive field with
  18 instead of 25 weights per channel pair plus one more nonlinearity (Inception-v3's factorization).
* Block residual: the identity when the block keeps its width, else a 1x1 conv + BN; ReLU after the sum as
  in ResNet (on an identity shortcut it changes nothing: both terms are already non-negative).
* Pool group: 3x3, stride 1, padding 1; `pool_type` "max" (Inception's, default) or "avg" (the ablation;
  padding is not counted in the average).
* Split-ResFRI: the block input is cut into contiguous channel slices, 3/8, 3/8, 1/8, 1/8 by default, feeding
  groups 1..4 in order; group widths stay the same, so only the layers reading the input shrink. A ratio
  that does not give a whole number of channels is refused rather than rounded.

Passage pruning (`prune_passages`) is torch.nn.utils.prune's L1 unstructured pruning of the passage convs
alone: the weights stay dense (`weight_orig`) with a `weight_mask` buffer, so the mask survives training.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from timm.layers import ConvNormAct

__all__ = [
    'BRANCH5X5', 'FUSIONS', 'POOL_TYPES', 'SPLIT_RATIOS', 'InceptionWidths', 'Passage', 'PassageConv2d',
    'PassageSummary', 'ResFRIBlock', 'SplitResFRIBlock', 'passage_summary', 'prune_passages',
]

FUSIONS = ('add', 'concat')
BRANCH5X5 = ('two3x3', '5x5')
POOL_TYPES = ('max', 'avg')
SPLIT_RATIOS = (3 / 8, 3 / 8, 1 / 8, 1 / 8)


class InceptionWidths(NamedTuple):
    """One Inception module's widths, the columns of GoogLeNet's Table 1."""
    c1: int  # 1x1
    r3: int  # 3x3 reduce
    c3: int  # 3x3
    r5: int  # 5x5 reduce
    c5: int  # 5x5
    cp: int  # pool proj

    @property
    def out_chs(self) -> int:
        return self.c1 + self.c3 + self.c5 + self.cp


class PassageConv2d(nn.Conv2d):
    """The 1x1 conv of an information-interaction passage: what `prune_passages` prunes, and how it is counted.

    `macs` counts only the non-zero weights (the MACs a sparse kernel needs), as measure/complexity.py asks of
    layers whose dense kernel does more work than the layer needs. State dicts load across pruning states:
    a pruned conv given a plain `weight` re-prunes it at its own ratio; an unpruned conv given
    `weight_orig` + `weight_mask` loads their product.
    """

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__(in_chs, out_chs, 1, bias=False, device=device, dtype=dtype)
        self.prune_ratio = 0.0  # set by prune_passages

    @property
    def is_pruned(self) -> bool:
        return hasattr(self, 'weight_mask')

    def kept_weights(self) -> int:
        """Weights a sparse kernel multiplies. Meta tensors have no values; L1Unstructured prunes exactly
        round(ratio * n) of them, which is the count then."""
        weight = self.weight
        if weight.is_meta:
            return weight.numel() - round(self.prune_ratio * weight.numel())
        return int(torch.count_nonzero(weight))

    def macs(self, inputs: tuple, output: torch.Tensor) -> int:
        batch, _, height, width = output.shape
        return batch * height * width * self.kept_weights()

    def __getstate__(self):
        # A pruned conv's `weight` is weight_orig * weight_mask, recomputed before every call; the copy from
        # the last call is part of an autograd graph, which deepcopy (EMA, timing trials, measure) refuses.
        state = super().__getstate__()
        weight = state.get('weight')
        if isinstance(weight, torch.Tensor) and not weight.is_leaf:
            state = dict(state, weight=weight.detach())
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        dense, orig, mask = prefix + 'weight', prefix + 'weight_orig', prefix + 'weight_mask'
        if self.is_pruned and dense in state_dict and orig not in state_dict:
            weight = state_dict.pop(dense)
            state_dict[orig] = weight
            state_dict[mask] = prune.L1Unstructured(self.prune_ratio).compute_mask(weight, torch.ones_like(weight))
        elif not self.is_pruned and orig in state_dict and mask in state_dict and dense not in state_dict:
            state_dict[dense] = state_dict.pop(orig) * state_dict.pop(mask)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Passage(nn.Module):
    """Carries group i's output into group i+1: projection (where widths differ), then add or concat + fuse."""

    def __init__(self, from_chs: int, to_chs: int, fusion: str = 'add', device=None, dtype=None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f'fusion must be one of {", ".join(FUSIONS)}, got {fusion!r}')
        dd = {'device': device, 'dtype': dtype}
        self.fusion = fusion
        self.proj = nn.Identity() if from_chs == to_chs else nn.Sequential(OrderedDict(
            conv=PassageConv2d(from_chs, to_chs, **dd), bn=nn.BatchNorm2d(to_chs, **dd)))
        self.fuse = ConvNormAct(2 * to_chs, to_chs, 1, **dd) if fusion == 'concat' else None

    def forward(self, h: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        carried = self.proj(previous)
        if self.fuse is None:
            return h + carried
        return self.fuse(torch.cat([h, carried], dim=1))


class InceptionGroup(nn.Module):
    """One of the four groups: `enter` (1x1 reduce or nothing), where a passage joins, then `body`.

    Run by the block in two halves (see `ResFRIBlock.forward_groups`), so it has no forward of its own.
    """

    def __init__(self, enter: nn.Module, body: nn.Module):
        super().__init__()
        self.enter = enter
        self.body = body


class ResFRIBlock(nn.Module):
    """ResFRI block: Inception's four groups linked by passages, outputs concatenated, input added back.

    `fusion=None` drops the passages and `residual=False` the input shortcut: both together give a plain
    GoogLeNet Inception module, the baseline. `split_ratios` (Split-ResFRI) feeds each group a contiguous
    channel slice of the input instead of all of it.
    """

    def __init__(
            self,
            in_chs: int,
            widths: InceptionWidths,
            fusion: str | None = 'add',
            residual: bool = True,
            split_ratios: tuple[float, ...] | None = None,
            branch5x5: str = 'two3x3',
            pool_type: str = 'max',
            device=None,
            dtype=None,
    ):
        super().__init__()
        if branch5x5 not in BRANCH5X5:
            raise ValueError(f'branch5x5 must be one of {", ".join(BRANCH5X5)}, got {branch5x5!r}')
        if pool_type not in POOL_TYPES:
            raise ValueError(f'pool_type must be one of {", ".join(POOL_TYPES)}, got {pool_type!r}')
        dd = {'device': device, 'dtype': dtype}
        widths = InceptionWidths(*widths)
        self.split_sizes = _split_sizes(in_chs, split_ratios) if split_ratios is not None else None
        parts = self.split_sizes or [in_chs] * 4
        if branch5x5 == 'two3x3':
            body5 = nn.Sequential(
                ConvNormAct(widths.r5, widths.c5, 3, **dd), ConvNormAct(widths.c5, widths.c5, 3, **dd))
        else:
            body5 = ConvNormAct(widths.r5, widths.c5, 5, **dd)
        pool = nn.MaxPool2d(3, 1, 1) if pool_type == 'max' else nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.groups = nn.ModuleList([
            InceptionGroup(ConvNormAct(parts[0], widths.c1, 1, **dd), nn.Identity()),
            InceptionGroup(ConvNormAct(parts[1], widths.r3, 1, **dd), ConvNormAct(widths.r3, widths.c3, 3, **dd)),
            InceptionGroup(ConvNormAct(parts[2], widths.r5, 1, **dd), body5),
            InceptionGroup(nn.Identity(), nn.Sequential(pool, ConvNormAct(parts[3], widths.cp, 1, **dd))),
        ])
        group_out = (widths.c1, widths.c3, widths.c5)
        passage_in = (widths.r3, widths.r5, parts[3])  # where each passage joins groups 2, 3, 4
        self.passages = None if fusion is None else nn.ModuleList(
            Passage(src, dst, fusion, **dd) for src, dst in zip(group_out, passage_in, strict=True))
        self.out_chs = widths.out_chs
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if in_chs == self.out_chs else ConvNormAct(
                in_chs, self.out_chs, 1, apply_act=False, **dd)
        self.act = nn.ReLU(inplace=True) if residual else nn.Identity()

    def forward_groups(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four group outputs, before concatenation."""
        parts = torch.split(x, self.split_sizes, dim=1) if self.split_sizes else [x] * 4
        outputs = []
        for index, (group, part) in enumerate(zip(self.groups, parts, strict=True)):
            h = group.enter(part)
            if self.passages is not None and index:
                h = self.passages[index - 1](h, outputs[-1])
            outputs.append(group.body(h))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat(self.forward_groups(x), dim=1)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


class SplitResFRIBlock(ResFRIBlock):
    """Split-ResFRI block: a ResFRI block whose groups read contiguous slices 3/8, 3/8, 1/8, 1/8 of the input."""

    def __init__(self, in_chs: int, widths: InceptionWidths, split_ratios: tuple[float, ...] = SPLIT_RATIOS,
                 **kwargs):
        super().__init__(in_chs, widths, split_ratios=split_ratios, **kwargs)


def _split_sizes(in_chs: int, ratios) -> list[int]:
    """Channel counts of the four slices; refuses ratios that would need rounding."""
    ratios = tuple(ratios)
    if len(ratios) != 4 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
        raise ValueError(f'split_ratios must be four positive fractions summing to 1, got {ratios}')
    sizes = [ratio * in_chs for ratio in ratios]
    if any(abs(size - round(size)) > 1e-6 for size in sizes):
        raise ValueError(f'split_ratios {ratios} do not cut {in_chs} channels into whole numbers '
                         f'({", ".join(f"{s:g}" for s in sizes)}); choose ratios or widths that do')
    return [round(size) for size in sizes]


@dataclass(frozen=True)
class PassageSummary:
    """What passage pruning left: passage weights kept, and the parameters a sparse kernel would store."""
    passage_convs: int
    passage_weights: int
    kept_passage_weights: int
    params: int  # all parameters, pruned passage weights included (they stay in memory as weight_orig)

    @property
    def nonzero_params(self) -> int:
        return self.params - (self.passage_weights - self.kept_passage_weights)

    def __str__(self) -> str:
        kept = self.kept_passage_weights / max(self.passage_weights, 1)
        return (f'{self.passage_convs} passage convs: {self.kept_passage_weights:,} of {self.passage_weights:,} '
                f'weights kept ({kept:.1%}); {self.nonzero_params:,} of {self.params:,} parameters non-zero')


def passage_summary(module: nn.Module) -> PassageSummary:
    convs = [m for m in module.modules() if isinstance(m, PassageConv2d)]
    return PassageSummary(
        passage_convs=len(convs),
        passage_weights=sum(conv.weight.numel() for conv in convs),
        kept_passage_weights=sum(conv.kept_weights() for conv in convs),
        params=sum(p.numel() for p in module.parameters()),
    )


def prune_passages(module: nn.Module, ratio: float, permanent: bool = False) -> PassageSummary:
    """Prune `ratio` of the weights of every passage conv in `module` by L1 magnitude; nothing else is touched.

    Each conv ends with exactly round(ratio * n) of its n weights pruned: an earlier pruning is made
    permanent first, so its zeros (the smallest magnitudes) stay pruned when the ratio grows, and ratios do
    not compound. Not permanent (default): torch's reparametrization `weight = weight_orig * weight_mask`,
    which training keeps. Permanent: a plain `weight` holding zeros, which training would revive. Both
    replace the `weight` parameter, so prune before building an optimizer.
    """
    ratio = float(ratio)  # torch reads an int amount as a count of weights, not a fraction
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'prune ratio must be in [0, 1], got {ratio}')
    convs = [m for m in module.modules() if isinstance(m, PassageConv2d)]
    if ratio and not convs:
        raise ValueError(f'{type(module).__name__} has no passage convs to prune; use a prune ratio of 0')
    for conv in convs:
        if conv.is_pruned:
            prune.remove(conv, 'weight')
        if ratio:
            prune.l1_unstructured(conv, 'weight', amount=ratio)
            if permanent:
                prune.remove(conv, 'weight')
        conv.prune_ratio = ratio
    return passage_summary(module)
