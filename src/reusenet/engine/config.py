"""Training configuration: one typed dataclass, filled from a YAML recipe plus command-line overrides.

Every key is checked: unknown keys get a "did you mean" suggestion, values are checked for type and range,
so a typo in a recipe fails at once with one clear line instead of silently training the wrong thing.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError, did_you_mean

RECIPE_DIR = Path(__file__).resolve().parents[3] / "recipes"

CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("multistep", "step", "plateau", "cosine", "constant"),
    "plateau_metric": ("val_loss", "val_acc1", "train_loss"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "channels_last": ("auto", True, False),
    "device": ("auto", "cpu", "cuda"),
    "nonfinite": ("stop", "skip"),
}
POSITIVE = ("epochs", "batch_size", "lr", "patience", "step_size", "accumulate_steps")
NON_NEGATIVE = ("momentum", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "label_smoothing",
                "crop_padding", "workers", "grad_clip", "checkpoint_every", "mixup", "cutmix")
PROBABILITIES = ("mixup_prob", "mixup_switch_prob", "random_erasing")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Saved, resolved, next to the run's outputs."""

    # model
    model: str = "resnet18_cifar"
    model_args: dict = field(default_factory=dict)
    pretrained: bool = False
    # data
    data: str = "digits"
    data_root: str | None = None
    data_args: dict = field(default_factory=dict)
    download: bool = False
    crop_padding: int = 4
    hflip: bool = True
    workers: int = 2
    # optimisation
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    accumulate_steps: int = 1         # micro-batches per optimizer step (effective batch = batch x steps x ranks)
    nonfinite: str = "stop"           # on a NaN/inf loss: stop, or skip that step and count it
    # regularisation (ConvNeXt's recipe; all timm's implementations)
    mixup: float = 0.0                # mixup alpha, 0 = off
    cutmix: float = 0.0               # cutmix alpha, 0 = off
    mixup_prob: float = 1.0           # probability of mixing a batch at all
    mixup_switch_prob: float = 0.5    # probability of cutmix instead of mixup when both are on
    auto_augment: str | None = None   # timm policy string, e.g. rand-m9-mstd0.5-inc1 (RandAugment)
    random_erasing: float = 0.0       # probability of erasing a random patch of each image
    ema: bool = False                 # keep an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: float = 0.9999
    # learning-rate schedule
    schedule: str = "multistep"
    milestones: list = field(default_factory=lambda: [60, 120, 160])
    step_size: int = 30
    gamma: float = 0.1
    patience: int = 10
    plateau_metric: str = "val_loss"
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    per_step_schedule: bool = False
    # execution
    precision: str = "auto"
    channels_last: str | bool = "auto"
    device: str = "auto"
    seed: int = 0
    sync_bn: bool = False             # BatchNorm statistics over all ranks (distributed runs)
    checkpoint_every: int = 0         # also checkpoint every N optimizer steps inside an epoch (0: epoch ends)
    output: str | None = None
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> TrainConfig:
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise UserError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}."
                                + (did_you_mean(value, [c for c in choices if isinstance(c, str)])
                                   if isinstance(value, str) else ""))
        for name in POSITIVE:
            value = getattr(self, name)
            if isinstance(value, float) and not 0 < value < math.inf:
                raise UserError(f"{name} must be a positive finite number, got {value}.")
            if not value > 0:
                raise UserError(f"{name} must be positive, got {value}.")
        for name in NON_NEGATIVE:
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:
                raise UserError(f"{name} must be zero or a positive finite number, got {value}.")
        for name in PROBABILITIES:
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} is a probability, so it must be in [0, 1]; got {getattr(self, name)}.")
        if not 0 < self.ema_decay < 1:
            raise UserError(f"ema_decay must be in (0, 1), e.g. 0.9999; got {self.ema_decay}.")
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise UserError(f"mixup/cutmix pair each image with another, so batch_size must be even; "
                            f"got {self.batch_size}.")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise UserError(f"eval_batch_size must be positive, got {self.eval_batch_size}.")
        if not all(isinstance(m, int) and m > 0 for m in self.milestones):
            raise UserError(f"milestones must be a list of positive epoch numbers, got {self.milestones}.")
        if list(self.milestones) != sorted(self.milestones):
            raise UserError(f"milestones must be increasing, got {self.milestones}.")
        if not 0 < self.gamma <= 1:
            raise UserError(f"gamma (the lr decay factor) must be in (0, 1], got {self.gamma}.")
        if self.per_step_schedule and self.schedule in ("multistep", "plateau"):
            raise UserError(f"schedule {self.schedule} changes the lr between epochs only; "
                            "set per_step_schedule false (or use step, cosine or constant).")
        if self.warmup_epochs and self.schedule in ("multistep", "plateau"):
            raise UserError(f"schedule {self.schedule} has no warmup; set warmup_epochs 0 or use cosine or step.")
        if self.warmup_epochs >= self.epochs and self.schedule == "cosine":
            raise UserError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs}).")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES = typing.get_type_hints(TrainConfig)


