"""MLS-ConvNeXt (multilevel-shortcut-convnext.txt): counts vs ConvNeXt, Eq. 1-2, the stage shortcuts, shapes."""
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm, LayerNorm2d, get_act_layer
from timm.models import get_pretrained_cfg_value
from timm.models.convnext import ConvNeXt, ConvNeXtStage

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.layers.decomposed import SPATIAL_CONVS, DecomposedDepthwiseConv2d, create_spatial_conv
from reusenet.measure import complexity, count_params
from reusenet.models import create_model, list_models
from reusenet.models.mls_convnext import MLSConvNeXt, MultiLevelShortcutStage

SMALL = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))  # the real network's structure at a width that runs fast
TINY_BLOCKS = 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768  # sum of depth x width over ConvNeXt-T's stages


def weights(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if name.endswith('weight'))


@pytest.mark.parametrize('size, mparams, gmacs', [('tiny', 28.589, 4.456), ('small', 50.224, 8.684),
                                                ('base', 88.591, 15.355)])
def test_convnext_counts_match_the_reference(size, mparams, gmacs):
    measured = complexity(f'mls_convnext_{size}_baseline')  # 224x224, 1000 classes
    assert round(measured.mparams, 3) == mparams
    assert measured.gmacs == pytest.approx(gmacs, rel=0.005)
    with torch.device('meta'):
        assert measured.params == count_params(timm.create_model(f'convnext_{size}'))


@pytest.mark.parametrize('name', ['mls_convnext_tiny_dw7', 'mls_convnext_tiny_pooled',
                                  'mls_convnext_tiny_pooled_cifar'])
def test_stage_shortcut_costs_no_params_or_macs(name):
    with_shortcut, without = complexity(name), complexity(name, stage_shortcut=None)
    assert (with_shortcut.params, with_shortcut.macs) == (without.params, without.macs)


@pytest.mark.parametrize('dim', [96, 768])
def test_decomposed_weights_follow_eq_1_and_2(dim):
    assert weights(create_spatial_conv('dw7', dim)) == 49 * dim  # Eq. 1
    assert weights(create_spatial_conv('dw7_decomposed', dim)) == 14 * dim  # Eq. 2
    assert weights(create_spatial_conv('dw3', dim)) == 9 * dim
    assert weights(create_spatial_conv('dw3_decomposed', dim)) == 6 * dim
    assert weights(create_spatial_conv('conv3', dim)) == 9 * dim * dim
    biases = {kind: count_params(create_spatial_conv(kind, dim)) - weights(create_spatial_conv(kind, dim))
              for kind in SPATIAL_CONVS}
    assert biases == {'dw7': dim, 'conv3': dim, 'dw3': dim, 'dw3_decomposed': 2 * dim, 'dw7_decomposed': 2 * dim}


def test_model_saves_what_eq_1_and_2_say():
    dw7, decomposed = complexity('mls_convnext_tiny_dw7'), complexity('mls_convnext_tiny')
    assert dw7.params - decomposed.params == (49 + 1 - 3 * 2 - 2) * TINY_BLOCKS  # weights and biases
    stage_pixels = [56 * 56, 28 * 28, 14 * 14, 7 * 7]
    block_pixels = sum(depth * dim * pixels for depth, dim, pixels in zip((3, 3, 9, 3), (96, 192, 384, 768),
                                                                            stage_pixels, strict=True))
    assert dw7.macs - decomposed.macs == (49 - 6) * block_pixels


def test_decomposed_conv_is_vertical_then_activation_then_horizontal():
    conv = DecomposedDepthwiseConv2d(4, 5, bias=False, act_layer='identity')
    x = torch.randn(2, 4, 9, 11)
    # without the activation the pair is one depthwise 5x5 conv whose kernel is the outer product
    kernel = conv.conv_v.weight * conv.conv_h.weight  # (4, 1, 5, 1) x (4, 1, 1, 5) -> (4, 1, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, kernel, padding=2, groups=4))
    default = DecomposedDepthwiseConv2d(4)
    assert isinstance(default.act, get_act_layer('gelu'))  # ConvNeXt's activation
    assert default.conv_v.kernel_size == (3, 1) and default.conv_h.kernel_size == (1, 3)
    torch.testing.assert_close(default(x), default.conv_h(F.gelu(default.conv_v(x))))


def test_decomposed_conv_sees_a_k_by_k_window():
    conv = DecomposedDepthwiseConv2d(1, 3)
    x = torch.randn(1, 1, 9, 9, requires_grad=True)
    conv(x)[0, 0, 4, 4].backward()
    assert (x.grad[0, 0] != 0).nonzero().tolist() == [[r, c] for r in (3, 4, 5) for c in (3, 4, 5)]


def test_spatial_conv_rejects_unknown_kinds_and_even_kernels():
    with pytest.raises(ValueError, match='dw3_decomposed'):
        create_spatial_conv('dw5', 8)
    with pytest.raises(ValueError, match='odd'):
        DecomposedDepthwiseConv2d(8, 4)


@pytest.mark.parametrize('suffix, size, final', [('', 224, 7), ('_cifar', 32, 4), ('_64', 64, 4)])
@pytest.mark.parametrize('variant', ['', '_pooled', '_baseline'])
def test_shapes_for_each_input_size(variant, suffix, size, final):
    model = timm.create_model(f'mls_convnext_tiny{variant}{suffix}', num_classes=5, **SMALL).eval()
    assert model.pretrained_cfg['input_size'] == (3, size, size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 32, final, final)
        assert model(x).shape == (2, 5)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize('name, stem', [('mls_convnext_tiny_cifar', 1), ('mls_convnext_tiny_64', 2),
                                        ('mls_convnext_tiny', 4)])
