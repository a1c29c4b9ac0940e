"""`reusenet train`: train a model with a recipe plus overrides."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..errors import UserError

# Frequent keys get their own flags; every other key goes through --set key=value.
TRAIN_FLAGS = {"model": str, "data": str, "data_root": str, "epochs": int, "batch_size": int, "lr": float,
               "precision": str, "device": str, "seed": int, "output": str}


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a model with a recipe plus overrides")
    train.add_argument("--recipe", help="recipe name (see `reusenet recipes`) or path to a YAML file")
    train.add_argument("--reduced", action="store_true",
                       help="use the recipe's reduced-scale setting (runs on a CPU in minutes)")
    for key, kind in TRAIN_FLAGS.items():
        train.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, help=f"sets {key}")
    train.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    train.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None,
                       help="BatchNorm statistics over all ranks (with torchrun)")
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any configuration key, e.g. --set milestones=[3,6] --set model_args.drop_rate=0.1")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    train.add_argument("--help-keys", action="store_true", help="list every configuration key and exit")


def print_keys() -> None:
    from ..engine import TrainConfig

    for spec in dataclasses.fields(TrainConfig):
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        print(f"{spec.name:22s} default {default!r}")


def run(args) -> None:
    from ..engine import TrainingStopped, load_config, train
    from ..engine.config import parse_override
    from ..engine.distributed import teardown

    if args.help_keys:
        print_keys()
        return
    overrides = [parse_override(text) for text in args.overrides]
    overrides += [(key, getattr(args, key)) for key in (*TRAIN_FLAGS, "download", "progress", "sync_bn")
                  if getattr(args, key) is not None]
    recipe = args.recipe
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise UserError(f"nothing to resume: {saved} does not exist.")
        recipe = str(saved)
        overrides.append(("output", args.resume))
    config = load_config(recipe, overrides, reduced=args.reduced and not args.resume)
    try:
        train(config, resume=bool(args.resume))
    except TrainingStopped as stop:  # SIGTERM/SIGINT: a checkpoint is written; exit as the signal would
        print(f"reusenet train: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signal_number) from None
    finally:
        teardown()
