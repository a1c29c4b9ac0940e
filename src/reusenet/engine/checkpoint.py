"""Checkpoints and released weights.

Training checkpoints are `torch.save` dicts of tensors and plain values, written atomically (temp file in
the same folder, fsync, rename) so a crash at any moment leaves the previous checkpoint intact, and read
only with `weights_only=True`, so a file carrying a pickled payload is refused instead of executed.
Final weights are also written as safetensors with a JSON sidecar naming the model and its arguments.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError

CHECKPOINT_NAME = "last.pt"
WEIGHTS_NAME = "model.safetensors"
SIDECAR_NAME = "model.json"


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename over `path`; the old file survives any failure before the rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's dict, refusing anything that is not plain tensors and values."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run folder holding {CHECKPOINT_NAME} or the file itself.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        payload = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        if not payload:  # not a pickle of anything, e.g. a truncated or foreign file
            raise UserError(f"{path} is not a readable checkpoint (not a torch.save file).") from None
        raise UserError(f"refusing to load {path}: it holds Python objects beyond tensors and plain values, "
                        f"which could run code when unpickled ({payload[0][:200]}). "
                        "Only load checkpoints written by reusenet or from a source you trust.") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path} is not a readable checkpoint ({_first_line(err)}).") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path} is not a reusenet training checkpoint (no 'model' entry).")
    return state


def save_weights(folder: Path, model: torch.nn.Module, meta: dict) -> Path:
    """model.safetensors plus model.json (model name, arguments, classes, preprocessing)."""
    folder = Path(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"model": meta["model"]}))
    atomic_write(folder / SIDECAR_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return folder / WEIGHTS_NAME


def load_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, meta) from model.safetensors (or its folder) and its sidecar model.json."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    sidecar = path.with_name(SIDECAR_NAME)
    if not path.is_file() or not sidecar.is_file():
        raise UserError(f"expected {path} and its sidecar {sidecar}; train a model with `reusenet train` first.")
    return load_file(path), json.loads(sidecar.read_text())


def load_state(model: torch.nn.Module, state: dict, source: str, advice: str) -> None:
    """`model.load_state_dict(state)`, or a UserError listing the keys and shapes that differ."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in expected
                if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [f"{label} ({len(keys)}): {_first(keys)}" for label, keys in
             (("missing from the file", missing), ("not in the model", unexpected),
              ("shape in file vs model", reshaped)) if keys]
    if parts:
        raise UserError(f"{source} does not fit {type(model).__name__}: {'; '.join(parts)}. {advice}")
    model.load_state_dict(state)


def _first(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
