"""Figures saved as PNG (for reading) and SVG (for papers), with a non-interactive backend."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots are files; never open a window or need a display
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure: plt.Figure, path_stem: str | Path) -> list[Path]:
    """Writes path_stem.png and path_stem.svg, closes the figure, returns the two paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=150 if path.suffix == ".png" else None)
    plt.close(figure)
    return paths
