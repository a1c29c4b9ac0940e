"""RefiNet end to end (RefiNet paper, Section 5.2.1): level 1 -> class affinity -> label clustering ->
router -> level-2 CNNs -> optional deeper levels -> evaluation against the flat baseline -> artifact.

`RefiNetConfig` is one typed, validated setting (a `recipes/refinet/*.yaml` file plus overrides); `fit`
runs it and writes, into its output folder:

* `refinet.safetensors` + `refinet.json`: the artifact (`load_refinet`, `reusenet refinet predict`);
* `hierarchy.json`: the label tree, cluster -> class names;
* `results.{md,csv,json}`: flat level 1 vs the RefiNet variants, val/test top-1/top-5 and cluster
  accuracy (Tables 5-6); `clusters.*`: per-cluster size and accuracy of its own CNN against level 1 on
  the same images (Table 7); `clustering.*` and `cluster_accuracy_vs_k.*`: cluster accuracy per algorithm
  (Table 4) and against K (Figure 9a), measured on the held-out images the affinity came from;
* `tsne.{png,svg}`: level 1's embeddings of the held-out images coloured by cluster (Figure 11);
* `level1/`, `level2/<cluster>/`, `router/`: the engine's run folders of each trained part.

Choices the paper leaves open: the N_1 held-out images are a seeded sample of the val split (all of it
by default). Top-5 counts a hit only for a class with non-zero probability: hard routing gives every
class outside the chosen cluster probability zero, and a tie among zeros is not a prediction. Level-1
`trainable_layers: N` trains only the last N layers that hold weights (the paper: 2, fc7 and fc8 of a
pretrained VGG-16) and freezes the others' weights; their BatchNorm layers, if any, still update their
statistics in training mode, as with any requires_grad=False fine-tuning (the paper's VGG-16 has none).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from timm.data import resolve_data_config

from ..data import ImageFiles, InMemoryImages, build_dataset, build_loader, dataset_splits
from ..engine import Trainer, load_trained, make_config
from ..engine.config import RECIPE_DIR, find_recipe, read_yaml
from ..engine.precision import Execution, resolve_device
from ..errors import UserError, did_you_mean
from ..models import create_model
from ..report import save_figure, write_table
from .affinity import AFFINITIES, class_affinity
from .clustering import CLUSTERINGS, check_clustering, cluster_accuracy, cluster_classes
from .heads import ClusterNet
from .model import SIDECAR_NAME, Node, RefiNet, load_refinet
from .router import check_router, cluster_mass, vote

__all__ = ["REFINET_RECIPES", "RefiNetConfig", "evaluate", "evaluate_artifact", "fit", "load_refinet_config"]

REFINET_RECIPES = RECIPE_DIR / "refinet"
SPLITS = ("none", "largest", "size")
TRAIN_SECTIONS = ("train", "level1_train", "level2_train", "router_train")


@dataclass
class RefiNetConfig:
    """Every setting of a RefiNet fit. The *_train mappings hold `reusenet train` keys (see --help-keys):
    `train` applies to every part, the others to level 1, the cluster CNNs and the retrained router."""

    # data
    data: str = "digits"
    data_root: str | None = None
    data_args: dict = field(default_factory=dict)
    # level 1
    model: str = "resnet18_cifar"
    model_args: dict = field(default_factory=dict)
    pretrained: bool = False
    level1_weights: str | None = None  # a trained run (folder, model.safetensors, last.pt): skip level-1 training
    trainable_layers: int | None = None  # train only the last N weight layers of level 1 (paper: 2)
    # label hierarchy
    affinity: str = "mass"  # mass (Eq. 6) | confusion (Eq. 7)
    n1: int | None = None  # held-out images for the affinity (None: the whole val split)
    clustering: str = "spectral"
    k: int = 5
    k_sweep: list = field(default_factory=list)  # K values for Figure 9a ([] skips it)
    # level-2 CNNs
    stage: int = -2  # feature_info index where level 1 is cut (vgg16: 3 is conv4_3)
    head_convs: int = 2
    head_width: int | None = None
    drop_rate: float = 0.5
    # deeper levels and routing
    split: str = "none"  # none | largest (RefiNet-L3) | size (split the largest until all <= max_cluster_size)
    max_cluster_size: int | None = None
    retrain_router: bool = False
    router: str = "vote"  # the artifact's default: vote | soft | retrain
    voters: int = 5  # top-k classes that vote for their cluster (the paper: 5)
    # training and evaluation
    train: dict = field(default_factory=dict)
    level1_train: dict = field(default_factory=dict)
    level2_train: dict = field(default_factory=dict)
    router_train: dict = field(default_factory=dict)
    eval_batch_size: int = 256
    seed: int = 0
    output: str | None = None
    tsne: bool = True
    tsne_points: int = 2000

    def validate(self) -> RefiNetConfig:
        if self.affinity not in AFFINITIES:
            raise UserError(f"affinity: {self.affinity!r} is not one of {', '.join(AFFINITIES)} (Eq. 6, Eq. 7)."
                            + did_you_mean(str(self.affinity), AFFINITIES))
        check_clustering(self.clustering)
        check_router(self.router)
        if self.split not in SPLITS:
            raise UserError(f"split: {self.split!r} is not one of {', '.join(SPLITS)}."
                            + did_you_mean(str(self.split), SPLITS))
        if self.split == "size" and (self.max_cluster_size is None or self.max_cluster_size < 1):
            raise UserError("split size needs max_cluster_size, a positive number of classes per cluster.")
        if self.router == "retrain" and not self.retrain_router:
            raise UserError("router retrain needs retrain_router: true (the cluster classifier must be trained).")
        positive = {"k": self.k, "n1": self.n1, "voters": self.voters, "eval_batch_size": self.eval_batch_size,
                    "tsne_points": self.tsne_points, "trainable_layers": self.trainable_layers,
                    "head_width": self.head_width}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise UserError(f"{name} must be positive, got {value}.")
        if self.k < 2 or any(not isinstance(k, int) or k < 2 for k in self.k_sweep):
            raise UserError(f"k and k_sweep need at least 2 clusters, got k={self.k}, k_sweep={self.k_sweep}.")
        if self.head_convs < 0 or not 0 <= self.drop_rate < 1:
            raise UserError(f"head_convs must be >= 0 and drop_rate in [0, 1), got {self.head_convs}, "
                            f"{self.drop_rate}.")
        for section in TRAIN_SECTIONS:  # fail now, not after level 1 has trained for hours
            engine_config(self, getattr(self, section), Path("unused"), self.model)
        return self


FIELD_TYPES = typing.get_type_hints(RefiNetConfig)


def make_refinet_config(values: dict) -> RefiNetConfig:
    known = {f.name: f for f in dataclasses.fields(RefiNetConfig)}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"unknown RefiNet setting {key!r}.{did_you_mean(key, known)} Settings: "
                            f"{', '.join(known)}.")
        allowed = typing.get_args(FIELD_TYPES[key]) or (FIELD_TYPES[key],)
        allowed = tuple(typing.get_origin(t) or t for t in allowed)
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise UserError(f"{key}: expected {names}, got {value!r}.")
    return RefiNetConfig(**values).validate()


def load_refinet_config(recipe: str | None = None, overrides=()) -> RefiNetConfig:
    """A recipe (name in recipes/refinet/ or a path) with `(key, value)` overrides; `a.b` sets key b of
    mapping a (e.g. `level1_train.epochs`)."""
    values = read_yaml(find_recipe(recipe, REFINET_RECIPES, "RefiNet recipe")) if recipe else {}
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for key, value in overrides:
        parent, _, child = key.partition(".")
        if not child:
            merged[key] = value
        elif parent in ("data_args", "model_args", *TRAIN_SECTIONS):
            merged.setdefault(parent, {})[child] = value
        else:
            raise UserError(f"{key}: only data_args, model_args and the *_train mappings take dotted keys.")
    return make_refinet_config(merged)


def engine_config(config: RefiNetConfig, stage_values: dict, output: Path, model_name: str):
    values = {"data": config.data, "data_root": config.data_root, "data_args": config.data_args,
              "seed": config.seed, **config.train, **stage_values, "model": model_name, "output": str(output)}
    return make_config(values)


# ---------------------------------------------------------------- data


def load_splits(config: RefiNetConfig) -> dict:
    args = {"seed": 0, **config.data_args}
    splits = dataset_splits(config.data, **config.data_args)
    if "val" not in splits:
        raise UserError(f"RefiNet builds its label hierarchy from held-out val images, but {config.data} has no "
                        "val split here; keep one (e.g. a positive val_size).")
    return {split: build_dataset(config.data, config.data_root, split, **args) for split in splits}


def relabelled(dataset, new_label, names: list[str]):
    """The images whose class c has new_label[c] >= 0, labelled new_label[c]; normalisation is unchanged,
    so a cluster's CNN sees its images exactly as level 1 did."""
    new_label = torch.as_tensor(np.asarray(new_label), dtype=torch.int64)
    if isinstance(dataset, InMemoryImages):
        mapped = new_label[dataset.labels]
        keep = mapped >= 0
        return InMemoryImages(dataset.images[keep], mapped[keep], names, dataset.mean, dataset.std, name=dataset.name)
    samples = [(path, int(new_label[label])) for path, label in dataset.samples if new_label[label] >= 0]
    return ImageFiles(samples, names, name=dataset.name)


