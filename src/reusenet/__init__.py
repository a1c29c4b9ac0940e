"""reusenet: the REAF, ResFRI, multi-level shortcut ConvNeXt, ResFuse and RefiNet papers as timm models.

Importing this package registers every reusenet model with timm, so `timm.create_model(name)` works.
"""
from . import models  # noqa: F401  (registers the models with timm)
from .errors import UserError
from .layers.reaf import fold, reafify

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "fold", "reafify"]
