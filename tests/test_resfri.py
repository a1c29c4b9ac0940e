"""ResFRI / Split-ResFRI: block wiring, passages, split ratios, passage pruning, timm contract, training."""
import copy

import pytest
import timm
import torch
import torch.nn as nn

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.layers.resfri import (
    InceptionWidths,
    PassageConv2d,
    ResFRIBlock,
    SplitResFRIBlock,
    passage_summary,
    prune_passages,
)
from reusenet.measure import complexity, count_params
from reusenet.models import create_model

ARCHS = ['googlenet', 'resfri_add', 'resfri_concat', 'split_resfri_add', 'split_resfri_concat']
TINY = dict(width_multiplier=0.125)  # every width a multiple of 8, the smallest that keeps the 1/8 splits whole
WIDTHS = InceptionWidths(16, 24, 32, 8, 16, 8)  # every passage needs a projection: 16->24, 32->8, 16->in/8


def passage_convs(model: nn.Module) -> list[PassageConv2d]:
    return [m for m in model.modules() if isinstance(m, PassageConv2d)]


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('suffix, size, classes', [('cifar', 32, 100), ('tinyimagenet', 64, 200)])
def test_shapes_at_32_and_64(arch, suffix, size, classes):
    with torch.device('meta'):  # shapes only, at full width
        model = timm.create_model(f'{arch}_{suffix}')
        assert model.pretrained_cfg['input_size'] == (3, size, size)
        features = model.forward_features(torch.zeros(2, 3, size, size))
    assert features.shape == (2, model.num_features, size // 4, size // 4)
    assert tuple(features.shape[2:]) == model.pretrained_cfg['pool_size']
    assert model.forward_head(features).shape == (2, classes)


def test_timm_contract(check_timm_contract):
    model = timm.create_model('split_resfri_concat_cifar', **TINY).eval()
    x = torch.randn(2, 3, 16, 16)
    check_timm_contract(model, x)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    taps = timm.create_model('split_resfri_concat_cifar', features_only=True, **TINY)(x)
    assert [16 // t.shape[-1] for t in taps] == [1, 1, 2, 4]
    assert [t.shape[1] for t in taps] == [info['num_chs'] for info in model.feature_info]


def test_googlenet_baseline_is_the_cifar_googlenet():
    """kuangliu/pytorch-cifar's GoogLeNet: 3x3 stem of 192, inception 3a..5b, 1024 features, no passages."""
    model = timm.create_model('googlenet_cifar')
    assert model.num_features == 1024 and not passage_convs(model)
    blocks = [b for b in model.modules() if isinstance(b, ResFRIBlock)]
    assert [b.out_chs for b in blocks] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert all(b.shortcut is None and b.passages is None for b in blocks)


@pytest.mark.parametrize('fusion', ['add', 'concat'])
@pytest.mark.parametrize('index', [0, 1, 2])
def test_zeroing_a_passage_changes_the_next_group_only(fusion, index):
    torch.manual_seed(0)
    block = ResFRIBlock(64, WIDTHS, fusion=fusion).eval()
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        before = block.forward_groups(x)
        block.passages[index].proj.conv.weight.zero_()
        after = block.forward_groups(x)
    for group in range(index + 1):
        torch.testing.assert_close(after[group], before[group])
    assert not torch.allclose(after[index + 1], before[index + 1])


@pytest.mark.parametrize('ratios, expected', [(None, [72, 72, 24, 24]), ((0.25, 0.25, 0.25, 0.25), [48] * 4)])
def test_split_ratios_are_honoured_exactly(ratios, expected):
    torch.manual_seed(0)
    kwargs = {} if ratios is None else dict(split_ratios=ratios)
    block = SplitResFRIBlock(192, WIDTHS, **kwargs).eval()
    assert block.split_sizes == expected
    assert [block.groups[i].enter.conv.in_channels for i in range(3)] == expected[:3]
    assert block.groups[3].body[1].conv.in_channels == expected[3]
    x = torch.randn(1, 192, 4, 4)
    with torch.no_grad():
        before = block.forward_groups(x)
        for slice_index, start in enumerate([0, *torch.tensor(expected).cumsum(0)[:-1].tolist()]):
            changed = x.clone()
            changed[:, start:start + expected[slice_index]] += 1.0  # this slice only
            after = block.forward_groups(changed)
            # a slice reaches its own group directly and the later groups through the passages, never earlier ones
            for group in range(4):
                assert torch.allclose(after[group], before[group]) == (group < slice_index), (slice_index, group)


@pytest.mark.parametrize('in_chs, ratios', [(100, (3 / 8, 3 / 8, 1 / 8, 1 / 8)), (64, (0.5, 0.25, 0.25, 0.25))])
def test_split_ratios_that_need_rounding_are_refused(in_chs, ratios):
    with pytest.raises(ValueError, match='split_ratios'):
        SplitResFRIBlock(in_chs, WIDTHS, split_ratios=ratios)


@pytest.mark.parametrize('fusion', ['add', 'concat'])
def test_split_resfri_has_fewer_params_and_macs_at_equal_widths(fusion):
    full, split = (complexity(f'{name}_{fusion}_cifar', prune_ratio=0) for name in ('resfri', 'split_resfri'))
    assert split.params < full.params and split.macs < full.macs
    block, split_block = ResFRIBlock(192, WIDTHS, fusion=fusion), SplitResFRIBlock(192, WIDTHS, fusion=fusion)
    assert split_block.out_chs == block.out_chs and count_params(split_block) < count_params(block)


def test_default_prune_ratios_follow_the_paper():
    with torch.device('meta'):
        add, concat = timm.create_model('resfri_add_cifar'), timm.create_model('resfri_concat_cifar')
    assert add.prune_ratio == 0.7 and all(conv.is_pruned for conv in passage_convs(add))
    assert concat.prune_ratio == 0.0 and not any(conv.is_pruned for conv in passage_convs(concat))


@pytest.mark.parametrize('ratio', [0.0, 0.3, 0.7, 0.9])
def test_pruning_keeps_1_minus_r_of_passage_weights_and_touches_nothing_else(ratio):
    torch.manual_seed(0)
    model = timm.create_model('resfri_add_cifar', prune_ratio=0, **TINY)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    summary = prune_passages(model, ratio)
    total = kept = 0
    for conv in passage_convs(model):
        n, nonzero = conv.weight.numel(), int(conv.weight.count_nonzero())
        assert nonzero == n - round(ratio * n)  # (1 - r) of each conv, up to rounding to whole weights
        if 0 < nonzero < n:  # L1: every kept weight outweighs every pruned one
            assert conv.weight[conv.weight != 0].abs().min() >= conv.weight_orig[conv.weight == 0].abs().max()
        total, kept = total + n, kept + nonzero
    assert summary.passage_weights == total and summary.kept_passage_weights == kept
    assert abs(kept / total - (1 - ratio)) < 0.01
    after = model.state_dict()
    renamed = {}
    for name, tensor in before.items():
        if name.endswith('proj.conv.weight') and ratio:
            renamed[name] = name + '_orig'  # prune keeps the dense weight under this name, beside its mask
        assert torch.equal(after[renamed.get(name, name)], tensor), name
    assert set(after) == (set(before) - set(renamed)) | {name + end for name in renamed for end in ('_orig', '_mask')}
    assert summary.nonzero_params == count_params(model) - (total - kept)


def test_ratios_do_not_compound_and_zeros_stay_pruned():
    torch.manual_seed(0)
    model = timm.create_model('resfri_add_cifar', prune_ratio=0.5, **TINY)
    first = [conv.weight == 0 for conv in passage_convs(model)]
    prune_passages(model, 0.7)
    for conv, zero_before in zip(passage_convs(model), first, strict=True):
        n = conv.weight.numel()
        assert int((conv.weight == 0).sum()) == round(0.7 * n)
        assert bool((conv.weight[zero_before] == 0).all())


def test_permanent_pruning_leaves_plain_weights():
    model = timm.create_model('resfri_add_cifar', prune_ratio=0, **TINY)
    summary = prune_passages(model, 0.7, permanent=True)
    conv = passage_convs(model)[0]
    assert not conv.is_pruned and isinstance(conv.weight, nn.Parameter)
    assert int(conv.weight.count_nonzero()) == conv.weight.numel() - round(0.7 * conv.weight.numel())
    assert summary.kept_passage_weights == passage_summary(model).kept_passage_weights


def test_pruned_macs_count_only_the_kept_passage_weights():
    model = timm.create_model('resfri_add_cifar', prune_ratio=0, **TINY)
    positions = {}

    def record(conv, inputs, output):
        positions[conv] = output.shape[-2] * output.shape[-1]

    hooks = [conv.register_forward_hook(record) for conv in passage_convs(model)]
    model.eval()(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    dense = complexity(model).macs
    prune_passages(model, 0.7)
    pruned = sum(positions[conv] * (conv.weight.numel() - conv.kept_weights()) for conv in passage_convs(model))
    assert pruned > 0 and complexity(model).macs == dense - pruned
    assert complexity('resfri_add_cifar', **TINY).macs == dense - pruned  # built on meta: counted from the ratio


def test_state_dicts_load_across_pruning_states(tmp_path):
    torch.manual_seed(0)
    pruned = timm.create_model('resfri_add_cifar', **TINY).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = pruned(x)
    torch.save(pruned.state_dict(), tmp_path / 'pruned.pt')
    state = torch.load(tmp_path / 'pruned.pt', weights_only=True)
    same = timm.create_model('resfri_add_cifar', **TINY).eval()
    same.load_state_dict(state)
    torch.testing.assert_close(same(x), expected)
    dense = timm.create_model('resfri_add_cifar', prune_ratio=0, **TINY).eval()
    dense.load_state_dict(state)  # weight_orig x weight_mask
    torch.testing.assert_close(dense(x), expected)
    repruned = timm.create_model('resfri_add_cifar', **TINY).eval()
    repruned.load_state_dict(dense.state_dict())  # a plain weight with 70% zeros re-pruned at 0.7: same mask
    torch.testing.assert_close(repruned(x), expected)
    for conv, original in zip(passage_convs(repruned), passage_convs(pruned), strict=True):
        assert torch.equal(conv.weight_mask, original.weight_mask)


def test_one_training_step_keeps_the_mask_and_copies():
    torch.manual_seed(0)
    model = timm.create_model('split_resfri_add_cifar', num_classes=10, **TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[1] != losses[0]
    for conv in passage_convs(model):
        assert int(conv.weight.count_nonzero()) == conv.weight.numel() - round(0.7 * conv.weight.numel())
    copied = copy.deepcopy(model).eval()  # EMA and the engine's timing trials copy the model after training steps
    torch.testing.assert_close(copied(images), model.eval()(images))


def test_five_by_five_choice():
    two3x3 = ResFRIBlock(64, WIDTHS, branch5x5='two3x3')
    true5x5 = ResFRIBlock(64, WIDTHS, branch5x5='5x5')
    r5, c5 = WIDTHS.r5, WIDTHS.c5
    # two 3x3 (r5->c5, c5->c5, each with a BN) against one 5x5 (r5->c5)
    assert count_params(two3x3) - count_params(true5x5) == 9 * r5 * c5 + 9 * c5 * c5 + 2 * c5 - 25 * r5 * c5


@pytest.mark.parametrize('kwargs, message', [
    (dict(fusion='mul'), 'fusion'),
    (dict(pool_type='lp'), 'pool_type'),
    (dict(branch5x5='7x7'), 'branch5x5'),
    (dict(prune_ratio=1.5), 'prune ratio'),
    (dict(split_ratios=(0.5, 0.5, 0.25, 0.25)), 'split_ratios'),
])
def test_invalid_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        create_model('resfri_add_cifar', **TINY, **kwargs)


def test_googlenet_has_nothing_to_prune():
    with pytest.raises(UserError, match='no passage convs'):
        create_model('googlenet_cifar', prune_ratio=0.5, **TINY)
