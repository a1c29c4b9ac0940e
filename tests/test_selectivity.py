"""Class selectivity: the index, its collection by forward hooks, and `reusenet analyze selectivity`."""
import json

import pytest
import timm
import torch
from torch import nn

from reusenet.analysis.selectivity import PRE_LOGITS, default_layers, layer_selectivity, selectivity_index
from reusenet.cli import main
from reusenet.data import build_dataset, build_loader
from reusenet.engine import make_config, train
from reusenet.errors import UserError


class GivenActivations(nn.Module):
    """A 'model' whose layer `act` outputs the images themselves, so tests choose the activations."""

    def __init__(self):
        super().__init__()
        self.act = nn.Identity()

    def forward_features(self, x):
        return self.act(x)


def test_index_is_one_for_a_single_class_and_zero_for_shared_channels():
    class_means = torch.tensor([[0.0, 2.0, 0.0, 3.0],
                                [5.0, 2.0, 0.0, 1.0],
                                [0.0, 2.0, 0.0, 1.0]], dtype=torch.float64)
    index = selectivity_index(class_means)
    assert index[0] == pytest.approx(1.0, abs=1e-6)  # active for class 1 only
    assert index[1] == 0.0                            # equally active for every class
    assert index[2] == 0.0                            # dead channel: 0, not NaN
    assert index[3] == pytest.approx((3 - 1) / (3 + 1), abs=1e-6)


def test_hooks_average_space_weigh_classes_equally_and_skip_absent_classes():
    """Hand-made feature maps: class 0 has 3 images, class 1 has 1, class 2 has 2; class 3 has none."""
    labels = torch.tensor([0, 0, 1, 2, 0, 2])
    maps = torch.zeros(6, 4, 2, 2)
    maps[labels == 1, 0, 0, 0] = 8.0          # channel 0: one pixel, class 1 only
    maps[:, 1] = 1.5                          # channel 1: the same for everyone
    maps[labels == 0, 3] = 3.0                # channel 3: class means 3, 1, 1 -> (3 - 1) / (3 + 1)
    maps[labels != 0, 3] = 1.0                # (channel 2 stays zero: dead)
    batches = [(maps[:4], labels[:4]), (maps[4:], labels[4:])]
    result = layer_selectivity(GivenActivations(), batches, ["act"], num_classes=4)["act"]
    assert result.values.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5], abs=1e-6)
    assert result.dead == 1
    assert not result.signed


def test_fewer_than_two_classes_is_an_error():
    batches = [(torch.ones(3, 2, 1, 1), torch.zeros(3, dtype=torch.int64))]
    with pytest.raises(UserError, match="at least two"):
        layer_selectivity(GivenActivations(), batches, ["act"], num_classes=3)


@pytest.fixture(scope="module")
def synthetic_loader():
    dataset = build_dataset("synthetic", split="test", num_classes=4, image_size=16, num_samples=40)
    return build_loader(dataset, 16, train=False)  # 16 + 16 + 8: the sums must stream across batches


