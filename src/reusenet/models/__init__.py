"""reusenet's models, registered with timm when this package is imported.

One file per family, as in timm: `baselines` holds the architectures the papers compare against; every
other public module of this package is one paper's family. All of them are imported below, so a new family
is just a new file, and `list_models` finds its models. After `import reusenet`,
`timm.create_model(name)` builds any of them; `create_model` does the same for reusenet's and timm's
models but reports mistakes as `UserError`s.
"""
import importlib
import pkgutil
import re

import timm
from timm.models import get_arch_pretrained_cfgs, model_entrypoint, parse_model_name, split_model_name_tag
from torch import nn

from ..errors import UserError, did_you_mean

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith('_'):
        importlib.import_module(f'{__name__}.{_module.name}')  # registers the family's models with timm

__all__ = ['create_model', 'list_models']


def list_models() -> list[str]:
    """Sorted names of the models registered by reusenet's model files."""
    ours = f'{__name__}.'
    return sorted(name for name in timm.list_models() if model_entrypoint(name).__module__.startswith(ours))


def create_model(name: str, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model` for any reusenet or timm model, with mistakes raised as `UserError`.

    num_classes=None keeps the model's default (100 for the `_cifar` models, 1000 at 224).
    """
    _check_model_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except UserError:
        raise
    except TypeError as err:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        problem = f'{name} has no argument {bad.group(1)!r}' if bad else f'cannot build {name}: {err}'
        raise UserError(problem) from err
    except (ValueError, AssertionError) as err:  # timm validates architecture arguments with asserts
        given = dict(kwargs, num_classes=num_classes)
        arguments = ', '.join(f'{k}={v!r}' for k, v in given.items() if v is not None)
        reason = str(err) or 'an argument is out of range'
        raise UserError(f'cannot build {name}({arguments}): {reason}') from err
    except OSError as err:  # includes huggingface_hub's errors when the Hub cannot be reached
        if not pretrained:
            raise
        raise UserError(
            f'cannot fetch pretrained weights for {name} ({_first_line(err)}). They are downloaded from the '
            'Hugging Face Hub on first use: connect to the internet once, or pass a local file with '
            'pretrained_cfg_overlay=dict(file=...).') from None
    except RuntimeError as err:
        if not pretrained:  # a bug rather than a mistake: keep its traceback
            raise
        raise UserError(
            f'cannot load the weights for {name}: {_first_line(err)}. If the file was trained for another number '
            'of classes, say so with pretrained_cfg_overlay=dict(file=..., num_classes=N).') from err


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _check_model_name(name: str) -> None:
    try:
        source, model_id = parse_model_name(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    if source:  # 'hf-hub:' or 'local-dir:', resolved by timm
        return
    arch, tag = split_model_name_tag(model_id)
    if not timm.is_model(arch):
        raise UserError(f'unknown model {arch!r}.{did_you_mean(arch, timm.list_models())}')
    tagged_names = get_arch_pretrained_cfgs(arch)
    if tag and model_id not in tagged_names:
        raise UserError(f'{arch} has no pretrained tag {tag!r}; known: {", ".join(tagged_names)}')
