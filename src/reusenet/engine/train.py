"""The training and evaluation loop.

One loop serves every paper's recipe: the dataset and model come from their registries, the optimizer and
schedule from `optim`, the execution (device, precision, memory format) from `precision`. The run is a
pure function of its configuration: data order and augmentation depend only on (seed, epoch, rank), and a
checkpoint after every epoch holds everything else (weights, optimizer, schedule, scaler, RNG states,
history), so a resumed run ends with the same weights as an uninterrupted one.

Rank and world size flow through the loaders and metric sums, so torch.distributed slots in here.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from tqdm import tqdm

from ..data import ImageFiles, build_dataset, build_loader, dataset_splits
from ..errors import UserError
from ..models import create_model
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, save_weights, set_rng_state
from .config import TrainConfig, save_config
from .optim import build_optimizer, build_scheduler, current_lr
from .precision import Execution, choose_execution, resolve_device
from .summary import TensorBoardLog, write_history, write_json


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class Metrics:
    """Sums over a pass, kept as sums so they add up exactly across batches and ranks."""

    loss: float = 0.0
    correct1: int = 0
    correct5: int = 0
    count: int = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        # Counts rather than timm.utils.accuracy's per-batch percentages, so partial batches weigh right.
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk == labels[:, None]
        self.loss += loss.item() * len(labels)
        self.correct1 += hits[:, 0].sum().item()
        self.correct5 += hits.any(dim=1).sum().item()
        self.count += len(labels)

    def summary(self, prefix: str) -> dict:
        n = max(self.count, 1)
        return {f"{prefix}_loss": self.loss / n, f"{prefix}_acc1": 100.0 * self.correct1 / n,
                f"{prefix}_acc5": 100.0 * self.correct5 / n}


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.model}-{config.data}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run, and prove the folder is writable before any training time is spent."""
    has_run = (run_dir / CHECKPOINT_NAME).exists()
    if has_run and not resume:
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                        "or choose another --output.")
    if resume and not has_run:
        raise UserError(f"nothing to resume: {run_dir / CHECKPOINT_NAME} does not exist.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to the output folder {run_dir} ({err.strerror}); "
                        "choose a writable --output.") from None


