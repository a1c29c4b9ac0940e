"""Class selectivity of channels: how much each channel's activity is reserved for one class.

Paper: `Reducing Feature Reuse within Convolution` (REAF), Section IV.E and Figures 2-4, which compare the
selectivity distributions of ResNet and REAF-ResNet (and ResNeXt) at "layer1".."layer4" and "avgpool".
The index is Morcos et al. 2018 (`On the importance of single directions for generalization`,
https://arxiv.org/abs/1803.06959):

    selectivity = (u_max - u_-max) / (u_max + u_-max + eps)

u_max is the largest class-conditional mean activity of the channel and u_-max the mean of the
class-conditional mean activities of all other classes. 1: the channel is active for one class only;
0: it is equally active for every class (fully shared, i.e. reused, across classes).

Choices the paper leaves open:
* Activity of a channel on an image: its output averaged over the spatial positions (Morcos et al.);
  an (N, C) output such as the pooled features is used as it is.
* u_-max is the unweighted mean of the other classes' means, as the paper words it, so how many images
  each class has in the split does not weigh in. Classes without images in the split are left out.
* eps = 1e-7 (Leavitt & Morcos 2020). A channel that is zero on every image (a dead ReLU) gets 0 rather
  than 0/0: it separates no class. Such channels are counted as `dead` in the summary, so a spike at 0
  can be told apart from channels that really are shared.
* Signed outputs. The index assumes non-negative activity, as the post-ReLU stage outputs and the
  average pool of a ResNet are. Layers whose outputs go negative (e.g. ConvNeXt stages, which end on a
  residual sum without activation) are still measured but their index can leave [0, 1]; they are
  reported as `signed`.
* Layers. The paper's layer1..layer4 are the stage outputs, which timm lists in `feature_info`; the
  default is those taps plus `pre_logits` (what `forward_head(pre_logits=True)` returns: the paper's
  "avgpool" for a ResNet). A first tap whose module type no other tap has is a stem (ResNet's `act1`,
  RegNet's `stem`), not a stage, and is left out. Any module name of the model can be chosen instead.
* With spatially averaged activity, a ResNet's `pre_logits` (global average pool of layer4) equals
  layer4 channel for channel; the default keeps both because other models differ there (ConvNeXt
  normalises after the pool, MobileNetV2 adds a 1x1 conv head).
* Data: the paper uses the ImageNet validation set; `analyze_selectivity` defaults to the test split of
  the data each model was trained on, and all models must be measured on the same data.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from matplotlib.lines import Line2D
from timm.data import resolve_data_config
from torch import nn

from ..data import ImageFiles, build_dataset, build_loader
from ..engine import load_trained
from ..engine.precision import Execution, resolve_device
from ..errors import UserError, did_you_mean
from ..report import save_figure, write_table
from ..report.plots import plt

PRE_LOGITS = "pre_logits"
EPS = 1e-7


def selectivity_index(class_means: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(classes, channels) class-conditional mean activities -> (channels,) selectivity indices."""
    if class_means.ndim != 2 or class_means.shape[0] < 2:
        raise ValueError(f"need (classes >= 2, channels) class means, got shape {tuple(class_means.shape)}")
    top = class_means.max(dim=0).values
    others = (class_means.sum(dim=0) - top) / (class_means.shape[0] - 1)
    return (top - others) / (top + others + eps)


@dataclass
class LayerSelectivity:
    values: torch.Tensor  # (channels,) selectivity index of each channel
    dead: int             # channels that were zero on every image
    signed: bool          # the layer output went negative somewhere, so values may leave [0, 1]


def default_layers(model: nn.Module) -> list[str]:
    """The model's stage outputs (feature_info taps without the stem) and its pre-logits features."""
    taps = [info["module"] for info in getattr(model, "feature_info", [])]
    kinds = [type(model.get_submodule(tap)) for tap in taps]
    if len(taps) > 1 and kinds[0] not in kinds[1:]:
        taps = taps[1:]
    return [*taps, PRE_LOGITS]


def check_layers(model: nn.Module, layers: list[str], label: str) -> None:
    modules = {name for name, _ in model.named_modules() if name}
    for layer in layers:
        if layer != PRE_LOGITS and layer not in modules:
            raise UserError(f"{label} has no layer {layer!r}; its default layers are "
                            f"{', '.join(default_layers(model))}, and any name in model.named_modules() "
                            f"works.{did_you_mean(layer, modules)}")


def _channel_activity(layer: str, output) -> tuple[torch.Tensor, bool]:
    """((N, C) activity: the output averaged over its spatial positions, whether the output went negative)."""
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UserError(f"layer {layer!r} outputs {shape}, but selectivity needs (N, C, H, W) feature maps "
                        f"or (N, C) features; choose another layer.")
    output = output.detach().float()
    activity = output if output.ndim == 2 else output.mean(dim=(2, 3))
    return activity.cpu().double(), bool(output.min() < 0)


