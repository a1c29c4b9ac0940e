"""t-SNE of image embeddings coloured by a grouping (RefiNet paper, Figure 11: held-out images coloured by
the cluster of their class). scikit-learn's TSNE with PCA initialisation; perplexity is capped below the
number of points, which TSNE requires."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..report import save_figure

__all__ = ["plot_embedding", "tsne"]


def tsne(embeddings, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """N x 2 t-SNE coordinates of N x D embeddings."""
    from sklearn.manifold import TSNE

    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) < 3:
        raise UserError(f"t-SNE needs an N x D array of at least 3 embeddings, got shape {embeddings.shape}.")
    return TSNE(2, perplexity=min(perplexity, len(embeddings) - 1), init="pca",
                random_state=seed).fit_transform(embeddings)


def plot_embedding(embeddings, groups, path_stem: str | Path, title: str = "", seed: int = 0,
                   max_points: int = 2000, group_names: list[str] | None = None) -> list[Path]:
    """Scatter plot of the t-SNE of (a seeded sample of at most max_points) embeddings, one colour per group
    (integer ids 0..G-1, named in the legend by `group_names`)."""
    import matplotlib.pyplot as plt

    embeddings, groups = np.asarray(embeddings), np.asarray(groups)
    if len(embeddings) != len(groups):
        raise UserError(f"one group per embedding is needed, got {len(groups)} for {len(embeddings)}.")
    if len(embeddings) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(embeddings), max_points, replace=False))
        embeddings, groups = embeddings[keep], groups[keep]
    points = tsne(embeddings, seed)
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    colours = plt.get_cmap("tab10" if groups.max() < 10 else "tab20")
    for group in np.unique(groups):
        chosen = groups == group
        axis.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colours(int(group) % colours.N),
                     label=group_names[group] if group_names else f"group {group}")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, markerscale=2, loc="best")
    return save_figure(figure, path_stem)
