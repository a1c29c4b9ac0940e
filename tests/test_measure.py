"""reusenet.measure: MACs counted by hand on small models, and the papers' parameter and MAC counts."""
import pytest
import torch
import torch.nn as nn

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.measure import Complexity, complexity, count_macs, count_params


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8x8 outputs x 3x3x3 inputs each
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


class ChannelsLastMlp(nn.Module):
    """A linear layer over the channels of an (N, H, W, C) map, as in ConvNeXt blocks."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        return self.fc(x.permute(0, 2, 3, 1))


class CountsItself(nn.Module):
    """A layer whose cost is not its submodules' (as a REAF conv counts only its active weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)

    def macs(self, inputs, output):
        return 7 * inputs[0].shape[0]


class NeedsData(nn.Module):
    """Control flow on tensor values: impossible on the meta device, so the count falls back to CPU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) if x.sum().item() >= 0 else x


def test_hand_counted_model():
    model = small_net()
    assert count_macs(model, (3, 8, 8)) == 8 * 8 * 8 * 3 * 3 * 3 + 8 * 10
    assert count_params(model) == (8 * 27 + 8) + (8 + 8) + (8 * 10 + 10)


def test_trainable_only_and_shared_parameters_counted_once():
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model.requires_grad_(False)
    model[0].bias.requires_grad_(True)
    assert count_params(model) == 30
    assert count_params(model, trainable_only=True) == 5
    assert count_macs(model, (5,)) == 2 * 25  # a layer called twice costs twice


def test_linear_on_channels_last_maps_counts_every_position():
    assert count_macs(ChannelsLastMlp(), (4, 5, 5)) == 5 * 5 * 6 * 4


def test_grouped_and_depthwise_convs():
    grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    assert count_macs(grouped, (16, 8, 8)) == 32 * 8 * 8 * (16 // 4) * 9
    assert count_macs(depthwise, (16, 8, 8)) == 16 * 8 * 8 * 1 * 9


def test_strided_and_transposed_convs():
    assert count_macs(nn.Conv2d(4, 8, 3, stride=2, padding=1), (4, 8, 8)) == 8 * 4 * 4 * 4 * 9
    assert count_macs(nn.ConvTranspose2d(4, 8, 2, stride=2), (4, 3, 3)) == 4 * 3 * 3 * 8 * 4


def test_macs_method_replaces_the_count_of_a_module_and_its_children():
    model = nn.Sequential(CountsItself(), CountsItself(), nn.Conv2d(3, 1, 1))
    assert count_macs(model, (3, 4, 4)) == 7 + 7 + 4 * 4 * 3


def test_falls_back_to_cpu_when_meta_cannot_run_the_model():
    assert count_macs(NeedsData(), (3, 2, 2)) == 2 * 2 * 4 * 3


@pytest.mark.parametrize('model', [small_net(), NeedsData()], ids=['on meta', 'on cpu'])
def test_caller_model_is_left_untouched(model):
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (3, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.device.type == 'cpu' for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_input_the_model_cannot_take_is_a_user_error():
    with pytest.raises(UserError, match='cannot run on a 3x2x2 input'):
        count_macs(nn.Conv2d(3, 4, 5), (3, 2, 2))
    with pytest.raises(UserError, match='input_size'):
        count_macs(small_net(), (3, 0, 8))


def test_complexity_of_a_name_uses_the_model_input_size():
    result = complexity('resnet18_cifar', num_classes=10)
    assert isinstance(result, Complexity)
    assert result.input_size == (3, 32, 32)
    assert result.params == count_params(reusenet.models.create_model('resnet18_cifar', num_classes=10))
    assert 'GMACs' in str(result) and 'multiply-accumulates' in str(result)


def test_complexity_of_a_model_and_an_explicit_size():
    result = complexity(small_net(), input_size=(3, 8, 8))
    assert result.macs == count_macs(small_net(), (3, 8, 8))
    assert result.gmacs == result.macs / 1e9 and result.mparams == result.params / 1e6
    with pytest.raises(UserError):
        complexity(small_net(), num_classes=3)


# The papers' tables, compared with as many digits as they print: (model, M params, GMACs).
PAPER_COUNTS = [
    ('resnet18_cifar', '11.22', '0.56'),  # REAF Table 4 (CIFAR-100, 32x32)
    ('resnet34_cifar', '21.33', '1.16'),  # REAF Table 4
    ('resnet50_v1_cifar', '23.71', '1.22'),  # REAF Table 3 baseline
    ('resnet50_v1', '25.557', '3.86'),  # REAF Tables 1 and 5 (ImageNet, 224x224)
    ('resnet101_v1', '44.55', '7.57'),  # REAF Table 5
    ('resnet50', '25.557', '4.09'),  # timm's ResNet-50 v1.5 at 224
]


def as_printed(value: float, printed: str) -> str:
    return f'{value:.{len(printed.split(".")[1])}f}'


@pytest.mark.parametrize('name, mparams, gmacs', PAPER_COUNTS)
def test_paper_counts(name, mparams, gmacs):
    result = complexity(name)
    assert (as_printed(result.mparams, mparams), as_printed(result.gmacs, gmacs)) == (mparams, gmacs)


@pytest.mark.parametrize('name, mparams, gmacs', [
    ('resnet101_v1_cifar', '42.70', 2.44),  # REAF Table 4; we count 2.435
    ('resnext50_32x4d_cifar', '23.18', 1.36),  # REAF Table 7; we count 1.344
])
def test_paper_counts_off_in_the_last_digit(name, mparams, gmacs):
    # The parameters match, so the architecture does; the papers do not say how they round or count.
    result = complexity(name)
    assert as_printed(result.mparams, mparams) == mparams
    assert result.gmacs == pytest.approx(gmacs, rel=0.015)


@pytest.mark.parametrize('name, params, gmacs', [
    ('convnext_tiny', 28_589_128, 4.456),
    ('convnext_small', 50_223_688, 8.684),
    ('convnext_base', 88_591_464, 15.355),
])
def test_convnext_counts_at_224(name, params, gmacs):
    result = complexity(name)
    assert result.params == params
    assert result.gmacs == pytest.approx(gmacs, rel=0.005)
