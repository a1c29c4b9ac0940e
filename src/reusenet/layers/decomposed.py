"""Decomposed depthwise convolution: a depthwise kx1 then a depthwise 1xk with a nonlinearity between

Paper: `A study of an image classification algorithm based on multi-level residual connectivity`
(papers/multilevel-shortcut-convnext.txt), Section 3.2, Eq. 1-2, after ERFNet (Romera et al., 2017).

A kxk depthwise conv over `dim` channels holds k*k*dim weights (Eq. 1: 49*dim for 7x7); the kx1 + 1xk pair
holds 2*k*dim (Eq. 2: 14*dim for 7, 6*dim for 3) with the same receptive field, and adds a nonlinearity
between its two halves. With biases (ConvNeXt's depthwise conv has one) each half adds `dim` more.

Choices the paper leaves open:
* Order: vertical (kx1) first, then horizontal (1xk), the order of ERFNet's non-bottleneck-1D block.
* Nonlinearity between the halves: the host network's activation, GELU for ConvNeXt (`act_layer`). ERFNet
  puts ReLU there because ReLU is its network's activation; ConvNeXt replaced ReLU by GELU throughout, so
  the decomposition keeps the block's one activation type and only adds where it is applied.
* No normalization between the halves: the paper names a nonlinearity only, and ConvNeXt follows the
  spatial conv with a LayerNorm anyway.
* Padding k//2 on the long side of each half, so the pair keeps the spatial size like the kxk conv.

`create_spatial_conv` builds the spatial conv of a ConvNeXt block for the paper's kernel ablation
(Section 4.1.2, Table 3) from one name, see `SPATIAL_CONVS`.
"""
import torch
import torch.nn as nn
from timm.layers import create_conv2d, get_act_layer

__all__ = ['DecomposedDepthwiseConv2d', 'SPATIAL_CONVS', 'create_spatial_conv']

# name: (kernel size, how it is built)
_SPATIAL_CONVS = {
    'dw7': (7, 'depthwise'),  # ConvNeXt's
    'conv3': (3, 'dense'),  # a regular 3x3 conv, channels -> channels
    'dw3': (3, 'depthwise'),
    'dw3_decomposed': (3, 'decomposed'),  # the paper's (Section 3.2)
    'dw7_decomposed': (7, 'decomposed'),  # Eq. 2
}
SPATIAL_CONVS = tuple(_SPATIAL_CONVS)


class DecomposedDepthwiseConv2d(nn.Module):
    """Depthwise kx1 conv, activation, depthwise 1xk conv: a kxk depthwise conv's receptive field, 2k weights.

    `channels` in and out, stride 1. Works alone in any network: input and output are (N, C, H, W).
    """

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True, act_layer='gelu',
                 device=None, dtype=None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd and positive (it keeps the spatial size), got {kernel_size}')
        dd = {'device': device, 'dtype': dtype}
        pad = kernel_size // 2
        self.conv_v = nn.Conv2d(channels, channels, (kernel_size, 1), padding=(pad, 0), groups=channels, bias=bias,
                                **dd)
        self.act = get_act_layer(act_layer)()
        self.conv_h = nn.Conv2d(channels, channels, (1, kernel_size), padding=(0, pad), groups=channels, bias=bias,
                                **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_h(self.act(self.conv_v(x)))


def create_spatial_conv(kind: str, channels: int, bias: bool = True, act_layer='gelu', device=None,
                        dtype=None) -> nn.Module:
    """The spatial conv named `kind` (one of `SPATIAL_CONVS`), `channels` in and out, size-preserving.

    `act_layer` is only used between the halves of the decomposed kinds.
    """
    dd = {'device': device, 'dtype': dtype}
    if kind not in _SPATIAL_CONVS:
        raise ValueError(f'unknown spatial conv {kind!r}; choose one of {", ".join(SPATIAL_CONVS)}')
    kernel_size, form = _SPATIAL_CONVS[kind]
    if form == 'decomposed':
        return DecomposedDepthwiseConv2d(channels, kernel_size, bias=bias, act_layer=act_layer, **dd)
    return create_conv2d(channels, channels, kernel_size, depthwise=form == 'depthwise', bias=bias, **dd)
