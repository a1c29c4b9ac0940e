"""The training and evaluation loop, for one process or many (`torchrun`, DistributedDataParallel).

One loop serves every paper's recipe: the dataset and model come from their registries, the optimizer and
schedule from `optim`, the execution (device, precision, memory format) from `precision`, the ranks from
`distributed`. The run is a pure function of its configuration: data order and augmentation depend only on
(seed, epoch, rank, batch), and a checkpoint (after every epoch, and every `checkpoint_every` optimizer steps)
holds everything else (weights, optimizer, schedule, scaler, EMA, each rank's RNG states, the position in the
epoch, history), so a run killed at any moment and resumed ends with the same weights as an uninterrupted one.

Faults: SIGTERM/SIGINT finish the current step, write a checkpoint and stop (`TrainingStopped`); a
non-finite loss stops the run (`NonFiniteLossError`) or skips the step (`nonfinite: skip`); a failed write
(disk full) is reported without touching the previous checkpoint; under torchrun a restarted worker group
resumes from its checkpoint by itself.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup, resolve_data_config
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data import ImageFiles, build_dataset, build_loader, dataset_splits
from ..data.splits import derive_seed
from ..errors import UserError
from ..models import create_model
from . import distributed
from .checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from .config import TrainConfig, save_config
from .optim import build_optimizer, build_scheduler, current_lr
from .precision import Execution, choose_execution, resolve_device
from .summary import TensorBoardLog, write_history, write_json


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingStopped(UserError):
    """SIGTERM or SIGINT stopped the run after a checkpoint; `signal_number` says which."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


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

    def reduced(self, ranks: distributed.Distributed) -> Metrics:
        loss, correct1, correct5, count = ranks.sum(list(astuple(self)))
        return Metrics(loss, int(correct1), int(correct5), int(count))

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
    if resume and not has_run and not (run_dir / "config.yaml").is_file():
        raise UserError(f"nothing to resume: {run_dir} holds no run ({CHECKPOINT_NAME} or config.yaml).")
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
    the config. Under torchrun every rank builds a Trainer; rank 0 alone logs and writes files.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, log=print, model: torch.nn.Module | None = None,
                 datasets: dict | None = None):
        self.config = config
        self.ranks, device = distributed.setup(config.device)
        self.log = log if self.ranks.is_main else _silent
        self.run_dir = Path(self.ranks.broadcast(config.output or str(default_run_dir(config))))
        if self.ranks.restart_count and (self.run_dir / CHECKPOINT_NAME).exists():
            resume = True  # torchrun restarted the worker group: carry on from the checkpoint
        self._on_main(lambda: prepare_run_dir(self.run_dir, resume))
        checkpoint = load_checkpoint(self.run_dir) if resume and (self.run_dir / CHECKPOINT_NAME).exists() else None
        if resume and checkpoint is None:
            self.log(f"{self.run_dir} has no checkpoint yet (stopped before the first one): starting it over")
        seed_everything(config.seed if self.ranks.is_main else derive_seed(config.seed, self.ranks.rank))

        self.datasets = datasets if datasets is not None else load_data(config)
        if config.schedule == "plateau" and config.plateau_metric.startswith("val") and "val" not in self.datasets:
            raise UserError(f"schedule plateau watches {config.plateau_metric}, but {config.data} has no val split "
                            "here; set plateau_metric train_loss or keep a val split.")
        train_set = self.datasets["train"]
        self.classes = list(train_set.classes)
        if len(self.classes) < 2:
            raise UserError(f"{train_set.name} has {len(self.classes)} class ({', '.join(self.classes)}); a classifier "
                            "needs at least two. Add class folders, or check the class subset in data_args.")
        self.model = model if model is not None else create_model(
            config.model, num_classes=len(self.classes), pretrained=config.pretrained, **config.model_args)
        self.data_config = resolve_data_config({}, model=self.model)
        self.input_size = tuple(self.data_config["input_size"]) if isinstance(train_set, ImageFiles) \
            else (3, train_set.image_size, train_set.image_size)
        self.execution = self._execution(checkpoint, device)
        if config.sync_bn and self.ranks.enabled:
            self.model = distributed.convert_sync_batchnorm(self.model, self.execution.device)
        self.model.to(self.execution.device)
        if self.execution.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.network = self._parallel(self.model)

        self.loaders = {split: self._loader(split) for split in self.datasets}
        self.updates_per_epoch = math.ceil(len(self.loaders["train"]) / config.accumulate_steps)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.updates_per_epoch)
        self.scaler = torch.amp.GradScaler(self.execution.device.type, enabled=self.execution.precision == "fp16")
        self.ema = ModelEmaV3(self.model, decay=config.ema_decay) if config.ema else None
        self.mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
                           switch_prob=config.mixup_switch_prob, label_smoothing=config.label_smoothing,
                           num_classes=len(self.classes)) if config.mixup or config.cutmix else None
        self.erasing = RandomErasing(config.random_erasing, mode="pixel", device="cpu") \
            if config.random_erasing else None
        # Position: `epoch` full epochs done, plus `step` batches of the next one (a mid-epoch checkpoint).
        self.epoch, self.step, self.partial, self.skipped_steps, self.history = 0, 0, Metrics(), 0, []
        self.last_checkpoint = None
        self._stop_signal, self._bad_loss = None, None
        if checkpoint is not None:
            self._restore(checkpoint)
        self._on_main(lambda: save_config(config, self.run_dir / "config.yaml"))

    def _on_main(self, action) -> None:
        """Run `action` on rank 0; a UserError it raises is raised on every rank, so none waits forever."""
        problem = None
        if self.ranks.is_main:
            try:
                action()
            except UserError as err:
                problem = str(err)
        problem = self.ranks.broadcast(problem)
        if problem:
            raise UserError(problem)

    def _execution(self, checkpoint, device: str) -> Execution:
        if checkpoint is not None:  # a resumed run keeps the execution it measured, or it would not be the same run
            saved = checkpoint["execution"]
            return Execution(resolve_device(device), saved["precision"], saved["channels_last"])
        chosen = None
        if self.ranks.is_main:  # every rank must run the same way; rank 0 measures, the others follow
            chosen = choose_execution(self.model, self.config, self.input_size, len(self.classes), self.log)
            chosen = (chosen.precision, chosen.channels_last)
        precision, channels_last = self.ranks.broadcast(chosen)
        return Execution(resolve_device(device), precision, channels_last)

    def _parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.ranks.enabled:
            return model
        device_ids = [self.execution.device.index] if self.execution.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def _loader(self, split: str):
        train = split == "train"
        config = self.config
        return build_loader(self.datasets[split], config.batch_size if train else
                            (config.eval_batch_size or config.batch_size), train=train, seed=config.seed,
                            crop_padding=config.crop_padding, hflip=config.hflip, data_config=self.data_config,
                            workers=config.workers, rank=self.ranks.rank, world_size=self.ranks.world_size,
                            auto_augment=config.auto_augment)

    def _restore(self, checkpoint: dict) -> None:
        load_state(self.model, checkpoint["model"], f"the checkpoint in {self.run_dir}",
                   f"It was written for model {checkpoint['meta']['model']}; resume it with that model.")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        states = checkpoint["rng"]
        if len(states) != self.ranks.world_size:
            self.log(f"the checkpoint was written by {len(states)} ranks, this run has {self.ranks.world_size}: "
                     "data order continues, random streams restart per rank")
            seed_everything(derive_seed(self.config.seed, self.ranks.rank, checkpoint["epoch"], checkpoint["step"]))
        else:
            set_rng_state(states[self.ranks.rank])
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.partial = Metrics(**checkpoint["partial"])
        self.skipped_steps = checkpoint["skipped_steps"]
        self.history = list(checkpoint["history"])
        self.last_checkpoint = self.run_dir / CHECKPOINT_NAME
        where = f"epoch {self.epoch}" + (f" and {self.step} batches of epoch {self.epoch + 1}" if self.step else "")
        self.log(f"resumed {self.run_dir} after {where}")

    def _checkpoint_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "rng": self.ranks.gather(rng_state()), "epoch": self.epoch, "step": self.step,
                "partial": vars(self.partial).copy(), "skipped_steps": self.skipped_steps,
                "history": self.history, "config": self.config.to_dict(), "meta": self.weights_meta(),
                "execution": {"precision": self.execution.precision,
                              "channels_last": self.execution.channels_last}}

    def save_checkpoint(self) -> None:
        """Rank 0 writes last.pt atomically; a failed write (disk full) leaves the previous one intact."""
        state = self._checkpoint_state()  # every rank: gathering the RNG states is a collective
        path = self.run_dir / CHECKPOINT_NAME

        def write():
            try:
                save_checkpoint(path, state)
            except OSError as err:
                kept = f"the previous {path} is intact" if self.last_checkpoint else "no checkpoint exists yet"
                raise UserError(f"could not write the checkpoint {path} ({err.strerror or err}); {kept}. Free space "
                                f"or fix the folder, then continue with `reusenet train --resume {self.run_dir}`.") \
                    from None
        self._on_main(write)
        self.last_checkpoint = path

    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train to the configured number of epochs (or stop after `stop_after_epoch`, resumable later)."""
        config = self.config
        ranks = f", {self.ranks.world_size} ranks" if self.ranks.enabled else ""
        self.log(f"training {config.model} on {config.data} ({len(self.datasets['train'])} images, "
                 f"{len(self.classes)} classes) for {config.epochs} epochs, {self.execution.describe()}{ranks}, "
                 f"output {self.run_dir}")
        board = TensorBoardLog(self.run_dir / "tensorboard", config.tensorboard and self.ranks.is_main, self.epoch)
        try:
            with self._stop_on_signals():
                while self.epoch < config.epochs:
                    self._run_epoch(board)
                    if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                        break
        except KeyboardInterrupt:  # only when signal handlers could not be installed (not the main thread)
            self.log(f"interrupted; {self._resume_hint()}")
            raise
        finally:
            board.close()
        if self.epoch < config.epochs:
            return {"stopped_after_epoch": self.epoch}
        return self._finish()

    def _resume_hint(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint had been written yet"
        return f"the checkpoint {self.last_checkpoint} is kept: continue with `reusenet train --resume {self.run_dir}`"

    def _run_epoch(self, board: TensorBoardLog) -> None:
        start = time.perf_counter()
        lr = current_lr(self.optimizer)
        row = {"epoch": self.epoch + 1, "lr": lr, **self.train_one_epoch(self.epoch)}
        row["train_time_s"] = time.perf_counter() - start
        row["train_images_per_s"] = row.pop("images") / row["train_time_s"]
        if "val" in self.loaders:
            row.update(self.evaluate("val"))
        self.scheduler.step(self.epoch + 1, row.get(self.config.plateau_metric))
        self.history.append(row)
        self.epoch, self.step, self.partial = self.epoch + 1, 0, Metrics()
        self.save_checkpoint()
        if self.ranks.is_main:
            write_history(self.run_dir, self.history)
            board.log(row)
        self.log(format_epoch(row, self.config.epochs))
        self._stop_if_signalled()

    def evaluate(self, split: str) -> dict:
        """Metrics of the model (and of its EMA) on a split, summed over every rank's shard."""
        row = evaluate(self.model, self.loaders[split], self.execution).reduced(self.ranks).summary(split)
        if self.ema is not None:
            row.update(evaluate(self.ema.module, self.loaders[split], self.execution).reduced(self.ranks)
                       .summary(f"{split}_ema"))
        return row

    def train_one_epoch(self, epoch: int) -> dict:
        config, loader = self.config, self.loaders["train"]
        loader.set_epoch(epoch, start_batch=self.step)
        self.network.train()
        metrics, batches = self.partial, len(loader)
        bar = tqdm(loader, total=batches, initial=self.step, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=None if config.progress and self.ranks.is_main else True, unit="batch")
        start, seen = time.perf_counter(), 0
        for images, labels in bar:
            self.step += 1
            finite = self._micro_step(images, labels, metrics, accumulate=self.step % config.accumulate_steps
                                      and self.step < batches)
            seen += len(labels)
            if not finite:
                self._on_nonfinite(epoch)
            if self.step % config.accumulate_steps == 0 or self.step == batches:
                self._update(epoch * self.updates_per_epoch + math.ceil(self.step / config.accumulate_steps))
                if self.step < batches:
                    self._between_updates()
            bar.set_postfix(loss=f"{metrics.loss / max(metrics.count, 1):.3f}",
                            acc=f"{100 * metrics.correct1 / max(metrics.count, 1):.1f}%",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
        summary = metrics.reduced(self.ranks).summary("train")
        summary.pop("train_acc5")
        if self.skipped_steps:
            summary["skipped_steps"] = self.skipped_steps
        return {**summary, "images": seen * self.ranks.world_size}

    def _micro_step(self, images, labels, metrics: Metrics, accumulate: bool) -> bool:
        """Forward and backward of one batch; False (and no gradient) if any rank's loss is not finite."""
        execution = self.execution
        images, labels = execution.prepare(images), labels.to(execution.device, non_blocking=True)
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        if self.erasing is not None:
            images = self.erasing(images)
        # Accumulating micro-batches skip DDP's gradient all-reduce until the last one (DDP's no_sync).
        skip_sync = self.network.no_sync if accumulate and self.ranks.enabled else contextlib.nullcontext
        with skip_sync(), execution.autocast():
            logits = self.network(images)
        loss = SoftTargetCrossEntropy()(logits.float(), targets) if self.mixup is not None else \
            F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        finite = bool(torch.isfinite(loss))
        if self.ranks.enabled:
            finite = self.ranks.sum([0.0 if finite else 1.0])[0] == 0
        if not finite:
            self._bad_loss = loss.item()
            return False
        with skip_sync():
            self.scaler.scale(loss / self.config.accumulate_steps).backward()
        metrics.add(logits.detach().float(), labels, loss.detach())
        return True

    def _update(self, global_update: int) -> None:
        config = self.config
        if config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(global_update)
        if self.ema is not None:
            self.ema.update(self.model, step=global_update)

    def _between_updates(self) -> None:
        """Mid-epoch: a periodic checkpoint, and the stop a signal asked for."""
        every = self.config.checkpoint_every
        if every and (self.step // self.config.accumulate_steps) % every == 0:
            self.save_checkpoint()
        self._stop_if_signalled(mid_epoch=True)

    def _on_nonfinite(self, epoch: int) -> None:
        if self.config.nonfinite == "skip":
            self.skipped_steps += 1
            self.log(f"skipped step {self.step} of epoch {epoch + 1}: the loss was {self._bad_loss} "
                     f"({self.skipped_steps} skipped so far)")
            return
        last = self.last_checkpoint or "none (no checkpoint had been written)"
        raise NonFiniteLossError(
            f"the loss became {self._bad_loss} at epoch {epoch + 1}, step {self.step}; the last good checkpoint is "
            f"{last}. Lower the learning rate, use precision fp32, or set nonfinite: skip to skip such steps.")

    def _stop_if_signalled(self, mid_epoch: bool = False) -> None:
        signalled = self._stop_signal is not None
        if self.ranks.enabled:  # every rank stops at the same step, or the others would wait forever
            signalled = self.ranks.sum([1.0 if signalled else 0.0])[0] > 0
        if not signalled:
            return
        if mid_epoch:
            self.save_checkpoint()
        number = self._stop_signal or signal.SIGTERM
        name = signal.Signals(number).name
        where = f"epoch {self.epoch + 1}, step {self.step}" if mid_epoch else f"epoch {self.epoch}"
        message = (f"stopped by {name} after {where}; checkpoint {self.run_dir / CHECKPOINT_NAME} written: "
                   f"continue with `reusenet train --resume {self.run_dir}`")
        self.log(message)
        raise TrainingStopped(message, number)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM and SIGINT ask for a stop at the next step boundary; a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield
            return

        def handle(number, frame):
            if self._stop_signal is not None and number == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = number
            self.log(f"\n{signal.Signals(number).name} received: stopping after this step "
                     "(press Ctrl-C again to stop at once)")

        previous = {number: signal.signal(number, handle) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _finish(self) -> dict:
        results = {"model": self.config.model, "data": self.config.data, "epochs": self.config.epochs,
                   "execution": self.execution.describe(), "world_size": self.ranks.world_size, **self.history[-1]}
        if "test" in self.loaders:
            results.update(self.evaluate("test"))
        skipped = sorted({path for loader in self.loaders.values() for path in loader.skipped})
        results["skipped_files"] = len(skipped)
        results["skipped_paths"] = skipped
        results["weights"] = str(self.run_dir / "model.safetensors")

        def write():
            save_weights(self.run_dir, self.model, self.weights_meta())
            if self.ema is not None:  # the averaged weights, loadable like any run's (reusenet eval RUN/ema)
                (self.run_dir / "ema").mkdir(exist_ok=True)
                save_weights(self.run_dir / "ema", self.ema.module, self.weights_meta())
            write_json(self.run_dir / "results.json", results)
        self._on_main(write)
        self.log(format_results(results))
        return results

    def weights_meta(self) -> dict:
        train_set = self.datasets["train"]
        return {"model": self.config.model, "model_args": self.config.model_args, "classes": self.classes,
                "num_classes": len(self.classes), "data": self.config.data, "data_root": self.config.data_root,
                "data_args": self.config.data_args, "input_size": list(self.input_size),
                "mean": list(getattr(train_set, "mean", None) or self.data_config["mean"]),
                "std": list(getattr(train_set, "std", None) or self.data_config["std"])}


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


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
