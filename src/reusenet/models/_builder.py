"""Building reusenet models: timm's `build_model_with_cfg` without the random init behind pretrained=True."""
import os

from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from ..errors import UserError

__all__ = ['build_reusenet_model']


def build_reusenet_model(model_cls, variant: str, pretrained: bool = False, **kwargs):
    """timm's `build_model_with_cfg`, except that pretrained=True needs weights to load.

    reusenet releases no weights. They come from `reusenet train` and load through timm's own
    mechanism, `pretrained_cfg_overlay=dict(file=path)`; asking for weights without one is a mistake
    to report, not a reason to hand back a randomly initialized model.
    """
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        if not (cfg.has_weights or cfg.state_dict):
            raise UserError(
                f'no released weights for {variant}; train it with `reusenet train` '
                f'or pass pretrained_cfg_overlay=dict(file=...)')
        if cfg.file and not os.path.isfile(cfg.file):
            raise UserError(f'weights file for {variant} not found: {cfg.file}')
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
