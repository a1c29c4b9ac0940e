"""`reusenet bench`: params, GMACs, peak memory and speed of models, side by side."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="params, GMACs, peak memory, latency and throughput of models")
    bench.add_argument("models", nargs="+", metavar="MODEL", help="reusenet or timm model names")
    bench.add_argument("--input-size", type=int, help="square input size (default: each model's own)")
    bench.add_argument("--batch-sizes", default="32,64,128", help="comma-separated (default 32,64,128)")
    bench.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    bench.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    bench.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    bench.add_argument("--num-classes", type=int, help="classifier size (default: each model's own)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed passes before timing (default 2)")
    bench.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported (default 5)")
    bench.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak memory (faster)")
    bench.add_argument("--output", help="folder for bench.md/.csv/.json (default runs/bench-<timestamp>)")


def run(args) -> None:
    from ..measure.bench import NOTES, bench_model, parse_batch_sizes
    from ..report import write_table

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    input_size = (3, args.input_size, args.input_size) if args.input_size else None
    rows = []
    for model in args.models:
        rows += bench_model(model, batch_sizes=batch_sizes, input_size=input_size, precision=args.precision,
                            channels_last=args.channels_last, device=args.device, num_classes=args.num_classes,
                            warmup=args.warmup, repeats=args.repeats, memory=args.memory)
    output = Path(args.output or f"runs/bench-{datetime.now():%Y%m%d-%H%M%S}")
    print(write_table(rows, output / "bench"))
    print(f"\n{NOTES}\nwritten: {output / 'bench'}.md, .csv, .json")
