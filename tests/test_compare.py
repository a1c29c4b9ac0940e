"""`reusenet compare`: spec files, the report it writes, resuming, and the output-variability analysis."""
import json

import pytest
import torch

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.analysis.variability import disagreement, per_class_accuracy, same_family, variability_summary
from reusenet.cli import main
from reusenet.models import create_model
from reusenet.report.compare import load_spec

# Seconds-long runs: timm's 370k-parameter test_resnet on 16x16 synthetic images, one epoch.
TINY = ["--data", "synthetic", "--epochs", "1", "--batch-sizes", "2",
        "--set", "data_args={num_classes: 4, image_size: 16, num_samples: 48}", "--set", "batch_size=16",
        "--set", "workers=0", "--set", "precision=fp32", "--set", "channels_last=false",
        "--set", "warmup_epochs=0"]

SPEC = """# Dropout before the classifier of a tiny ResNet
title: test_resnet dropout
recipe: digits
overrides: {epochs: 1}
seeds: [0, 1]
x: drop_rate
runs:
  - {label: "drop 0.0", model: test_resnet, model_args: {drop_rate: 0.0}}
  - {label: "drop 0.5", model: test_resnet, model_args: {drop_rate: 0.5}}
"""


def write(path, text):
    path.write_text(text)
    return path


def test_spec_file(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", SPEC))
    assert spec.title == "test_resnet dropout" and spec.recipe == "digits" and spec.seeds == [0, 1]
    assert [(r.label, r.model, r.model_args) for r in spec.runs] == [
        ("drop 0.0", "test_resnet", {"drop_rate": 0.0}), ("drop 0.5", "test_resnet", {"drop_rate": 0.5})]
    assert spec.x == "drop_rate" and spec.overrides == {"epochs": 1} and spec.variability is None
    untitled = load_spec(write(tmp_path / "t.yaml", SPEC.replace("title: test_resnet dropout\n", "")))
    assert untitled.title == "Dropout before the classifier of a tiny ResNet"  # the first-line comment


@pytest.mark.parametrize("change, message", [
    (("seeds: [0, 1]", "seed: [0]"), "unknown key 'seed'. Did you mean: seeds"),
    (("drop_rate: 0.5}", "other: 1}"), "no numeric model_args.drop_rate"),
    (('"drop 0.5"', '"drop 0.0"'), "repeated: drop 0.0"),
    (("model: test_resnet, model_args: {drop_rate: 0.0}", "model_args: {drop_rate: 0.0}"), "run 1 must be"),
])
def test_bad_spec(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        load_spec(write(tmp_path / "s.yaml", SPEC.replace(*change)))


def test_bad_command_lines(tmp_path, capsys):
    assert main(["compare", "--spec", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", "--models", "resnet18_cifarr", *TINY, "--output", str(tmp_path / "o")]) == 2
    assert "unknown model 'resnet18_cifarr'" in capsys.readouterr().err
    assert main(["compare", "--models", "test_resnet", "--seeds", "a", "--output", str(tmp_path / "o")]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_disagreement_and_per_class_spread():
    labels = torch.tensor([0, 0, 1, 1])
    predictions = {"a": torch.tensor([0, 0, 1, 1]), "b": torch.tensor([0, 1, 1, 1]), "c": torch.tensor([1, 1, 1, 1])}
    assert disagreement(predictions) == {("a", "b"): 0.25, ("a", "c"): 0.5, ("b", "c"): 0.25}
    assert per_class_accuracy(predictions["b"], labels, 3)[:2].tolist() == [0.5, 1.0]
    assert per_class_accuracy(predictions["b"], labels, 3)[2].isnan()  # class 2 has no images
    summary = variability_summary(predictions, labels, 3)
    # class 0 accuracies 1, 0.5, 0 (population std sqrt(1/6)); class 1 all 1 (std 0); class 2 skipped.
    assert summary["class_spread_mean"] == pytest.approx((1 / 6) ** 0.5 / 2)
    assert summary["class_spread_max"] == pytest.approx((1 / 6) ** 0.5)
    assert summary["mean_disagreement"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same images"):
        disagreement({"a": torch.zeros(3), "b": torch.zeros(4)})


def test_family_is_the_model_class():
    resnets = [create_model("test_resnet", num_classes=2), create_model("resnet10t", num_classes=2)]
    assert same_family(resnets)
    assert not same_family([resnets[0], create_model("test_efficientnet", num_classes=2)])
    assert not same_family(resnets[:1])


@pytest.mark.slow
def test_compare_models_writes_report_and_reuses_runs(tmp_path, capsys):
    output = tmp_path / "cmp"
    assert main(["compare", "--models", "test_resnet,test_efficientnet", *TINY, "--output", str(output)]) == 0
    rows = json.loads((output / "table.json").read_text())
    assert [row["label"] for row in rows] == ["test_resnet", "test_efficientnet"]
    for row in rows:
        assert 0 <= row["acc1"] <= row["acc5"] <= 100 and row["acc1_std"] == 0 and row["seeds"] == 1
        assert row["params_M"] > 0 and row["GMACs"] > 0 and row["train_peak_MiB_b2"] > 0
        assert row["train_s_per_epoch"] > 0 and row["test_ms_per_image"] > 0
    for name in ("accuracy_vs_gmacs", "accuracy_vs_params", "training_curves", "memory_vs_batch"):
        assert (output / f"{name}.png").stat().st_size > 10_000 and (output / f"{name}.svg").is_file()
    index = (output / "index.md").read_text()
    assert "| test_efficientnet |" in index and "![training curves](training_curves.png)" in index
    assert not (output / "variability.png").exists()  # two different families
    results = output / "runs" / "test_resnet" / "seed-0" / "results.json"
    written = results.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", "--models", "test_resnet,test_efficientnet", *TINY, "--output", str(output)]) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert results.stat().st_mtime_ns == written
    assert main(["compare", "--models", "test_resnet", *TINY[:-2], "--set", "lr=0.5", "--output", str(output)]) == 2


@pytest.mark.slow
def test_compare_spec_with_seeds_x_and_variability(tmp_path):
    spec = write(tmp_path / "s.yaml", SPEC)
    output = tmp_path / "cmp"
    tiny = [arg for arg in TINY if arg not in ("--epochs", "1")]
    assert main(["compare", "--spec", str(spec), *tiny, "--output", str(output)]) == 0
    rows = json.loads((output / "table.json").read_text())
    assert [(row["label"], row["drop_rate"], row["seeds"]) for row in rows] == [("drop 0.0", 0.0, 2),
                                                                                ("drop 0.5", 0.5, 2)]
    assert all(row["acc1_std"] >= 0 for row in rows)
    seeds = [json.loads((output / "runs" / "drop-0.0" / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert rows[0]["acc1"] == pytest.approx((seeds[0]["test_acc1"] + seeds[1]["test_acc1"]) / 2)
    assert (output / "accuracy_vs_x.png").is_file()
    summary = json.loads((output / "variability.json").read_text())  # one family: added by itself
    assert summary["models"] == ["drop 0.0", "drop 0.5"] and 0 <= summary["mean_disagreement"] <= 1
    assert "## Output variability" in (output / "index.md").read_text()
