"""Class affinity from a classifier's held-out predictions (RefiNet paper, Section 5.1, Eq. 6 and Eq. 7).

Both take `probs` (N x C softmax scores of N held-out images) and their true `labels`, and return a
symmetric C x C affinity whose large entries mark class pairs the classifier confuses.

* Eq. 6, "mass": A[p, q] = (sum_{i: y_i = p} s_iq + sum_{i: y_i = q} s_ip) / N_1, the probability mass
  shifted between p and q in both directions. The diagonal (twice the mass kept by class p) is returned
  as the equation defines it; clustering ignores it (see clustering.py).
* Eq. 7, "confusion": A = (F + F^T) / 2 with F the row-normalised confusion matrix of the top-1
  predictions (F[p, q]: share of class-p images predicted as q). A class without held-out images has an
  all-zero row.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError, did_you_mean

__all__ = ["AFFINITIES", "class_affinity", "confusion_affinity", "mass_shift_affinity"]


def _check(probs, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape != (len(labels), num_classes):
        raise UserError(f"class affinity needs N x {num_classes} scores for N labels, got scores "
                        f"{probs.shape} and {labels.shape} labels.")
    if len(labels) == 0:
        raise UserError("class affinity needs at least one held-out image; raise n1 or use a larger val split.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"labels must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}.")
    return probs, labels


def mass_shift_affinity(probs, labels, num_classes: int) -> np.ndarray:
    """Eq. 6: the probability mass shifted between each pair of classes, per held-out image."""
    probs, labels = _check(probs, labels, num_classes)
    onehot = np.eye(num_classes)[labels]
    shifted = onehot.T @ probs  # shifted[p, q] = sum of scores for q over images of class p
    return (shifted + shifted.T) / len(labels)


def confusion_affinity(probs, labels, num_classes: int) -> np.ndarray:
    """Eq. 7: the symmetrised row-normalised confusion matrix of the top-1 predictions."""
    probs, labels = _check(probs, labels, num_classes)
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (labels, probs.argmax(axis=1)), 1)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    return (normalised + normalised.T) / 2


AFFINITIES = {"mass": mass_shift_affinity, "confusion": confusion_affinity}


def class_affinity(probs, labels, num_classes: int, method: str = "mass") -> np.ndarray:
    if method not in AFFINITIES:
        raise UserError(f"unknown affinity {method!r}; choose one of {', '.join(AFFINITIES)} "
                        f"(Eq. 6 and Eq. 7).{did_you_mean(str(method), AFFINITIES)}")
    return AFFINITIES[method](probs, labels, num_classes)
