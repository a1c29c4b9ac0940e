"""`reusenet refinet fit|eval|predict`: RefiNet hierarchical classification (hierarchy/pipeline.py)."""
from __future__ import annotations

import json

# Frequent settings get their own flags; every other one goes through --set key=value.
FIT_FLAGS = {
    "model": (str, "level-1 model (any timm or reusenet model)"),
    "data": (str, "dataset (see `reusenet train --help`)"),
    "data_root": (str, "dataset folder"),
    "level1_weights": (str, "a trained `reusenet train` run to use as level 1 instead of training one"),
    "affinity": (str, "mass (Eq. 6) or confusion (Eq. 7)"),
    "n1": (int, "held-out val images for the affinity (default: all)"),
    "clustering": (str, "spectral, agglomerative, affinity-propagation or kmedoids"),
    "k": (int, "number of clusters"),
    "stage": (int, "feature_info index where level 1 is cut for the cluster CNNs"),
    "split": (str, "none, largest (RefiNet-L3) or size (split until <= --max-cluster-size)"),
    "max_cluster_size": (int, "largest cluster allowed by --split size"),
    "router": (str, "the artifact's default router: vote, soft or retrain"),
    "seed": (int, "seed of sampling, clustering and training"),
    "output": (str, "output folder (default runs/refinet-MODEL-DATA-TIME)"),
}


def add_parser(subparsers) -> None:
    refinet = subparsers.add_parser("refinet", help="RefiNet hierarchical classification: fit, eval, predict")
    actions = refinet.add_subparsers(dest="action", required=True)

    fit = actions.add_parser("fit", help="train level 1, cluster the labels, train a CNN per cluster, save")
    fit.add_argument("--recipe", help="name in recipes/refinet/ (digits, imagenet100, imagenet200) or a YAML path")
    for key, (kind, text) in FIT_FLAGS.items():
        fit.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, help=text)
    fit.add_argument("--retrain-router", dest="retrain_router", action="store_true", default=None,
                     help="also train the 'retrain' router (level 1's output layer on cluster labels)")
    fit.add_argument("--no-tsne", dest="tsne", action="store_false", default=None, help="skip the t-SNE plot")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="any setting, e.g. --set level1_train.epochs=3 --set k_sweep=[2,3,4]")

    evaluate = actions.add_parser("eval", help="flat vs RefiNet variants on the data a RefiNet was fitted on")
    evaluate.add_argument("artifact", help="fit output folder or its refinet.safetensors")
    evaluate.add_argument("--split", nargs="+", help="splits to evaluate (default: val and test)")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")

    predict = actions.add_parser("predict", help="classify image files with a saved RefiNet")
    predict.add_argument("artifact", help="fit output folder or its refinet.safetensors")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--router", help="vote, soft or retrain (default: the one it was fitted with)")
    predict.add_argument("--top", type=int, default=1, help="how many classes to print per image")


def run(args) -> None:
    {"fit": run_fit, "eval": run_eval, "predict": run_predict}[args.action](args)


def run_fit(args) -> None:
    from ..engine.config import parse_override
    from ..hierarchy.pipeline import fit, load_refinet_config

    overrides = [parse_override(text) for text in args.overrides]
    overrides += [(key, getattr(args, key)) for key in (*FIT_FLAGS, "retrain_router", "tsne")
                  if getattr(args, key) is not None]
    fit(load_refinet_config(args.recipe, overrides))


def run_eval(args) -> None:
    from ..hierarchy.pipeline import evaluate_artifact
    from ..report import markdown_table

    _, rows, clusters = evaluate_artifact(args.artifact, args.split, args.data_root, args.batch_size)
    if args.json:
        print(json.dumps({"results": rows, "clusters": clusters}, indent=2))
        return
    print(markdown_table(rows, digits=2) + "\n\n" + markdown_table(clusters, digits=2))


def run_predict(args) -> None:
    from ..errors import UserError
    from ..hierarchy import load_refinet
    from ..hierarchy.router import check_router

    if args.top < 1:
        raise UserError(f"--top must be positive, got {args.top}.")
    if args.router is not None:
        check_router(args.router)
    for entry in load_refinet(args.artifact).predict_files(args.images, args.router, args.top):
        print(entry["path"] + ": " + ", ".join(f"{name} ({p:.3f})" for name, p in entry["classes"]))
