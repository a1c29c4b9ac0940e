"""Data-parallel training under torchrun equals one process at the same global batch."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from reusenet.engine import train
from reusenet.engine.distributed import CPUSyncBatchNorm, convert_sync_batchnorm

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# No augmentation: two ranks of batch 8 then see exactly the samples one process sees in a batch of 16.
SETTINGS = dict(model="test_resnet", data="synthetic", data_args={"num_classes": 4, "image_size": 16,
                "num_samples": 64}, epochs=2, lr=0.05, schedule="constant", crop_padding=0, hflip=False,
                precision="fp32", channels_last=False, workers=0, tensorboard=False, progress=False)


def as_flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        if isinstance(value, dict):
            flags += [item for child, v in value.items() for item in ("--set", f"{key}.{child}={v}")]
        else:
            flags += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return flags


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_gloo_ranks_with_syncbn_match_one_process_at_the_same_global_batch(tmp_path, tiny_config):
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "reusenet", "train",
               *as_flags({**SETTINGS, "batch_size": 8, "sync_bn": True, "output": str(tmp_path / "ddp")})]
    launched = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("epoch 2/2") == 1  # only rank 0 logs

    torch.set_num_threads(1)
    try:
        single = train(tiny_config(**SETTINGS, batch_size=16, output=str(tmp_path / "single")), log=lambda _: None)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    expected, actual = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "ddp" /
                                                                                      "model.safetensors")
    assert expected.keys() == actual.keys() and any("running_var" in k for k in expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    import json

    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["test_acc1"] == pytest.approx(single["test_acc1"])  # metrics reduced over both ranks


def _sync_bn_worker(rank: int, port: int, inputs, probe, queue) -> None:
    inputs, probe = torch.from_numpy(inputs), torch.from_numpy(probe)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    layer = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), torch.device("cpu"))
    shard = inputs[rank::2].clone().requires_grad_(True)
    (layer(shard) * probe[rank::2]).sum().backward()
    queue.put((rank, shard.grad.numpy(), layer[0].running_var.numpy(), layer[0].weight.grad.numpy()))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_matches_batchnorm_over_the_whole_batch():
    import socket

    import torch.multiprocessing as mp

    inputs, probe = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)  # a random linear loss of the output
    reference_layer = torch.nn.BatchNorm2d(3)
    full = inputs.clone().requires_grad_(True)
    (reference_layer(full) * probe).sum().backward()

    with socket.socket() as free_port:
        free_port.bind(("127.0.0.1", 0))
        port = free_port.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    processes = [context.Process(target=_sync_bn_worker, args=(rank, port, inputs.numpy(), probe.numpy(), queue))
                 for rank in (0, 1)]
    for process in processes:
        process.start()
    results = {rank: [torch.from_numpy(a) for a in arrays] for rank, *arrays in (queue.get() for _ in processes)}
    for process in processes:
        process.join(timeout=60)
    assert isinstance(convert_sync_batchnorm(torch.nn.BatchNorm2d(3), torch.device("cpu")), CPUSyncBatchNorm)
    for rank in (0, 1):
        grad, running_var, weight_grad = results[rank]
        torch.testing.assert_close(grad, full.grad[rank::2], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(running_var, reference_layer.running_var, rtol=1e-5, atol=1e-6)
    # Each rank holds its share of the parameter gradient; DDP sums (averages) them.
    torch.testing.assert_close(results[0][2] + results[1][2], reference_layer.weight.grad, rtol=1e-5, atol=1e-5)
