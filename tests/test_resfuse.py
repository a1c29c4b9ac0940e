"""ResFuse paper models: Table 3's parameter counts, the carry projection, highway gates, timm's contract."""
import math

import pytest
import timm
import torch
import torch.nn as nn

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.measure import count_params
from reusenet.models import create_model
from reusenet.models.resfuse import BasicBlock, FusePair, HighwayBlock

MODELS = ['resnet19', 'highway19', 'resfuse19', 'resnet25', 'resfuse25', 'resnet34_64']


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('name, table3', [('resnet19', 4_235_172), ('resfuse19', 4_322_084)])
def test_parameter_counts_reproduce_table_3(name, table3):
    assert count_params(meta_model(name)) == table3  # 100 classes by default, as in the table


def test_carry_projections_are_the_only_extra_parameters():
    carry = 64 * 64 + 128 * 128 + 256 * 256 + 2 * (64 + 128 + 256)  # one 1x1 conv + BN per stage
    assert count_params(meta_model('resfuse19')) - count_params(meta_model('resnet19')) == carry
    assert count_params(meta_model('resfuse25')) - count_params(meta_model('resnet25')) == carry
    literal = meta_model('resfuse19', second_shortcut=False)  # Eq. 5 read literally: same parameters
    assert count_params(literal) == count_params(meta_model('resfuse19'))


def test_highway19_adds_one_gate_conv_per_highway_block():
    gates = 2 * sum(9 * c * c + c for c in (64, 128, 256))  # two highway blocks per stage
    assert count_params(meta_model('highway19')) - count_params(meta_model('resnet19')) == gates


def copy_all_but_carry(source: nn.Module, target: nn.Module) -> None:
    """Load `source`'s weights into `target`, whose state dict is `source`'s plus the carry projections."""
    theirs = [key for key in target.state_dict() if '.carry.' not in key]
    ours = list(source.state_dict())
    assert len(theirs) == len(ours)
    mapped = {new: source.state_dict()[old] for new, old in zip(theirs, ours, strict=True)}
    target.load_state_dict(mapped, strict=False)


def zero_carry(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, FusePair):
            nn.init.zeros_(module.carry.conv.weight)


@pytest.mark.parametrize('train_mode', [True, False])
def test_zero_carry_makes_resfuse19_a_resnet19(train_mode):
    torch.manual_seed(0)
    resnet, resfuse = create_model('resnet19', num_classes=5), create_model('resfuse19', num_classes=5)
    for module in resnet.modules():  # BN stats and affine away from their defaults, so any mismatch shows
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                nn.init.normal_(tensor, 0.1, 0.1)
            nn.init.uniform_(module.running_var, 0.5, 1.5)
    copy_all_but_carry(resnet, resfuse)
    zero_carry(resfuse)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = resnet.train(train_mode)(x)
        torch.testing.assert_close(resfuse.train(train_mode)(x), expected)
        literal = create_model('resfuse19', num_classes=5, second_shortcut=False)
        copy_all_but_carry(resnet, literal)
        zero_carry(literal)
        assert not torch.allclose(literal.train(train_mode)(x), expected)  # Eq. 5 literally has no such limit


def test_carry_is_added_across_the_pair():
    torch.manual_seed(0)
    pair = FusePair(8).eval()
    x = torch.rand(1, 8, 6, 6)
    with torch.no_grad():
        inner = pair.block1(x)
        out = pair.block2.bn2(pair.block2.conv2(pair.block2.act1(pair.block2.bn1(pair.block2.conv1(inner)))))
        torch.testing.assert_close(pair(x), torch.relu(out + inner + pair.carry(x)))


def test_highway_gate_bias_starts_at_minus_two():
    biases = [m.gate.bias for m in create_model('highway19').modules() if isinstance(m, HighwayBlock)]
    assert len(biases) == 6 and all(torch.all(bias == -2.0) for bias in biases)
    deeper = [m.gate.bias for m in create_model('highway19', gate_bias=-3.0).modules() if isinstance(m, HighwayBlock)]
    assert all(torch.all(bias == -3.0) for bias in deeper)


