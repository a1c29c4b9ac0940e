"""Level-2 CNNs on level 1's frozen lower layers (RefiNet paper, Section 5.1 "Level-2 CNNs", Figure 7).

Each cluster gets its own CNN: level 1's lower layers, shared and frozen (the paper reuses VGG-16 up to
conv4_3 and does not backpropagate into it), then new upper layers trained from scratch on the cluster's
classes only: 3x3 convolutions, a 2x2 max-pool and a fully connected classifier with dropout 0.5.

Choices the paper leaves open (its Figure 7 is not in the text):
* Where to cut: any backbone, at an index into its timm `feature_info` (`stage`). The paper's cut,
  VGG-16 conv4_3, is stage 3 of timm's `vgg16`. The trunk runs `forward_intermediates(stop_early=True)`
  where the model has it (every timm model), else the whole `forward_features` with a hook on the
  feature_info module, which is right for any forward order (a stage-skipping shortcut, say).
* The trunk stays in eval mode (its BatchNorm statistics are level 1's, never updated) and runs under
  no_grad; the heads hold it by reference rather than as a submodule, so it is in no head's
  state_dict or optimizer and is saved once, with level 1.
* Head: `convs` 3x3 conv + BatchNorm + ReLU layers of `width` channels (default: the trunk's), the 2x2
  max-pool (ceil mode, so a 1x1 map survives), global average pooling (so the head fits any input
  size and any backbone, where flattening would tie the FC to one resolution), dropout 0.5 and one FC
  layer. BatchNorm is ours: the layers are trained from scratch, and it makes that train reliably
  whatever the trunk's scale.
* The head outputs logits over its cluster's classes only; the classes outside the cluster get
  probability zero when the pipeline places them in the full class vector.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

__all__ = ["ClusterClassifier", "ClusterHead", "ClusterNet", "FrozenTrunk", "embed"]


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class FrozenTrunk(nn.Module):
    """Level 1 cut after `feature_info[stage]`: frozen weights, frozen BatchNorm statistics."""

    def __init__(self, level1: nn.Module, stage: int):
        super().__init__()
        infos = list(getattr(level1, "feature_info", None) or [])
        if not infos:
            raise UserError(f"{type(level1).__name__} has no feature_info, so there is no stage to cut it at; "
                            "use a timm or reusenet model.")
        if isinstance(stage, bool) or not isinstance(stage, int) or not -len(infos) <= stage < len(infos):
            stages = ", ".join(f"{i}: {info['module']} ({info['num_chs']} ch, /{info['reduction']})"
                               for i, info in enumerate(infos))
            raise UserError(f"stage {stage!r} is not a feature stage of {type(level1).__name__}; "
                            f"choose one of {stages} (negative counts from the end).")
        self.stage = stage % len(infos)
        self.info = infos[self.stage]
        self.level1 = freeze(level1)

    @property
    def num_channels(self) -> int:
        return self.info["num_chs"]

    def train(self, mode: bool = True) -> FrozenTrunk:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.level1.eval()  # whoever switched level 1 to training mode, its statistics stay as trained
        if hasattr(self.level1, "forward_intermediates"):
            return self.level1.forward_intermediates(x, indices=[self.stage], intermediates_only=True,
                                                     stop_early=True)[0]
        captured = []
        module = self.level1.get_submodule(self.info["module"])
        handle = module.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            self.level1.forward_features(x)
        finally:
            handle.remove()
        return captured[0]


class ClusterHead(nn.Module):
    """The new upper layers of one level-2 (or level-3) CNN."""

    def __init__(self, in_chs: int, num_classes: int, convs: int = 2, width: int | None = None,
                 drop_rate: float = 0.5):
        super().__init__()
        if convs < 0 or num_classes < 1 or not 0 <= drop_rate < 1:
            raise ValueError(f"ClusterHead needs convs >= 0, num_classes >= 1, 0 <= drop_rate < 1; got "
                             f"convs={convs}, num_classes={num_classes}, drop_rate={drop_rate}.")
        width = width or in_chs
        layers = []
        for index in range(convs):
            layers += [nn.Conv2d(in_chs if index == 0 else width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.MaxPool2d(2, ceil_mode=True))
        self.num_features = width if convs else in_chs
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ClusterNet(nn.Module):
    """Trunk + head: what the engine trains for one cluster. Only the head is a submodule (see above)."""

    def __init__(self, trunk: FrozenTrunk, head: nn.Module):
        super().__init__()
        self.head = head
        self.__dict__["trunk"] = trunk  # shared with level 1 and the other clusters, never trained here
        # Preprocessing (timm data config) is level 1's, since the trunk sees the images first.
        self.pretrained_cfg = getattr(trunk.level1, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm model's pre-logits features (the input of its last layer), flattened to B x D."""
    return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)


def embedding_dim(model: nn.Module) -> int:
    return getattr(model, "head_hidden_size", None) or model.num_features


class ClusterClassifier(nn.Module):
    """The "retrain" router: level 1 with a new output layer that predicts the cluster directly.

    Only the new layer is trained (the paper retrains level 1's output layer); the rest is level 1,
    frozen and held by reference like the trunk.
    """

    def __init__(self, level1: nn.Module, num_clusters: int):
        super().__init__()
        self.fc = nn.Linear(embedding_dim(level1), num_clusters)
        self.__dict__["level1"] = freeze(level1)
        self.pretrained_cfg = getattr(level1, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = embed(self.level1.eval(), x)
        return self.fc(features)