def restrict(dataset, classes: list[int], all_names: list[str]):
    """Only the images of `classes`, labelled by position in `classes` (a cluster's local labels)."""
    new_label = np.full(len(all_names), -1)
    new_label[classes] = np.arange(len(classes))
    return relabelled(dataset, new_label, [all_names[c] for c in classes])


def sample(dataset, count: int | None, seed: int):
    """A seeded sample of `count` images (all of them when count is None or too large)."""
    if count is None or count >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), count, replace=False))
    if isinstance(dataset, InMemoryImages):
        index = torch.from_numpy(keep)
        return InMemoryImages(dataset.images[index], dataset.labels[index], dataset.classes, dataset.mean,
                              dataset.std, name=dataset.name)
    return ImageFiles([dataset.samples[i] for i in keep], dataset.classes, name=dataset.name)


def preprocessing(level1: torch.nn.Module, dataset) -> dict:
    """The timm data config that turns an image file into level 1's input (saved for predict)."""
    if isinstance(dataset, InMemoryImages):
        size = dataset.image_size
        return {"input_size": [3, size, size], "interpolation": "bilinear", "mean": list(dataset.mean),
                "std": list(dataset.std), "crop_pct": 1.0, "crop_mode": "center"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolve_data_config({}, model=level1).items()}


