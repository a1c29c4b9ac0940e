"""ResFRI and Split-ResFRI networks, and the plain GoogLeNet they are built on

Paper: `Residual Feature-Reutilization Inception Network for Image Classification` (arXiv 2412.19433,
papers/resfri-summary.txt; earlier version: `GoogLe2Net: Going Transverse with Convolutions`, arXiv 2301.00424,
same headline numbers: CIFAR-10 97.94%, CIFAR-100 85.91%, Tiny ImageNet 70.54%). Only the summary is
available, so the summary plus the project's issue 6 are the specification. The blocks and their open
choices are in layers/resfri.py; this file adds:

* Network ("Input -> Stem -> ResFRI/Split-ResFRI blocks -> global pooling -> classifier"): the CIFAR GoogLeNet
  of kuangliu/pytorch-cifar, the usual host for Inception blocks on 32x32 inputs: a 3x3 stride-1 Conv-BN-ReLU
  stem of 192 channels, Inception stages 3 (a, b), 4 (a-e) and 5 (a, b) with a 3x3 stride-2 max-pool before
  stages 4 and 5, global average pooling and one linear classifier; no auxiliary classifiers and no dropout
  (`drop_rate` 0, as that network). 32x32 inputs end at 8x8.
* Widths: GoogLeNet's Table 1 branch widths (`GOOGLENET_WIDTHS`) for every block type, so ResFRI, Split-ResFRI
  and GoogLeNet differ only in passages, residual and split. `width_multiplier` scales every width (stem
  included) and rounds it to a multiple of 8 (timm's `make_divisible`): GoogLeNet's widths already are, so
  1.0 changes nothing, and every block input stays divisible by 8, which Split-ResFRI's 1/8 slices need.
* Passage pruning (`prune_ratio`): L1 unstructured pruning of the passage convs at construction, so training
  keeps the mask. Default 0.7 for fusion "add" and 0 for "concat", the summary's ratios. Pruning at
  construction ranks the random initial weights, so the mask is effectively random; to prune trained weights
  instead, train with `prune_ratio=0`, call `prune_passages(model, ratio)` and fine-tune.
* 64x64 (Tiny ImageNet, `_tinyimagenet`): the same network at full resolution (ends at 16x16, 4x the MACs of
  32x32) with 200 classes by default; a 200-class task gains from the extra detail, and the summary does
  not say the input was reduced.
* Default classes 100 for `_cifar` (CIFAR-100, the paper's comparison table); timm's ImageNet mean/std as the
  other reusenet models; 32x32 images used whole (crop_pct 1.0).

State dicts: a model with `prune_ratio > 0` stores each passage conv as `weight_orig` + `weight_mask`, one
with 0 as `weight`. Either loads into the other: an unpruned model gets the masked weights (weight_orig x
mask), a pruned one gets a plain `weight` re-pruned by L1 at its own ratio (which keeps the zeros of a
permanently pruned model of that ratio exactly).
"""
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, ConvNormAct, make_divisible
from timm.models import generate_default_cfgs, register_model

from ..layers.resfri import SPLIT_RATIOS, InceptionWidths, ResFRIBlock, prune_passages
from ._builder import build_reusenet_model

__all__ = ['GOOGLENET_WIDTHS', 'ResFRI']

# GoogLeNet (Szegedy et al. 2015) Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of
# inception 3a-3b, 4a-4e, 5a-5b; one tuple per stage.
GOOGLENET_WIDTHS = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
     (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)
DEFAULT_PRUNE_RATIOS = {'add': 0.7, 'concat': 0.0, None: 0.0}


