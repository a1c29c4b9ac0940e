"""`reusenet compare`: train several models the same way and report them side by side, as the papers do.

Every run uses the same recipe, data and seeds; only the model (and its arguments) changes. The output
folder holds one training run per (model, seed) under runs/, the paper-style table (top-1, top-5, params,
GMACs, peak memory, training time per epoch, test time per image; mean and std over seeds), the figures
(PNG and SVG) and index.md, which ties them together. Rerunning into the same folder reuses finished runs
and measurements and resumes an interrupted run from its last epoch.

A comparison is given either as model names on the command line or as a spec file:

    # first line: title comment
    title: ResFRI passage pruning ratio
    recipe: resfri-cifar100        # base training recipe (name or path); default: digits
    reduced: true                  # use the recipe's reduced setting
    overrides: {epochs: 3}         # config overrides for every run
    seeds: [0]
    x: prune_ratio                 # optional: a model_args key; accuracy is also plotted against it
    batch_sizes: [32, 64, 128]     # optional: batch sizes of the peak-memory measurement
    variability: true              # optional: force (or with false, skip) the output-variability analysis
    runs:
      - {label: "ratio 0.0", model: resfri_add_cifar, model_args: {prune_ratio: 0.0}}
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import yaml

from ..analysis.variability import predict, same_family, variability_summary
from ..data import build_loader
from ..engine import load_config, load_trained, train
from ..engine.checkpoint import CHECKPOINT_NAME
from ..engine.config import nested_overrides, read_yaml
from ..engine.precision import Execution
from ..engine.summary import write_json
from ..engine.train import load_data
from ..errors import UserError, did_you_mean
from ..measure import complexity, latency, peak_memories
from . import figures
from .tables import markdown_table, write_table

DEFAULT_RECIPE = "digits"
DEFAULT_BATCH_SIZES = (32, 64, 128)
SPEC_KEYS = ("title", "recipe", "reduced", "overrides", "seeds", "x", "batch_sizes", "variability", "runs")
RUN_KEYS = ("label", "model", "model_args")


@dataclass
class RunSpec:
    label: str
    model: str
    model_args: dict = field(default_factory=dict)


@dataclass
class CompareSpec:
    """What to compare and how; see the module docstring for the file format."""
    runs: list[RunSpec]
    title: str = "Model comparison"
    recipe: str = DEFAULT_RECIPE
    reduced: bool = False
    overrides: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    x: str | None = None
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    variability: bool | None = None  # None: when all models are of one family

    def check(self) -> CompareSpec:
        if not self.runs:
            raise UserError("nothing to compare: give --models A,B,... or a spec file with runs.")
        labels = [run.label for run in self.runs]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise UserError(f"run labels must be unique; repeated: {', '.join(duplicates)}.")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise UserError(f"seeds must be a list of integers, e.g. [0, 1]; got {self.seeds!r}.")
        if not self.batch_sizes or not all(isinstance(b, int) and b > 0 for b in self.batch_sizes):
            raise UserError(f"batch_sizes must be positive integers, e.g. [32, 64]; got {self.batch_sizes!r}.")
        if self.x is not None:
            missing = [run.label for run in self.runs if not isinstance(run.model_args.get(self.x), (int, float))]
            if missing:
                raise UserError(f"x is {self.x!r}, but runs {', '.join(missing)} have no numeric "
                                f"model_args.{self.x}; give every run that argument or drop x.")
        return self


def spec_from_models(models: list[str]) -> CompareSpec:
    return CompareSpec(runs=[RunSpec(label=name, model=name) for name in models],
                       title=f"{', '.join(models)}")


def load_spec(path: str | Path) -> CompareSpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file {path} does not exist.")
    values = read_yaml(path)
    unknown = [key for key in values if key not in SPEC_KEYS]
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}.{did_you_mean(unknown[0], SPEC_KEYS)} "
                        f"Known keys: {', '.join(SPEC_KEYS)}.")
    runs = []
    for index, entry in enumerate(values.get("runs") or []):
        if not isinstance(entry, dict) or "model" not in entry or set(entry) - set(RUN_KEYS):
            raise UserError(f"{path}: run {index + 1} must be a mapping with model and optionally label and "
                            f"model_args, got {entry!r}.")
        if not isinstance(entry.get("model_args", {}), dict):
            raise UserError(f"{path}: model_args of run {index + 1} must be a mapping.")
        runs.append(RunSpec(label=str(entry.get("label", entry["model"])), model=entry["model"],
                            model_args=dict(entry.get("model_args") or {})))
    if not isinstance(values.get("overrides", {}), dict):
        raise UserError(f"{path}: overrides must be a mapping of configuration keys, e.g. {{epochs: 3}}.")
    seeds = values.get("seeds", [0])
    spec = CompareSpec(runs=runs, title=str(values.get("title") or _title_comment(path) or path.stem),
                       recipe=str(values.get("recipe", DEFAULT_RECIPE)), reduced=bool(values.get("reduced", False)),
                       overrides=dict(values.get("overrides") or {}),
                       seeds=seeds if isinstance(seeds, list) else [seeds],
                       x=values.get("x"), batch_sizes=list(values.get("batch_sizes", DEFAULT_BATCH_SIZES)),
                       variability=values.get("variability"))
    return spec.check()


def _title_comment(path: Path) -> str:
    first = path.read_text().lstrip().splitlines()[0] if path.read_text().strip() else ""
    return first[1:].strip() if first.startswith("#") else ""


def default_output() -> Path:
    return Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "run"


def run_config(spec: CompareSpec, run: RunSpec, seed: int, folder: Path):
    overrides = nested_overrides(spec.overrides) + [("model", run.model)]
    overrides += [(f"model_args.{key}", value) for key, value in run.model_args.items()]
    overrides += [("seed", seed), ("output", str(folder)), ("progress", False), ("tensorboard", False)]
    return load_config(spec.recipe, overrides, reduced=spec.reduced)


def train_or_reuse(config, folder: Path, log) -> dict:
    """results.json of a finished run; otherwise train (resuming from last.pt when there is one)."""
    saved = folder / "config.yaml"
    if saved.is_file() and yaml.safe_load(saved.read_text()) != config.to_dict():
        raise UserError(f"{folder} holds a run with other settings (see its config.yaml); "
                        "choose another --output for a comparison with different settings.")
    results = folder / "results.json"
    if results.is_file():
        log(f"reusing the finished run in {folder}")
        return json.loads(results.read_text())
    return train(config, resume=(folder / CHECKPOINT_NAME).is_file(), log=log)


def parse_execution(text: str) -> Execution:
    """Execution from its `describe()` text, e.g. 'cpu bf16 channels_last'."""
    device, precision, layout = text.split()
    return Execution(device=torch.device(device), precision=precision,
                     channels_last=layout == "channels_last")


def measure_run(run: RunSpec, config, results: dict, folder: Path, batch_sizes: list[int], log) -> dict:
    """Params, GMACs, peak memory per batch size and test time per image; cached in measure.json."""
    cache = folder / "measure.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("batch_sizes") == list(batch_sizes):
            return cached
    meta = json.loads((Path(config.output) / "model.json").read_text())
    execution = parse_execution(results["execution"])
    settings = dict(input_size=tuple(meta["input_size"]), precision=execution.precision,
                    channels_last=execution.channels_last, device=execution.device.type,
                    num_classes=meta["num_classes"], model_args=dict(config.model_args))
    log(f"measuring {run.label}: complexity, peak memory at batch {', '.join(map(str, batch_sizes))}, test latency")
    info = complexity(run.model, input_size=settings["input_size"], num_classes=meta["num_classes"],
                      **config.model_args)
    peaks = peak_memories(run.model, batch_sizes=batch_sizes, **settings)
    test_batch = config.eval_batch_size or config.batch_size
    timing = latency(run.model, batch_size=test_batch, mode="inference", warmup=2, repeats=5, **settings)
    measured = {"batch_sizes": list(batch_sizes), "params": info.params, "macs": info.macs,
                "execution": results["execution"], "test_batch": test_batch,
                "test_ms_per_image": timing.per_image_ms, "test_iqr_ms_per_image": 1e3 * timing.spread_s / test_batch,
                "memory": [{"mode": p.mode, "batch": p.batch_size, "mib": p.mib} for p in peaks]}
    write_json(cache, measured)
    return measured


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(run: RunSpec, seed_results: list[dict], histories: list[list[dict]], measured: dict,
              x: str | None) -> dict:
    split = "test" if "test_acc1" in seed_results[0] else "val"
    acc1, acc1_std = _mean_std([r[f"{split}_acc1"] for r in seed_results])
    acc5, acc5_std = _mean_std([r[f"{split}_acc5"] for r in seed_results])
    row = {"label": run.label, "model": run.model}
    if x is not None:
        row[x] = run.model_args[x]
    first_batch = measured["batch_sizes"][0]
    peak = {(m["mode"], m["batch"]): m["mib"] for m in measured["memory"]}
    row.update({
        "acc1": acc1, "acc1_std": acc1_std, "acc5": acc5, "acc5_std": acc5_std, "split": split,
        "params_M": measured["params"] / 1e6, "GMACs": measured["macs"] / 1e9,
        f"train_peak_MiB_b{first_batch}": peak[("train", first_batch)],
        f"inference_peak_MiB_b{first_batch}": peak[("inference", first_batch)],
        "train_s_per_epoch": statistics.fmean(row_["train_time_s"] for h in histories for row_ in h),
        "test_ms_per_image": measured["test_ms_per_image"], "seeds": len(seed_results),
        "execution": measured["execution"]})
    return row


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """Per-epoch mean over seeds of every numeric column."""
    rows = []
    for epoch_rows in zip(*histories, strict=False):
        keys = [k for k, v in epoch_rows[0].items() if isinstance(v, (int, float))]
        rows.append({k: statistics.fmean(r[k] for r in epoch_rows) for k in keys})
    return rows


def variability_analysis(spec: CompareSpec, folders: dict[str, Path], output: Path, log) -> str:
    """Predictions of each run's first seed on the test split -> variability table, figure, Markdown section."""
    models = {label: load_trained(folder)[0] for label, folder in folders.items()}
    if spec.variability is None and not same_family(list(models.values())):
        return ""
    first = next(iter(folders.values()))
    config = load_config(str(first / "config.yaml"))
    datasets = load_data(config)
    split = "test" if "test" in datasets else "val"
    loader = build_loader(datasets[split], 256, train=False)
    execution = Execution(torch.device("cpu"), "fp32", False)
    log(f"output variability of {', '.join(models)} on the {split} split")
    predictions, labels = {}, None
    for label, model in models.items():
        predictions[label], labels = predict(model, loader, execution)
    classes = list(datasets[split].classes)
    summary = variability_summary(predictions, labels, len(classes))
    write_json(output / "variability.json", summary)
    table = write_table([{"model a": p["a"], "model b": p["b"], "disagreement_%": 100 * p["disagreement"]}
                         for p in summary["disagreement"]], output / "disagreement")
    figures.variability_figure(summary, classes, f"{spec.title}: output variability ({split}, seed {spec.seeds[0]})",
                               output / "variability")
    return (f"## Output variability\n\nHow differently the models classify the same {summary['images']} {split} images "
            f"(seed {spec.seeds[0]} of each): the share of images on which two models predict different classes, "
            f"and the spread (standard deviation across models) of per-class top-1. Mean disagreement "
            f"{100 * summary['mean_disagreement']:.2f}%, per-class spread mean "
            f"{100 * summary['class_spread_mean']:.2f} pts, max {100 * summary['class_spread_max']:.2f} pts."
            f"\n\n{table}\n\n"
            f"![output variability](variability.png)\n")


