"""Output variability of models of one structure and different sizes (multi-level shortcut ConvNeXt paper).

The paper's Figure 7 ("Differentiation Comparison") shows that with multi-level shortcuts, networks of the
same structure and different sizes differ less in what they get right, which makes picking the lighter
one for deployment safer. The paper does not define its measure, so we report two, both on the same images:

* pairwise disagreement: the fraction of images on which two models' top-1 predictions differ (right or
  wrong alike; two models that make the same mistakes agree);
* per-class accuracy spread: for each class, the standard deviation (population, over models) of the
  models' accuracy on that class; summarised by its mean over classes and its largest value.

A "family" is models built from the same Python class (timm's `ResNet` for resnet18_cifar and
resnet34_cifar, say): `same_family` decides when `reusenet compare` adds this analysis by itself.
"""
from __future__ import annotations

import itertools

import torch

from ..engine.precision import Execution

__all__ = ["disagreement", "per_class_accuracy", "predict", "same_family", "variability_summary"]


def same_family(models: list[torch.nn.Module]) -> bool:
    """True when at least two models were given and all are instances of one class."""
    return len(models) >= 2 and len({type(model) for model in models}) == 1


@torch.no_grad()
def predict(model: torch.nn.Module, loader, execution: Execution) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 predictions, labels) over a loader, in loader order."""
    model.eval()
    predictions, labels = [], []
    for images, batch_labels in loader:
        with execution.autocast():
            logits = model(execution.prepare(images))
        predictions.append(logits.argmax(dim=1).cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(predictions), torch.cat(labels)


def disagreement(predictions: dict[str, torch.Tensor]) -> dict[tuple[str, str], float]:
    """{(a, b): fraction of images where a and b predict different classes} for every pair a < b in order."""
    _check_same_images(predictions)
    return {(a, b): (predictions[a] != predictions[b]).float().mean().item()
            for a, b in itertools.combinations(predictions, 2)}


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy (0..1) on each class; NaN for a class without images."""
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes).float()
    total = torch.bincount(labels, minlength=num_classes).float()
    return correct / total


def variability_summary(predictions: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int) -> dict:
    """Pairwise disagreement, per-class accuracy of every model and its spread across models."""
    _check_same_images({**predictions, "labels": labels})
    pairs = disagreement(predictions)
    accuracy = torch.stack([per_class_accuracy(p, labels, num_classes) for p in predictions.values()])
    present = ~accuracy.isnan().any(dim=0)
    spread = accuracy[:, present].std(dim=0, unbiased=False)
    return {
        "models": list(predictions),
        "images": len(labels),
        "disagreement": [{"a": a, "b": b, "disagreement": value} for (a, b), value in pairs.items()],
        "mean_disagreement": sum(pairs.values()) / len(pairs) if pairs else 0.0,
        "per_class_accuracy": {name: row.tolist() for name, row in zip(predictions, accuracy, strict=True)},
        "class_spread_mean": spread.mean().item() if spread.numel() else 0.0,
        "class_spread_max": spread.max().item() if spread.numel() else 0.0,
    }


def _check_same_images(predictions: dict[str, torch.Tensor]) -> None:
    sizes = {name: len(values) for name, values in predictions.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"predictions must cover the same images; got lengths {sizes}")