@torch.no_grad()
def infer(refinet: RefiNet, dataset, batch_size: int = 256, embeddings: bool = False, workers: int = 2) -> dict:
    """{"probs": {node: N x n probabilities}, "labels": N, "embeddings": N x D (if asked)} over a dataset."""
    device = next(refinet.level1.parameters()).device
    execution = Execution(device, "fp32", channels_last=False)
    loader = build_loader(dataset, batch_size, train=False, data_config=refinet.data_config, workers=workers)
    probs, labels, features = {}, [], []
    for images, batch_labels in loader:
        images = execution.prepare(images)
        for node, values in refinet.node_probs(images).items():
            probs.setdefault(node, []).append(values.cpu())
        labels.append(batch_labels)
        if embeddings:
            features.append(refinet.embeddings(images).cpu())
    result = {"probs": {node: torch.cat(values) for node, values in probs.items()}, "labels": torch.cat(labels)}
    if embeddings:
        result["embeddings"] = torch.cat(features)
    return result


# ---------------------------------------------------------------- training the parts


def trainable_last_layers(model: torch.nn.Module, count: int | None) -> None:
    """Freeze every weight except those of the last `count` modules that hold weights directly."""
    if count is None:
        return
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if count > len(layers):
        raise UserError(f"trainable_layers {count} exceeds the {len(layers)} weight layers of the model.")
    for layer in layers[:-count]:
        for parameter in layer.parameters(recurse=False):
            parameter.requires_grad_(False)


def fit_level1(config: RefiNetConfig, datasets: dict, output: Path, log) -> tuple[torch.nn.Module, dict]:
    """(trained level 1, its meta for the artifact): loaded from level1_weights, or trained here."""
    classes = list(datasets["train"].classes)
    if config.level1_weights:
        model, meta = load_trained(config.level1_weights)
        if list(meta["classes"]) != classes:
            raise UserError(f"level1_weights {config.level1_weights} was trained on classes {meta['classes'][:5]}..., "
                            f"not the {len(classes)} classes of {config.data}; train level 1 on the same data.")
        log(f"level 1: {meta['model']} loaded from {config.level1_weights}")
        return model, {"model": meta["model"], "model_args": meta["model_args"]}
    model = create_model(config.model, num_classes=len(classes), pretrained=config.pretrained, **config.model_args)
    trainable_last_layers(model, config.trainable_layers)
    log(f"level 1: training {config.model} on all {len(classes)} classes")
    Trainer(engine_config(config, config.level1_train, output / "level1", config.model), model=model,
            datasets=datasets, log=log).fit()
    return model, {"model": config.model, "model_args": config.model_args}


