"""A fitted RefiNet: level 1, the label tree, the per-cluster heads, and the one-file artifact.

The label tree is a `Node` per cluster. The root holds every class and its classifier is level 1; every
other node holds its cluster's classes and its classifier is its own head on the frozen trunk. A node
with children routes each image to one of them (or, soft, mixes them); a leaf answers with its head's
probabilities, zero outside its classes. Evaluating with `levels=1` is the flat level-1 baseline,
`levels=2` is RefiNet-L2, and so on, so every variant of Tables 5-6 is one tree read to some depth.
A single-class cluster needs no head: its one class has probability 1.

The artifact is one safetensors file (level 1 as `level1.*`, each head as `heads.<node>.*`, the retrained
router as `router.*`) and a JSON sidecar with everything else needed to predict: classes, tree, model
names and arguments, cut stage, head shape, preprocessing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..engine.checkpoint import atomic_write
from ..errors import UserError
from ..models import create_model
from .heads import ClusterClassifier, ClusterHead, FrozenTrunk, embed
from .router import VOTERS, check_router, cluster_mass, vote

__all__ = ["ARTIFACT_NAME", "SIDECAR_NAME", "Node", "RefiNet", "load_refinet"]

ARTIFACT_NAME = "refinet.safetensors"
SIDECAR_NAME = "refinet.json"
FORMAT = "reusenet-refinet"


@dataclass
class Node:
    """A cluster of classes (global class indices, ascending) and its sub-clusters."""

    classes: list[int]
    path: str = "root"
    children: list[Node] = field(default_factory=list)

    @property
    def cluster_of(self) -> torch.Tensor:
        """For each of this node's classes (local order), the index of the child that holds it."""
        local = {c: i for i, c in enumerate(self.classes)}
        owner = torch.empty(len(self.classes), dtype=torch.int64)
        for index, child in enumerate(self.children):
            owner[[local[c] for c in child.classes]] = index
        return owner

    def split(self, assignment) -> None:
        """Make children from a cluster id per local class."""
        assignment = np.asarray(assignment)
        self.children = [Node([c for c, a in zip(self.classes, assignment, strict=True) if a == k],
                              f"{self.path}_{k}" if self.path != "root" else f"c{k}")
                         for k in range(assignment.max() + 1)]

    def nodes(self) -> list[Node]:
        return [self] + [node for child in self.children for node in child.nodes()]

    def leaves(self) -> list[Node]:
        return [self] if not self.children else [leaf for child in self.children for leaf in child.leaves()]

    def depth(self) -> int:
        return 1 + max((child.depth() for child in self.children), default=0)

    def to_dict(self, names: list[str] | None = None) -> dict:
        entry = {"cluster": self.path, "classes": [names[c] for c in self.classes] if names else self.classes}
        if self.children:
            entry["children"] = [child.to_dict(names) for child in self.children]
        return entry

    @classmethod
    def from_dict(cls, entry: dict) -> Node:
        return cls(list(entry["classes"]), entry["cluster"], [cls.from_dict(c) for c in entry.get("children", [])])


