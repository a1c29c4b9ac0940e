"""`reusenet eval`: evaluate saved weights on a dataset split."""
from __future__ import annotations

COMMAND = "eval"


def add_parser(subparsers) -> None:
    evaluate = subparsers.add_parser("eval", help="evaluate saved weights on a dataset split")
    evaluate.add_argument("weights", help="run folder, model.safetensors, or last.pt")
    evaluate.add_argument("--data", help="dataset (default: the one it was trained on)")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))


def run(args) -> None:
    from ..engine import evaluate_saved

    result = evaluate_saved(args.weights, data=args.data, split=args.split, data_root=args.data_root,
                            batch_size=args.batch_size, precision=args.precision)
    print(f"{result['model']} on {result['data']} ({result['split']}, {result['images']} images): "
          f"top-1 {result[args.split + '_acc1']:.2f}% top-5 {result[args.split + '_acc5']:.2f}% "
          f"loss {result[args.split + '_loss']:.4f}")
