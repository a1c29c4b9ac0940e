"""ResNet-19/25/34, Highway-19 and ResFuse-19/25 of the ResFuse paper, for 64x64 ImageNet-100

Paper: `ResFuse and ReFiNet: Enhanced CNN Architectures for Image Classification` (Desai, Ren, Nie),
Section 4, Tables 2 and 3 (`papers/resfuse-refinet.txt`). Implemented:
* Eq. 1, the residual block y = F(x) + x, with F = conv3x3-BN-ReLU-conv3x3-BN and ReLU after the sum
  (the ResNet paper's basic block); width changes use parameter-free zero-padded shortcuts (Section 4.1.1,
  "vanilla padded projection", the ResNet paper's option A).
* Eq. 3, the highway block y = H(x) T(x) + x (1 - T(x)).
* Eq. 5, the ResFuse pair y = F(F(x) + x) + C(x), C a learned 1x1 stride-1 "carry" projection.

The 19-layer plan (the paper gives only its parameter count): a 3x3 stride-1 stem conv to 64 channels with
BN, basic-block stages of widths 64/128/256 with 2/3/3 blocks (stride 2 at the start of stages 2 and 3),
zero-padded shortcuts, global average pooling and one linear layer. At 100 classes this is 4,235,172
parameters, Table 3's ResNet-19 to the unit, so the stride-1 stem is the one open point (parameters do not
depend on strides); it is the CIFAR ResNets' stem, which keeps all 64x64 pixels into the first stage, as
`baselines.py` does for every small-input model. The plan has 18 weighted layers in the usual count
(stem + 16 + linear); the paper's "19" and "25" are both odd, which no stem + two-conv blocks + linear
plan is, so its count adds one to ours and depth labels follow the paper.

Choices where the paper is silent, and why:
* ResFuse-19: a stage's same-width blocks are taken two by two from its start into pairs, each with a
  carry C = 1x1 conv (no bias) + BN from the pair's input to the pair's output, added before the second
  block's final ReLU; a block that changes width or stride stays a regular residual block (Section 4.1.3).
  That gives one pair per stage and 64^2 + 128^2 + 256^2 conv weights + 2 (64 + 128 + 256) BN weights
  = 86,912 parameters over ResNet-19: 4,322,084, Table 3's ResFuse-19 to the unit. Without BN (or with a
  conv bias instead) the count misses by 896 (448), so C carries a BN.
* Does the second block of a pair keep its own identity shortcut? Eq. 5 read literally drops it
  (y = F(z) + C(x), z = F(x) + x). The text says otherwise: C is a *redundant* connection "built on top of
  residual network's simple additive connections", and "if such redundant connection is not needed, it
  can equate to the zero-matrix", which only gives back a ResNet if the shortcut stays. Both readings have
  the same parameters. Default: the shortcut stays (y = F(z) + z + C(x)); `second_shortcut=False` is Eq. 5
  read literally.
* Highway-19 (Eq. 3): the same plan, with each same-width residual block replaced by a highway block whose
  H is the block's two convs (conv-BN-ReLU-conv-BN-ReLU, H ends in its nonlinearity as in the Highway
  Networks paper) and whose transform gate is T(x) = sigmoid(conv3x3(x) + b), a conv of the same kernel as
  H's, with a bias. Width changes: "Highway network uses normal convolution layers between highway blocks
  to increase the number of filters" (Section 4.3), so those blocks are plain two-conv blocks without a
  shortcut. The gate bias starts at -2 (the Highway Networks paper, which the ResFuse paper follows for
  the gates, starts it negative, more so the deeper the network; -2 for this depth, `gate_bias` to change
  it), so each block starts mostly carrying x through (T = 0.12).
  The gates add 3x3 C->C weights plus C biases to each of the six highway blocks: 5,784,356 parameters at
  100 classes. Table 3 prints ResNet-19's 4,235,172 for Highway-19, which no gate with weights allows; our
  count is the one the equations imply.
* ResNet-25 / ResFuse-25 (no layout given): the 19-layer plan deepened by one block per stage, 3/4/4
  blocks (six more convs, 19 -> 25 in the paper's count). ResFuse-25 pairs blocks as above, so each stage
  has one pair and one single regular block, and ResFuse-25 has the same 86,912 carry parameters over
  ResNet-25 as ResFuse-19 over ResNet-19.
* ResNet-34 reference ("classical 34-layer model"): the ResNet paper's 3/4/6/3 basic blocks at widths
  64/128/256/512, adapted to 64x64 inputs with the same 3x3 stride-1 stem as the 19-layer plan (the
  ImageNet 7x7/2 stem and max-pool would leave 2x2 maps) and the same zero-padded shortcuts, so it differs
  from ResNet-19 only in depth and width. (`resnet34_cifar` in `baselines.py` is timm's, with 1x1
  projection shortcuts.)
* Initialization: He normal (fan-in, ReLU gain, as in Delving Deep into Rectifiers, which the paper
  cites) for every conv and linear weight, biases zero except the highway gates'. `zero_init_last=True`
  also zeroes the last BN scale of every residual branch (and of each carry C), so every block starts as
  its shortcut (timm's option of the same name); the highway H branch then starts at zero.
* Zero-padded shortcut: subsample by the stride, append the new channels as zeros (where the padding goes
  is immaterial to the network's function class).
* Default classes and input: 100 classes at 64x64 (ImageNet-100, i.e. 100 Tiny ImageNet classes); every
  model also runs at 32x32 (a 64x64 input ends at 16x16, 8x8 for ResNet-34; 32x32 at half that).
"""
import itertools
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs, register_model

