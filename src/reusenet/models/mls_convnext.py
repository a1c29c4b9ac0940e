"""Multi-level shortcut ConvNeXt with decomposed depthwise convolutions (MLS-ConvNeXt)

Paper: `A study of an image classification algorithm based on multi-level residual connectivity`
(papers/multilevel-shortcut-convnext.txt), on top of `A ConvNet for the 2020s` (ConvNeXt,
https://arxiv.org/abs/2201.03545). Implemented:
* Section 3.1, Figures 2-4: the multi-level shortcut, a shortcut past each whole stage on top of the
  blocks' own residuals. It adds an identity only, so zero parameters and MACs (Table 1's text).
* Section 3.2, Eq. 1-2: the 7x7 depthwise conv replaced by a 3x3 one split into 3x1 then 1x3 with a
  nonlinearity between (`reusenet.layers.decomposed.DecomposedDepthwiseConv2d`, which states its own choices).
* Section 3.3, Figure 6: both together, ConvNeXt-T/S/B depths and widths (`mls_convnext_tiny/small/base`).
* Section 4.1.2, Table 3: the kernel ablation, any of `reusenet.layers.decomposed.SPATIAL_CONVS`.
The host is timm's `ConvNeXt` (stem, downsampling, blocks, head, init): `MLSConvNeXt(stage_shortcut=None,
kernel='dw7')` is timm's ConvNeXt exactly, same modules and state-dict keys, which is what the
`_baseline` entrypoints build, so baseline and MLS are measured on one code path.

Choices, where the paper is silent:
* Where the stage shortcut starts (`stage_shortcut`):
  - 'downsample' (default): `y = x_ds + blocks(x_ds)`, `x_ds` the output of the stage's downsampling
    layer (the stem's output for stage 1). Section 3.1 says this in words, "a direct connection from
    downsampling to the output of Stage", and it needs nothing the paper does not give: shapes already
    match, so no pooling or channel matching has to be invented. Hence the default.
  - 'pooled' ("synchronous pooling", Section 3.1's last paragraph and the summary): the shortcut starts
    at the stage input, before the downsampling, and is average-pooled 2x2 with stride 2, in step with
    the 2x2 stride-2 downsampling conv (floor mode, as the conv, so odd sizes agree). Channels, which
    double at each downsampling, are matched by zero-padding the new ones: ResNet's parameter-free
    "option A" shortcut, which keeps the identity exact on the channels that have a source, where
    repeating channels would feed each input channel into two outputs. Stage 1 has no downsampling, so
    both variants agree there.
  - None: no stage shortcut (ConvNeXt).
  Because `blocks(x)` already carries `x` through the block residuals, the stage output holds `x_ds`
  twice. The paper adds rather than averages, so do we; every stage starts with a LayerNorm (timm's
  downsampling layer) and the head with another, so the scale does not compound.
* Kernel ablation host: Table 3 varies the kernel without saying whether the stage shortcut is present;
  the named ablation entrypoints vary only the kernel of the paper's network (stage shortcut on), and
  `stage_shortcut=None` gives the kernel alone on plain ConvNeXt.
* Initialization: replaced spatial convs get timm ConvNeXt's init (truncated normal, std 0.02, zero
  bias), which ConvNeXt's code, and so the paper's, applies to every conv.
* Small inputs. `_cifar` (32x32): a 1x1 patchify stem (as `convnext_tiny_cifar` in `baselines`), stages
  at 32, 16, 8, 4. `_64` (64x64, Tiny ImageNet): a 2x2 stride-2 patchify stem, so the stages run at the
  same 32, 16, 8, 4 as the CIFAR variant and cost the same. (timm's `patch_size=2` would also stride the
  first stage, ending at 2x2, so the model is built with patch size 1 and the stem conv swapped.)
  Default classes: 1000 at 224, 100 for `_cifar` (CIFAR-100, as the baselines), 200 for `_64`.

Params and MACs against the paper (224x224, 1000 classes; MACs of conv and linear layers). ConvNeXt
T/S/B: 28.589M / 4.456 GMACs, 50.224M / 8.684, 88.591M / 15.355, and the stage shortcut changes neither
(tested). The decomposed 3x1+1x3 conv against the 7x7 one saves 0.97% / 1.13% / 0.86% of the parameters
and 2.07% / 1.73% / 1.31% of the MACs (T/S/B); the paper states 3.06% / 3.84% / 2.95% and 6.71% / 6.12% /
4.68%. A plain swap cannot save more than the 7x7 convs hold (1.16% of ConvNeXt-T's parameters, 2.36% of
its MACs), so the paper's figures cannot come from this swap alone (another change it does not describe,
or another way of counting); the model is not bent to them. `benchmarks/mls_convnext_claims.py` prints
both.
"""
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq
from timm.models.convnext import ConvNeXt, ConvNeXtStage, _init_weights