def _allowed_types(hint) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for a in typing.get_args(hint) for t in _allowed_types(a))
    return (typing.get_origin(hint) or hint,)


def _coerce(key: str, value):
    """Check `value` against the field's annotation; ints are accepted where floats are expected."""
    allowed = _allowed_types(FIELD_TYPES[key])
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool) and bool not in allowed and key != "channels_last":
        raise UserError(f"{key}: expected {_describe(allowed)}, got the boolean {value}.")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, allowed):
        return value
    raise UserError(f"{key}: expected {_describe(allowed)}, got {value!r} ({type(value).__name__}).")


def _describe(allowed: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in allowed)


def make_config(values: dict) -> TrainConfig:
    """A validated TrainConfig from a flat mapping of keys (as in a recipe)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"unknown configuration key {key!r}.{did_you_mean(key, known)}"
                            " Run `reusenet train --help-keys` to list the valid keys.")
        checked[key] = _coerce(key, value)
    return TrainConfig(**checked).validate()


def find_recipe(name_or_path: str, folder: Path = RECIPE_DIR, kind: str = "recipe") -> Path:
    """A recipe file: a path to a YAML file, or the name of one in `folder` (the project's recipes/ folder, or
    one of its sub-folders for other commands' recipes; `kind` names them in errors)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"recipe file {path} does not exist.")
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        available = list_recipes(folder)
        raise UserError(f"unknown {kind} {name_or_path!r}.{did_you_mean(name_or_path, available)}"
                        f" Available: {', '.join(available) or 'none'}; or pass a path to a .yaml file.")
    return candidate


def list_recipes(folder: Path = RECIPE_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def read_yaml(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path} must be a mapping of configuration keys to values, got {type(values).__name__}.")
    return values


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` with a YAML value (`lr=0.1`, `milestones=[3,6]`); `a.b=v` sets key b of mapping a."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} must look like key=value, e.g. lr=0.05 or model_args.drop_rate=0.1.")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(values: dict, overrides) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for key, value in overrides:
        parent, _, child = key.partition(".")
        if child:
            if parent not in ("model_args", "data_args"):
                raise UserError(f"{key}: only model_args.X and data_args.X take dotted keys.")
            merged.setdefault(parent, {})[child] = value
        else:
            merged[key] = value
    return merged


REDUCED_KEY = "reduced"


def load_config(recipe: str | None = None, overrides=(), reduced: bool = False) -> TrainConfig:
    """Recipe (name or path; None = defaults) with `(key, value)` overrides applied on top.

    A recipe is the full-scale setting of one paper table; its optional `reduced:` mapping holds the keys
    that change for the reduced-scale CPU setting (usually data: digits, fewer epochs), applied first when
    `reduced` is true, so one file documents both and they cannot drift apart.
    """
    values = read_yaml(find_recipe(recipe)) if recipe else {}
    smaller = values.pop(REDUCED_KEY, None)
    if reduced:
        if not isinstance(smaller, dict) or not smaller:
            raise UserError(f"recipe {recipe!r} has no reduced setting (a `{REDUCED_KEY}:` mapping); "
                            "drop --reduced or pick a recipe that has one (`reusenet recipes`).")
        values = apply_overrides(values, nested_overrides(smaller))
    return make_config(apply_overrides(values, overrides))


def nested_overrides(values: dict) -> list[tuple[str, object]]:
    """{model_args: {a: 1}, lr: 2} -> [("model_args.a", 1), ("lr", 2)]: nested mappings merge, not replace."""
    pairs = []
    for key, value in values.items():
        if key in ("model_args", "data_args") and isinstance(value, dict):
            pairs += [(f"{key}.{child}", item) for child, item in value.items()]
        else:
            pairs.append((key, value))
    return pairs


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