@torch.no_grad()
def layer_selectivity(model: nn.Module, loader, layers: list[str], num_classes: int,
                      execution: Execution | None = None) -> dict[str, LayerSelectivity]:
    """Selectivity of every channel of `layers`, streaming over `loader`'s (images, labels) batches.

    Only per-class sums of each channel's activity are kept, never the activations themselves.
    """
    execution = execution or Execution(torch.device("cpu"), "fp32", channels_last=False)
    check_layers(model, layers, type(model).__name__)
    model.eval().to(execution.device)
    captured: dict[str, tuple[torch.Tensor, bool]] = {}

    def capture(layer):
        # Reduce at once: a later in-place op (e.g. ReLU(inplace=True) after a BN) would change the output.
        return lambda module, inputs, output: captured.__setitem__(layer, _channel_activity(layer, output))

    hooks = [model.get_submodule(layer).register_forward_hook(capture(layer)) for layer in layers
             if layer != PRE_LOGITS]
    sums: dict[str, torch.Tensor] = {}
    signed = dict.fromkeys(layers, False)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    try:
        for images, labels in loader:
            captured.clear()
            with execution.autocast():
                features = model.forward_features(execution.prepare(images))
                if PRE_LOGITS in layers:
                    captured[PRE_LOGITS] = _channel_activity(
                        PRE_LOGITS, model.forward_head(features, pre_logits=True))
            counts += torch.bincount(labels, minlength=num_classes).double()
            for layer in layers:
                if layer not in captured:
                    raise UserError(f"layer {layer!r} did not run in forward_features or forward_head("
                                    "pre_logits=True); the classifier and unused modules cannot be measured.")
                activity, negative = captured[layer]
                signed[layer] |= negative
                if layer not in sums:
                    sums[layer] = torch.zeros(num_classes, activity.shape[1], dtype=torch.float64)
                sums[layer].index_add_(0, labels, activity)
    finally:
        for hook in hooks:
            hook.remove()
    present = counts > 0
    if int(present.sum()) < 2:
        raise UserError(f"the data holds images of {int(present.sum())} class(es); selectivity compares "
                        "classes, so it needs at least two.")
    results = {}
    for layer in layers:
        class_means = sums[layer][present] / counts[present, None]
        results[layer] = LayerSelectivity(values=selectivity_index(class_means).float(),
                                          dead=int((class_means.abs().amax(dim=0) == 0).sum()),
                                          signed=signed[layer])
    return results


def summary_rows(results: dict[str, dict[str, LayerSelectivity]]) -> list[dict]:
    """One row per model and layer: channels, mean and median selectivity, dead channels."""
    return [{"model": label, "layer": layer, "channels": len(result.values),
             "mean": float(result.values.mean()), "median": float(result.values.median()), "dead": result.dead}
            for label, layers in results.items() for layer, result in layers.items()]


def plot_selectivity(results: dict[str, dict[str, LayerSelectivity]], title: str, bins: int = 30) -> plt.Figure:
    """One panel per layer, the models' distributions overlaid as step histograms (as the paper's Figs 2-4).

    Heights are fractions of the layer's channels, so models of different widths compare; the dashed
    lines mark each model's mean. Each panel spans 0 to the largest value in it. The legend takes a
    spare panel when the grid has one.
    """
    layers = list(next(iter(results.values())))
    columns = min(len(layers), 3)
    rows = math.ceil(len(layers) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, layer in zip(axes.flat, layers, strict=False):
        values = [layers_of[layer].values.numpy() for layers_of in results.values()]
        low, high = min(0.0, *(v.min() for v in values)), max(v.max() for v in values)
        high = high if high > low else low + 1  # zoom on the data: early layers sit near 0
        for index, (label, v) in enumerate(zip(results, values, strict=True)):
            color = colors[index % len(colors)]
            weights = [1 / len(v)] * len(v)
            ax.hist(v, bins=bins, range=(low, high), weights=weights, histtype="stepfilled", color=color, alpha=0.12)
            ax.hist(v, bins=bins, range=(low, high), weights=weights, histtype="step", linewidth=1.8, color=color,
                    label=label)
            ax.axvline(v.mean(), color=color, linestyle="--", linewidth=1.2)
        widths = " / ".join(dict.fromkeys(str(len(v)) for v in values))
        ax.set_title(f"{layer} ({widths} channels)")
        ax.set_xlabel("class selectivity index")
        ax.set_ylabel("fraction of channels")
        ax.set_xlim(low, high)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="gray", linestyle="--", linewidth=1.2))
    labels.append("mean of each model")
    spare = axes.flat[len(layers):]
    for ax in spare:
        ax.axis("off")
    legend_ax = spare[0] if len(spare) else axes.flat[0]
    legend_ax.legend(handles, labels, loc="center" if len(spare) else "best", title="model",
                     fontsize="large" if len(spare) else "small")
    figure.suptitle(title)
    return figure


