"""Baselines the papers compare against, built on timm's implementations

Each model here is timm's class with different arguments; the only new code is the v1 bottleneck and
the small-input stems, applied inside construction so that pretrained loading, `features_only` and
`feature_info` all see the final network.

Papers:
* `Deep Residual Learning for Image Recognition` - https://arxiv.org/abs/1512.03385
* `Aggregated Residual Transformations for Deep Neural Networks` (ResNeXt) - https://arxiv.org/abs/1611.05431
* `Wide Residual Networks` - https://arxiv.org/abs/1605.07146
* `Densely Connected Convolutional Networks` - https://arxiv.org/abs/1608.06993
* `MobileNetV2: Inverted Residuals and Linear Bottlenecks` - https://arxiv.org/abs/1801.04381
* `Very Deep Convolutional Networks for Large-Scale Image Recognition` (VGG) - https://arxiv.org/abs/1409.1556
* `A ConvNet for the 2020s` (ConvNeXt) - https://arxiv.org/abs/2201.03545

Choices, where the papers name a baseline without spelling it out:
* Bottleneck stride. The original ResNet ("v1") strides on the first 1x1 conv of a downsampling
  bottleneck; timm and torchvision ("v1.5") stride on the 3x3, which costs more. The REAF paper's
  ResNet-50/101 counts are v1 (ResNet-50 at 224: 3.86 GMACs, v1.5 is 4.09; CIFAR-100: 1.22 GMACs,
  23.71M params), so `resnet50_v1`, `resnet101_v1` and their `_cifar` versions use `BottleneckV1`.
  timm's `resnet50`/`resnet101` stay the v1.5 baselines; its WideResNet-50-2 (the paper's 11.44 GMACs)
  and ResNeXt (stride on the grouped 3x3, as in its paper) are used unchanged.
* Small inputs (`_cifar`: 32x32 CIFAR, also 64x64 Tiny ImageNet). ImageNet stems divide the input by 4
  before the first stage; on 32x32 images that leaves too little to see, so `small_input=True` removes
  that 4x and a 32x32 input ends at 4x4 (8x8 for 64x64):
  - ResNet, ResNeXt, WideResNet: a 3x3 stride-1 stem conv and no max-pool, the usual CIFAR ResNet.
  - DenseNet: a 3x3 stride-1 `conv0` and no `pool0`.
  - MobileNetV2: a stride-1 stem and the first stride-2 stage (24 channels) at stride 1, leaving a total
    stride of 8; the common CIFAR adaptation of MobileNetV2.
  - VGG16-BN: its 13 convs with BN and 5 max-pools, then global pooling and one linear layer
    512 -> classes, the usual CIFAR VGG. timm's ImageNet head is a 4096-wide MLP whose first layer is a
    7x7 conv: a 32x32 input reaches it at 1x1 and is stretched to 7x7 to fit, and the head would hold
    120M of the 135M parameters.
  - ConvNeXt: stem patch size 1 instead of 4 (timm's `patch_size` argument), so 32x32 ends at 4x4 like
    the CIFAR ResNets.
  `feature_info` reductions follow: the stem tap and the first stage are at reduction 1.
* Default classes: 1000 at 224, 100 for `_cifar` (the papers' CIFAR-100 tables). Mean and std are
  timm's ImageNet defaults; 32x32 images are used whole (crop_pct 1.0).
"""
from typing import Any

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.convnext import ConvNeXt
from timm.models.densenet import DenseNet
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vgg import VGG
from timm.models.vgg import cfgs as vgg_cfgs

from ._builder import build_reusenet_model

__all__ = ['BottleneckV1']

# MobileNetV2 paper Table 2 (expansion t, channels c, repeats n, stride s) in timm's block notation.
_MOBILENETV2_ARCH = [
    ['ds_r1_k3_s1_c16'],
    ['ir_r2_k3_s2_e6_c24'],
    ['ir_r3_k3_s2_e6_c32'],
    ['ir_r4_k3_s2_e6_c64'],
    ['ir_r3_k3_s1_e6_c96'],
    ['ir_r3_k3_s2_e6_c160'],
    ['ir_r1_k3_s1_e6_c320'],
]


class BottleneckV1(Bottleneck):
    """timm's Bottleneck with the stride on the first 1x1 conv instead of the 3x3 (original ResNet, "v1").

    Striding the 1x1 makes the 3x3 run at the reduced resolution, hence v1's lower MACs. A 1x1 conv
    needs no padding, so moving the stride is all it takes.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *args, **kwargs):
        if kwargs.get('aa_layer') is not None:
            raise ValueError('BottleneckV1 strides a 1x1 conv, which anti-aliasing (aa_layer) cannot precede')
        super().__init__(inplanes, planes, 1, *args, **kwargs)
        self.conv1.stride = (stride, stride)
        self.stride = stride


def _device_dtype(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Where the model was asked to be built, for the layers replaced after construction."""
    return {k: kwargs[k] for k in ('device', 'dtype') if kwargs.get(k) is not None}