def run_compare(spec: CompareSpec, output: Path | None = None, log=print) -> Path:
    """Train, measure, tabulate and plot every run of `spec`; returns the path of index.md."""
    spec.check()
    output = Path(output or default_output())
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "spec.json", {"title": spec.title, "recipe": spec.recipe, "reduced": spec.reduced,
                                      "overrides": spec.overrides, "seeds": spec.seeds, "x": spec.x,
                                      "batch_sizes": spec.batch_sizes,
                                      "runs": [vars(run) for run in spec.runs]})
    rows, histories, memory_rows, first_folders, config = [], {}, [], {}, None
    total = len(spec.runs) * len(spec.seeds)
    for index, run in enumerate(spec.runs):
        seed_results, seed_histories = [], []
        for k, seed in enumerate(spec.seeds):
            folder = output / "runs" / slug(run.label) / f"seed-{seed}"
            config = run_config(spec, run, seed, folder)
            log(f"[{index * len(spec.seeds) + k + 1}/{total}] {run.label} ({run.model}), seed {seed} -> {folder}")
            seed_results.append(train_or_reuse(config, folder, log))
            seed_histories.append(json.loads((folder / "summary.json").read_text()))
            first_folders.setdefault(run.label, folder)
        measured = measure_run(run, config, seed_results[0], first_folders[run.label], spec.batch_sizes, log)
        rows.append(summarize(run, seed_results, seed_histories, measured, spec.x))
        histories[run.label] = mean_history(seed_histories)
        peak = {(m["mode"], m["batch"]): m["mib"] for m in measured["memory"]}
        memory_rows += [{"label": run.label, "batch": b, "train_peak_MiB": peak[("train", b)],
                         "inference_peak_MiB": peak[("inference", b)]} for b in spec.batch_sizes]
    return write_report(spec, output, rows, histories, memory_rows, config, first_folders, log)


