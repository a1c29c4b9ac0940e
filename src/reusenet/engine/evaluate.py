"""Evaluate saved weights (a run folder, model.safetensors or a training checkpoint) on a dataset split."""
from __future__ import annotations

from pathlib import Path

import torch
from timm.data import resolve_data_config

from ..data import ImageFiles, build_dataset, build_loader
from ..errors import UserError
from ..models import create_model
from .checkpoint import SIDECAR_NAME, WEIGHTS_NAME, load_checkpoint, load_state, load_weights
from .precision import Execution, resolve_device
from .train import evaluate


def load_trained(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(model, meta) from a run folder, its model.safetensors, or a last.pt checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run folder, a {WEIGHTS_NAME} file or a .pt checkpoint.")
    folder = path if path.is_dir() else path.parent
    if path.suffix == ".pt" or not (folder / WEIGHTS_NAME).is_file():
        checkpoint = load_checkpoint(path)
        state, meta = checkpoint["model"], checkpoint["meta"]
    else:
        state, meta = load_weights(folder / WEIGHTS_NAME)
    model = create_model(meta["model"], num_classes=len(meta["classes"]), **meta["model_args"])
    load_state(model, state, f"the weights in {path}",
               f"{folder / SIDECAR_NAME} says they belong to {meta['model']}; check that it matches the file.")
    return model.eval(), meta


def evaluate_saved(path, data: str | None = None, split: str = "test", data_root: str | None = None,
                   batch_size: int = 256, precision: str = "fp32", device: str = "auto") -> dict:
    """Top-1/top-5 and loss of saved weights on a split (default: the data the model was trained on)."""
    model, meta = load_trained(path)
    data = data or meta["data"]
    data_args = {"seed": 0, **meta["data_args"]} if data == meta["data"] else {}
    dataset = build_dataset(data, data_root or meta.get("data_root"), split, **data_args)
    if list(dataset.classes) != list(meta["classes"]):
        raise UserError(f"{data} ({split}) has classes {list(dataset.classes)[:5]}..., but the model was trained "
                        f"on {list(meta['classes'])[:5]}...; evaluate on data with the same classes.")
    execution = Execution(resolve_device(device), precision, channels_last=False)
    model.to(execution.device)
    data_config = resolve_data_config({}, model=model) if isinstance(dataset, ImageFiles) else None
    loader = build_loader(dataset, batch_size, train=False, data_config=data_config)
    metrics = evaluate(model, loader, execution).summary(split)
    return {"model": meta["model"], "data": data, "split": split, "images": len(dataset), **metrics,
            "skipped_files": len(loader.skipped)}