def load_data(config: TrainConfig):
    """{split: dataset} for the splits this dataset has. The data seed is data_args.seed (default 0), not
    the training seed, so runs with different seeds are compared on the same splits."""
    args = {"seed": 0, **config.data_args}
    return {split: build_dataset(config.data, config.data_root, split, download=config.download, **args)
            for split in dataset_splits(config.data, **config.data_args)}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    """Builds a run from a TrainConfig and trains it; `fit()` returns the final metrics.

    `model` and `datasets` ({split: dataset}, with at least "train") replace the ones the config names, for
    pipelines that train modules of their own (RefiNet's level-2 heads); everything else still comes from
    the config.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, log=print, model: torch.nn.Module | None = None,
                 datasets: dict | None = None):
        self.config = config
        self.log = log
        self.run_dir = Path(config.output) if config.output else default_run_dir(config)
        prepare_run_dir(self.run_dir, resume)
        checkpoint = load_checkpoint(self.run_dir) if resume else None
        seed_everything(config.seed)

        self.datasets = datasets if datasets is not None else load_data(config)
        if config.schedule == "plateau" and config.plateau_metric.startswith("val") and "val" not in self.datasets:
            raise UserError(f"schedule plateau watches {config.plateau_metric}, but {config.data} has no val split "
                            "here; set plateau_metric train_loss or keep a val split.")
        train_set = self.datasets["train"]
        self.classes = list(train_set.classes)
        self.model = model if model is not None else create_model(
            config.model, num_classes=len(self.classes), pretrained=config.pretrained, **config.model_args)
        self.data_config = resolve_data_config({}, model=self.model)
        self.input_size = tuple(self.data_config["input_size"]) if isinstance(train_set, ImageFiles) \
            else (3, train_set.image_size, train_set.image_size)
        self.execution = self._execution(checkpoint)
        self.model.to(self.execution.device)
        if self.execution.channels_last:
            self.model.to(memory_format=torch.channels_last)

        self.loaders = {split: self._loader(split) for split in self.datasets}
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, len(self.loaders["train"]))
        self.scaler = torch.amp.GradScaler(self.execution.device.type, enabled=self.execution.precision == "fp16")
        self.start_epoch, self.history = 0, []
        if checkpoint is not None:
            self._restore(checkpoint)
        save_config(config, self.run_dir / "config.yaml")

    def _execution(self, checkpoint) -> Execution:
        if checkpoint is not None:  # a resumed run keeps the execution it measured, or it would not be the same run
            saved = checkpoint["execution"]
            return Execution(resolve_device(self.config.device), saved["precision"], saved["channels_last"])
        return choose_execution(self.model, self.config, self.input_size, len(self.classes), self.log)

    def _loader(self, split: str):
        train = split == "train"
        config = self.config
        return build_loader(self.datasets[split], config.batch_size if train else
                            (config.eval_batch_size or config.batch_size), train=train, seed=config.seed,
                            crop_padding=config.crop_padding, hflip=config.hflip, data_config=self.data_config,
                            workers=config.workers)

    def _restore(self, checkpoint: dict) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:
            raise UserError(f"the checkpoint in {self.run_dir} does not fit model {self.config.model}: "
                            f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        self.start_epoch, self.history = checkpoint["epoch"], list(checkpoint["history"])
        self.log(f"resumed {self.run_dir} after epoch {self.start_epoch}")

    def _checkpoint_state(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "epoch": epoch, "history": self.history, "config": self.config.to_dict(),
                "meta": self.weights_meta(),
                "execution": {"precision": self.execution.precision,
                              "channels_last": self.execution.channels_last}}

    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train to the configured number of epochs (or stop after `stop_after_epoch`, resumable later)."""
        config = self.config
        self.log(f"training {config.model} on {config.data} ({len(self.datasets['train'])} images, "
                 f"{len(self.classes)} classes) for {config.epochs} epochs, {self.execution.describe()}, "
                 f"output {self.run_dir}")
        board = TensorBoardLog(self.run_dir / "tensorboard", config.tensorboard, self.start_epoch)
        try:
            for epoch in range(self.start_epoch, config.epochs):
                self._run_epoch(epoch, board)
                if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                    break
        except KeyboardInterrupt:
            done = len(self.history)
            self.log(f"interrupted during epoch {done + 1}; " + (
                f"the checkpoint after epoch {done} is kept: continue with `reusenet train --resume {self.run_dir}`"
                if done else "no epoch had finished, so there is no checkpoint"))
            raise
        finally:
            board.close()
        if len(self.history) < config.epochs:
            return {"stopped_after_epoch": len(self.history)}
        return self._finish()

    def _run_epoch(self, epoch: int, board: TensorBoardLog) -> None:
        start = time.perf_counter()
        lr = current_lr(self.optimizer)
        row = {"epoch": epoch + 1, "lr": lr, **self.train_one_epoch(epoch)}
        row["train_time_s"] = time.perf_counter() - start
        row["train_images_per_s"] = row.pop("images") / row["train_time_s"]
        if "val" in self.loaders:
            row.update(evaluate(self.model, self.loaders["val"], self.execution).summary("val"))
        self.scheduler.step(epoch + 1, row.get(self.config.plateau_metric))
        self.history.append(row)
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self._checkpoint_state(epoch + 1))
        write_history(self.run_dir, self.history)
        board.log(row)
        self.log(format_epoch(row, self.config.epochs))

    def train_one_epoch(self, epoch: int) -> dict:
        model, execution, config = self.model, self.execution, self.config
        loader = self.loaders["train"]
        loader.set_epoch(epoch)
        model.train()
        metrics = Metrics()
        steps = len(loader)
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=None if config.progress else True, unit="batch")
        start = time.perf_counter()
        for step, (images, labels) in enumerate(bar):
            images, labels = execution.prepare(images), labels.to(execution.device, non_blocking=True)
            with execution.autocast():
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good "
                    f"checkpoint is {self.run_dir / CHECKPOINT_NAME if epoch else 'none (first epoch)'}. "
                    "Lower the learning rate or use precision fp32.")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step_update(epoch * steps + step + 1)
            metrics.add(logits.detach().float(), labels, loss.detach())
            rate = metrics.count / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{metrics.loss / metrics.count:.3f}",
                            acc=f"{100 * metrics.correct1 / metrics.count:.1f}%", img_s=f"{rate:.0f}")
        summary = metrics.summary("train")
        summary.pop("train_acc5")
        return {**summary, "images": metrics.count}

    def _finish(self) -> dict:
        results = {"model": self.config.model, "data": self.config.data, "epochs": self.config.epochs,
                   "execution": self.execution.describe(), **self.history[-1]}
        if "test" in self.loaders:
            results.update(evaluate(self.model, self.loaders["test"], self.execution).summary("test"))
        skipped = sorted({path for loader in self.loaders.values() for path in loader.skipped})
        results["skipped_files"] = len(skipped)
        results["skipped_paths"] = skipped
        weights = save_weights(self.run_dir, self.model, self.weights_meta())
        results["weights"] = str(weights)
        write_json(self.run_dir / "results.json", results)
        self.log(format_results(results))
        return results

    def weights_meta(self) -> dict:
        train_set = self.datasets["train"]
        return {"model": self.config.model, "model_args": self.config.model_args, "classes": self.classes,
                "num_classes": len(self.classes), "data": self.config.data, "data_root": self.config.data_root,
                "data_args": self.config.data_args, "input_size": list(self.input_size),
                "mean": list(train_set.mean or self.data_config["mean"]),
                "std": list(train_set.std or self.data_config["std"])}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, execution: Execution) -> Metrics:
    model.eval()
    metrics = Metrics()
    for images, labels in loader:
        images, labels = execution.prepare(images), labels.to(execution.device, non_blocking=True)
        with execution.autocast():
            logits = model(images).float()
        metrics.add(logits, labels, F.cross_entropy(logits, labels))
    return metrics


def format_epoch(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc1']:.2f}%")
    if "val_acc1" in row:
        text += f"  val loss {row['val_loss']:.4f} top-1 {row['val_acc1']:.2f}% top-5 {row['val_acc5']:.2f}%"
    return text + f"  {row['train_images_per_s']:.0f} img/s  {row['train_time_s']:.1f}s"


def format_results(results: dict) -> str:
    parts = [f"{split} top-1 {results[f'{split}_acc1']:.2f}% top-5 {results[f'{split}_acc5']:.2f}%"
             for split in ("val", "test") if f"{split}_acc1" in results]
    skipped = f"; {results['skipped_files']} unreadable files skipped" if results["skipped_files"] else ""
    return f"done: {'; '.join(parts)}{skipped}; weights {results['weights']}"


def train(config: TrainConfig, resume: bool = False, log=print) -> dict:
    """Train one run end to end; returns the final metrics (also written to results.json)."""
    return Trainer(config, resume=resume, log=log).fit()