def write_report(spec: CompareSpec, output: Path, rows, histories, memory_rows, config, first_folders, log) -> Path:
    table = write_table(rows, output / "table")
    memory_table = write_table(memory_rows, output / "memory")
    seeds = f"mean +- std over seeds {', '.join(map(str, spec.seeds))}" if len(spec.seeds) > 1 \
        else f"seed {spec.seeds[0]}"
    split = rows[0]["split"]
    figures.accuracy_scatter(rows, "GMACs", "GMACs per image (multiply-accumulates of conv and linear layers)",
                             f"{spec.title}: {split} top-1 vs GMACs", output / "accuracy_vs_gmacs")
    figures.accuracy_scatter(rows, "params_M", "parameters (millions)", f"{spec.title}: {split} top-1 vs parameters",
                             output / "accuracy_vs_params")
    figures.training_curves(histories, f"{spec.title}: training curves ({seeds})", output / "training_curves")
    figures.memory_vs_batch(memory_rows, f"{spec.title}: peak memory vs batch size (each model in the precision "
                            "and layout its run used)",
                            output / "memory_vs_batch")
    sections = [
        f"# {spec.title}\n",
        f"Recipe `{spec.recipe}`{' (reduced)' if spec.reduced else ''} on `{config.data}`, "
        f"{config.epochs} epoch{'s' if config.epochs > 1 else ''}, "
        f"batch {config.batch_size}, {seeds}. Accuracy on the {split} split. Runs: `runs/<label>/seed-<n>/`.\n",
        "## Results\n", table + "\n",
        f"acc1/acc5: {split} top-1/top-5 (%), {seeds}. GMACs: multiply-accumulates of conv and linear layers per "
        "image. Peak MiB: most memory a training step / inference pass holds (weights, batch, activations, "
        "gradients, optimizer state; on a CPU the resident-set high-water mark of a fresh process minus its "
        "baseline). train_s_per_epoch: wall time of a training epoch. test_ms_per_image: median inference "
        "latency per image at the test batch size. execution: device, precision, memory format.\n",
        "![top-1 vs GMACs](accuracy_vs_gmacs.png)\n", "![top-1 vs parameters](accuracy_vs_params.png)\n",
        "## Training curves\n", "![training curves](training_curves.png)\n",
        "## Peak memory\n", memory_table + "\n", "![peak memory vs batch size](memory_vs_batch.png)\n",
    ]
    if spec.x is not None:
        figures.accuracy_vs_x(rows, spec.x, f"{spec.title}: {split} top-1 vs {spec.x}", output / "accuracy_vs_x")
        sections += [f"## Accuracy against {spec.x}\n", "![accuracy vs x](accuracy_vs_x.png)\n"]
    if spec.variability is not False:
        section = variability_analysis(spec, first_folders, output, log)
        if section:
            sections.append(section)
    index = output / "index.md"
    index.write_text("\n".join(sections))
    log(f"\n{markdown_table(rows)}\n\nreport: {index}")
    return index
