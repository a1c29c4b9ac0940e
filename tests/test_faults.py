"""Faults a long run meets: SIGKILL, SIGTERM, a non-finite loss, an unwritable or full disk, a restart."""
import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from reusenet.engine import NonFiniteLossError, Trainer, TrainingStopped, load_checkpoint, train

# One thread: the interrupted and the uninterrupted run must do bit-identical arithmetic.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY_RUN = ["--model", "test_resnet", "--data", "synthetic", "--batch-size", "8", "--lr", "0.05",
            "--precision", "fp32", "--set", "channels_last=false", "--set", "data_args.num_classes=4",
            "--set", "data_args.image_size=16", "--set", "data_args.num_samples=64", "--set", "workers=0",
            "--set", "tensorboard=false", "--no-progress", "--set", "schedule=cosine", "--set", "min_lr=0.001",
            "--set", "per_step_schedule=true"]


def reusenet_train(*args) -> list[str]:
    return [sys.executable, "-m", "reusenet", "train", *TINY_RUN, *args]


def weights(run_dir):
    return load_file(run_dir / "model.safetensors")


def checkpoint_position(run_dir):
    try:
        state = load_checkpoint(run_dir)
    except Exception:  # not written yet
        return None
    return state["epoch"], state["step"]


def test_sigkill_at_a_random_step_then_resume_ends_with_identical_weights(tmp_path):
    epochs = ["--epochs", "3", "--set", "checkpoint_every=1"]
    reference = subprocess.run(reusenet_train(*epochs, "--output", str(tmp_path / "ref")), env=SUBPROCESS_ENV,
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr

    run_dir = tmp_path / "killed"
    kill_after = random.Random().randint(1, 18)  # 24 optimizer steps in all; any of them may be the last
    process = subprocess.Popen(reusenet_train(*epochs, "--output", str(run_dir)), env=SUBPROCESS_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set()
    while process.poll() is None and len(seen) < kill_after:
        position = checkpoint_position(run_dir)
        if position is not None:
            seen.add(position)
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (after {kill_after} steps)"
    assert not list(run_dir.glob(".last.pt.*.tmp")) or load_checkpoint(run_dir)  # the checkpoint is whole

    resumed = subprocess.run([sys.executable, "-m", "reusenet", "train", "--resume", str(run_dir)],
                             env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout or "starting it over" in resumed.stdout
    expected, actual = weights(tmp_path / "ref"), weights(run_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after kill at step ~{kill_after}"


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(reusenet_train("--epochs", "40", "--set", "checkpoint_every=2", "--output",
                                              str(run_dir)), env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while process.poll() is None and checkpoint_position(run_dir) is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and f"reusenet train --resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    epoch, step = load_checkpoint(run_dir)["epoch"], load_checkpoint(run_dir)["step"]
    assert 0 < epoch * 8 + step < 40 * 8

    resumed = subprocess.run([sys.executable, "-m", "reusenet", "train", "--resume", str(run_dir), "--epochs",
                              str(epoch + 1)], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "results.json").is_file()


class NaNOnCall(torch.nn.Module):
    """A model whose output is NaN on one chosen forward call (counting from 1)."""

    def __init__(self, call: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
        self.call, self.calls = call, 0

    def forward(self, x):
        self.calls += self.training
        out = self.body(x)
        return out * float("nan") if self.training and self.calls == self.call else out


def synthetic(tiny_config):
    from reusenet.engine.train import load_data

    return load_data(tiny_config())


def test_nonfinite_loss_stops_naming_the_step_and_the_last_checkpoint(tiny_config):
    config = tiny_config(epochs=3)
    trainer = Trainer(config, log=lambda _: None, model=NaNOnCall(call=7), datasets=synthetic(tiny_config))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 3; the last good checkpoint "
                                                 r"is .*last\.pt.*nonfinite: skip"):
        trainer.fit()
    assert load_checkpoint(trainer.run_dir)["epoch"] == 1


def test_nonfinite_loss_can_be_skipped_and_counted(tiny_config):
    config = tiny_config(epochs=2, nonfinite="skip")
    trainer = Trainer(config, log=lambda _: None, model=NaNOnCall(call=3), datasets=synthetic(tiny_config))
    results = trainer.fit()
    assert results["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_unwritable_output_is_detected_before_training(tiny_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(Exception, match="cannot write to the output folder .*choose a writable --output"):
        train(tiny_config(output=str(blocker / "run")))


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tiny_config, monkeypatch):
    from reusenet.engine import checkpoint

    trainer = Trainer(tiny_config(epochs=3), log=lambda _: None)
    real_save = torch.save

    def full_disk_in_epoch_two(state, path, *args, **kwargs):
        if state.get("epoch") == 2:
            with open(path, "wb") as handle:
                handle.write(b"half")  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(state, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk_in_epoch_two)
    with pytest.raises(Exception, match="No space left on device.*previous .*last.pt is intact.*--resume"):
        trainer.fit()
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(trainer.run_dir)["epoch"] == 1


def test_sigterm_inside_the_loop_stops_at_the_next_step(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config(epochs=3), log=lambda _: None)
    real_update = trainer._update

    def signal_at_update_five(update):
        real_update(update)
        if update == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer, "_update", signal_at_update_five)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM after epoch 2, step 1"):
        trainer.fit()
    state = load_checkpoint(trainer.run_dir)
    assert (state["epoch"], state["step"]) == (1, 1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_a_restarted_torchrun_worker_group_resumes_by_itself(tiny_config, monkeypatch):
    config = tiny_config(epochs=2)
    Trainer(config, log=lambda _: None).fit(stop_after_epoch=1)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    messages = []
    results = Trainer(config, log=messages.append).fit()
    assert any("resumed" in m and "after epoch 1" in m for m in messages)
    assert results["epoch"] == 2