def fit_head(refinet: RefiNet, node: Node, config: RefiNetConfig, datasets: dict, output: Path, log) -> None:
    """Train the CNN of one cluster on its classes only; a single-class cluster needs none."""
    if len(node.classes) == 1:
        return
    head = refinet.new_head(node)
    subsets = {split: restrict(datasets[split], node.classes, refinet.classes) for split in ("train", "val")}
    log(f"cluster {node.path}: training its CNN on {len(node.classes)} classes "
        f"({', '.join(refinet.classes[c] for c in node.classes[:6])}{', ...' if len(node.classes) > 6 else ''})")
    settings = engine_config(config, config.level2_train, output / "level2" / node.path, f"refinet_head_{node.path}")
    Trainer(settings, model=ClusterNet(refinet.trunk, head), datasets=subsets, log=log).fit()


def fit_router(refinet: RefiNet, config: RefiNetConfig, datasets: dict, output: Path, log) -> None:
    """The "retrain" variant: level 1 with a new output layer trained on cluster labels."""
    router = refinet.new_router()
    cluster_of = refinet.tree.cluster_of.numpy()
    names = [child.path for child in refinet.tree.children]
    subsets = {split: relabelled(datasets[split], cluster_of, names) for split in ("train", "val")}
    log(f"router: retraining level 1's output layer to predict the {len(names)} clusters")
    settings = engine_config(config, config.router_train, output / "router", "refinet_router")
    Trainer(settings, model=router, datasets=subsets, log=log).fit()


def split_node(refinet: RefiNet, node: Node, config: RefiNetConfig, held) -> None:
    """Cluster a node's classes in two from its own CNN's predictions on its held-out images."""
    if len(node.classes) == 2:
        node.split([0, 1])
        return
    local = restrict(held, node.classes, refinet.classes)
    outputs = infer(refinet, local, config.eval_batch_size)
    affinity = class_affinity(outputs["probs"][node.path], outputs["labels"], len(node.classes), config.affinity)
    assignment = cluster_classes(affinity, 2, config.clustering, config.seed)
    if assignment.max() != 1:  # affinity propagation may not reach exactly two
        raise UserError(f"{config.clustering} clustering did not split cluster {node.path} in two; use "
                        "clustering spectral.")
    node.split(assignment)


def deepen(refinet: RefiNet, config: RefiNetConfig, datasets: dict, held, output: Path, log) -> None:
    """RefiNet-L3 (split the largest cluster once) or split the largest until all are small enough."""
    while config.split != "none":
        largest = max(refinet.tree.leaves(), key=lambda leaf: len(leaf.classes))
        if config.split == "size" and len(largest.classes) <= config.max_cluster_size:
            return
        if len(largest.classes) < 2:
            return
        log(f"cluster {largest.path} ({len(largest.classes)} classes) is the largest: splitting it in two")
        split_node(refinet, largest, config, held)
        for child in largest.children:
            fit_head(refinet, child, config, datasets, output, log)
        if config.split == "largest":
            return


# ---------------------------------------------------------------- evaluation


