"""`reusenet <command>`: a thin layer over the library. Mistakes print one line and exit with status 2."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import sys
from pathlib import Path

from .errors import UserError

EXIT_USER_ERROR = 2

# Frequent keys get their own flags; every other key goes through --set key=value.
TRAIN_FLAGS = {"model": str, "data": str, "data_root": str, "epochs": int, "batch_size": int, "lr": float,
               "precision": str, "device": str, "seed": int, "output": str}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reusenet", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list reusenet models with params and GMACs")
    models.add_argument("--filter", default="*", help="glob on model names, e.g. 'resnet*'")
    models.add_argument("--input-size", type=int, help="square input size (default: each model's own)")
    models.add_argument("--num-classes", type=int, help="classifier size (default: each model's own)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")

    train = commands.add_parser("train", help="train a model with a recipe plus overrides")
    train.add_argument("--recipe", help="recipe name (see `reusenet recipes`) or path to a YAML file")
    for key, kind in TRAIN_FLAGS.items():
        train.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, help=f"sets {key}")
    train.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any configuration key, e.g. --set milestones=[3,6] --set model_args.drop_rate=0.1")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    train.add_argument("--help-keys", action="store_true", help="list every configuration key and exit")

    evaluate = commands.add_parser("eval", help="evaluate saved weights on a dataset split")
    evaluate.add_argument("weights", help="run folder, model.safetensors, or last.pt")
    evaluate.add_argument("--data", help="dataset (default: the one it was trained on)")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))

    commands.add_parser("recipes", help="list the bundled recipes")
    return parser


def cmd_models(args) -> None:
    from .measure import complexity
    from .models import list_models

    names = [n for n in list_models() if fnmatch.fnmatch(n, args.filter)]
    if not names:
        raise UserError(f"no reusenet model matches {args.filter!r}; try `reusenet models` without --filter.")
    rows = []
    for name in names:
        size = (3, args.input_size, args.input_size) if args.input_size else None
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        info = complexity(name, input_size=size, **kwargs)
        rows.append({"model": name, "input": "x".join(map(str, info.input_size[1:])),
                     "params_M": round(info.mparams, 3), "GMACs": round(info.gmacs, 3)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| model | input | params (M) | GMACs |\n| --- | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['model']} | {row['input']} | {row['params_M']:.3f} | {row['GMACs']:.3f} |")
    print("\nGMACs: multiply-accumulates of conv and linear layers per image (the papers' 'FLOPs').")


def print_keys() -> None:
    from .engine import TrainConfig

    for spec in dataclasses.fields(TrainConfig):
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        print(f"{spec.name:22s} default {default!r}")


def cmd_train(args) -> None:
    from .engine import load_config, train
    from .engine.config import parse_override

    if args.help_keys:
        print_keys()
        return
    overrides = [parse_override(text) for text in args.overrides]
    overrides += [(key, getattr(args, key)) for key in (*TRAIN_FLAGS, "download", "progress")
                  if getattr(args, key) is not None]
    recipe = args.recipe
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise UserError(f"nothing to resume: {saved} does not exist.")
        recipe = str(saved)
        overrides.append(("output", args.resume))
    config = load_config(recipe, overrides)
    train(config, resume=bool(args.resume))


def cmd_eval(args) -> None:
    from .engine import evaluate_saved

    result = evaluate_saved(args.weights, data=args.data, split=args.split, data_root=args.data_root,
                            batch_size=args.batch_size, precision=args.precision)
    print(f"{result['model']} on {result['data']} ({result['split']}, {result['images']} images): "
          f"top-1 {result[args.split + '_acc1']:.2f}% top-5 {result[args.split + '_acc5']:.2f}% "
          f"loss {result[args.split + '_loss']:.4f}")


def cmd_recipes(args) -> None:
    from .engine import list_recipes
    from .engine.config import RECIPE_DIR

    for name in list_recipes():
        first_line = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:28s} {first_line}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"models": cmd_models, "train": cmd_train, "eval": cmd_eval, "recipes": cmd_recipes}[args.command]
    try:
        handler(args)
    except UserError as err:
        print(f"reusenet {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"reusenet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
