"""Training-step cost of Highway-19 and ResFuse-19 relative to ResNet-19, against the ResFuse paper's Table 3.

Table 3 reports time per epoch on ImageNet-100 (one GPU, Theano): ResNet-19 6.470 min, Highway-19 6.617 min
(x1.023), ResFuse-19 6.803 min (x1.051). Here the three models train on the same random 64x64 batch, one
step each in turn, the order rotating every repeat so none always runs first; after the warm-up steps,
each repeat gives a paired ratio (model step / ResNet-19 step of the same repeat) and the table prints the
medians, which the load of a shared machine disturbs far less than the step times themselves. A step is
forward, cross-entropy, backward and a Nesterov SGD update (the recipe's optimizer). Each execution
(precision + memory format) is a separate block of the same run: fp32 contiguous and bf16 autocast with
channels_last.

    python benchmarks/resfuse_cost.py                      # batch 64, 64x64, 5 repeats, fp32 and bf16
    python benchmarks/resfuse_cost.py --precisions bf16 --repeats 9
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import reusenet  # noqa: F401  (registers the models)
from reusenet.engine.precision import Execution, cpu_supports_bf16
from reusenet.measure import count_macs, count_params
from reusenet.models import create_model

MODELS = {'resnet19': 'ResNet-19', 'highway19': 'Highway-19', 'resfuse19': 'ResFuse-19'}
PAPER_MINUTES = {'resnet19': 6.470, 'highway19': 6.617, 'resfuse19': 6.803}  # Table 3, time/epoch
NUM_CLASSES = 100


def training_step(model, execution: Execution, batch_size: int, size: int):
    """A function running one training step of `model` on a fixed random batch.

    Not `engine.precision.time_training_step`: that one copies the model and warms up on every call, which
    would double the cost of timing the models one step at a time in turn.
    """
    model = model.train()
    if execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    images = execution.prepare(torch.randn(batch_size, 3, size, size, generator=generator))
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def step() -> float:
        start = time.perf_counter()
        with execution.autocast():
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def measure(execution: Execution, batch_size: int, size: int, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of every model, repeat by repeat, the models interleaved."""
    torch.manual_seed(0)
    steps = {name: training_step(create_model(name, num_classes=NUM_CLASSES), execution, batch_size, size)
             for name in MODELS}
    names = list(MODELS)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            times[name].append(steps[name]())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--input-size', type=int, default=64)
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per model before the repeats')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--precisions', default='fp32,bf16',
                        help='fp32 runs contiguous, bf16 runs under autocast with channels_last')
    args = parser.parse_args()
    executions = [Execution(torch.device('cpu'), p, p == 'bf16') for p in args.precisions.split(',')]
    if any(ex.precision == 'bf16' for ex in executions) and not cpu_supports_bf16():
        print('this CPU has no bf16 support in oneDNN: measuring fp32 only')
        executions = [ex for ex in executions if ex.precision == 'fp32']

    size = args.input_size
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, '
          f'input 3x{size}x{size}, {NUM_CLASSES} classes, warm-up {args.warmup}, {args.repeats} interleaved repeats')
    print('| execution | model | params | GMACs/image | ms/step (median) | step ratio vs ResNet-19 (median) '
          '| MACs ratio | paper time/epoch ratio |')
    print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    shapes_only = {name: create_model(name, num_classes=NUM_CLASSES, device='meta') for name in MODELS}
    macs = {name: count_macs(model, (3, size, size)) for name, model in shapes_only.items()}
    params = {name: count_params(model) for name, model in shapes_only.items()}
    for execution in executions:
        times = measure(execution, args.batch_size, size, args.warmup, args.repeats)
        for name, label in MODELS.items():
            ratio = statistics.median(t / r for t, r in zip(times[name], times['resnet19'], strict=True))
            print(f'| {execution.describe()} | {label} | {params[name]:,} | {macs[name] / 1e9:.3f} '
                  f'| {statistics.median(times[name]) * 1e3:.0f} | {ratio:.3f} '
                  f'| {macs[name] / macs["resnet19"]:.3f} | {PAPER_MINUTES[name] / PAPER_MINUTES["resnet19"]:.3f} |')


if __name__ == '__main__':
    main()
