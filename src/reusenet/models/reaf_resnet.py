"""REAF-ResNet, REAF-WideResNet and the REAF vs group-convolution ResNets (REAF paper, Tables 1-6)

Paper: `REAF: Reducing Approximation of channels by Reducing Feature reuse within convolution`
(Zhu, Al-Ars, Hofstee, IEEE Access 2020) - https://doi.org/10.1109/ACCESS.2020.3024252

Each model is timm's ResNet with a REAF block (`reusenet.layers.reaf.REAFConv2d`, Eq. 5-6); the baselines are
reusenet's `resnet50_v1`/`resnet101_v1`/`_cifar` and timm's ResNet-18/34, WideResNet-50-2.

* Bottleneck (Tables 1, 3): REAF on the middle 3x3 conv; C is its input width and C' its output width at the
  first stage, x2/x4/x8 in the next ones (Table 1: 72, 144, 288, 576). The stride is on the first 1x1 (v1),
  as in the paper's ResNet baselines. Every Table 3 row is `reaf_resnet50_cifar(width=C, width_out=C',
  reaf=(G_I, G_M, G_O))`.
* Basic block (ResNet-18/34, Tables 4-5): the paper does not say which conv carries REAF. REAF on the first
  3x3 (block input -> C, strided) with the second 3x3 dense C -> block width is the wiring that reproduces
  REAF-ResNet18's 11.74M ImageNet parameters (REAF on the second conv gives 11.30M, on both 9.97M).
* REAF-WideResNet50 (Table 5, C=136): strides on the REAF 3x3 (`stride_3x3=True`, v1.5) like timm's
  WideResNet-50-2 baseline, whose 11.44 GMACs are v1.5's; v1 would give 9.99 GMACs instead of the paper's 10.50.
* REAF vs ResNeXt (Tables 2, 6): "all three convs of the bottleneck" are grouped (ResNeXt, G=4) or REAF 4-3-4.
  The printed parameter counts fix the widths: ResNeXt with C=128 (4 groups of 32, 20.892M at 224, 19.041M and
  33.594M on CIFAR) and REAF with C=64 (20.388M at 224), not the C=64 / 72 of Table 2's text and brackets.
  The shortcut projection stays dense; the stride is on the first 1x1 (v1). A REAF 4-1-4 conv is exactly a
  4-group conv, so the ResNeXt column is this same model with reaf=(4, 1, 4).

Rows that fit no consistent wiring (ours: params / GMACs, conv and linear MACs; paper in brackets). Parameters
match within 0.1% on 26 of Table 3's 29 rows (within 0.03% on 22), so the wiring is right; the paper's GFLOPs
follow no MAC count we tried (v1, v1.5, dense middle conv, per-component fits) and are off by up to 4.4%:
* Table 1 / 5 REAF-ResNet50 72, 4-3-4 at 224: 26.154M / 3.955 [26.11 / 3.97]; the same body on CIFAR gives
  24.302M [24.32]: the two printed rows differ by 0.06M more than the head and stem explain.
* Table 3 (CIFAR), params off by more than 0.1%: 72 3-2-3 23.109M [23.20], 80 2-1-2 23.573M [23.75], 90 6-2-15
  23.656M [23.56] (G_M/G_I = 1/3 as for 90 3-1-3, so both cannot be right). GMACs off by more than 1%:
  70 5-4-5 1.243 [1.22], 72 4-3-4 1.254 [1.24], 88-56 8-6-28 1.216 [1.23], 80-70 5-3-10 1.197 [1.21], 88-72
  4-2-6 1.206 [1.23], 90 3-1-3 1.219 [1.25], 96-56 8-5-56 1.196 [1.23], 84-70 7-4-35 1.211 [1.23], 78-80
  6-3-20 1.196 [1.21], 90-80 5-2-10 1.204 [1.23], 96 4-1-4 1.208 [1.25], 88-70 8-4-70 1.184 [1.21], 98-70
  7-3-35 1.200 [1.24], 90 6-2-15 1.219 [1.25], 100 5-1-5 1.194 [1.24], 98-84 7-2-21 1.172 [1.21], 102 6-1-6
  1.171 [1.21], 90-84 9-3-84 1.168 [1.20], 104-84 8-2-28 1.169 [1.21], 105 7-1-7 1.171 [1.22], 90-108 9-2-36
  1.215 [1.24], 112 8-1-8 1.224 [1.28].
* Table 4 (CIFAR): REAF-ResNet18 11.267M / 0.555 [11.17 / 0.56]; REAF-ResNet34 21.217M / 1.149 [18.10 / 1.13]
  (no wiring of a 72-wide REAF conv reaches 18.10M: REAF on both convs gives 18.04M but 0.98 GMACs);
  REAF-ResNet101 43.902M / 2.505 [43.81 / 2.48].
* Table 5 (224): REAF-ResNet18 1.812 GMACs [1.95]; REAF-ResNet101 45.753M [45.83] (7.786 GMACs matches).
* Table 6: ResNeXt50/101 GMACs 0.973 / 1.900 [1.02 / 1.96] on CIFAR, 3.094 [2.98] at 224; REAF-ResNet50
  (all convs) 18.536M / 0.947 [18.73 / 1.00] on CIFAR and 3.013 GMACs [2.72] at 224; REAF-ResNet101 (all convs)
  32.793M / 1.856 [33.01 / 1.92]. The CIFAR REAF rows are 0.19M and 0.22M above the 224 row minus the head,
  which no wiring shared by the two explains.
"""
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet

