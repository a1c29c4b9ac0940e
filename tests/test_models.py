"""reusenet.models: the baselines build, honour timm's contract, and report mistakes as UserErrors."""
import pytest
import timm
import torch
import torch.nn as nn
from timm.models import get_pretrained_cfg_value

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.measure import count_params
from reusenet.models import create_model, list_models

BASELINES = [
    'resnet50_v1', 'resnet101_v1', 'resnet18_cifar', 'resnet34_cifar', 'resnet50_cifar', 'resnet101_cifar',
    'resnet50_v1_cifar', 'resnet101_v1_cifar', 'resnext50_32x4d_cifar', 'wide_resnet50_2_cifar',
    'densenet121_cifar', 'mobilenetv2_100_cifar', 'vgg16_bn_cifar', 'convnext_tiny_cifar',
    'convnext_small_cifar', 'convnext_base_cifar',
]
SMALL_INPUT = [name for name in BASELINES if name.endswith('_cifar')]
ONE_PER_FAMILY = [
    'resnet18_cifar', 'resnext50_32x4d_cifar', 'densenet121_cifar', 'mobilenetv2_100_cifar', 'vgg16_bn_cifar',
    'convnext_tiny_cifar',
]


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def test_import_registers_every_baseline_with_timm():
    assert all(timm.is_model(name) for name in BASELINES)
    assert set(BASELINES) <= set(list_models())
    assert list_models() == sorted(list_models())
    assert 'resnet50' not in list_models()  # timm's own models are not reusenet's


@pytest.mark.parametrize('name', BASELINES)
def test_default_classes_follow_the_papers_tables(name):
    expected = 100 if name in SMALL_INPUT else 1000  # CIFAR-100 or ImageNet
    assert get_pretrained_cfg_value(name, 'num_classes') == expected


@pytest.mark.parametrize('name', list_models())
def test_default_input_gives_one_logit_per_class(name):
    model = meta_model(name)  # shapes only: the heaviest reach several GMACs
    cfg = model.pretrained_cfg
    x = torch.zeros(2, *cfg['input_size'], device='meta')
    assert model(x).shape == (2, cfg['num_classes'])
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features
    assert tuple(features.shape[2:]) == cfg['pool_size']


@pytest.mark.parametrize('name', SMALL_INPUT)
def test_small_input_models_take_32_and_64_pixels(name):
    model = meta_model(name, num_classes=10)
    assert model.pretrained_cfg['input_size'] == (3, 32, 32)
    stride = model.feature_info[-1]['reduction']
    for size in (32, 64):
        x = torch.zeros(2, 3, size, size, device='meta')
        assert model.forward_features(x).shape[2:] == (size // stride, size // stride)
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_timm_contract(name, check_timm_contract):
    check_timm_contract(timm.create_model(name).eval(), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_feature_info_reductions_are_the_real_strides(name):
    model = meta_model(name, features_only=True)
    features = model(torch.zeros(1, 3, 32, 32, device='meta'))
    assert model.feature_info.reduction() == [32 // f.shape[-1] for f in features]
    assert model.feature_info.channels() == [f.shape[1] for f in features]


def test_resnet_cifar_stem_has_no_downsampling():
    model = timm.create_model('resnet18_cifar')
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [info['reduction'] for info in model.feature_info] == [1, 1, 2, 4, 8]


def strides_of_downsampling_blocks(model: nn.Module) -> list[tuple]:
    blocks = [block for stage in (model.layer2, model.layer3, model.layer4) for block in stage[:1]]
    return [(block.conv1.stride, block.conv2.stride, block.downsample[0].stride) for block in blocks]


@pytest.mark.parametrize('name', ['resnet50_v1', 'resnet50_v1_cifar', 'resnet101_v1'])
def test_v1_strides_on_the_first_1x1(name):
    assert strides_of_downsampling_blocks(meta_model(name)) == [((2, 2), (1, 1), (2, 2))] * 3


@pytest.mark.parametrize('name', ['resnet50', 'resnet50_cifar', 'resnet101_cifar', 'resnext50_32x4d_cifar'])
def test_v1_5_strides_on_the_3x3(name):
    assert strides_of_downsampling_blocks(meta_model(name)) == [((1, 1), (2, 2), (2, 2))] * 3


def test_v1_rejects_anti_aliasing():
    with pytest.raises(UserError, match='aa_layer'):
        create_model('resnet50_v1', aa_layer=nn.AvgPool2d)


@pytest.mark.parametrize('name, timm_name, stem_params', [
    ('resnet50_cifar', 'resnet50', 64 * 3 * (3 * 3 - 7 * 7)),
    ('resnet50_v1', 'resnet50', 0),
    ('wide_resnet50_2_cifar', 'wide_resnet50_2', 64 * 3 * (3 * 3 - 7 * 7)),
    ('densenet121_cifar', 'densenet121', 64 * 3 * (3 * 3 - 7 * 7)),
    ('mobilenetv2_100_cifar', 'mobilenetv2_100', 0),
    ('convnext_tiny_cifar', 'convnext_tiny', 96 * 3 * (1 * 1 - 4 * 4)),
])
def test_only_the_stem_differs_from_timm(name, timm_name, stem_params):
    ours, theirs = meta_model(name, num_classes=100), meta_model(timm_name, num_classes=100)
    assert count_params(ours) - count_params(theirs) == stem_params


def test_vgg_cifar_is_timm_vgg_features_with_one_linear_layer():
    ours, theirs = meta_model('vgg16_bn_cifar'), meta_model('vgg16_bn')
    assert count_params(ours) == count_params(theirs.features) + 512 * 100 + 100
    assert isinstance(ours.pre_logits, nn.Identity) and isinstance(ours.head.fc, nn.Linear)


def test_pretrained_without_weights_is_a_user_error():
    with pytest.raises(UserError, match='no released weights for resnet18_cifar'):
        timm.create_model('resnet18_cifar', pretrained=True)
    with pytest.raises(UserError, match='not found'):
        create_model('resnet18_cifar', pretrained=True, pretrained_cfg_overlay=dict(file='missing.pth'))


def test_pretrained_loads_a_local_file(tmp_path):
    trained = timm.create_model('resnet18_cifar', num_classes=10)
    path = tmp_path / 'resnet18_cifar.pth'
    torch.save(trained.state_dict(), path)
    loaded = create_model('resnet18_cifar', num_classes=10, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    assert trained.state_dict().keys() == loaded.state_dict().keys()
    for name, expected in trained.state_dict().items():
        assert torch.equal(expected, loaded.state_dict()[name]), name
    with pytest.raises(UserError, match='num_classes'):  # a 10-class file for a 100-class model
        create_model('resnet18_cifar', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_create_model_builds_timm_models_too():
    assert meta_model('resnet18').num_classes == 1000
    assert create_model('resnet18', num_classes=5, device='meta').fc.out_features == 5


@pytest.mark.parametrize('name, kwargs, message', [
    ('resnet18_cifr', {}, "unknown model 'resnet18_cifr'. Did you mean: resnet18_cifar"),
    ('resnet50.no_such_tag', {}, "no pretrained tag 'no_such_tag'"),
    ('some/path', {}, 'local-dir'),
    ('resnet18_cifar', dict(widht=2), "no argument 'widht'"),
    ('resnet18_cifar', dict(stem_type='deep'), 'small_input replaces the stem'),
    ('resnet18_cifar', dict(output_stride=7), 'output_stride=7'),
])
def test_create_model_mistakes_are_user_errors(name, kwargs, message):
    with pytest.raises(UserError, match=message):
        create_model(name, **kwargs)