from ._builder import build_reusenet_model

__all__ = ['BasicBlock', 'FusePair', 'HighwayBlock', 'ResFuseNet', 'ZeroPadShortcut']

BLOCK_TYPES = ('residual', 'fuse', 'highway')


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1, **dd) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut across a width/stride change: subsample, then pad the new channels with zeros.

    Hand-written because neither timm nor torchvision has the ResNet paper's option A shortcut.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f'a zero-padded shortcut cannot narrow {in_chs} to {out_chs} channels; '
                             'widths must not decrease from stage to stage')
        self.extra_chs, self.stride = out_chs - in_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra_chs))


class BasicBlock(nn.Module):
    """The ResNet paper's basic block, relu(F(x) + shortcut(x) + carry), F = conv3x3-BN-ReLU-conv3x3-BN (Eq. 1).

    timm's BasicBlock offers neither a zero-padded shortcut nor a way to add the ResFuse carry before the
    final ReLU, hence this one. `shortcut=False` makes it a plain two-conv block (Highway's width changes,
    the second block of a pair in Eq. 5's literal reading).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv1 = _conv3x3(in_chs, out_chs, stride, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_chs, out_chs, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = nn.ReLU(inplace=True)
        if not shortcut:
            self.shortcut = None
        elif stride != 1 or in_chs != out_chs:
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None = None) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        if carry is not None:
            out = out + carry
        return self.act2(out)


class FusePair(nn.Module):
    """Two same-width basic blocks and a carry projection C from the pair's input to its output (Eq. 5).

    y = relu(F(z) + z + C(x)), z = block1(x); with `second_shortcut=False`, y = relu(F(z) + C(x)).
    """

    def __init__(self, chs: int, second_shortcut: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.block1 = BasicBlock(chs, chs, **dd)
        self.block2 = BasicBlock(chs, chs, shortcut=second_shortcut, **dd)
        self.carry = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(chs, chs, 1, bias=False, **dd),
            bn=nn.BatchNorm2d(chs, **dd),
        ))

    def zero_init_last(self) -> None:
        self.block1.zero_init_last()
        self.block2.zero_init_last()
        nn.init.zeros_(self.carry.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x), carry=self.carry(x))


class HighwayBlock(nn.Module):
    """y = H(x) T(x) + x (1 - T(x)) (Eq. 3), H = conv3x3-BN-ReLU-conv3x3-BN-ReLU, T = sigmoid(conv3x3(x) + b).

    Computed as x + T (H - x): the same value, one multiply fewer, and exactly x when T = 0.
    """

    def __init__(self, chs: int, gate_bias: float = -2.0, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv1 = _conv3x3(chs, chs, **dd)
        self.bn1 = nn.BatchNorm2d(chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(chs, chs, **dd)
        self.bn2 = nn.BatchNorm2d(chs, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.gate = nn.Conv2d(chs, chs, 3, padding=1, bias=True, **dd)
        self.gate_bias = gate_bias

    def init_gate_bias(self) -> None:
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transformed = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        gate = torch.sigmoid(self.gate(x))
        return x + gate * (transformed - x)


class ResFuseNet(nn.Module):
    """The paper's network plan: 3x3 stem, stages of residual, ResFuse or highway blocks, pooling, linear.

    Args:
        layers: blocks per stage; stages after the first start with stride 2.
        widths: channels per stage, non-decreasing (the shortcuts are zero-padded).
        block_type: 'residual' (ResNet), 'fuse' (ResFuse, Eq. 5) or 'highway' (Eq. 3).
        second_shortcut: ResFuse only: the second block of a pair keeps its identity shortcut besides C.
        gate_bias: Highway only: initial bias of the transform gates.
        zero_init_last: start every residual branch (and carry, and highway H) at zero.
    """

    def __init__(
            self,
            layers: tuple[int, ...] = (2, 3, 3),
            widths: tuple[int, ...] = (64, 128, 256),
            block_type: str = 'residual',
            second_shortcut: bool = True,
            gate_bias: float = -2.0,
            zero_init_last: bool = False,
            num_classes: int = 100,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        _check_plan(layers, widths, block_type)
        dd = {'device': device, 'dtype': dtype}
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.block_type = block_type
        self.stem = nn.Sequential(OrderedDict(
            conv=_conv3x3(in_chans, widths[0], **dd),
            bn=nn.BatchNorm2d(widths[0], **dd),
            act=nn.ReLU(inplace=True),
        ))
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module='stem.act')]
        stages, in_chs = [], widths[0]
        for index, (depth, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if index == 0 else 2
            stages.append(self._make_stage(in_chs, width, depth, stride, second_shortcut, gate_bias, dd))
            self.feature_info.append(dict(num_chs=width, reduction=2 ** index, module=f'stages.{index}'))
            in_chs = width
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.init_weights(zero_init_last)

    def _make_stage(self, in_chs, out_chs, depth, stride, second_shortcut, gate_bias, dd) -> nn.Sequential:
        """A width or stride change is a regular block (plain for Highway); the rest follow `block_type`."""
        blocks = []
        if stride != 1 or in_chs != out_chs:
            blocks.append(BasicBlock(in_chs, out_chs, stride, shortcut=self.block_type != 'highway', **dd))
            depth -= 1
        if self.block_type == 'highway':
            blocks += [HighwayBlock(out_chs, gate_bias, **dd) for _ in range(depth)]
        elif self.block_type == 'fuse':
            pairs, single = divmod(depth, 2)
            blocks += [FusePair(out_chs, second_shortcut, **dd) for _ in range(pairs)]
            blocks += [BasicBlock(out_chs, out_chs, **dd) for _ in range(single)]
        else:
            blocks += [BasicBlock(out_chs, out_chs, **dd) for _ in range(depth)]
        return nn.Sequential(*blocks)

    def init_weights(self, zero_init_last: bool = False) -> None:
        """He normal weights (the paper's init), zero biases, highway gate biases at `gate_bias`."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, HighwayBlock):
                module.init_gate_bias()
            if zero_init_last and isinstance(module, (BasicBlock, FusePair, HighwayBlock)):
                module.zero_init_last()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_plan(layers, widths, block_type: str) -> None:
    if block_type not in BLOCK_TYPES:
        raise ValueError(f'block_type must be one of {", ".join(BLOCK_TYPES)}, got {block_type!r}')
    if not layers or len(layers) != len(widths):
        raise ValueError(f'layers and widths need one entry per stage, got layers={layers} and widths={widths}')
    if any(depth < 1 for depth in layers) or any(width < 1 for width in widths):
        raise ValueError(f'every stage needs at least one block and one channel, got layers={layers}, '
                         f'widths={widths}')
    if any(later < earlier for earlier, later in itertools.pairwise(widths)):
        raise ValueError(f'widths must not decrease (the shortcuts are zero-padded), got {widths}')


def _create_resfuse(variant: str, pretrained: bool = False, **kwargs) -> ResFuseNet:
    num_taps = len(kwargs.get('layers', (2, 3, 3))) + 1  # the stem and every stage
    return build_reusenet_model(
        ResFuseNet, variant, pretrained,
        feature_cfg=dict(out_indices=tuple(range(num_taps)), flatten_sequential=True),
        **kwargs,
    )


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        'num_classes': 100, 'input_size': (3, 64, 64), 'pool_size': (16, 16), 'crop_pct': 1.0,
        'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'resnet19': _cfg(),
    'highway19': _cfg(),
    'resfuse19': _cfg(),
    'resnet25': _cfg(),
    'resfuse25': _cfg(),
    'resnet34_64': _cfg(pool_size=(8, 8)),
})