def direct_selectivity(activity: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per channel, from all activations at once: class means, the top one against the others' mean."""
    means = torch.stack([activity[labels == c].mean(dim=0) for c in labels.unique()]).double()
    values = []
    for channel in means.T:
        top = int(channel.argmax())
        others = torch.cat([channel[:top], channel[top + 1:]]).mean()
        values.append((channel[top] - others) / (channel[top] + others + 1e-7))
    return torch.stack(values)


def test_hook_collection_matches_a_direct_computation(synthetic_loader):
    model = timm.create_model("test_resnet", num_classes=4).eval()
    layers = default_layers(model)
    assert layers == ["layer1", "layer2", "layer3", "layer4", PRE_LOGITS]  # the stem act1 is not a stage
    results = layer_selectivity(model, synthetic_loader, layers, num_classes=4)
    images, labels = map(torch.cat, zip(*synthetic_loader, strict=True))
    with torch.no_grad():
        maps = model.forward_intermediates(images, indices=[1, 2, 3, 4], intermediates_only=True)
        pooled = model.forward_head(model.forward_features(images), pre_logits=True)
    direct = [feature_map.mean(dim=(2, 3)) for feature_map in maps] + [pooled]
    widths = [info["num_chs"] for info in model.feature_info[1:]] + [model.num_features]
    for layer, activity, width in zip(layers, direct, widths, strict=True):
        assert results[layer].values.shape == (width,)
        torch.testing.assert_close(results[layer].values.double(), direct_selectivity(activity, labels),
                                   atol=1e-5, rtol=1e-4)
        assert not results[layer].signed  # ResNet stage outputs and the pool are post-ReLU
    torch.testing.assert_close(results[PRE_LOGITS].values, results["layer4"].values)  # the pool is that mean


def test_outputs_are_read_before_a_later_inplace_activation(synthetic_loader):
    model = timm.create_model("test_resnet", num_classes=4).eval()
    assert model.layer1[0].act1.inplace  # it overwrites bn1's output with its ReLU
    images, labels = next(iter(synthetic_loader))
    copies = []
    handle = model.layer1[0].bn1.register_forward_hook(lambda module, inputs, output: copies.append(output.clone()))
    with torch.no_grad():
        model(images)
    handle.remove()
    bn_output = copies[0]
    result = layer_selectivity(model, [(images, labels)], ["layer1.0.bn1"], num_classes=4)["layer1.0.bn1"]
    assert result.signed
    torch.testing.assert_close(result.values.double(), direct_selectivity(bn_output.mean(dim=(2, 3)), labels),
                               atol=1e-5, rtol=1e-4)


def test_signed_layers_are_flagged_and_first_stages_kept_when_no_stem():
    model = timm.create_model("test_convnext", num_classes=4).eval()
    layers = default_layers(model)
    assert layers == [info["module"] for info in model.feature_info] + [PRE_LOGITS]
    dataset = build_dataset("synthetic", split="test", num_classes=4, image_size=32, num_samples=16)
    results = layer_selectivity(model, build_loader(dataset, 16, train=False), layers[-2:], num_classes=4)
    assert results[layers[-2]].signed  # a ConvNeXt stage ends on a residual sum, no activation


def test_layers_that_cannot_be_measured_are_named(synthetic_loader):
    model = timm.create_model("test_resnet", num_classes=4)
    with pytest.raises(UserError, match="did not run"):
        layer_selectivity(model, synthetic_loader, ["fc"], num_classes=4)
    vit = timm.create_model("test_vit", num_classes=4, img_size=16, patch_size=8)
    with pytest.raises(UserError, match=r"'blocks.0' outputs \(16, 5, 64\)"):
        layer_selectivity(vit, synthetic_loader, ["blocks.0"], num_classes=4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two test_resnet trainings that differ in their seed, and a test_efficientnet."""
    root = tmp_path_factory.mktemp("selectivity")
    folders = []
    for seed, model in enumerate(("test_resnet", "test_resnet", "test_efficientnet")):
        config = make_config(dict(model=model, data="synthetic",
                                  data_args={"num_classes": 4, "image_size": 16, "num_samples": 48},
                                  epochs=1, batch_size=16, lr=0.05, precision="fp32", channels_last=False,
                                  workers=0, tensorboard=False, progress=False, seed=seed,
                                  output=str(root / f"run{seed}")))
        train(config, log=lambda *_: None)
        folders.append(root / f"run{seed}")
    return folders


def run_cli(capsys, *args):
    code = main(["analyze", "selectivity", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_plot_and_tables_for_two_runs(capsys, tmp_path, runs):
    output = tmp_path / "out"
    checkpoints = f"{runs[0]},{runs[1] / 'last.pt'}"  # a run folder and a training checkpoint
    code, out, err = run_cli(capsys, "--models", "seed0,seed1", "--checkpoints", checkpoints,
                             "--output", output, "--batch-size", "32")
    assert code == 0, err
    for name in ("selectivity.png", "selectivity.svg", "selectivity_summary.md", "selectivity_summary.csv",
                 "selectivity_channels.json"):
        assert (output / name).stat().st_size > 0, name
    rows = json.loads((output / "selectivity_summary.json").read_text())
    channels = json.loads((output / "selectivity_channels.json").read_text())
    assert [(row["model"], row["layer"]) for row in rows] == [
        (model, layer) for model in ("seed0", "seed1")
        for layer in ("layer1", "layer2", "layer3", "layer4", PRE_LOGITS)]
    for row in rows:
        values = torch.tensor(channels[row["model"]][row["layer"]])
        assert row["channels"] == len(values)
        assert row["mean"] == pytest.approx(float(values.mean()), abs=1e-6)
        assert 0 <= row["median"] <= 1
    assert rows[0]["mean"] != rows[5]["mean"]  # two different trainings, two different measurements
    assert "| seed1 | layer4 |" in out


def test_cli_default_labels_and_chosen_layers(capsys, tmp_path, runs):
    code, out, err = run_cli(capsys, "--checkpoints", f"{runs[0]},{runs[1]}", "--layers",
                             "layer2,layer3.0.act1", "--output", tmp_path / "out")
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "selectivity_summary.json").read_text())
    assert [row["model"] for row in rows] == ["test_resnet (run0)"] * 2 + ["test_resnet (run1)"] * 2
    assert [row["layer"] for row in rows] == ["layer2", "layer3.0.act1"] * 2


@pytest.mark.parametrize("args, fragment", [
    (["--models", "a", "--checkpoints", "{0},{1}"], "1 model label(s) for 2 checkpoint(s)"),
    (["--checkpoints", "{0},{1}", "--layers", "layer1,layer9"],
     "no layer 'layer9'; its default layers are layer1, layer2, layer3, layer4, pre_logits"),
    (["--checkpoints", "{0},/nonexistent/run"], "/nonexistent/run does not exist"),
    (["--models", "test_efficientnet,b", "--checkpoints", "{0},{2}"], "names the model of another run"),
    (["--checkpoints", "{0},{2}"], "default layers differ (test_resnet: layer1, layer2, layer3, layer4, pre_logits"),
    (["--models", "a,a", "--checkpoints", "{0},{1}"], "repeat"),
])
def test_cli_mistakes_print_one_clear_line(capsys, tmp_path, runs, args, fragment):
    code, _, err = run_cli(capsys, *[arg.format(*runs) for arg in args], "--output", tmp_path / "out")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert fragment in err


def test_runs_trained_on_different_data_are_refused(capsys, tmp_path, runs):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.safetensors", "model.json"):
        (other / name).write_bytes((runs[1] / name).read_bytes())
    meta = json.loads((other / "model.json").read_text())
    meta["data_args"]["num_samples"] = 40
    (other / "model.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "--checkpoints", f"{runs[0]},{other}", "--output", tmp_path / "out")
    assert code == 2
    assert "measured on different data" in err and "pass --data" in err
    code, _, err = run_cli(capsys, "--checkpoints", f"{runs[0]},{other}", "--data", "digits", "--split", "val",
                           "--output", tmp_path / "out")
    assert code == 0, err  # on data neither was trained on, both see the same images
    rows = json.loads((tmp_path / "out" / "selectivity_summary.json").read_text())
    assert len(rows) == 10