def test_feature_info_matches_the_features(name, stem):
    model = timm.create_model(name, features_only=True, **SMALL)
    size = get_pretrained_cfg_value(name, 'input_size')[-1]
    features = model(torch.zeros(1, 3, size, size))
    assert model.feature_info.reduction() == [size // f.shape[-1] for f in features] == [stem * 2 ** i
                                                                                        for i in range(4)]
    assert model.feature_info.channels() == [f.shape[1] for f in features] == list(SMALL['dims'])


@pytest.mark.parametrize('kernel', SPATIAL_CONVS)
def test_each_ablation_kernel_trains_a_step(kernel):
    torch.manual_seed(0)
    model = MLSConvNeXt(kernel=kernel, patch_size=1, num_classes=3, ls_init_value=0.1, **SMALL)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    spatial = [name for name in before if '.conv_dw.' in name and name.endswith('weight')]
    assert len(spatial) == sum(SMALL['depths']) * (2 if 'decomposed' in kernel else 1)
    assert all(not torch.equal(before[name], model.get_parameter(name)) for name in spatial)


def test_named_ablation_models_differ_only_in_the_kernel():
    for kernel in SPATIAL_CONVS:
        name = 'mls_convnext_tiny' + ('' if kernel == 'dw3_decomposed' else f'_{kernel}')
        model = create_model(name, device='meta')
        assert (model.kernel, model.stage_shortcut) == (kernel, 'downsample')
        assert all(isinstance(stage, MultiLevelShortcutStage) for stage in model.stages)
    expected = {f'mls_convnext_{size}{variant}{inputs}' for size in ('tiny', 'small', 'base')
                for variant in ('', '_baseline', '_pooled', '_dw7', '_conv3', '_dw3', '_dw7_decomposed')
                for inputs in ('', '_cifar', '_64')}
    assert expected <= set(list_models())


def small_stage(stride: int = 2) -> ConvNeXtStage:
    return ConvNeXtStage(8, 16, stride=stride, depth=2, ls_init_value=0.5, norm_layer=LayerNorm2d,
                         norm_layer_cl=LayerNorm)


def test_downsample_shortcut_adds_the_downsampled_input_past_the_blocks():
    stage = small_stage()
    x = torch.randn(2, 8, 10, 10)
    x_ds = stage.downsample(x)
    torch.testing.assert_close(MultiLevelShortcutStage(stage, 'downsample')(x), stage.blocks(x_ds) + x_ds)


@pytest.mark.parametrize('size', [10, 11])
def test_pooled_shortcut_pools_in_step_and_zero_pads_channels(size):
    stage = small_stage()
    x = torch.randn(2, 8, size, size)
    out = MultiLevelShortcutStage(stage, 'pooled')(x)
    blocks = stage.blocks(stage.downsample(x))
    assert out.shape == blocks.shape == (2, 16, size // 2, size // 2)
    torch.testing.assert_close(out[:, :8], blocks[:, :8] + F.avg_pool2d(x, 2))
    torch.testing.assert_close(out[:, 8:], blocks[:, 8:])  # channels without a source get no shortcut
    assert count_params(MultiLevelShortcutStage(stage, 'pooled')) == count_params(stage)


def test_baseline_is_timm_convnext():
    timm_model = ConvNeXt(num_classes=4, **SMALL).eval()
    ours = MLSConvNeXt(stage_shortcut=None, kernel='dw7', num_classes=4, **SMALL).eval()
    ours.load_state_dict(timm_model.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))
    submodules = zip(list(ours.modules())[1:], list(timm_model.modules())[1:], strict=True)
    assert all(type(a) is type(b) for a, b in submodules)


def test_stage_shortcut_changes_the_function_not_the_weights():
    plain = MLSConvNeXt(stage_shortcut=None, kernel='dw3_decomposed', num_classes=4, **SMALL).eval()
    shortcut = MLSConvNeXt(stage_shortcut='downsample', kernel='dw3_decomposed', num_classes=4, **SMALL).eval()
    shortcut.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(shortcut(x), plain(x))


def test_recipe_arguments_pass_through():
    model = create_model('mls_convnext_tiny_cifar', drop_path_rate=0.2, ls_init_value=0.25, **SMALL)
    blocks = [block for stage in model.stages for block in stage.blocks]
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert all(torch.all(block.gamma == 0.25) for block in blocks)


@pytest.mark.parametrize('arguments, problem', [
    (dict(kernel='dw5'), 'unknown kernel'),
    (dict(stage_shortcut='stem'), 'stage_shortcut'),
    (dict(kernel_sizes=3), 'kernel='),
])
def test_invalid_arguments_are_reported(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        MLSConvNeXt(**SMALL, **arguments)
    with pytest.raises(UserError, match=problem):
        create_model('mls_convnext_tiny_cifar', **SMALL, **arguments)


def test_pooled_shortcut_refuses_narrowing_stages():
    with pytest.raises(ValueError, match='zero-pads'):
        MLSConvNeXt(stage_shortcut='pooled', depths=(1, 1, 1, 1), dims=(32, 16, 8, 8))