class ResFRI(nn.Module):
    """Inception network of ResFRI / Split-ResFRI blocks (or plain Inception modules) on the CIFAR GoogLeNet host.

    fusion: 'add' | 'concat' | None (no passages); residual: add the block input back; split_ratios: None
    (ResFRI) or four fractions (Split-ResFRI); prune_ratio: None = the fusion's default (0.7 add, 0 concat).
    """

    def __init__(
            self,
            width_plan=GOOGLENET_WIDTHS,
            stem_chs: int = 192,
            width_multiplier: float = 1.0,
            fusion: str | None = 'add',
            residual: bool = True,
            split_ratios: tuple[float, ...] | None = None,
            branch5x5: str = 'two3x3',
            pool_type: str = 'max',
            prune_ratio: float | None = None,
            num_classes: int = 100,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f'width_multiplier must be positive, got {width_multiplier}')
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        def scale(width: int) -> int:
            return make_divisible(width * width_multiplier, 8)

        chs = scale(stem_chs)
        self.stem = ConvNormAct(in_chans, chs, 3, **dd)
        self.feature_info = [dict(num_chs=chs, reduction=1, module='stem')]
        block_args = dict(fusion=fusion, residual=residual, split_ratios=split_ratios, branch5x5=branch5x5,
                          pool_type=pool_type, **dd)
        stages = []
        for index, stage_widths in enumerate(width_plan):
            blocks = [nn.MaxPool2d(3, 2, 1)] if index else []
            for widths in stage_widths:
                blocks.append(ResFRIBlock(chs, InceptionWidths(*map(scale, widths)), **block_args))
                chs = blocks[-1].out_chs
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=2 ** index, module=f'stages.{index}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = chs
        self.head = ClassifierHead(chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self._init_weights()
        self.prune_ratio = DEFAULT_PRUNE_RATIOS[fusion] if prune_ratio is None else prune_ratio
        prune_passages(self, self.prune_ratio)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')

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


def _create_resfri(variant: str, pretrained: bool = False, **kwargs) -> ResFRI:
    return build_reusenet_model(
        ResFRI, variant, pretrained, feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        'num_classes': 100, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc', **kwargs,
    }


_tiny_cfg = dict(num_classes=200, input_size=(3, 64, 64), pool_size=(16, 16))
_GOOGLENET = dict(fusion=None, residual=False)
_RESFRI_ADD = dict(fusion='add')
_RESFRI_CONCAT = dict(fusion='concat')
_SPLIT_RESFRI_ADD = dict(fusion='add', split_ratios=SPLIT_RATIOS)
_SPLIT_RESFRI_CONCAT = dict(fusion='concat', split_ratios=SPLIT_RATIOS)

default_cfgs = generate_default_cfgs({
    'googlenet_cifar': _cfg(),
    'resfri_add_cifar': _cfg(),
    'resfri_concat_cifar': _cfg(),
    'split_resfri_add_cifar': _cfg(),
    'split_resfri_concat_cifar': _cfg(),
    'googlenet_tinyimagenet': _cfg(**_tiny_cfg),
    'resfri_add_tinyimagenet': _cfg(**_tiny_cfg),
    'resfri_concat_tinyimagenet': _cfg(**_tiny_cfg),
    'split_resfri_add_tinyimagenet': _cfg(**_tiny_cfg),
    'split_resfri_concat_tinyimagenet': _cfg(**_tiny_cfg),
})


@register_model
def googlenet_cifar(pretrained: bool = False, **kwargs) -> ResFRI:
    """GoogLeNet for 32x32 inputs (Inception modules, no passages, no residual): ResFRI's baseline host."""
    return _create_resfri('googlenet_cifar', pretrained, **dict(_GOOGLENET, **kwargs))


@register_model
def resfri_add_cifar(pretrained: bool = False, **kwargs) -> ResFRI:
    """ResFRI, passages fused by addition, 70% of passage weights pruned, 32x32 inputs."""
    return _create_resfri('resfri_add_cifar', pretrained, **dict(_RESFRI_ADD, **kwargs))


@register_model
def resfri_concat_cifar(pretrained: bool = False, **kwargs) -> ResFRI:
    """ResFRI, passages fused by concatenation + 1x1 conv, unpruned, 32x32 inputs."""
    return _create_resfri('resfri_concat_cifar', pretrained, **dict(_RESFRI_CONCAT, **kwargs))


@register_model
def split_resfri_add_cifar(pretrained: bool = False, **kwargs) -> ResFRI:
    """Split-ResFRI (3/8, 3/8, 1/8, 1/8 input split), addition passages, 70% pruned, 32x32 inputs."""
    return _create_resfri('split_resfri_add_cifar', pretrained, **dict(_SPLIT_RESFRI_ADD, **kwargs))


@register_model
def split_resfri_concat_cifar(pretrained: bool = False, **kwargs) -> ResFRI:
    """Split-ResFRI (3/8, 3/8, 1/8, 1/8 input split), concatenation passages, unpruned, 32x32 inputs."""
    return _create_resfri('split_resfri_concat_cifar', pretrained, **dict(_SPLIT_RESFRI_CONCAT, **kwargs))


@register_model
def googlenet_tinyimagenet(pretrained: bool = False, **kwargs) -> ResFRI:
    """GoogLeNet on the CIFAR host for 64x64 inputs, 200 classes."""
    return _create_resfri('googlenet_tinyimagenet', pretrained, **dict(_GOOGLENET, **kwargs))


@register_model
def resfri_add_tinyimagenet(pretrained: bool = False, **kwargs) -> ResFRI:
    """ResFRI, addition passages, 70% pruned, 64x64 inputs, 200 classes."""
    return _create_resfri('resfri_add_tinyimagenet', pretrained, **dict(_RESFRI_ADD, **kwargs))


@register_model
def resfri_concat_tinyimagenet(pretrained: bool = False, **kwargs) -> ResFRI:
    """ResFRI, concatenation passages, unpruned, 64x64 inputs, 200 classes."""
    return _create_resfri('resfri_concat_tinyimagenet', pretrained, **dict(_RESFRI_CONCAT, **kwargs))


@register_model
def split_resfri_add_tinyimagenet(pretrained: bool = False, **kwargs) -> ResFRI:
    """Split-ResFRI, addition passages, 70% pruned, 64x64 inputs, 200 classes."""
    return _create_resfri('split_resfri_add_tinyimagenet', pretrained, **dict(_SPLIT_RESFRI_ADD, **kwargs))


@register_model
def split_resfri_concat_tinyimagenet(pretrained: bool = False, **kwargs) -> ResFRI:
    """Split-ResFRI, concatenation passages, unpruned, 64x64 inputs, 200 classes."""
    return _create_resfri('split_resfri_concat_tinyimagenet', pretrained, **dict(_SPLIT_RESFRI_CONCAT, **kwargs))
