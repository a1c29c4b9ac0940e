"""`reusenet models`: list reusenet models with params and GMACs."""
from __future__ import annotations

import fnmatch
import json

from ..errors import UserError


def add_parser(subparsers) -> None:
    models = subparsers.add_parser("models", help="list reusenet models with params and GMACs")
    models.add_argument("--filter", default="*", help="glob on model names, e.g. 'resnet*'")
    models.add_argument("--input-size", type=int, help="square input size (default: each model's own)")
    models.add_argument("--num-classes", type=int, help="classifier size (default: each model's own)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")


def run(args) -> None:
    from ..measure import complexity
    from ..models import list_models

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
