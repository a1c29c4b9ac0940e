"""The comparison figures: every point and line carries its own label, so no legend needs hunting."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.transforms import offset_copy

from .plots import plt, save_figure

LABEL_STYLE = dict(fontsize=8, textcoords="offset points", xytext=(5, 4))


def _wrap(title: str, width: int = 60) -> str:
    """Titles naming many models wrap instead of running off the figure."""
    return textwrap.fill(title, width)


def _colors(count: int) -> list:
    return [plt.get_cmap("tab10")(i % 10) for i in range(count)]


def _label_line_ends(axis, ends: list[tuple[float, float, str, tuple]], gap: float = 0.06) -> None:
    """Write each line's label just right of its last point (x, y), nudged up so that labels never overlap."""
    axis.autoscale_view()
    to_axes = axis.transAxes.inverted()
    transform = offset_copy(axis.get_xaxis_transform(), fig=axis.figure, x=6, units="points")
    previous = -np.inf
    for x, y, text, color in sorted(ends, key=lambda end: end[1]):
        height = max(to_axes.transform(axis.transData.transform((x, y)))[1], previous + gap)
        axis.text(x, height, text, transform=transform, color=color, fontsize=8, va="center")
        previous = height


def accuracy_scatter(rows: list[dict], x_key: str, x_label: str, title: str, path_stem: Path) -> list[Path]:
    """Top-1 accuracy (mean, error bar = std over seeds) against a cost, one labelled point per model."""
    figure, axis = plt.subplots(figsize=(6, 4.2))
    for row, color in zip(rows, _colors(len(rows)), strict=True):
        axis.errorbar(row[x_key], row["acc1"], yerr=row.get("acc1_std") or 0.0, fmt="o", color=color, capsize=4)
        axis.annotate(row["label"], (row[x_key], row["acc1"]), color=color, **LABEL_STYLE)
    axis.set(title=_wrap(title), xlabel=x_label, ylabel="top-1 accuracy (%)")
    axis.margins(x=0.25, y=0.2)
    axis.grid(alpha=0.3)
    return save_figure(figure, path_stem)


def training_curves(histories: dict[str, list[dict]], title: str, path_stem: Path) -> list[Path]:
    """Loss and top-1 per epoch; solid train, dashed validation; each line labelled at its end."""
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(12, 4.6))
    ends = {loss_axis: [], acc_axis: []}
    for (label, history), color in zip(histories.items(), _colors(len(histories)), strict=True):
        epochs = [row["epoch"] for row in history]
        for axis, metric in ((loss_axis, "loss"), (acc_axis, "acc1")):
            for split, style in (("train", "-"), ("val", "--")):
                values = [row.get(f"{split}_{metric}", math.nan) for row in history]
                if all(math.isnan(v) for v in values):
                    continue
                axis.plot(epochs, values, style, marker="o", markersize=3, color=color)
                ends[axis].append((epochs[-1], values[-1], f"{label} ({split})", color))
    loss_axis.set(title="loss per epoch (solid: train, dashed: val)", xlabel="epoch", ylabel="cross-entropy loss")
    acc_axis.set(title="top-1 per epoch (solid: train, dashed: val)", xlabel="epoch", ylabel="top-1 accuracy (%)")
    for axis in (loss_axis, acc_axis):
        axis.margins(x=0.05)
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        _label_line_ends(axis, ends[axis])
    figure.suptitle(_wrap(title, 110))
    return save_figure(figure, path_stem)


def memory_vs_batch(rows: list[dict], title: str, path_stem: Path) -> list[Path]:
    """Peak memory against batch size; solid training step, dashed inference; one colour per model."""
    labels = list(dict.fromkeys(row["label"] for row in rows))
    figure, axis = plt.subplots(figsize=(7.5, 4.4))
    ends = []
    for label, color in zip(labels, _colors(len(labels)), strict=True):
        mine = sorted((row for row in rows if row["label"] == label), key=lambda row: row["batch"])
        batches = [row["batch"] for row in mine]
        for key, style, mode in (("train_peak_MiB", "-", "train"), ("inference_peak_MiB", "--", "inference")):
            values = [row[key] for row in mine]
            axis.plot(batches, values, style, marker="o", color=color)
            ends.append((batches[-1], values[-1], f"{label} ({mode})", color))
    axis.set(title=_wrap(title), xlabel="batch size (log scale)", ylabel="peak memory (MiB)", xscale="log")
    batches = sorted({row["batch"] for row in rows})
    axis.set_xticks(batches, [str(b) for b in batches])
    axis.minorticks_off()
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    _label_line_ends(axis, ends)
    return save_figure(figure, path_stem)


def accuracy_vs_x(rows: list[dict], x_name: str, title: str, path_stem: Path) -> list[Path]:
    """Top-1 against the model argument `x_name` (a column of rows, e.g. a pruning ratio), error bars over
    seeds, points labelled."""
    ordered = sorted(rows, key=lambda row: row[x_name])
    figure, axis = plt.subplots(figsize=(6, 4.2))
    axis.errorbar([r[x_name] for r in ordered], [r["acc1"] for r in ordered],
                  yerr=[r.get("acc1_std") or 0.0 for r in ordered], fmt="-o", capsize=4)
    for row in ordered:
        axis.annotate(row["label"], (row[x_name], row["acc1"]), **LABEL_STYLE)
    axis.set(title=_wrap(title), xlabel=x_name, ylabel="top-1 accuracy (%)")
    axis.margins(x=0.2, y=0.2)
    axis.grid(alpha=0.3)
    return save_figure(figure, path_stem)


def variability_figure(summary: dict, class_names: list[str], title: str, path_stem: Path) -> list[Path]:
    """Left: pairwise disagreement matrix (annotated). Right: per-class accuracy, one line per model."""
    models = summary["models"]
    matrix = np.zeros((len(models), len(models)))
    for pair in summary["disagreement"]:
        i, j = models.index(pair["a"]), models.index(pair["b"])
        matrix[i, j] = matrix[j, i] = 100 * pair["disagreement"]
    figure, (heat_axis, class_axis) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
    image = heat_axis.imshow(matrix, cmap="viridis")
    for i in range(len(models)):
        for j in range(len(models)):
            heat_axis.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center",
                           color="white" if matrix[i, j] < matrix.max() / 2 else "black", fontsize=9)
    heat_axis.set_xticks(range(len(models)), models, rotation=30, ha="right")
    heat_axis.set_yticks(range(len(models)), models)
    heat_axis.set_title("images classified differently (%)")
    figure.colorbar(image, ax=heat_axis, fraction=0.046)
    positions = np.arange(len(class_names))
    ends = []
    for (name, accuracy), color in zip(summary["per_class_accuracy"].items(), _colors(len(models)), strict=True):
        values = 100 * np.asarray(accuracy, dtype=float)
        class_axis.plot(positions, values, "-o", markersize=3, color=color)
        ends.append((positions[-1], values[-1], name, color))
    class_axis.set_xticks(positions, class_names, rotation=45 if len(class_names) > 10 else 0, fontsize=8)
    class_axis.set(title=f"per-class top-1 (mean spread across models {100 * summary['class_spread_mean']:.1f} pts)",
                   xlabel="class", ylabel="top-1 accuracy (%)")
    class_axis.grid(alpha=0.3)
    _label_line_ends(class_axis, ends)
    figure.suptitle(_wrap(title, 110))
    return save_figure(figure, path_stem)
