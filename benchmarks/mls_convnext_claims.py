"""The multi-level shortcut ConvNeXt paper's claims, measured at reduced scale in one run.

For each claim: the paper's figure, ours, and whether the direction holds. Times are ratios of models
measured side by side in this run (interleaved rounds, median of the per-round ratios), never absolute.

1. Kernel ablation (Section 4.1.2, Table 3): dw7, conv3, dw3, dw3_decomposed on MLS-ConvNeXt-T. Params
   and GMACs at 224x224 / 1000 classes (also S and B for dw7 vs decomposed); peak training memory
   (`reusenet.measure.peak_memory`, a fresh process); training time per epoch and test accuracy after
   `--epochs` epochs of AdamW on the embedded digits (32x32: the ImageNet stem's 4x4 patches are the
   scans' 8x8 pixels), the four models trained epoch by epoch in turn so their epoch times are side by side.
2. Speed (Section 4.1.1, Table 2): per-image test time of ConvNeXt vs the same with the stage shortcut
   (and the paper's full network) for T, S and B, eager, and compiled with `--compile` (slow to build).
3. Memory (Section 4.2.2, Table 5): peak memory of one training iteration at batch 32, 64, 128 for
   ConvNeXt-T, DenseNet-121, ResNet-50 and MLS-ConvNeXt-T (the ImageNet architectures at `--input-size`).

    python benchmarks/mls_convnext_claims.py                 # ~10 min on 2 quiet CPU cores
    python benchmarks/mls_convnext_claims.py --epochs 1 --rounds 3 --memory-batches 32 --output results/mls
"""
import argparse
import statistics
import tempfile
import time

import torch

import reusenet  # noqa: F401  (registers the models)
from reusenet.engine import Trainer, make_config
from reusenet.measure import complexity
from reusenet.measure.memory import peak_memories, peak_memory
from reusenet.measure.timing import latency
from reusenet.models import create_model
from reusenet.report import markdown_table, write_table

SIZES = ('tiny', 'small', 'base')
ABLATION_KERNELS = ('dw7', 'conv3', 'dw3', 'dw3_decomposed')  # Table 3's four
# The paper's prose figures (its tables did not survive): decomposed vs 7x7 depthwise, per size T/S/B.
PAPER_DECOMPOSED = {'params': (-3.06, -3.84, -2.95), 'gmacs': (-6.71, -6.12, -4.68),
                    'peak memory': (-21.45, -8.92, -8.92), 'train time': (-17.83, -6.73, -12.53)}
PAPER_SPEEDUP = (5.19, 5.36, 4.08)  # % faster per-image test time with the stage shortcut, T/S/B
PAPER_VS_RESNET50 = {32: -23.34, 64: -23.43, 128: -24.37}  # % peak training memory, ours vs ResNet-50
MEMORY_MODELS = {'ConvNeXt-T': 'mls_convnext_tiny_baseline', 'DenseNet-121': 'densenet121',
                 'ResNet-50': 'resnet50', 'ours (MLS-ConvNeXt-T)': 'mls_convnext_tiny'}


def mls_name(size: str, kernel: str = 'dw3_decomposed') -> str:
    return f'mls_convnext_{size}' + ('' if kernel == 'dw3_decomposed' else f'_{kernel}')


def change(ours: float, reference: float) -> float:
    return 100 * (ours / reference - 1)


def holds(paper: float, ours: float) -> str:
    """Whether our change has the sign of the paper's."""
    return 'yes' if (paper > 0) == (ours > 0) else 'no'


def show(title: str, rows: list[dict], output: str | None, stem: str) -> None:
    print(f'\n## {title}\n')
    print(write_table(rows, f'{output}/{stem}') if output else markdown_table(rows, digits=2), flush=True)


def interleaved_ratios(models: dict, reference: str, rounds: int, **settings) -> dict[str, float]:
    """Median over rounds of (seconds per batch / the reference's in the same round), every model each round."""
    ratios = {name: [] for name in models}
    for round_index in range(rounds):
        seconds = {name: latency(model, warmup=1 if round_index == 0 else 0, repeats=1, **settings).median_s
                   for name, model in models.items()}
        for name in models:
            ratios[name].append(seconds[name] / seconds[reference])
    return {name: statistics.median(values) for name, values in ratios.items()}


