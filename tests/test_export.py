"""`reusenet export`: ONNX parity with onnxruntime at two batch sizes, safetensors round trips, bad inputs."""
import json

import pytest
import timm
import torch

import reusenet  # noqa: F401  (registers the models)
from reusenet import UserError
from reusenet.cli import main
from reusenet.engine import load_trained, save_weights
from reusenet.export import export_onnx, load_for_export, onnx_max_abs_diff, timm_kwargs
from reusenet.models import create_model

pytest.importorskip("onnxruntime")

# One model per family available so far; families added later join this list. Exporting takes 5-30 s a
# model on a shared 2-core CPU, so all but the first run with the slow tests.
ONNX_MODELS = ["resnet18_cifar", "resfuse19"] + [pytest.param(name, marks=pytest.mark.slow) for name in (
    "densenet121_cifar", "mobilenetv2_100_cifar", "convnext_tiny_cifar", "reaf_resnet18_cifar",
    "reaf_plus_mobilenetv2_100_cifar", "resfri_add_cifar", "split_resfri_concat_cifar", "mls_convnext_tiny_cifar",
    "highway19")]


def fake_run(folder, name="resnet18_cifar", num_classes=10, **model_args):
    """A run folder as training leaves it (model.safetensors + model.json), without the training."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, **model_args).eval()
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"model": name, "model_args": model_args, "classes": [f"c{i}" for i in range(num_classes)],
            "num_classes": num_classes, "data": "digits", "data_root": None, "data_args": {},
            "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    save_weights(folder, model, meta)
    return model, meta


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics from one batch, as training would leave them: at its initial statistics a deep
    residual net's logits reach 1e4, where fp32 rounding alone exceeds any fixed absolute tolerance."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics exactly
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_parity_and_dynamic_batch(tmp_path, name):
    torch.manual_seed(0)
    model = calibrated(create_model(name, num_classes=10))
    result = export_onnx(model, tmp_path / f"{name}.onnx", (3, 32, 32))
    assert result.checked_batches == (1, 7)  # exported at batch 2: both others need a dynamic batch axis
    assert result.max_abs_diff <= 1e-4


def test_onnx_check_sees_a_different_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=3).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (3, 16, 16), check=False).path
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert onnx_max_abs_diff(model, path, (3, 16, 16)) == pytest.approx(1.0, abs=1e-4)


def test_export_cli_onnx_from_run(tmp_path, capsys):
    fake_run(tmp_path / "run", "test_resnet", num_classes=3)
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and (tmp_path / "m.onnx").is_file()


def test_safetensors_round_trip_through_timm_and_eval(tmp_path, capsys):
    model, _ = fake_run(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "safetensors", "--output", str(tmp_path / "out")]) == 0
    weights = tmp_path / "out" / "model.safetensors"
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert (meta["model"], meta["num_classes"]) == ("resnet18_cifar", 10)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        # 10 classes, not the model's default 100: the overlay must keep timm from dropping the head
        loaded = timm.create_model(**timm_kwargs(meta, weights)).eval()
        assert torch.equal(loaded(images), expected)
        assert torch.equal(load_trained(tmp_path / "out")[0](images), expected)  # what `reusenet eval` loads


def test_export_by_name_with_checkpoint(tmp_path):
    model, _ = fake_run(tmp_path / "run", "test_resnet", num_classes=3)
    loaded, meta = load_for_export("test_resnet", str(tmp_path / "run" / "model.safetensors"))
    assert meta["num_classes"] == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    plain = tmp_path / "plain.pth"  # a bare state dict, as timm or torchvision ship them
    torch.save(model.state_dict(), plain)
    loaded, meta = load_for_export("test_resnet", str(plain), num_classes=3)
    assert meta["classes"] == ["0", "1", "2"] and torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(UserError, match="does not fit test_resnet"):
        load_for_export("test_resnet", str(plain), num_classes=5)
    with pytest.raises(UserError, match="holds test_resnet weights, not resnet10t"):
        load_for_export("resnet10t", str(tmp_path / "run"))


@pytest.mark.parametrize("argv, message", [
    (["resnet18_cifar", "--format", "onnx"], "pass its weights with --checkpoint"),
    (["resnet18_cifar", "--checkpoint", "nowhere/model.safetensors", "--format", "onnx"], "does not exist"),
    (["not_a_model", "--checkpoint", "{plain}", "--format", "safetensors"], "unknown model 'not_a_model'"),
    (["{run}", "--format", "onnx", "--opset", "13"], "opset must be 17"),
])
def test_export_bad_inputs(tmp_path, capsys, argv, message):
    fake_run(tmp_path / "run", "test_resnet", num_classes=3)
    torch.save({}, tmp_path / "plain.pth")
    argv = [arg.format(run=tmp_path / "run", plain=tmp_path / "plain.pth") for arg in argv]
    assert main(["export", *argv]) == 2
    assert message in capsys.readouterr().err
