"""Training-step speed of bf16 autocast and channels_last relative to fp32 contiguous, measured side by side.

This is what `precision: auto` decides per run. Prints one row per model and execution with the median
step time and its ratio to fp32 contiguous measured in the same run (> 1 means faster than fp32).

    python benchmarks/precision_speed.py --models resnet18_cifar,test_resnet --batch-size 64
"""
import argparse

import torch

import reusenet  # noqa: F401  (registers the models)
from reusenet.engine.precision import candidates, time_training_step
from reusenet.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18_cifar,test_resnet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    size = (3, args.input_size, args.input_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, input {size}")
    print("| model | execution | ms/step | speed vs fp32 contiguous |\n| --- | --- | ---: | ---: |")
    for name in args.models.split(","):
        model = create_model(name, num_classes=10)
        timed = {ex: time_training_step(model, ex, args.batch_size, size, 10, steps=args.steps)
                 for ex in candidates(torch.device("cpu"), "auto", "auto")}
        reference = next(t for ex, t in timed.items() if ex.precision == "fp32" and not ex.channels_last)
        for ex, seconds in timed.items():
            print(f"| {name} | {ex.describe()} | {seconds * 1e3:.0f} | {reference / seconds:.2f}x |")


if __name__ == "__main__":
    main()
