"""Speed of REAF relative to dense convolution, measured side by side in one run (targets: <= 1.10).

1. Layer: forward+backward of REAFConv2d 4-3-4 vs nn.Conv2d, same in/out channels (default N=128, 72->72,
   32x32, 3x3), in fp32 and bf16 autocast, both channels_last. Also the G_M = 1 paths (native grouped conv vs
   the masked dense weight) that decide REAFConv2d's per-layer default.
2. Network: a training step (forward, backward, SGD) of reaf_resnet50_cifar (C=72, 4-3-4) vs resnet50_v1_cifar
   at 32x32; its MACs ratio is printed next to the time ratio.

Candidates are timed in turn within each repeat (interleaved), after a warm-up, and the median per candidate is
reported, so load from other processes affects them alike. Prints Markdown tables.

    python benchmarks/reaf_speed.py                       # defaults above, a few minutes on 2 cores
    python benchmarks/reaf_speed.py --batch 32 --repeats 5 --net-batch 16
"""
import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn

import reusenet  # noqa: F401  (registers the models)
from reusenet.engine.precision import Execution, cpu_supports_bf16
from reusenet.layers.reaf import REAFConv2d
from reusenet.measure import count_macs
from reusenet.models import create_model

CPU = torch.device('cpu')


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per candidate; every repeat runs each candidate once, in turn."""
    for step in steps.values():  # warm-up: kernels, allocator, oneDNN primitive caches
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def layer_step(conv: nn.Module, x: torch.Tensor, execution: Execution) -> Callable[[], None]:
    def step():
        with execution.autocast():
            out = conv(x)
        out.float().sum().backward()
        conv.zero_grad(set_to_none=True)
        x.grad = None
    return step


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  execution: Execution) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with execution.autocast():
            loss = nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def layer_candidates(channels: int, config: tuple[int, int, int], impls: list[str | None]) -> dict[str, nn.Module]:
    g_in, g_merge, g_out = config
    convs = {'dense nn.Conv2d': nn.Conv2d(channels, channels, 3, padding=1, bias=False)}
    for impl in impls:
        conv = REAFConv2d(channels, channels, 3, g_in=g_in, g_merge=g_merge, g_out=g_out, impl=impl)
        convs[f'REAF {g_in}-{g_merge}-{g_out} {conv.impl}'] = conv
    return {name: conv.to(memory_format=torch.channels_last) for name, conv in convs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=128, help='layer benchmark batch')
    parser.add_argument('--channels', type=int, default=72)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--net-batch', type=int, default=32, help='network training-step batch')
    parser.add_argument('--net-repeats', type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    precisions = ['fp32', 'bf16'] if cpu_supports_bf16() else ['fp32']
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; medians of interleaved repeats, '
          f'ratio = time / dense time (lower is faster)\n')

    print(f'| layer, N={args.batch}, {args.channels}->{args.channels}, {args.size}x{args.size}, 3x3, fwd+bwd '
          '| precision | ms | ratio |\n| --- | --- | ---: | ---: |')
    layer_sets = [((4, 3, 4), [None]), ((4, 1, 4), [None, 'masked']), ((8, 1, 8), [None, 'masked'])]
    for precision in precisions:
        execution = Execution(CPU, precision, channels_last=True)
        x = execution.prepare(torch.randn(args.batch, args.channels, args.size, args.size)).requires_grad_()
        for config, impls in layer_sets:
            convs = layer_candidates(args.channels, config, impls)
            medians = interleaved_medians({n: layer_step(c, x, execution) for n, c in convs.items()}, args.repeats)
            dense = medians['dense nn.Conv2d']
            for name, seconds in medians.items():  # each set has its own dense reference, timed alongside
                print(f'| {name} | {precision} | {seconds * 1e3:.1f} | {seconds / dense:.3f} |')

    size = (3, args.size, args.size)
    names = ('resnet50_v1_cifar', 'reaf_resnet50_cifar')
    models = {name: create_model(name, num_classes=100).train() for name in names}
    macs = {name: count_macs(model, size) for name, model in models.items()}
    macs_ratio = macs['reaf_resnet50_cifar'] / macs['resnet50_v1_cifar']
    print(f'\n| training step, batch {args.net_batch}, {args.size}x{args.size} | precision | ms | time ratio | '
          'MACs ratio |\n| --- | --- | ---: | ---: | ---: |')
    for precision in precisions:
        execution = Execution(CPU, precision, channels_last=True)
        images = execution.prepare(torch.randn(args.net_batch, *size))
        labels = torch.randint(0, 100, (args.net_batch,))
        steps = {name: training_step(model.to(memory_format=torch.channels_last), images, labels, execution)
                 for name, model in models.items()}
        medians = interleaved_medians(steps, args.net_repeats)
        base = medians['resnet50_v1_cifar']
        for name, seconds in medians.items():
            ratio = f'{macs_ratio:.3f}' if name == 'reaf_resnet50_cifar' else '1'
            print(f'| {name} | {precision} | {seconds * 1e3:.0f} | {seconds / base:.3f} | {ratio} |')


if __name__ == '__main__':
    main()