def kernel_ablation(args) -> None:
    rows = []
    for kernel in ABLATION_KERNELS:
        cost = complexity(mls_name('tiny', kernel))
        rows.append({'kernel': kernel, 'params (M)': cost.mparams, 'GMACs': cost.gmacs})
    trained = train_in_turn(args)
    for row in rows:
        memory = peak_memory(mls_name('tiny', row['kernel']), input_size=(3, 32, 32), batch_size=args.train_batch,
                             mode='train', num_classes=10)
        row.update({'peak train memory (MiB)': memory.mib, **trained[row['kernel']]})
    show(f'Kernel ablation, MLS-ConvNeXt-T (params/GMACs at 224, 1000 classes; memory, time and accuracy on '
         f'digits 32x32, batch {args.train_batch}, {args.epochs} epochs, fp32)', rows, args.output, 'kernels')

    dw7, decomposed = rows[0], rows[-1]
    claims = [claim_row('params (tiny)', PAPER_DECOMPOSED['params'][0],
                        change(decomposed['params (M)'], dw7['params (M)'])),
              claim_row('GMACs (tiny)', PAPER_DECOMPOSED['gmacs'][0], change(decomposed['GMACs'], dw7['GMACs'])),
              claim_row('peak train memory (tiny)', PAPER_DECOMPOSED['peak memory'][0],
                        change(decomposed['peak train memory (MiB)'], dw7['peak train memory (MiB)'])),
              claim_row('train time per epoch (tiny)', PAPER_DECOMPOSED['train time'][0],
                        100 * (decomposed['epoch time vs dw7'] - 1))]
    for index, size in enumerate(SIZES[1:], start=1):
        plain, ours = complexity(mls_name(size, 'dw7')), complexity(mls_name(size))
        claims += [claim_row(f'params ({size})', PAPER_DECOMPOSED['params'][index], change(ours.params, plain.params)),
                   claim_row(f'GMACs ({size})', PAPER_DECOMPOSED['gmacs'][index], change(ours.macs, plain.macs))]
    show("Kernel ablation claims (Section 4.1.2), dw3_decomposed vs dw7; accuracies are not in the paper's text",
         claims, args.output, 'kernel_claims')


def claim_row(claim: str, paper: float, ours: float) -> dict:
    return {'claim': claim, 'paper %': paper, 'ours %': ours, 'direction holds': holds(paper, ours)}


def train_in_turn(args) -> dict[str, dict]:
    """Train the four kernels one epoch at a time in turn; epoch times relative to dw7's in the same turn."""
    with tempfile.TemporaryDirectory(prefix='mls_convnext_claims_') as runs:
        trainers = {kernel: Trainer(make_config(dict(
            model=mls_name('tiny', kernel), data='digits', epochs=args.epochs, batch_size=args.train_batch,
            optimizer='adamw', lr=args.lr, weight_decay=0.05, schedule='cosine', hflip=False, seed=0,
            precision='fp32', channels_last=False, workers=0, tensorboard=False, progress=False,
            output=f'{runs}/{kernel}')), log=lambda *_: None) for kernel in ABLATION_KERNELS}
        return _train_epochs_in_turn(trainers, args.epochs)


def _train_epochs_in_turn(trainers: dict, epochs: int) -> dict[str, dict]:
    results, ratios = {}, {kernel: [] for kernel in trainers}
    for epoch in range(1, epochs + 1):
        for kernel, trainer in trainers.items():  # the last epoch's fit() also evaluates the test split
            results[kernel] = trainer.fit(stop_after_epoch=epoch)
        for kernel, trainer in trainers.items():
            ratios[kernel].append(trainer.history[-1]['train_time_s'] / trainers['dw7'].history[-1]['train_time_s'])
    return {kernel: {'epoch time vs dw7': statistics.median(ratios[kernel]),
                     'epoch time (s, noisy)': statistics.median(row['train_time_s'] for row in trainer.history),
                     'test top-1 (%)': results[kernel]['test_acc1']}
            for kernel, trainer in trainers.items()}