from ..layers.reaf import REAFConv2d
from ._builder import build_reusenet_model
from .baselines import BottleneckV1, _cfg, _cifar_cfg, _resnet, _resnet_cfg

__all__ = ['REAFBottleneck', 'REAFBasicBlock']

_CONV_NAMES = ('conv1', 'conv2', 'conv3')


def _reaf_or_dense(reaf_here: bool, reaf: tuple[int, int, int], in_ch: int, out_ch: int, kernel_size: int,
                   stride: int = 1, dilation: int = 1, **dd) -> nn.Module:
    if not reaf_here:
        return nn.Conv2d(in_ch, out_ch, kernel_size, stride, dilation * (kernel_size // 2), dilation, bias=False, **dd)
    g_in, g_merge, g_out = reaf
    conv = REAFConv2d(in_ch, out_ch, kernel_size, stride, None, dilation, g_in=g_in, g_merge=g_merge, g_out=g_out, **dd)
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')  # ResNet's init; it skips non-Conv2d
    return conv


class REAFBottleneck(BottleneckV1):
    """Bottleneck 1x1 (C) -> 3x3 (C -> C') -> 1x1 with REAF G_I-G_M-G_O on the convs named in `reaf_convs`.

    `width` and `width_out` are C and C' at the first stage (64 is ResNet's width); later stages scale them with
    `planes` as timm scales its width. The stride is on the first 1x1 (v1) unless `stride_3x3`.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 reaf: tuple[int, int, int] = (4, 3, 4), width: int = 72, width_out: int | None = None,
                 reaf_convs: tuple[str, ...] = ('conv2',), stride_3x3: bool = False,
                 norm_layer=nn.BatchNorm2d, device=None, dtype=None, **kwargs):
        if not set(reaf_convs) <= set(_CONV_NAMES):
            raise ValueError(f'reaf_convs must name convs among {_CONV_NAMES}, got {reaf_convs}')
        dd = dict(device=device, dtype=dtype)
        super().__init__(inplanes, planes, stride, downsample, norm_layer=norm_layer, **dd, **kwargs)
        reaf, dilation = tuple(reaf), self.conv2.dilation[0]
        mid_in, mid_out = planes * width // 64, planes * (width_out or width) // 64
        self.conv1 = _reaf_or_dense('conv1' in reaf_convs, reaf, inplanes, mid_in, 1, 1 if stride_3x3 else stride, **dd)
        self.bn1 = norm_layer(mid_in, **dd)
        self.conv2 = _reaf_or_dense(
            'conv2' in reaf_convs, reaf, mid_in, mid_out, 3, stride if stride_3x3 else 1, dilation, **dd)
        self.bn2 = norm_layer(mid_out, **dd)
        self.conv3 = _reaf_or_dense('conv3' in reaf_convs, reaf, mid_out, self.conv3.out_channels, 1, **dd)


class REAFBasicBlock(BasicBlock):
    """Basic block 3x3 REAF (input -> C, strided) -> 3x3 dense (C -> block width); see the module docstring."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 reaf: tuple[int, int, int] = (4, 3, 4), width: int = 72, norm_layer=nn.BatchNorm2d,
                 aa_layer=None, device=None, dtype=None, **kwargs):
        if aa_layer is not None:
            raise ValueError('REAFBasicBlock strides its REAF conv, which anti-aliasing (aa_layer) cannot replace')
        dd = dict(device=device, dtype=dtype)
        super().__init__(inplanes, planes, stride, downsample, norm_layer=norm_layer, **dd, **kwargs)
        mid = planes * width // 64
        self.conv1 = _reaf_or_dense(True, tuple(reaf), inplanes, mid, 3, stride, self.conv1.dilation[0], **dd)
        self.bn1 = norm_layer(mid, **dd)
        self.conv2 = nn.Conv2d(
            mid, self.conv2.out_channels, 3, padding=self.conv2.padding, dilation=self.conv2.dilation, bias=False, **dd)


def _create_reaf_resnet(
        variant: str,
        pretrained: bool = False,
        reaf: tuple[int, int, int] = (4, 3, 4),
        width: int = 72,
        width_out: int | None = None,
        reaf_convs: tuple[str, ...] = ('conv2',),
        stride_3x3: bool = False,
        **kwargs,
) -> ResNet:
    """A REAF ResNet; `reaf`, `width`, `width_out`, `reaf_convs` and `stride_3x3` configure its blocks."""
    block_args = dict(reaf=tuple(reaf), width=width)
    if kwargs.get('block', REAFBottleneck) is REAFBottleneck:
        block_args.update(width_out=width_out, reaf_convs=tuple(reaf_convs), stride_3x3=stride_3x3)
    elif width_out is not None or tuple(reaf_convs) != ('conv2',) or stride_3x3:
        raise ValueError('width_out, reaf_convs and stride_3x3 apply to bottleneck REAF-ResNets (50 layers and up)')
    kwargs['block_args'] = {**block_args, **(kwargs.get('block_args') or {})}
    return build_reusenet_model(_resnet, variant, pretrained, **kwargs)


def _all_convs(**kwargs) -> dict[str, Any]:
    return dict(reaf_convs=_CONV_NAMES, **kwargs)


_RESNEXT_G4 = _all_convs(reaf=(4, 1, 4), width=128)  # Table 2/6 ResNeXt: 4 groups on all three convs
_REAF_ALL = _all_convs(reaf=(4, 3, 4), width=64)  # Table 2/6 REAF-ResNet: 4-3-4 on all three convs

_VARIANTS = {  # model arguments by name; `_cifar` names are 32x32 with 100 classes
    'reaf_resnet18_cifar': dict(block=REAFBasicBlock, layers=(2, 2, 2, 2), small_input=True),
    'reaf_resnet34_cifar': dict(block=REAFBasicBlock, layers=(3, 4, 6, 3), small_input=True),
    'reaf_resnet50_cifar': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), small_input=True),
    'reaf_resnet101_cifar': dict(block=REAFBottleneck, layers=(3, 4, 23, 3), small_input=True),
    'reaf_resnet18': dict(block=REAFBasicBlock, layers=(2, 2, 2, 2)),
    'reaf_resnet50': dict(block=REAFBottleneck, layers=(3, 4, 6, 3)),
    'reaf_resnet50_8_4_70': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), reaf=(8, 4, 70), width=88, width_out=70),
    'reaf_resnet101': dict(block=REAFBottleneck, layers=(3, 4, 23, 3)),
    'reaf_wide_resnet50': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), width=136, stride_3x3=True),
    'resnext50_g4_cifar': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), small_input=True, **_RESNEXT_G4),
    'resnext101_g4_cifar': dict(block=REAFBottleneck, layers=(3, 4, 23, 3), small_input=True, **_RESNEXT_G4),
    'resnext50_g4': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), **_RESNEXT_G4),
    'reaf_resnet50_all_cifar': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), small_input=True, **_REAF_ALL),
    'reaf_resnet101_all_cifar': dict(block=REAFBottleneck, layers=(3, 4, 23, 3), small_input=True, **_REAF_ALL),
    'reaf_resnet50_all': dict(block=REAFBottleneck, layers=(3, 4, 6, 3), **_REAF_ALL),
}