class RefiNet(nn.Module):
    """Level 1 + frozen trunk + one head per (non-singleton) cluster of the tree."""

    def __init__(self, level1: nn.Module, classes: list[str], stage: int, head_args: dict, data_config: dict,
                 meta: dict):
        super().__init__()
        self.level1 = level1
        self.trunk = FrozenTrunk(level1, stage)
        self.heads = nn.ModuleDict()
        self.router = None  # the retrained ClusterClassifier, when fitted
        self.classes = list(classes)
        self.head_args = dict(head_args)
        self.data_config = dict(data_config)
        self.meta = dict(meta)
        self.tree = Node(list(range(len(classes))))

    def new_head(self, node: Node) -> ClusterHead:
        head = ClusterHead(self.trunk.num_channels, len(node.classes), **self.head_args)
        self.heads[node.path] = head
        return head

    def new_router(self) -> ClusterClassifier:
        self.router = ClusterClassifier(self.level1, len(self.tree.children))
        return self.router

    @torch.no_grad()
    def node_probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{node path: B x len(node.classes) probabilities} for the root and every node with a head."""
        self.eval()
        probs = {"root": self.level1(images).float().softmax(dim=1)}
        features = self.trunk(images) if len(self.heads) else None
        for node in self.tree.nodes()[1:]:
            if node.path in self.heads:
                probs[node.path] = self.heads[node.path](features).float().softmax(dim=1)
            elif len(node.classes) == 1:
                probs[node.path] = images.new_ones(len(images), 1, dtype=torch.float32)
        if self.router is not None:
            probs["router"] = self.router(images).float().softmax(dim=1)
        return probs

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self.eval()
        return embed(self.level1, images).float()

    def combine(self, probs: dict[str, torch.Tensor], router: str = "vote", levels: int | None = None) -> torch.Tensor:
        """B x C class probabilities from per-node probabilities, reading the tree `levels` deep."""
        check_router(router)
        if router == "retrain" and "router" not in probs:
            raise UserError("this RefiNet has no retrained router; use router vote or soft, or fit with retrain.")
        return self._visit(self.tree, probs, router, levels or self.tree.depth())

    def _visit(self, node: Node, probs: dict, router: str, levels: int) -> torch.Tensor:
        if node.path not in probs:
            raise UserError(f"cluster {node.path} has no trained head; it cannot be evaluated.")
        local = probs[node.path]
        if not node.children or levels == 1:
            full = local.new_zeros(len(local), len(self.classes))
            full[:, node.classes] = local
            return full
        below = torch.stack([self._visit(child, probs, router, levels - 1) for child in node.children], dim=1)
        if router == "soft":
            mass = cluster_mass(local, node.cluster_of, len(node.children))
            return (mass[:, :, None] * below).sum(dim=1) / mass.sum(dim=1, keepdim=True).clamp_min(1e-12)
        chosen = self.route(node, probs, router)
        return below[torch.arange(len(below)), chosen]

    def route(self, node: Node, probs: dict, router: str) -> torch.Tensor:
        """The child each image goes to at `node` (the retrained router decides at the root only)."""
        if router == "retrain" and node is self.tree:
            return probs["router"].argmax(dim=1)
        return vote(probs[node.path], node.cluster_of, len(node.children), self.meta.get("voters", VOTERS))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, router: str | None = None,
                      levels: int | None = None) -> torch.Tensor:
        """B x C class probabilities of preprocessed images (router: the one it was fitted with)."""
        images = images.to(next(self.level1.parameters()).device)
        return self.combine(self.node_probs(images), router or self.meta.get("router", "vote"), levels)

    def predict_files(self, paths, router: str | None = None, top: int = 1) -> list[dict]:
        """{"path", "classes": [(name, probability), ...]} for each image file, best class first."""
        from timm.data import create_transform

        from ..data.files import UNREADABLE, open_rgb

        transform = create_transform(**self.data_config, is_training=False)
        images = []
        for path in paths:
            try:
                images.append(transform(open_rgb(path)))
            except FileNotFoundError:
                raise UserError(f"image {path} does not exist.") from None
            except UNREADABLE as err:
                raise UserError(f"cannot read image {path} ({type(err).__name__}: {err}).") from None
        probs = self.predict_proba(torch.stack(images), router)
        values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
        return [{"path": str(path), "classes": [(self.classes[i], float(v)) for v, i in zip(vs, ix, strict=True)]}
                for path, vs, ix in zip(paths, values.tolist(), indices.tolist(), strict=True)]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"level1.{k}": v for k, v in self.level1.state_dict().items()}
        tensors.update({f"heads.{k}": v for k, v in self.heads.state_dict().items()})
        if self.router is not None:
            tensors.update({f"router.{k}": v for k, v in self.router.state_dict().items()})
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        sidecar = {"format": FORMAT, "version": 1, **self.meta, "classes": self.classes, "stage": self.trunk.stage,
                   "head_args": self.head_args, "data_config": self.data_config,
                   "retrained_router": self.router is not None, "tree": self.tree.to_dict()}
        atomic_write(folder / ARTIFACT_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
        atomic_write(folder / SIDECAR_NAME, lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2)))
        return folder / ARTIFACT_NAME


def load_refinet(path: str | Path) -> RefiNet:
    """A RefiNet from its artifact folder or its refinet.safetensors (with refinet.json beside it)."""
    path = Path(path)
    weights = path / ARTIFACT_NAME if path.is_dir() else path
    sidecar = weights.with_name(SIDECAR_NAME)
    if not weights.is_file() or not sidecar.is_file():
        raise UserError(f"no RefiNet artifact at {path}: expected {weights} and {sidecar}; "
                        "create one with `reusenet refinet fit`.")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{sidecar} is not valid JSON ({err}).") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{sidecar} is not a RefiNet sidecar (format {meta.get('format')!r}).")
    tensors = load_file(weights)
    level1 = create_model(meta["model"], num_classes=len(meta["classes"]), **meta["model_args"])
    keep = {"model", "model_args", "data", "data_root", "data_args", "router", "voters"}
    refinet = RefiNet(level1, meta["classes"], meta["stage"], meta["head_args"], meta["data_config"],
                      {k: v for k, v in meta.items() if k in keep})
    refinet.tree = Node.from_dict(meta["tree"])
    for node in refinet.tree.nodes()[1:]:
        if f"heads.{node.path}.fc.weight" in tensors:
            refinet.new_head(node)
    if meta.get("retrained_router"):
        refinet.new_router()
    state = {k.partition(".")[2]: v for k, v in tensors.items() if k.startswith("level1.")}
    try:
        level1.load_state_dict(state)
        refinet.heads.load_state_dict({k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")})
        if refinet.router is not None:
            refinet.router.load_state_dict({k[len("router."):]: v for k, v in tensors.items()
                                            if k.startswith("router.")})
    except RuntimeError as err:
        raise UserError(f"{weights} does not match {sidecar}: {str(err).splitlines()[-1].strip()}") from None
    return refinet.eval()