from ..layers.decomposed import SPATIAL_CONVS, create_spatial_conv
from ._builder import build_reusenet_model

__all__ = ['MLSConvNeXt', 'MultiLevelShortcutStage', 'STAGE_SHORTCUTS']

STAGE_SHORTCUTS = ('downsample', 'pooled', None)


class MultiLevelShortcutStage(nn.Module):
    """A ConvNeXt stage with a shortcut past all its blocks (Section 3.1): no parameters, no MACs.

    Takes over a timm `ConvNeXtStage`'s downsampling layer and blocks, so the state-dict keys, timm's
    parameter groups (`group_matcher`) and gradient checkpointing are those of timm's stage; only
    `forward` adds the shortcut. `source` is 'downsample' or 'pooled' (see the module docstring).
    """

    def __init__(self, stage: ConvNeXtStage, source: str = 'downsample'):
        super().__init__()
        if source not in ('downsample', 'pooled'):
            raise ValueError(f"a stage shortcut starts at 'downsample' or 'pooled', got {source!r}")
        self.source = source
        self.grad_checkpointing = stage.grad_checkpointing
        self.downsample = stage.downsample
        self.blocks = stage.blocks
        stride, self.pad_channels = 1, 0
        if source == 'pooled' and isinstance(stage.downsample, nn.Sequential):  # (norm, conv); else Identity
            conv = stage.downsample[-1]
            stride, self.pad_channels = conv.stride[0], conv.out_channels - conv.in_channels
            if self.pad_channels < 0:
                raise ValueError(f'the pooled stage shortcut zero-pads channels, so a stage cannot narrow them '
                                 f'({conv.in_channels} -> {conv.out_channels}); use the downsample shortcut')
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_ds = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            y = checkpoint_seq(self.blocks, x_ds)
        else:
            y = self.blocks(x_ds)
        return y + (x_ds if self.source == 'downsample' else self._pooled(x))

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad_channels)) if self.pad_channels else x


class MLSConvNeXt(ConvNeXt):
    """timm's ConvNeXt with a shortcut past each stage and a choice of spatial conv in its blocks.

    Args:
        stage_shortcut: 'downsample' (`y = x_ds + blocks(x_ds)`), 'pooled' (synchronous pooling from the
            stage input) or None (plain ConvNeXt).
        kernel: the blocks' spatial conv, one of `reusenet.layers.decomposed.SPATIAL_CONVS`.
        patch_size: stem patch size; 2 gives a 2x2 stride-2 stem with every stage after it (see module doc).
        **kwargs: timm `ConvNeXt` arguments (depths, dims, drop_path_rate, ls_init_value, act_layer, ...),
            except `kernel_sizes`, which `kernel` replaces.
    """

    def __init__(self, stage_shortcut: str | None = 'downsample', kernel: str = 'dw3_decomposed',
                 patch_size: int = 4, **kwargs):
        if stage_shortcut not in STAGE_SHORTCUTS:
            raise ValueError(f"stage_shortcut must be 'downsample', 'pooled' or None, got {stage_shortcut!r}")
        if kernel not in SPATIAL_CONVS:
            raise ValueError(f'unknown kernel {kernel!r}; choose one of {", ".join(SPATIAL_CONVS)}')
        if 'kernel_sizes' in kwargs:
            raise ValueError('MLSConvNeXt chooses its spatial conv with kernel=..., not kernel_sizes')
        stride_2_stem = patch_size == 2 and kwargs.get('stem_type', 'patch') == 'patch'
        super().__init__(patch_size=1 if stride_2_stem else patch_size, kernel_sizes=7, **kwargs)
        self.stage_shortcut, self.kernel = stage_shortcut, kernel
        if stride_2_stem:
            self._use_stride_2_stem()
        if kernel != 'dw7':
            self._replace_spatial_convs(kernel, kwargs.get('act_layer', 'gelu'))
        if stage_shortcut is not None:
            self.stages = nn.Sequential(*(MultiLevelShortcutStage(stage, stage_shortcut) for stage in self.stages))

    def _use_stride_2_stem(self) -> None:
        patch_1 = self.stem[0]
        self.stem[0] = nn.Conv2d(patch_1.in_channels, patch_1.out_channels, 2, stride=2,
                                 bias=patch_1.bias is not None, device=patch_1.weight.device,
                                 dtype=patch_1.weight.dtype)
        self.stem[0].apply(_init_weights)
        for info in self.feature_info:
            info['reduction'] *= 2

    def _replace_spatial_convs(self, kernel: str, act_layer) -> None:
        for stage in self.stages:
            for block in stage.blocks:
                dw7 = block.conv_dw
                block.conv_dw = create_spatial_conv(kernel, dw7.in_channels, bias=dw7.bias is not None,
                                                    act_layer=act_layer, device=dw7.weight.device,
                                                    dtype=dw7.weight.dtype)
                block.conv_dw.apply(_init_weights)


