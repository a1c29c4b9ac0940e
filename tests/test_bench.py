"""reusenet.measure (peak memory, latency) and `reusenet bench`."""
import json
import math

import pytest
import torch.nn as nn

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.cli import main
from reusenet.measure import Timing, latency, peak_memories, peak_memory
from reusenet.measure.bench import parse_batch_sizes


def tiny_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_timing_statistics():
    timing = Timing("m", "inference", 4, (3, 8, 8), "fp32", False, "cpu", 0, (0.4, 0.1, 0.2, 0.3, 1.0))
    assert timing.median_s == pytest.approx(0.3)
    assert timing.spread_s == pytest.approx(0.4 - 0.2)  # upper minus lower quartile, not max - min
    assert timing.per_image_ms == pytest.approx(75.0)
    assert timing.images_per_s == pytest.approx(4 / 0.3)
    single = Timing("m", "train", 2, (3, 8, 8), "fp32", False, "cpu", 0, (0.5,))
    assert single.spread_s == 0.0


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_latency_of_a_module_leaves_it_untouched(mode):
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timing = latency(model, input_size=(3, 8, 8), batch_size=3, mode=mode, warmup=1, repeats=3)
    assert len(timing.times_s) == 3 and all(t > 0 for t in timing.times_s)
    assert (timing.mode, timing.batch_size, timing.precision, timing.channels_last) == (mode, 3, "fp32", False)
    assert model.training
    assert all((before[k] == v).all() for k, v in model.state_dict().items())


def test_latency_records_bf16_channels_last():
    timing = latency("test_resnet", input_size=(3, 32, 32), batch_size=2, precision="bf16", channels_last=True,
                     warmup=1, repeats=2, num_classes=4)
    assert (timing.model, timing.precision, timing.channels_last) == ("test_resnet", "bf16", True)
    assert math.isfinite(timing.per_image_ms) and timing.per_image_ms > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(mode="eval"), "mode"),
    (dict(precision="fp16"), "fp16 needs a CUDA GPU"),
    (dict(input_size=(32, 32)), "input_size"),
    (dict(repeats=0), "repeats"),
])
def test_latency_bad_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        latency(tiny_net(), **{"input_size": (3, 8, 8), **kwargs})


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        latency("resnet18_cifarr", batch_size=2)
    with pytest.raises(UserError, match="model name"):
        peak_memory(tiny_net())


@pytest.mark.parametrize("text", ["", "0,2", "32,x", "-4"])
def test_bad_batch_sizes(text, capsys):
    with pytest.raises(UserError, match="batch sizes"):
        parse_batch_sizes(text)
    assert main(["bench", "test_resnet", "--batch-sizes", text or ","]) == 2
    assert "batch sizes" in capsys.readouterr().err


@pytest.mark.slow
def test_peak_memory_grows_with_batch_and_training_costs_more():
    train_small, train_large, infer_small, infer_large = peak_memories(
        "resnet18_cifar", input_size=(3, 32, 32), batch_sizes=[4, 64], num_classes=10)
    assert (train_small.mode, train_small.batch_size, infer_large.mode, infer_large.batch_size) == \
        ("train", 4, "inference", 64)
    weights = train_small.model_bytes
    assert weights == pytest.approx(4 * 11.18e6, rel=0.01)  # fp32 parameters and BN buffers
    # A training step holds weights, gradients and momentum at least; inference holds the weights.
    assert train_small.peak_bytes > 3 * weights
    assert weights < infer_small.peak_bytes < train_small.peak_bytes
    assert train_large.peak_bytes > train_small.peak_bytes and infer_large.peak_bytes > infer_small.peak_bytes
    assert train_small.mib == train_small.peak_bytes / 2**20


@pytest.mark.slow
def test_bench_table_counts_and_timings(tmp_path, capsys):
    assert main(["bench", "resnet18", "resnet18_cifar", "--input-size", "32", "--batch-sizes", "2,4",
                 "--num-classes", "100", "--warmup", "1", "--repeats", "3", "--output", str(tmp_path)]) == 0
    assert "| resnet18_cifar |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["model"], r["batch"]) for r in rows] == [("resnet18", 2), ("resnet18", 4),
                                                        ("resnet18_cifar", 2), ("resnet18_cifar", 4)]
    cifar = rows[2]
    assert round(cifar["params_M"] * 1e6) == 11_220_132
    assert cifar["GMACs"] == pytest.approx(0.5555, abs=5e-5)
    assert round(rows[0]["params_M"] * 1e6) == 11_227_812  # timm resnet18 with a 100-class head
    for row in rows:
        for key in ("train_peak_MiB", "inference_peak_MiB", "inference_ms_per_image", "inference_images_per_s",
                    "train_ms_per_image", "train_images_per_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["model"], key)
        assert row["train_peak_MiB"] > row["inference_peak_MiB"]
    assert (tmp_path / "bench.csv").read_text().startswith("model,input,batch,params_M,GMACs")
