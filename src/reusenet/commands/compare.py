"""`reusenet compare`: train models the same way and write the paper-style table, figures and index.md."""
from __future__ import annotations

from ..errors import UserError


def add_parser(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="train models the same way; table, plots and index.md")
    what = compare.add_mutually_exclusive_group(required=True)
    what.add_argument("--models", help="comma-separated model names, e.g. resnet18_cifar,mobilenetv2_100_cifar")
    what.add_argument("--spec", metavar="FILE.yaml", help="comparison spec (see docs/measure.md)")
    compare.add_argument("--data", help="dataset for every run (default: the recipe's)")
    compare.add_argument("--recipe", help="base training recipe, name or path (default: digits)")
    compare.add_argument("--reduced", action="store_true", default=None, help="the recipe's reduced setting")
    compare.add_argument("--epochs", type=int, help="epochs of every run")
    compare.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1 (mean +- std is reported)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="any configuration key for every run, e.g. --set lr=0.05")
    compare.add_argument("--batch-sizes", help="batch sizes of the peak-memory measurement (default 32,64,128)")
    compare.add_argument("--title", help="title of the report")
    compare.add_argument("--variability", action="store_true", default=None,
                         help="add the output-variability analysis even if the models are of different families")
    compare.add_argument("--no-variability", dest="variability", action="store_false")
    compare.add_argument("--output", help="output folder (default runs/compare-<timestamp>); rerun to resume")


def _integers(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"{what} must be integers separated by commas, e.g. 0,1; got {text!r}.")
    return values


def run(args) -> None:
    from ..engine.config import parse_override
    from ..measure.bench import parse_batch_sizes
    from ..report.compare import load_spec, run_compare, spec_from_models

    if args.spec:
        spec = load_spec(args.spec)
    else:
        models = [name.strip() for name in args.models.split(",") if name.strip()]
        spec = spec_from_models(models)
    overrides = dict(parse_override(text) for text in args.overrides)
    overrides.update({key: value for key, value in (("data", args.data), ("epochs", args.epochs))
                      if value is not None})
    spec.overrides = {**spec.overrides, **overrides}
    if args.recipe:
        spec.recipe = args.recipe
    if args.reduced is not None:
        spec.reduced = args.reduced
    if args.seeds:
        spec.seeds = _integers(args.seeds, "--seeds")
    if args.batch_sizes:
        spec.batch_sizes = parse_batch_sizes(args.batch_sizes)
    if args.title:
        spec.title = args.title
    if args.variability is not None:
        spec.variability = args.variability
    run_compare(spec, args.output)
