"""Peak memory of a training step relative to ResNet-50 at the same batch and input size, in one run.

The multi-level shortcut ConvNeXt paper (Table 5) reports peak memory of one training iteration at batch
32, 64 and 128 against ResNet-50 and DenseNet-121. The reference here is timm's `resnet50`, which is
torchvision's ResNet-50 architecture (v1.5, 25,557,032 parameters). Each model is measured in a fresh
process by `reusenet.measure.peak_memories` (see its docstring for what is counted); the repeats are
interleaved (reference, model A, model B, reference, ...) and the median of each is compared, so the
ratio does not drift with what else the machine is doing.

    python benchmarks/peak_memory.py --models resnet18,densenet121,convnext_tiny --batch-sizes 32 --input-size 64
"""
import argparse
import statistics

import torch

import reusenet  # noqa: F401  (registers the models)
from reusenet.measure import peak_memories
from reusenet.measure.bench import parse_batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,densenet121,convnext_tiny")
    parser.add_argument("--reference", default="resnet50")
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    names = [args.reference] + [name for name in args.models.split(",") if name != args.reference]
    settings = dict(input_size=(3, args.input_size, args.input_size), batch_sizes=batch_sizes, modes=["train"],
                    precision=args.precision, num_classes=args.num_classes)
    print(f"torch {torch.__version__}, training step (SGD momentum), {args.precision}, "
          f"input 3x{args.input_size}x{args.input_size}, {args.num_classes} classes, "
          f"{args.repeats} interleaved repeats")
    samples = {(name, batch): [] for name in names for batch in batch_sizes}
    for _ in range(args.repeats):
        for name in names:
            for result in peak_memories(name, **settings):
                samples[(name, result.batch_size)].append(result.mib)
    print(f"| model | batch | peak MiB (median) | ratio to {args.reference} |\n| --- | ---: | ---: | ---: |")
    for batch in batch_sizes:
        reference = statistics.median(samples[(args.reference, batch)])
        for name in names:
            peak = statistics.median(samples[(name, batch)])
            print(f"| {name} | {batch} | {peak:.1f} | {peak / reference:.3f} |")


if __name__ == "__main__":
    main()
