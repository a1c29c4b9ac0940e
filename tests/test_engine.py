"""The training engine: schedules of the papers, resume determinism, checkpoints, configuration errors."""
import json
import math

import pytest
import torch

from reusenet.engine import Trainer, list_recipes, load_checkpoint, load_config, make_config, train
from reusenet.engine.checkpoint import atomic_write
from reusenet.engine.optim import build_optimizer, build_scheduler
from reusenet.engine.precision import cpu_supports_bf16
from reusenet.errors import UserError


def lr_per_epoch(config, steps_per_epoch=10, metrics=None):
    """The lr in force at the start of each epoch, stepping the schedule the way the engine does."""
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    lrs = []
    for epoch in range(config.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for step in range(steps_per_epoch):
            scheduler.step_update(epoch * steps_per_epoch + step + 1)
        scheduler.step(epoch + 1, metrics[epoch] if metrics else None)
    return lrs


def test_reaf_cifar_multistep_decays_by_0_2_at_60_120_160():
    lrs = lr_per_epoch(load_config("reaf-cifar100"))
    assert len(lrs) == 200
    for epoch, expected in [(0, 0.1), (59, 0.1), (60, 0.02), (119, 0.02), (120, 0.004), (159, 0.004),
                            (160, 0.0008), (199, 0.0008)]:
        assert lrs[epoch] == pytest.approx(expected), epoch


def test_reaf_imagenet_step_decays_by_0_1_every_30_epochs():
    lrs = lr_per_epoch(load_config("reaf-imagenet"))
    for epoch, expected in [(0, 0.1), (29, 0.1), (30, 0.01), (59, 0.01), (60, 0.001), (90, 1e-4), (99, 1e-4)]:
        assert lrs[epoch] == pytest.approx(expected), epoch


def test_resfri_plateau_halves_after_10_epochs_without_val_loss_improvement():
    config = load_config("resfri-cifar100", [("epochs", 40)])
    # val loss improves for 5 epochs, then stalls: epochs 6..15 are the 10 tolerated epochs without
    # improvement (torch's patience semantics), so the lr halves for epoch index 16 and again 11 epochs later.
    losses = [1.0 - 0.1 * e for e in range(5)] + [0.6] * 35
    lrs = lr_per_epoch(config, metrics=losses)
    assert lrs[:16] == [0.01] * 16
    assert lrs[16] == pytest.approx(0.005)
    assert lrs[26] == pytest.approx(0.005)
    assert lrs[27] == pytest.approx(0.0025)


def test_convnext_cosine_warms_up_20_epochs_then_decays_to_min_lr():
    config = load_config("convnext-imagenet300")
    steps = 10
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, steps)
    lrs = [optimizer.param_groups[0]["lr"]]
    for update in range(1, config.epochs * steps + 1):
        scheduler.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    peak, floor = 1e-3, 1e-6
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[10 * steps] == pytest.approx(1e-6 + (peak - 1e-6) / 2)  # linear warmup, halfway at epoch 10
    assert lrs[20 * steps] == pytest.approx(peak)  # warmup ends at epoch 20
    assert max(lrs) == pytest.approx(peak)
    assert lrs[25 * steps] == pytest.approx(floor + (peak - floor) / 2)  # cosine halfway through 10 epochs
    assert lrs[-1] == pytest.approx(floor, abs=1e-7)
    assert all(a >= b for a, b in zip(lrs[20 * steps:], lrs[20 * steps + 1:], strict=False))


@pytest.mark.parametrize("execution", [
    {"precision": "fp32", "channels_last": False},
    # 32x32: at 16x16 test_resnet has a strided conv on a 1x1 map, where oneDNN's bf16 gradient is garbage
    pytest.param({"precision": "bf16", "channels_last": True,
                  "data_args": {"num_classes": 4, "image_size": 32, "num_samples": 64}}, marks=pytest.mark.skipif(
        not cpu_supports_bf16(), reason="this CPU has no bf16 support in oneDNN")),
], ids=["fp32", "bf16-channels_last"])
def test_interrupted_then_resumed_run_ends_with_identical_weights(tiny_config, tmp_path, execution):
    straight = train(tiny_config(output=str(tmp_path / "straight"), **execution), log=lambda _: None)
    first = Trainer(tiny_config(output=str(tmp_path / "resumed"), **execution), log=lambda _: None)
    assert first.fit(stop_after_epoch=2) == {"stopped_after_epoch": 2}
    assert load_checkpoint(tmp_path / "resumed")["epoch"] == 2
    resumed = Trainer(tiny_config(output=str(tmp_path / "resumed"), **execution), resume=True,
                      log=lambda _: None).fit()
    a = load_checkpoint(tmp_path / "straight")["model"]
    b = load_checkpoint(tmp_path / "resumed")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["test_acc1"] == straight["test_acc1"]
    history = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["lr"] for row in history] == pytest.approx([0.05, 0.025, 0.0125])  # milestones 1, 2 x0.5


