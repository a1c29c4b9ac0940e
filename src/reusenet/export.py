"""Export trained models: ONNX (checked against PyTorch with onnxruntime) and safetensors + model.json.

ONNX: `torch.onnx.export` with the TorchScript exporter (`dynamo=False`), opset 17, input `images`
(N, C, H, W) and output `logits` (N, classes) with a dynamic batch dimension. Both of torch 2.14's exporters
give the same parity on resnet18_cifar (max abs diff ~3e-8); the TorchScript one took 4 s where the
torch.export-based one (`dynamo=True`) took 34 s on the same loaded 2-core CPU, so we use the former and
silence its deprecation warning.
The exported file is run by onnxruntime on the same random inputs as PyTorch at batch 1 and 7 (two batch
sizes prove the batch axis is dynamic) and the largest absolute difference of the logits is reported.

safetensors: `model.safetensors` plus the `model.json` sidecar that training writes (engine.checkpoint),
which `reusenet eval` reads, and which holds what `timm.create_model` needs to load the file (see
`timm_kwargs`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch

from .engine.checkpoint import SIDECAR_NAME, save_weights
from .engine.evaluate import load_trained
from .errors import UserError
from .models import create_model

__all__ = ["OnnxExport", "export_onnx", "export_safetensors", "load_for_export", "timm_kwargs"]

FORMATS = ("onnx", "safetensors")
OPSET = 17
CHECK_BATCHES = (1, 7)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    max_abs_diff: float  # largest |onnxruntime - PyTorch| over the logits of every checked batch
    checked_batches: tuple[int, ...]


def load_for_export(model_or_run: str, checkpoint: str | None = None, num_classes: int | None = None,
                    model_args: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, its model.json meta) from a run folder / weights file, or a name plus --checkpoint.

    A checkpoint written by reusenet (last.pt, or model.safetensors with its model.json) brings its own
    meta; any other state-dict file (a timm .safetensors/.pth) is loaded into `model_or_run` built with
    `num_classes` and `model_args`.
    """
    path = Path(model_or_run)
    if path.exists():
        return load_trained(path)
    if checkpoint is None:
        raise UserError(f"{model_or_run} is neither a run folder nor a weights file; to export a model by name, "
                        "pass its weights with --checkpoint (a run folder, model.safetensors or last.pt).")
    weights = Path(checkpoint)
    if not weights.exists():
        raise UserError(f"checkpoint {weights} does not exist; pass a run folder, model.safetensors or last.pt.")
    if weights.is_dir() or weights.suffix == ".pt" or (weights.parent / SIDECAR_NAME).is_file():
        model, meta = load_trained(weights)
        if meta["model"] != model_or_run:
            raise UserError(f"{weights} holds {meta['model']} weights, not {model_or_run}; "
                            f"export it as `reusenet export {weights}`.")
        return model, meta
    model = create_model(model_or_run, num_classes=num_classes, **(model_args or {}))
    try:
        timm.models.load_checkpoint(model, str(weights), strict=True)
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{weights} does not fit {model_or_run}: {str(err).splitlines()[-1].strip()[:300]}; "
                        "give the --num-classes it was trained with.") from None
    cfg = model.pretrained_cfg
    meta = {"model": model_or_run, "model_args": dict(model_args or {}), "num_classes": model.num_classes,
            "classes": [str(i) for i in range(model.num_classes)], "input_size": list(cfg["input_size"]),
            "mean": list(cfg["mean"]), "std": list(cfg["std"])}
    return model.eval(), meta


def export_onnx(model: torch.nn.Module, path: str | Path, input_size, opset: int = OPSET,
                check: bool = True) -> OnnxExport:
    """Write `path` (.onnx) with a dynamic batch axis; check it with onnxruntime at batch 1 and 7."""
    if opset < 17:
        raise UserError(f"opset must be 17 or newer (LayerNorm and friends export as single ops), got {opset}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(model, (example,), str(path), opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    if not check:
        return OnnxExport(path, float("nan"), ())
    return OnnxExport(path, onnx_max_abs_diff(model, path, input_size), CHECK_BATCHES)


def onnx_max_abs_diff(model: torch.nn.Module, path: Path, input_size, batches=CHECK_BATCHES) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of random batches of each size in `batches`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in batches:
        images = torch.randn(batch, *input_size, generator=generator)
        with torch.no_grad():
            expected = model(images).numpy()
        (logits,) = session.run(["logits"], {"images": images.numpy()})
        if logits.shape != expected.shape:
            raise RuntimeError(f"onnxruntime returned {logits.shape} for batch {batch}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(logits - expected).max()))
    return worst


def export_safetensors(model: torch.nn.Module, meta: dict, folder: str | Path) -> Path:
    """model.safetensors and model.json in `folder` (the layout `reusenet eval` and training use)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return save_weights(Path(folder), model, meta)


def timm_kwargs(meta: dict, weights: str | Path) -> dict:
    """Keyword arguments of `timm.create_model` that load exported weights, from their model.json.

    The overlay's num_classes matters: timm drops a classifier whose size differs from the pretrained
    config's, which would leave a randomly initialized head without an error.
    """
    return {"model_name": meta["model"], "pretrained": True, "num_classes": meta["num_classes"],
            "pretrained_cfg_overlay": {"file": str(weights), "num_classes": meta["num_classes"]},
            **meta.get("model_args", {})}


def default_output(meta: dict, kind: str) -> Path:
    """exports/<model>.onnx, or the folder exports/<model>/ for safetensors."""
    stem = Path("exports") / meta["model"]
    return stem.with_suffix(".onnx") if kind == "onnx" else stem