def test_weights_are_he_normal():
    torch.manual_seed(0)
    conv = create_model('resnet19').stages[2][2].conv2  # 256 x 256 x 3 x 3: a tight estimate of the std
    he_std = math.sqrt(2 / (256 * 9))
    assert conv.weight.std().item() == pytest.approx(he_std, rel=0.01)
    assert abs(conv.weight.mean().item()) < 0.01 * he_std


def test_closed_gate_passes_the_input_through():
    torch.manual_seed(0)
    block = HighwayBlock(8).train()
    nn.init.zeros_(block.gate.weight)
    nn.init.constant_(block.gate.bias, -1e4)  # T(x) = sigmoid(-1e4) = 0 in float32
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(block(x), x)
    nn.init.constant_(block.gate.bias, 1e4)  # T(x) = 1: the block is H alone
    h = block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x))))))
    torch.testing.assert_close(block(x), h)


def test_zero_init_last_starts_every_block_as_its_shortcut():
    torch.manual_seed(0)
    x = torch.rand(2, 8, 6, 6)  # non-negative, as every block input is (it follows a ReLU)
    for block in (BasicBlock(8, 8), FusePair(8), FusePair(8, second_shortcut=False)):
        with torch.no_grad():
            assert not torch.allclose(block.eval()(x), x)
            block.zero_init_last()
            expected = torch.zeros_like(x) if isinstance(block, FusePair) and block.block2.shortcut is None else x
            torch.testing.assert_close(block(x), expected)
    model = create_model('resfuse19', zero_init_last=True)
    pairs = [m for m in model.modules() if isinstance(m, FusePair)]
    assert len(pairs) == 3 and all(torch.all(p.carry.bn.weight == 0) for p in pairs)


@pytest.mark.parametrize('name', MODELS)
def test_builds_for_64_and_32_pixels(name):
    model = meta_model(name, num_classes=3)
    assert model.pretrained_cfg['input_size'] == (3, 64, 64)
    stride = model.feature_info[-1]['reduction']
    for size in (64, 32):
        x = torch.zeros(2, 3, size, size, device='meta')
        assert model.forward_features(x).shape[1:] == (model.num_features, size // stride, size // stride)
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize('name', MODELS)
def test_trains_a_step(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    nn.functional.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize('name', ['resnet19', 'highway19', 'resfuse19', 'resnet34_64'])
def test_timm_contract(name, check_timm_contract):
    model = timm.create_model(name).eval()
    check_timm_contract(model, torch.randn(2, 3, 16, 16))
    assert model.pretrained_cfg['num_classes'] == 100


@pytest.mark.parametrize('name', ['resfuse19', 'resnet34_64'])
def test_feature_info_reductions_are_the_real_strides(name):
    model = meta_model(name, features_only=True)
    features = model(torch.zeros(1, 3, 64, 64, device='meta'))
    assert model.feature_info.reduction() == [64 // f.shape[-1] for f in features]
    assert model.feature_info.channels() == [f.shape[1] for f in features]


def test_pairs_and_transitions_follow_the_plan():
    def kinds(model):
        return [[type(block).__name__ for block in stage] for stage in model.stages]

    assert kinds(meta_model('resfuse19')) == [['FusePair']] + [['BasicBlock', 'FusePair']] * 2
    pair_and_single = [['FusePair', 'BasicBlock']] + [['BasicBlock', 'FusePair', 'BasicBlock']] * 2
    assert kinds(meta_model('resfuse25')) == pair_and_single
    highway = meta_model('highway19')
    assert kinds(highway) == [['HighwayBlock'] * 2] + [['BasicBlock', 'HighwayBlock', 'HighwayBlock']] * 2
    assert all(stage[0].shortcut is None for stage in highway.stages[1:])  # plain convs change the width


@pytest.mark.parametrize('kwargs, message', [
    (dict(block_type='dense'), 'block_type must be one of'),
    (dict(widths=(128, 64, 256)), 'widths must not decrease'),
    (dict(layers=(2, 3)), 'one entry per stage'),
    (dict(layers=(2, 0, 3)), 'at least one block'),
])
def test_bad_plans_are_rejected(kwargs, message):
    with pytest.raises(UserError, match=message):
        create_model('resnet19', **kwargs)