def test_run_writes_summaries_checkpoint_and_weights(tiny_config, tmp_path):
    results = train(tiny_config(epochs=2), log=lambda _: None)
    run = tmp_path / "run"
    for name in ("config.yaml", "summary.csv", "summary.json", "last.pt", "model.safetensors", "model.json",
                 "results.json"):
        assert (run / name).is_file(), name
    assert (run / "summary.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    assert 0 <= results["test_acc1"] <= 100 and results["test_acc1"] <= results["test_acc5"]
    assert math.isfinite(results["val_loss"])
    assert not list(run.glob("*.tmp"))


def test_training_learns_the_synthetic_task(tiny_config):
    results = train(tiny_config(epochs=4, milestones=[3]), log=lambda _: None)
    assert results["test_acc1"] >= 90.0  # 4 well-separated classes; chance is 25%


def test_existing_run_is_never_overwritten(tiny_config):
    train(tiny_config(epochs=1), log=lambda _: None)
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(tiny_config(epochs=1), log=lambda _: None)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("previous")

    def failing_write(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, failing_write)
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("values, message", [
    ({"epoch": 3}, "unknown configuration key 'epoch'. Did you mean: epochs"),
    ({"lr": -0.1}, "lr must be a positive finite number"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"epochs": "ten"}, "epochs: expected an integer"),
    ({"optimizer": "adamm"}, "Did you mean: adam"),
    ({"milestones": [120, 60]}, "milestones must be increasing"),
    ({"precision": "fp8"}, "precision: 'fp8' is not one of"),
])
def test_bad_configuration_values_name_the_problem(values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make_config(values)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(UserError, match="Did you mean: reaf-cifar100"):
        load_config("reaf-cifar10")


def test_auto_precision_keeps_the_fastest_measured_option_and_the_rng(monkeypatch, tiny_config):
    from reusenet.engine import precision

    speeds = {("fp32", False): 3.0, ("fp32", True): 2.0, ("bf16", True): 1.0, ("bf16", False): 4.0}
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(precision, "time_training_step",
                        lambda model, ex, *args, **kw: (torch.rand(1), speeds[(ex.precision, ex.channels_last)])[1])
    config = tiny_config(precision="auto", channels_last="auto")
    model = torch.nn.Linear(2, 2)
    torch.manual_seed(1)
    expected_next = torch.rand(1)
    torch.manual_seed(1)
    chosen = precision.choose_execution(model, config, (3, 8, 8), 2, log=lambda _: None)
    assert (chosen.precision, chosen.channels_last) == ("bf16", True)
    assert torch.equal(torch.rand(1), expected_next)  # measuring did not shift the run's random stream


def test_explicit_precision_is_not_measured(tiny_config):
    from reusenet.engine.precision import choose_execution

    chosen = choose_execution(None, tiny_config(precision="fp32", channels_last=False), (3, 8, 8), 2)
    assert (chosen.precision, chosen.channels_last) == ("fp32", False)


def test_fp16_on_cpu_is_refused(tiny_config):
    from reusenet.engine.precision import choose_execution

    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        choose_execution(None, tiny_config(precision="fp16", device="cpu"), (3, 8, 8), 2)


def test_corrupt_image_in_a_folder_dataset_is_skipped_and_counted(tiny_config, tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    for label, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (24, 24), colour).save(folder / f"{i}.png")
    corrupt = root / "class0" / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.warns(UserWarning, match="broken.png"):  # reported with its path
        results = train(tiny_config(data="folder", data_root=str(root), data_args={}, epochs=1, batch_size=4),
                        log=lambda _: None)
    assert results["skipped_files"] == 1
    assert results["skipped_paths"] == [str(corrupt)]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["skipped_files"] == 1


def test_tensorboard_receives_one_scalar_per_epoch(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(epochs=2, tensorboard=True), log=lambda _: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc1")] == [1, 2]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([0.05, 0.025])


def test_interrupt_names_the_checkpoint_to_resume_from(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config(epochs=3), log=lambda _: None)
    real_epoch = trainer.train_one_epoch

    def interrupt_in_second_epoch(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(epoch)

    monkeypatch.setattr(trainer, "train_one_epoch", interrupt_in_second_epoch)
    messages = []
    trainer.log = messages.append
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert "continue with `reusenet train --resume" in messages[-1]
    assert load_checkpoint(trainer.run_dir)["epoch"] == 1


def test_bf16_is_never_used_where_onednn_computes_wrong_gradients(monkeypatch, tiny_config):
    import timm

    from reusenet.engine import precision

    model = timm.create_model("test_resnet", num_classes=4)
    assert precision.bf16_conv_hazards(model, (3, 16, 16)) == ["layer4.0.conv1"]  # 3x3 stride 2 on a 1x1 map
    assert precision.bf16_conv_hazards(model, (3, 32, 32)) == []
    assert model.training  # the shape probe leaves the model as it found it
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    with pytest.raises(UserError, match="layer4.0.conv1"):
        precision.choose_execution(model, tiny_config(precision="bf16"), (3, 16, 16), 4)
    monkeypatch.setattr(precision, "time_training_step", lambda *args, **kwargs: 1.0)
    messages = []
    chosen = precision.choose_execution(model, tiny_config(precision="auto"), (3, 16, 16), 4, log=messages.append)
    assert chosen.precision == "fp32"
    assert messages[0].startswith("bf16 left out")


def test_plateau_on_val_loss_needs_a_val_split(tiny_config, tmp_path):
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d"]}, protocol=2))
    config = tiny_config(data="cifar10", data_root=str(tmp_path), data_args={"val_size": 0}, schedule="plateau",
                         milestones=[60])
    with pytest.raises(UserError, match="has no val split"):
        Trainer(config, log=lambda _: None)


def test_reduced_setting_of_a_recipe_overrides_the_full_scale_keys():
    from reusenet.engine import load_config

    full = load_config("reaf-cifar100")
    reduced = load_config("reaf-cifar100", [("epochs", 4)], reduced=True)
    assert (full.data, full.epochs, full.milestones) == ("cifar100", 200, [60, 120, 160])
    assert (reduced.data, reduced.epochs, reduced.milestones) == ("digits", 4, [3, 6, 8])
    assert reduced.lr == full.lr and reduced.gamma == full.gamma


def test_reduced_on_a_recipe_without_one_is_refused():
    from reusenet.engine import load_config

    with pytest.raises(UserError, match="no reduced setting"):
        load_config("digits", reduced=True)


def test_convnext_recipe_regularisers_train_and_save_the_ema_weights(tiny_config, tmp_path):
    from reusenet.engine import load_trained

    config = tiny_config(epochs=2, mixup=0.8, cutmix=1.0, auto_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                         ema=True, ema_decay=0.9, label_smoothing=0.1, schedule="constant")
    results = train(config, log=lambda _: None)
    assert {"val_ema_acc1", "test_ema_acc1", "test_acc1"} <= results.keys()
    raw, _ = load_trained(tmp_path / "run")
    ema, _ = load_trained(tmp_path / "run" / "ema")
    assert any(not torch.equal(a, b) for a, b in zip(raw.state_dict().values(), ema.state_dict().values(), strict=True))
    assert math.isfinite(results["train_loss"])


def test_convnext_recipe_has_the_papers_regularisers():
    config = load_config("convnext-imagenet300")
    assert (config.mixup, config.cutmix, config.auto_augment, config.random_erasing, config.ema) == \
        (0.8, 1.0, "rand-m9-mstd0.5-inc1", 0.25, True)
    assert config.model_args == {"drop_path_rate": 0.1, "ls_init_value": 1e-6}


def test_a_bad_augmentation_policy_is_named(tiny_config):
    with pytest.raises(UserError, match="auto_augment 'randaugment-9' is not a timm augmentation policy"):
        train(tiny_config(auto_augment="randaugment-9"))


def test_gradient_accumulation_matches_the_larger_batch(tiny_config, tmp_path):
    from reusenet.engine.train import load_data

    def linear_run(output, **settings):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
        config = tiny_config(epochs=2, schedule="constant", crop_padding=0, hflip=False, output=str(output),
                             **settings)
        Trainer(config, log=lambda _: None, model=model, datasets=load_data(config)).fit()
        return model

    whole = linear_run(tmp_path / "a", batch_size=16)
    accumulated = linear_run(tmp_path / "b", batch_size=8, accumulate_steps=2)
    for expected, actual in zip(whole.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe", [name for name in list_recipes() if name != "digits"])
def test_every_reduced_setting_builds_its_model_for_its_data(recipe):
    from reusenet.engine.train import load_data
    from reusenet.models import create_model

    config = load_config(recipe, reduced=True)
    datasets = load_data(config)
    train_set = datasets["train"]
    model = create_model(config.model, num_classes=len(train_set.classes), **config.model_args)
    with torch.no_grad():
        logits = model.eval()(torch.zeros(2, *train_set.images.shape[1:]))
    assert logits.shape == (2, len(train_set.classes)) and config.epochs <= 20
