"""Optimizers and learning-rate schedules of the papers, built on timm.optim and timm.scheduler.

| schedule    | papers' use                                                                 |
| ----------- | --------------------------------------------------------------------------- |
| multistep   | REAF on CIFAR-100: x0.2 at epochs 60, 120, 160 of 200                       |
| step        | REAF on ImageNet: x0.1 every 30 epochs                                      |
| plateau     | ResFRI: x0.5 when val loss has not improved for 10 epochs; ResFuse: x0.1    |
| cosine      | ConvNeXt: linear warmup (20 epochs) then cosine decay, updated every step  |
| constant    | no decay (after an optional warmup)                                         |

Epoch-based schedules give the lr of epoch `e` (0-based) after `scheduler.step(e)`; the engine calls
`step(epoch + 1, metric)` after each epoch and `step_update(num_updates)` after each optimizer step, as
timm's own training loop does, so per-step (`per_step_schedule`) and per-epoch schedules share one loop.
"""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from .config import TrainConfig


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # timm's 'sgd' means Nesterov; 'momentum' is plain heavy-ball SGD.
    name = {"sgd": "nesterov" if config.nesterov else "momentum"}.get(config.optimizer, config.optimizer)
    extra = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=name, lr=config.lr, weight_decay=config.weight_decay,
                               filter_bias_and_bn=not config.decay_norm_and_bias, **extra)


class EpochSchedule:
    """A torch epoch scheduler (MultiStepLR, ReduceLROnPlateau) behind timm's step/step_update interface.

    multistep: timm's MultiStepLRScheduler decays one epoch before each milestone (it tests `t + 1`), while
    the papers' recipes were run with torch's MultiStepLR, whose lr changes after `milestone` full epochs.
    plateau: timm's PlateauLRScheduler is deprecated and does not save its patience counter, so a resumed
    run would not continue the same run; torch's saves all of its state.
    """

    def __init__(self, scheduler, needs_metric: bool):
        self.scheduler, self.needs_metric = scheduler, needs_metric

    def step(self, epoch: int, metric: float | None = None) -> None:
        if not self.needs_metric:
            self.scheduler.step()
        elif metric is not None:
            self.scheduler.step(metric)

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        pass

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """The schedule named by `config.schedule`; see the module table for what each paper uses."""
    if config.schedule == "plateau":
        mode = "max" if config.plateau_metric.endswith("acc1") else "min"
        return EpochSchedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=config.gamma, patience=config.patience, min_lr=config.min_lr), True)
    if config.schedule == "multistep":
        return EpochSchedule(torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(config.milestones), gamma=config.gamma), False)
    per_step = config.per_step_schedule
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=config.schedule,
        num_epochs=config.epochs - config.warmup_epochs if config.schedule == "cosine" else config.epochs,
        decay_epochs=config.step_size,
        decay_milestones=list(config.milestones),
        decay_rate=config.gamma,
        min_lr=config.min_lr,
        warmup_lr=config.warmup_lr,
        warmup_epochs=config.warmup_epochs,
        warmup_prefix=config.schedule == "cosine",  # cosine decays over the epochs after warmup (ConvNeXt)
        step_on_epochs=not per_step,
        updates_per_epoch=steps_per_epoch if per_step else 0,
    )
    return scheduler


def current_lr(optimizer) -> float:
    return optimizer.param_groups[0]["lr"]