default_cfgs = generate_default_cfgs({
    name: (_cifar_cfg if name.endswith('_cifar') else _cfg)(**_resnet_cfg) for name in _VARIANTS})


def _create(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> ResNet:
    return _create_reaf_resnet(variant, pretrained, **dict(_VARIANTS[variant], **kwargs))


@register_model
def reaf_resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet18 (C=72, 4-3-4), 32x32 (Table 4)."""
    return _create('reaf_resnet18_cifar', pretrained, kwargs)


@register_model
def reaf_resnet34_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet34 (C=72, 4-3-4), 32x32 (Table 4)."""
    return _create('reaf_resnet34_cifar', pretrained, kwargs)


@register_model
def reaf_resnet50_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet50 (C=C'=72, 4-3-4), 32x32 (Table 3; other rows: width=, width_out=, reaf=)."""
    return _create('reaf_resnet50_cifar', pretrained, kwargs)


@register_model
def reaf_resnet101_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet101 (C=72, 4-3-4), 32x32 (Table 4)."""
    return _create('reaf_resnet101_cifar', pretrained, kwargs)


@register_model
def reaf_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet18 (C=72, 4-3-4), 224x224 (Table 5)."""
    return _create('reaf_resnet18', pretrained, kwargs)


@register_model
def reaf_resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet50 (C=C'=72, 4-3-4), 224x224 (Tables 1, 5)."""
    return _create('reaf_resnet50', pretrained, kwargs)


@register_model
def reaf_resnet50_8_4_70(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet50 (C=88, C'=70, 8-4-70), 224x224 (Table 5)."""
    return _create('reaf_resnet50_8_4_70', pretrained, kwargs)


@register_model
def reaf_resnet101(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet101 (C=72, 4-3-4), 224x224 (Table 5)."""
    return _create('reaf_resnet101', pretrained, kwargs)


@register_model
def reaf_wide_resnet50(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-WideResNet50 (C=136, 4-3-4, stride on the 3x3), 224x224 (Table 5)."""
    return _create('reaf_wide_resnet50', pretrained, kwargs)


@register_model
def resnext50_g4_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt50 with 4 groups on all three bottleneck convs (C=128), 32x32 (Table 6)."""
    return _create('resnext50_g4_cifar', pretrained, kwargs)


@register_model
def resnext101_g4_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt101 with 4 groups on all three bottleneck convs (C=128), 32x32 (Table 6)."""
    return _create('resnext101_g4_cifar', pretrained, kwargs)


@register_model
def resnext50_g4(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt50 with 4 groups on all three bottleneck convs (C=128), 224x224 (Tables 2, 6)."""
    return _create('resnext50_g4', pretrained, kwargs)


@register_model
def reaf_resnet50_all_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet50 with 4-3-4 on all three bottleneck convs (C=64), 32x32 (Table 6)."""
    return _create('reaf_resnet50_all_cifar', pretrained, kwargs)


@register_model
def reaf_resnet101_all_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet101 with 4-3-4 on all three bottleneck convs (C=64), 32x32 (Table 6)."""
    return _create('reaf_resnet101_all_cifar', pretrained, kwargs)


@register_model
def reaf_resnet50_all(pretrained: bool = False, **kwargs) -> ResNet:
    """REAF-ResNet50 with 4-3-4 on all three bottleneck convs (C=64), 224x224 (Tables 2, 6)."""
    return _create('reaf_resnet50_all', pretrained, kwargs)
