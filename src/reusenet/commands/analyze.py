"""`reusenet analyze <analysis>`: analyses of trained models; each analysis is one sub-subcommand.

A new analysis adds an `add_<name>(subparsers)` that registers its parser with `set_defaults(analysis=...)`
pointing at its run function, and appends it to ANALYSES.
"""
from __future__ import annotations

COMMAND = "analyze"


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_selectivity(subparsers) -> None:
    selectivity = subparsers.add_parser(
        "selectivity", help="class selectivity of every channel per layer, models overlaid (REAF paper Figs 2-4)")
    selectivity.add_argument("--checkpoints", required=True, type=split_list, metavar="RUN_A,RUN_B",
                             help="comma-separated run folders, model.safetensors or last.pt files")
    selectivity.add_argument("--models", type=split_list, metavar="A,B",
                             help="comma-separated names for the plot and table, one per checkpoint "
                                  "(default: each run's model name)")
    selectivity.add_argument("--data", help="dataset (default: the one the runs were trained on)")
    selectivity.add_argument("--data-root")
    selectivity.add_argument("--split", default="test")
    selectivity.add_argument("--layers", type=split_list, metavar="L1,L2",
                             help="comma-separated module names (default: the stage outputs and pre_logits)")
    selectivity.add_argument("--output", help="folder for the plot and tables (default: runs/selectivity-<time>)")
    selectivity.add_argument("--batch-size", type=int, default=256)
    selectivity.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    selectivity.set_defaults(analysis=run_selectivity)


ANALYSES = [add_selectivity]


def add_parser(subparsers) -> None:
    analyze = subparsers.add_parser("analyze", help="analyses of trained models (selectivity)")
    analyses = analyze.add_subparsers(dest="analysis_name", required=True, metavar="ANALYSIS")
    for add in ANALYSES:
        add(analyses)


def run(args) -> None:
    args.analysis(args)


def run_selectivity(args) -> None:
    from ..analysis.selectivity import analyze_selectivity
    from ..errors import UserError

    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}.")
    result = analyze_selectivity(args.checkpoints, labels=args.models, data=args.data, split=args.split,
                                 data_root=args.data_root, layers=args.layers, output=args.output,
                                 batch_size=args.batch_size, precision=args.precision)
    print(f"class selectivity on {result['data']} ({result['split']}):\n{result['table']}")
    for label, layers in result["results"].items():
        signed = [layer for layer, layer_result in layers.items() if layer_result.signed]
        if signed:
            print(f"note: {label} has negative outputs at {', '.join(signed)}; the index assumes non-negative "
                  "activity, so values there can leave [0, 1].")
    print(f"plot {result['figure'][0]}; tables {result['output'] / 'selectivity_summary'}.md/.csv/.json; "
          f"per-channel values {result['output'] / 'selectivity_channels.json'}")