def _check_labels(labels: list[str], metas: list[dict], checkpoints: list) -> None:
    """Labels must be unique, and a label naming another run's model means the two lists are out of order."""
    if len(set(labels)) != len(labels):
        raise UserError(f"the model labels {labels} repeat; give each model its own name with --models.")
    models = [meta["model"] for meta in metas]
    for label, model, checkpoint in zip(labels, models, checkpoints, strict=True):
        if label != model and label in models:
            raise UserError(f"the label {label!r} names the model of another run, but {checkpoint} holds a "
                            f"{model}; give --models in the order of --checkpoints.")


def _default_labels(metas: list[dict], checkpoints: list) -> list[str]:
    """Each run's model name, plus its run folder's name where two runs share a model."""
    names = [meta["model"] for meta in metas]
    folders = [Path(c).resolve() if Path(c).is_dir() else Path(c).resolve().parent for c in checkpoints]
    return [name if names.count(name) == 1 else f"{name} ({folder.name})"
            for name, folder in zip(names, folders, strict=True)]


def _dataset_for(meta: dict, data: str | None, split: str, data_root: str | None):
    """(dataset, key); a run's own data arguments apply when it is measured on the data it was trained on."""
    name = data or meta["data"]
    data_args = {"seed": 0, **meta["data_args"]} if name == meta["data"] else {}
    root = data_root or (meta.get("data_root") if name == meta["data"] else None)
    key = (name, split, json.dumps(data_args, sort_keys=True))
    return build_dataset(name, root, split, **data_args), key


def analyze_selectivity(checkpoints: list, labels: list[str] | None = None, data: str | None = None,
                        split: str = "test", data_root: str | None = None, layers: list[str] | None = None,
                        output: str | Path | None = None, batch_size: int = 256, precision: str = "fp32",
                        device: str = "auto") -> dict:
    """Measure trained models (run folders, model.safetensors or last.pt) and write plot and tables.

    Writes selectivity.png/.svg (distributions per layer), selectivity_summary.md/.csv/.json (mean,
    median per model and layer) and selectivity_channels.json (every channel's index) into `output`.
    Returns {"results", "rows", "table", "figure", "output", "data", "split"}.
    """
    if not checkpoints:
        raise UserError("no checkpoints given; pass one run folder (or weights file) per model.")
    if labels is not None and len(labels) != len(checkpoints):
        raise UserError(f"{len(labels)} model label(s) for {len(checkpoints)} checkpoint(s); "
                        "give one --models entry per --checkpoints entry, in the same order.")
    loaded = [load_trained(checkpoint) for checkpoint in checkpoints]
    metas = [meta for _, meta in loaded]
    labels = labels or _default_labels(metas, checkpoints)
    _check_labels(labels, metas, checkpoints)
    plans, keys = [], set()
    for label, (model, meta) in zip(labels, loaded, strict=True):
        chosen = layers or default_layers(model)
        check_layers(model, chosen, label)
        dataset, key = _dataset_for(meta, data, split, data_root)
        keys.add(key)
        plans.append((label, model, chosen, dataset))
    if len(keys) > 1:
        used = "; ".join(f"{name} {args}" for name, _, args in sorted(keys))
        fix = ("pass --data NAME to measure them all on the same data" if data is None else
               "selectivity compares models on the same images, so choose runs trained on the same data")
        raise UserError(f"the runs would be measured on different data ({used}); {fix}.")
    if len({tuple(chosen) for _, _, chosen, _ in plans}) > 1:
        raise UserError("the models' default layers differ ("
                        + " vs ".join(f"{label}: {', '.join(chosen)}" for label, _, chosen, _ in plans)
                        + "); choose layers they all have with --layers.")
    execution = Execution(resolve_device(device), precision, channels_last=False)
    results = {}
    for label, model, chosen, dataset in plans:
        data_config = resolve_data_config({}, model=model) if isinstance(dataset, ImageFiles) else None
        loader = build_loader(dataset, batch_size, train=False, data_config=data_config)
        results[label] = layer_selectivity(model, loader, chosen, len(dataset.classes), execution)
    name, split = next(iter(keys))[:2]
    output = Path(output or Path("runs") / f"selectivity-{datetime.now():%Y%m%d-%H%M%S}")
    rows = summary_rows(results)
    table = write_table(rows, output / "selectivity_summary")
    title = f"Class selectivity per channel: {' vs '.join(results)} on {name} ({split}, {len(dataset)} images)"
    figure = save_figure(plot_selectivity(results, title), output / "selectivity")
    channels = {label: {layer: r.values.tolist() for layer, r in layers_of.items()}
                for label, layers_of in results.items()}
    (output / "selectivity_channels.json").write_text(json.dumps(channels))
    return {"results": results, "rows": rows, "table": table, "figure": figure, "output": output,
            "data": name, "split": split}