def _create_mls_convnext(variant: str, pretrained: bool = False, **kwargs) -> MLSConvNeXt:
    return build_reusenet_model(
        MLSConvNeXt, variant, pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


_SIZES = {
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}
# name suffix: (description, model arguments)
_VARIANTS = {
    '': ('the paper\'s network: stage shortcut and 3x1+1x3 decomposed depthwise convs',
         dict(stage_shortcut='downsample', kernel='dw3_decomposed')),
    '_baseline': ('ConvNeXt on the same host: no stage shortcut, 7x7 depthwise convs',
                  dict(stage_shortcut=None, kernel='dw7')),
    '_pooled': ('synchronous pooling stage shortcut and 3x1+1x3 decomposed depthwise convs',
                dict(stage_shortcut='pooled', kernel='dw3_decomposed')),
    **{f'_{kernel}': (f'stage shortcut and {kernel} spatial convs (ablation)',
                      dict(stage_shortcut='downsample', kernel=kernel))
       for kernel in SPATIAL_CONVS if kernel != 'dw3_decomposed'},
}
# name suffix: (description, model arguments, pretrained cfg)
_INPUTS = {
    '': ('224x224', dict(), dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875)),
    '_cifar': ('32x32, 1x1 patch stem', dict(patch_size=1),
               dict(num_classes=100, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0)),
    '_64': ('64x64, 2x2 patch stem', dict(patch_size=2),
            dict(num_classes=200, input_size=(3, 64, 64), pool_size=(4, 4), crop_pct=1.0)),
}


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0', 'classifier': 'head.fc', **kwargs,
    }


_ENTRYPOINTS = {
    f'mls_convnext_{size}{variant}{inputs}': (
        f'MLS-ConvNeXt-{size[0].upper()}, {variant_doc}, {input_doc}.',
        dict(size_args, **variant_args, **input_args),
        cfg,
    )
    for size, size_args in _SIZES.items()
    for variant, (variant_doc, variant_args) in _VARIANTS.items()
    for inputs, (input_doc, input_args, cfg) in _INPUTS.items()
}

default_cfgs = generate_default_cfgs({name: _cfg(**cfg) for name, (_, _, cfg) in _ENTRYPOINTS.items()})


def _register(name: str, doc: str, model_args: dict[str, Any]):
    """One entrypoint per (size, variant, input): the variants are argument dicts, written out above."""

    def entrypoint(pretrained: bool = False, **kwargs) -> MLSConvNeXt:
        return _create_mls_convnext(name, pretrained, **dict(model_args, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = doc
    return register_model(entrypoint)


for _name, (_doc, _model_args, _) in _ENTRYPOINTS.items():
    globals()[_name] = _register(_name, _doc, _model_args)