_PLAN_19 = dict(layers=(2, 3, 3), widths=(64, 128, 256))
_PLAN_25 = dict(layers=(3, 4, 4), widths=(64, 128, 256))


@register_model
def resnet19(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """ResNet-19 of the ResFuse paper (Table 3: 4,235,172 parameters at 100 classes), 64x64."""
    return _create_resfuse('resnet19', pretrained, **dict(_PLAN_19, **kwargs))


@register_model
def highway19(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """Highway-19 of the ResFuse paper: ResNet-19 with gated highway blocks (Eq. 3), 64x64."""
    return _create_resfuse('highway19', pretrained, **dict(_PLAN_19, block_type='highway', **kwargs))


@register_model
def resfuse19(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """ResFuse-19 (Eq. 5; Table 3: 4,322,084 parameters at 100 classes), 64x64."""
    return _create_resfuse('resfuse19', pretrained, **dict(_PLAN_19, block_type='fuse', **kwargs))


@register_model
def resnet25(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """ResNet-25 of the ResFuse paper: the 19-layer plan with 3/4/4 blocks, 64x64."""
    return _create_resfuse('resnet25', pretrained, **dict(_PLAN_25, **kwargs))


@register_model
def resfuse25(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """ResFuse-25: ResNet-25 with a carry projection over each stage's first same-width pair, 64x64."""
    return _create_resfuse('resfuse25', pretrained, **dict(_PLAN_25, block_type='fuse', **kwargs))


@register_model
def resnet34_64(pretrained: bool = False, **kwargs) -> ResFuseNet:
    """The ResFuse paper's reference ResNet-34 (3/4/6/3 basic blocks, zero-padded shortcuts) for 64x64 inputs."""
    model_args = dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512))
    return _create_resfuse('resnet34_64', pretrained, **dict(model_args, **kwargs))