def topk_hits(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Whether each label is among the top-k classes that have non-zero probability."""
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return ((indices == labels[:, None]) & (values > 0)).any(dim=1)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return 100.0 * topk_hits(probs, labels, 1).float().mean().item(), \
        100.0 * topk_hits(probs, labels, 5).float().mean().item()


def variants(refinet: RefiNet) -> list[tuple[str, str, int]]:
    """(name, router, levels) of every variant this RefiNet can be read as (Tables 5-6)."""
    rows = [("flat (level 1)", "vote", 1), ("RefiNet-L2", "vote", 2), ("RefiNet-L2 soft", "soft", 2)]
    if refinet.router is not None:
        rows.append(("RefiNet-L2 + retrain", "retrain", 2))
    for levels in range(3, refinet.tree.depth() + 1):
        rows += [(f"RefiNet-L{levels}", "vote", levels), (f"RefiNet-L{levels} soft", "soft", levels)]
    return rows


def routed_cluster(refinet: RefiNet, probs: dict, router: str) -> torch.Tensor:
    root = refinet.tree
    if router == "soft":
        return cluster_mass(probs["root"], root.cluster_of, len(root.children)).argmax(dim=1)
    return refinet.route(root, probs, router)


def evaluate(refinet: RefiNet, datasets: dict, batch_size: int = 256) -> tuple[list[dict], list[dict]]:
    """(variant rows, per-cluster rows) on each given split."""
    outputs = {split: infer(refinet, dataset, batch_size) for split, dataset in datasets.items()}
    cluster_of = refinet.tree.cluster_of.numpy()
    rows = []
    for name, router, levels in variants(refinet):
        row = {"model": name, "router": router if levels > 1 else "-"}
        for split, out in outputs.items():
            row[f"{split}_top1"], row[f"{split}_top5"] = accuracy(refinet.combine(out["probs"], router, levels),
                                                                  out["labels"])
        for split, out in outputs.items():
            row[f"{split}_cluster_acc"] = cluster_accuracy(
                out["labels"].numpy(), routed_cluster(refinet, out["probs"], router).numpy(), cluster_of) \
                if levels > 1 else None
        rows.append(row)
    return rows, cluster_rows(refinet, outputs)


def cluster_rows(refinet: RefiNet, outputs: dict) -> list[dict]:
    """Each cluster's own CNN on the images of its classes, beside level 1 on the same images (Table 7)."""
    rows = []
    for node in refinet.tree.nodes()[1:]:
        row = {"cluster": node.path, "level": node.path.count("_") + 2, "size": len(node.classes)}
        for split, out in outputs.items():
            mask = torch.isin(out["labels"], torch.tensor(node.classes))
            local = torch.searchsorted(torch.tensor(node.classes), out["labels"][mask])
            head_top1, head_top5 = accuracy(out["probs"][node.path][mask], local) if mask.any() else (None, None)
            flat_top1, _ = accuracy(out["probs"]["root"][mask], out["labels"][mask]) if mask.any() else (None, None)
            row.update({f"{split}_images": int(mask.sum()), f"{split}_top1": head_top1, f"{split}_top5": head_top5,
                        f"{split}_level1_top1": flat_top1})
        row["classes"] = " ".join(refinet.classes[c] for c in node.classes[:12]) + (" ..." if len(node.classes) > 12
                                                                                      else "")
        rows.append(row)
    return rows


def clustering_study(affinity, held_out: dict, config: RefiNetConfig, output: Path) -> list[dict]:
    """Cluster accuracy on the held-out images per algorithm at K (Table 4) and per K (Figure 9a)."""
    probs, labels = held_out["probs"]["root"], held_out["labels"].numpy()

    def measure(method: str, k: int) -> dict:
        assignment = cluster_classes(affinity, k, method, config.seed)
        clusters = int(assignment.max()) + 1
        routed = vote(probs, torch.from_numpy(assignment), clusters, config.voters).numpy()
        return {"clustering": method, "k": k, "clusters": clusters,
                "cluster_acc": cluster_accuracy(labels, routed, assignment)}

    rows = [measure(method, config.k) for method in CLUSTERINGS]
    write_table(rows, output / "clustering")
    if config.k_sweep:
        sweep = [measure(config.clustering, k) for k in config.k_sweep if k <= len(affinity)]
        write_table(sweep, output / "cluster_accuracy_vs_k")
        plot_sweep(sweep, config.clustering, output / "cluster_accuracy_vs_k")
        rows += sweep
    return rows


def plot_sweep(rows: list[dict], method: str, path_stem: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    axis.plot([r["k"] for r in rows], [r["cluster_acc"] for r in rows], marker="o")
    axis.set_xlabel("number of clusters K")
    axis.set_ylabel("cluster accuracy (%)")
    axis.set_title(f"{method} clustering (Figure 9a)")
    axis.grid(alpha=0.3)
    save_figure(figure, path_stem)


# ---------------------------------------------------------------- fit


def prepare_output(config: RefiNetConfig) -> Path:
    output = Path(config.output) if config.output else \
        Path("runs") / f"refinet-{config.model}-{config.data}-{datetime.now():%Y%m%d-%H%M%S}"
    if (output / SIDECAR_NAME).exists() or (output / "level1").exists():
        raise UserError(f"{output} already holds a RefiNet fit; choose another --output.")
    output.mkdir(parents=True, exist_ok=True)
    return output


def fit(config: RefiNetConfig, log=print) -> dict:
    """Run the whole pipeline; returns {"output", "results", "clusters", "clustering", "refinet"}."""
    output = prepare_output(config)
    datasets = load_splits(config)
    classes = list(datasets["train"].classes)
    if config.k > len(classes):
        raise UserError(f"k={config.k} clusters exceeds the {len(classes)} classes of {config.data}; pick k "
                        f"from 2 to {len(classes)}.")
    level1, level1_meta = fit_level1(config, datasets, output, log)
    refinet = RefiNet(level1, classes, config.stage,
                      {"convs": config.head_convs, "width": config.head_width, "drop_rate": config.drop_rate},
                      preprocessing(level1, datasets["train"]),
                      {**level1_meta, "data": config.data, "data_root": config.data_root,
                       "data_args": config.data_args, "router": config.router, "voters": config.voters})
    refinet.to(resolve_device(config.train.get("device", "auto")))

    held = sample(datasets["val"], config.n1, config.seed)
    held_out = infer(refinet, held, config.eval_batch_size, embeddings=config.tsne)
    affinity = class_affinity(held_out["probs"]["root"], held_out["labels"], len(classes), config.affinity)
    refinet.tree.split(cluster_classes(affinity, config.k, config.clustering, config.seed))
    log("clusters: " + "; ".join(f"{c.path}: {' '.join(classes[i] for i in c.classes)}"
                                 for c in refinet.tree.children))
    clustering = clustering_study(affinity, held_out, config, output)

    for node in refinet.tree.children:
        fit_head(refinet, node, config, datasets, output, log)
    deepen(refinet, config, datasets, held, output, log)
    if config.retrain_router:
        fit_router(refinet, config, datasets, output, log)
    refinet.save(output)
    (output / "hierarchy.json").write_text(json.dumps(refinet.tree.to_dict(classes), indent=2))

    evaluated = {split: datasets[split] for split in ("val", "test") if split in datasets}
    results, clusters = evaluate(refinet, evaluated, config.eval_batch_size)
    log("\n" + write_table(results, output / "results", digits=2))
    log("\n" + write_table(clusters, output / "clusters", digits=2))
    if config.tsne:
        from ..analysis.embedding import plot_embedding

        cluster_of = refinet.tree.cluster_of.numpy()
        plot_embedding(held_out["embeddings"].numpy(), cluster_of[held_out["labels"].numpy()], output / "tsne",
                       title=f"t-SNE of level-1 embeddings, {config.data} held-out images", seed=config.seed,
                       max_points=config.tsne_points, group_names=[
                           f"{c.path}: {' '.join(classes[i] for i in c.classes[:6])}{' ...' * (len(c.classes) > 6)}"
                           for c in refinet.tree.children])
    log(f"RefiNet saved to {output / 'refinet.safetensors'} (+ {SIDECAR_NAME}); tables and plots in {output}")
    return {"output": output, "results": results, "clusters": clusters, "clustering": clustering,
            "refinet": refinet}


def evaluate_artifact(path, splits=None, data_root: str | None = None,
                      batch_size: int = 256) -> tuple[RefiNet, list[dict], list[dict]]:
    """(refinet, variant rows, cluster rows) of a saved RefiNet on the data it was fitted on (splits: default
    val and test, where they exist)."""
    refinet = load_refinet(path)
    meta = refinet.meta
    available = dataset_splits(meta["data"], **meta["data_args"])
    splits = splits or [split for split in ("val", "test") if split in available]
    missing = [split for split in splits if split not in available]
    if missing:
        raise UserError(f"{meta['data']} has no split {', '.join(missing)}; available: {', '.join(available)}.")
    args = {"seed": 0, **meta["data_args"]}
    datasets = {split: build_dataset(meta["data"], data_root or meta["data_root"], split, **args) for split in splits}
    for split, dataset in datasets.items():
        if list(dataset.classes) != refinet.classes:
            raise UserError(f"{meta['data']} ({split}) has classes {list(dataset.classes)[:5]}..., but the RefiNet "
                            f"was fitted on {refinet.classes[:5]}...; point --data-root at the same data.")
    return (refinet, *evaluate(refinet, datasets, batch_size))