def speed_claim(args) -> None:
    size = (3, args.input_size, args.input_size)
    executions = [('eager', False)] + ([('compiled', True)] if args.compile else [])
    rows = []
    for index, model_size in enumerate(SIZES):
        names = {'ConvNeXt': f'mls_convnext_{model_size}_baseline', '+ stage shortcut': mls_name(model_size, 'dw7'),
                 "paper's network": mls_name(model_size)}
        for label, compiled in executions:
            models = {name: create_model(model, num_classes=300).eval() for name, model in names.items()}
            if compiled:
                models = {name: torch.compile(model) for name, model in models.items()}
            ratios = interleaved_ratios(models, 'ConvNeXt', args.rounds, input_size=size,
                                        batch_size=args.speed_batch, mode='inference')
            speedup = 100 * (1 / ratios['+ stage shortcut'] - 1)
            rows.append({'size': model_size, 'execution': label, 'paper: rate +%': PAPER_SPEEDUP[index],
                         'ours: rate +% (stage shortcut)': speedup,
                         'ours: rate +% (paper\'s network)': 100 * (1 / ratios['paper\'s network'] - 1),
                         'direction holds': holds(PAPER_SPEEDUP[index], speedup)})
    show(f'Speed claim (Section 4.1.1): per-image test-time rate vs ConvNeXt, {args.input_size}x{args.input_size}, '
         f'batch {args.speed_batch}, fp32, median of {args.rounds} interleaved rounds', rows, args.output, 'speed')


def memory_claim(args) -> None:
    size = (3, args.input_size, args.input_size)
    batches = args.memory_batches
    mib = {label: {r.batch_size: r.mib for r in peak_memories(name, input_size=size, batch_sizes=batches,
                                                             modes=['train'], num_classes=300)}
           for label, name in MEMORY_MODELS.items()}
    ours = 'ours (MLS-ConvNeXt-T)'
    rows = [{'model': label, **{f'batch {b} (MiB)': mib[label][b] for b in batches}} for label in MEMORY_MODELS]
    show(f'Peak memory of one training iteration (Section 4.2.2), {args.input_size}x{args.input_size}, 300 classes, '
         'fp32, CPU resident set', rows, args.output, 'memory')
    claims = []
    for batch in batches:
        vs_resnet = change(mib[ours][batch], mib['ResNet-50'][batch])
        lowest = min(mib, key=lambda label: mib[label][batch])
        reductions = {label: change(mib[ours][batch], mib[label][batch]) for label in MEMORY_MODELS if label != ours}
        claims.append({'batch': batch, 'paper: vs ResNet-50 %': PAPER_VS_RESNET50[batch],
                       'ours: vs ResNet-50 %': vs_resnet,
                       'direction holds': holds(PAPER_VS_RESNET50[batch], vs_resnet),
                       'lowest (paper: ours)': lowest,
                       'largest cut (paper: vs DenseNet-121)': min(reductions, key=reductions.get)})
    show('Memory claims (Section 4.2.2)', claims, args.output, 'memory_claims')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=3, help='training epochs per kernel (ablation)')
    parser.add_argument('--train-batch', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--input-size', type=int, default=64, help='input side for the speed and memory claims')
    parser.add_argument('--speed-batch', type=int, default=16)
    parser.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds (speed claim)')
    parser.add_argument('--memory-batches', type=int, nargs='+', default=[32, 64, 128], choices=(32, 64, 128),
                        help='batch sizes of the memory claim (fewer for a quicker run)')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile models (minutes to build)')
    parser.add_argument('--only', choices=('kernels', 'speed', 'memory'), help='run one claim')
    parser.add_argument('--output', help='also write every table as Markdown, CSV and JSON under this folder')
    args = parser.parse_args()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; MACs are multiply-accumulates of conv '
          'and linear layers; peak memory is the resident-set high-water mark of a fresh process minus its baseline',
          flush=True)
    start = time.perf_counter()
    for claim, run in (('kernels', kernel_ablation), ('speed', speed_claim), ('memory', memory_claim)):
        if args.only in (None, claim):
            run(args)
    print(f'\n{time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
    main()