def _remove_stem_stride(feature_info: list[dict[str, Any]]) -> None:
    """Divide reductions by the 4x a small-input stem no longer applies; taps inside the stem end at 1."""
    for info in feature_info:
        info['reduction'] = max(1, info['reduction'] // 4)


def _resnet(small_input: bool = False, **kwargs) -> ResNet:
    """timm's ResNet; `small_input` swaps the 7x7/2 conv + max-pool stem for a 3x3/1 conv."""
    if small_input and (kwargs.get('stem_type') or kwargs.get('replace_stem_pool')):
        raise ValueError('small_input replaces the stem, so stem_type and replace_stem_pool cannot be set')
    model = ResNet(**kwargs)
    if small_input:
        stem_chs = model.bn1.num_features
        model.conv1 = nn.Conv2d(model.in_chans, stem_chs, 3, padding=1, bias=False, **_device_dtype(kwargs))
        nn.init.kaiming_normal_(model.conv1.weight, mode='fan_out', nonlinearity='relu')  # as ResNet's init
        model.maxpool = nn.Identity()
        _remove_stem_stride(model.feature_info)
    return model


def _densenet(small_input: bool = False, **kwargs) -> DenseNet:
    """timm's DenseNet; `small_input` swaps the 7x7/2 conv0 + pool0 stem for a 3x3/1 conv0."""
    if small_input and kwargs.get('stem_type'):
        raise ValueError('small_input replaces the stem, so stem_type cannot be set')
    model = DenseNet(**kwargs)
    if small_input:
        features = model.features
        features.conv0 = nn.Conv2d(
            model.in_chans, features.norm0.num_features, 3, padding=1, bias=False, **_device_dtype(kwargs))
        nn.init.kaiming_normal_(features.conv0.weight)  # as DenseNet's init
        features.pool0 = nn.Identity()
        _remove_stem_stride(model.feature_info)
    return model


def _mobilenetv2(small_input: bool = False, **kwargs) -> EfficientNet:
    """timm's MobileNetV2; `small_input` sets the stem and the first stride-2 stage to stride 1.

    Both are 3x3 convs padded by 1, which is the right padding at stride 1 too.
    """
    model = EfficientNet(**kwargs)
    if small_input:
        model.conv_stem.stride = (1, 1)
        model.blocks[1][0].conv_dw.stride = (1, 1)
        _remove_stem_stride(model.feature_info)
    return model


def _vgg(small_input: bool = False, **kwargs) -> VGG:
    """timm's VGG; `small_input` replaces the 4096-wide conv MLP head by pooling and one linear layer."""
    if not small_input:
        return VGG(**kwargs)
    # The ImageNet head is replaced below: build it with a 1-channel hidden layer rather than allocate
    # and initialize its 120M parameters for nothing.
    model = VGG(**dict(kwargs, mlp_ratio=1 / 4096))
    model.pre_logits = nn.Identity()
    model.head = ClassifierHead(
        model.num_features,
        model.num_classes,
        pool_type=kwargs.get('global_pool', 'avg'),
        drop_rate=model.drop_rate,
        **_device_dtype(kwargs),
    )
    model.head_hidden_size = model.num_features
    return model


def _create_resnet(variant: str, pretrained: bool = False, **kwargs) -> ResNet:
    return build_reusenet_model(_resnet, variant, pretrained, **kwargs)


def _create_densenet(variant: str, pretrained: bool = False, **kwargs) -> DenseNet:
    return build_reusenet_model(
        _densenet, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _create_mobilenetv2(variant: str, pretrained: bool = False, **kwargs) -> EfficientNet:
    return build_reusenet_model(
        _mobilenetv2, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _create_vgg(variant: str, pretrained: bool = False, **kwargs) -> VGG:
    return build_reusenet_model(
        _vgg, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4, 5)),  # VGG also taps stride 1
        **kwargs,
    )


def _create_convnext(variant: str, pretrained: bool = False, **kwargs) -> ConvNeXt:
    return build_reusenet_model(
        ConvNeXt, variant, pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        **kwargs,
    }


def _cifar_cfg(**kwargs) -> dict[str, Any]:
    cifar = {'num_classes': 100, 'input_size': (3, 32, 32), 'pool_size': (4, 4), 'crop_pct': 1.0}
    return _cfg(**{**cifar, **kwargs})


_resnet_cfg = dict(first_conv='conv1', classifier='fc')
_convnext_cfg = dict(first_conv='stem.0', classifier='head.fc')

default_cfgs = generate_default_cfgs({
    'resnet50_v1': _cfg(**_resnet_cfg),
    'resnet101_v1': _cfg(**_resnet_cfg),
    'resnet18_cifar': _cifar_cfg(**_resnet_cfg),
    'resnet34_cifar': _cifar_cfg(**_resnet_cfg),
    'resnet50_cifar': _cifar_cfg(**_resnet_cfg),
    'resnet101_cifar': _cifar_cfg(**_resnet_cfg),
    'resnet50_v1_cifar': _cifar_cfg(**_resnet_cfg),
    'resnet101_v1_cifar': _cifar_cfg(**_resnet_cfg),
    'resnext50_32x4d_cifar': _cifar_cfg(**_resnet_cfg),
    'wide_resnet50_2_cifar': _cifar_cfg(**_resnet_cfg),
    'densenet121_cifar': _cifar_cfg(first_conv='features.conv0', classifier='classifier'),
    'mobilenetv2_100_cifar': _cifar_cfg(first_conv='conv_stem', classifier='classifier'),
    'vgg16_bn_cifar': _cifar_cfg(first_conv='features.0', classifier='head.fc', pool_size=(1, 1)),
    'convnext_tiny_cifar': _cifar_cfg(**_convnext_cfg),
    'convnext_small_cifar': _cifar_cfg(**_convnext_cfg),
    'convnext_base_cifar': _cifar_cfg(**_convnext_cfg),
})


@register_model
def resnet50_v1(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 v1 (stride on the bottleneck's 1x1), 224x224."""
    model_args = dict(block=BottleneckV1, layers=(3, 4, 6, 3))
    return _create_resnet('resnet50_v1', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-101 v1 (stride on the bottleneck's 1x1), 224x224."""
    model_args = dict(block=BottleneckV1, layers=(3, 4, 23, 3))
    return _create_resnet('resnet101_v1', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 for 32x32 inputs."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2), small_input=True)
    return _create_resnet('resnet18_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34 for 32x32 inputs."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3), small_input=True)
    return _create_resnet('resnet34_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 v1.5 (stride on the bottleneck's 3x3) for 32x32 inputs."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), small_input=True)
    return _create_resnet('resnet50_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-101 v1.5 (stride on the bottleneck's 3x3) for 32x32 inputs."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3), small_input=True)
    return _create_resnet('resnet101_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_v1_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 v1 (stride on the bottleneck's 1x1) for 32x32 inputs: the REAF paper's CIFAR ResNet-50."""
    model_args = dict(block=BottleneckV1, layers=(3, 4, 6, 3), small_input=True)
    return _create_resnet('resnet50_v1_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet101_v1_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-101 v1 (stride on the bottleneck's 1x1) for 32x32 inputs: the REAF paper's CIFAR ResNet-101."""
    model_args = dict(block=BottleneckV1, layers=(3, 4, 23, 3), small_input=True)
    return _create_resnet('resnet101_v1_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnext50_32x4d_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d for 32x32 inputs."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), cardinality=32, base_width=4, small_input=True)
    return _create_resnet('resnext50_32x4d_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def wide_resnet50_2_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """Wide ResNet-50-2 (bottleneck 3x3 twice as wide) for 32x32 inputs."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), base_width=128, small_input=True)
    return _create_resnet('wide_resnet50_2_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def densenet121_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-121 (k=32) for 32x32 inputs."""
    model_args = dict(growth_rate=32, block_config=(6, 12, 24, 16), small_input=True)
    return _create_densenet('densenet121_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def mobilenetv2_100_cifar(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV2 1.0 for 32x32 inputs (total stride 8)."""
    model_args = dict(
        block_args=decode_arch_def(_MOBILENETV2_ARCH), num_features=1280, stem_size=32, act_layer=nn.ReLU6,
        small_input=True)
    return _create_mobilenetv2('mobilenetv2_100_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def vgg16_bn_cifar(pretrained: bool = False, **kwargs) -> VGG:
    """VGG-16 with batch norm for 32x32 inputs, with a single linear classifier."""
    model_args = dict(cfg=vgg_cfgs['vgg16'], norm_layer=nn.BatchNorm2d, small_input=True)
    return _create_vgg('vgg16_bn_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_tiny_cifar(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """ConvNeXt-T with a patch-size-1 stem for 32x32 inputs."""
    model_args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), patch_size=1)
    return _create_convnext('convnext_tiny_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_small_cifar(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """ConvNeXt-S with a patch-size-1 stem for 32x32 inputs."""
    model_args = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), patch_size=1)
    return _create_convnext('convnext_small_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_base_cifar(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """ConvNeXt-B with a patch-size-1 stem for 32x32 inputs."""
    model_args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), patch_size=1)
    return _create_convnext('convnext_base_cifar', pretrained, **dict(model_args, **kwargs))
