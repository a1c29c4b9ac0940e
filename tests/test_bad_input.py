"""The inputs users really get wrong, through the CLI and the Python API: each gets one clear line or a
documented recovery, and none loses data."""
import json
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reusenet.cli import main
from reusenet.data import ImageFiles, InMemoryImages, build_dataset, build_loader
from reusenet.engine import Trainer, load_checkpoint, load_config, load_trained, make_config, train
from reusenet.engine.config import TrainConfig
from reusenet.errors import UserError

KEYS = sorted(TrainConfig.__dataclass_fields__)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# --- recipes and configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["epochs: [1, 2", "lr: 0.1\n  batch_size: 3", "model: {a: 1", "\tepochs: 3"])
def test_malformed_yaml_is_one_line_naming_the_file(tmp_path, capsys, text):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(text)
    code, err = run_cli(capsys, "train", "--recipe", str(recipe))
    assert code == 2
    assert err.count("\n") == 1 and f"{recipe} is not valid YAML" in err


def test_a_recipe_that_is_not_a_mapping_is_refused(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- model: resnet18_cifar\n- epochs: 3\n")
    with pytest.raises(UserError, match="must be a mapping of configuration keys"):
        load_config(str(recipe))


@FAST
@given(key=st.sampled_from([k for k in KEYS if len(k) > 4]), data=st.data())
def test_a_mistyped_key_suggests_the_valid_one(key, data):
    position = data.draw(st.integers(0, len(key) - 1))
    typo = key[:position] + key[position + 1:]  # one character dropped
    if typo in KEYS:
        return
    with pytest.raises(UserError, match=rf"unknown configuration key '{typo}'.*Did you mean: {key}"):
        make_config({typo: 1})


@FAST
@given(key=st.text(string.ascii_lowercase + "_", min_size=1, max_size=20).filter(lambda k: k not in KEYS))
def test_any_unknown_key_is_refused_with_the_list_command(key):
    with pytest.raises(UserError, match="reusenet train --help-keys"):
        make_config({key: 1})


@FAST
@given(key=st.sampled_from(["batch_size", "epochs"]), value=st.integers(max_value=0))
def test_zero_or_negative_sizes_are_refused(key, value):
    with pytest.raises(UserError, match=rf"{key} must be positive"):
        make_config({key: value})


@FAST
@given(value=st.floats(max_value=0) | st.just(float("nan")) | st.just(float("inf")))
def test_a_learning_rate_that_is_not_a_positive_number_is_refused(value):
    with pytest.raises(UserError, match="lr must be a positive finite number"):
        make_config({"lr": value})


@FAST
@given(value=st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans()))
def test_wrong_value_types_name_the_expected_type(value):
    with pytest.raises(UserError, match="batch_size: expected an integer"):
        make_config({"batch_size": value})


def test_cli_flag_with_a_bad_value_exits_2_with_one_line(capsys):
    code, err = run_cli(capsys, "train", "--epochs", "0")
    assert code == 2 and err.strip() == "reusenet train: error: epochs must be positive, got 0."


# --- images on disk -------------------------------------------------------------------------------------------

def write_image_zoo(root):
    """A train folder with one class of well-formed images in every mode and size users have, one class
    of broken files and an empty class folder; val and test folders with one image per class."""
    for split in ("val", "test"):
        for name in ("good", "broken"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (16, 16)).save(root / split / name / "x.png")
    top, root = root, root / "train"
    good = root / "good"
    good.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good / "rgb.jpg")
    Image.new("L", (16, 16), 90).save(good / "gray.png")
    Image.new("RGBA", (20, 24), (10, 200, 10, 128)).save(good / "rgba.png")
    Image.new("P", (12, 12), 3).save(good / "palette.png")
    palette = Image.new("P", (12, 12), 1)
    palette.info["transparency"] = 1
    palette.save(good / "palette_transparent.png", transparency=1)
    Image.fromarray(np.full((18, 18), 40000, dtype=np.uint16)).save(good / "deep.png")  # 16-bit grayscale
    broken = root / "broken"
    broken.mkdir()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(broken / "whole.jpg")
    data = (broken / "whole.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (broken / "not_an_image.png").write_text("hello")
    (root / "empty_class").mkdir()
    return top


def test_images_of_every_mode_and_size_load_as_rgb_and_broken_ones_are_skipped(tmp_path):
    root = write_image_zoo(tmp_path / "zoo")
    with pytest.warns(UserWarning, match="class folder\\(s\\) without images: empty_class; ignored"):
        dataset = build_dataset("folder", str(root), "train")
    root = root / "train"
    assert dataset.classes == ["broken", "good"]  # the empty class folder is ignored, with a warning
    config = {"input_size": (3, 16, 16), "mean": (0.0,) * 3, "std": (1.0,) * 3, "crop_pct": 1.0,
              "interpolation": "bilinear"}
    loader = build_loader(dataset, 16, train=False, data_config=config, workers=0)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        (images, labels), = list(loader)
    assert images.shape == (7, 3, 16, 16)
    assert sorted(loader.skipped) == sorted(str(root / "broken" / n) for n in ("not_an_image.png", "truncated.jpg"))
    paths = [path for path, _ in dataset.samples if path not in loader.skipped]
    deep = images[paths.index(str(root / "good" / "deep.png"))]
    assert deep.mean().item() == pytest.approx(40000 / 65535, abs=0.01)  # scaled, not clipped to white


def test_a_dataset_with_one_class_is_refused_before_training(tmp_path, tiny_config):
    folder = tmp_path / "one"
    for split in ("train", "val", "test"):
        (folder / split / "cat").mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (16, 16), (index, 0, 0)).save(folder / split / "cat" / f"{index}.png")
    config = tiny_config(data="folder", data_root=str(folder), data_args={})
    with pytest.raises(UserError, match="has 1 class \\(cat\\); a classifier needs at least two"):
        train(config)


@FAST
@given(low=st.integers(-5, -1) | st.integers(3, 9))
def test_labels_out_of_range_are_refused_where_the_dataset_is_built(low):
    labels = torch.tensor([0, 1, low])
    with pytest.raises(UserError, match="labels must be class indices in 0..2"):
        InMemoryImages(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), labels, ["a", "b", "c"], (0.5,) * 3,
                       (0.5,) * 3, "mine")
    with pytest.raises(UserError, match="labels outside 0..2"):
        ImageFiles([("a.png", 0), ("b.png", low)], ["a", "b", "c"], "mine")


def test_images_of_the_wrong_dtype_or_shape_are_refused():
    with pytest.raises(UserError, match="must be a uint8 tensor of shape N x 3 x H x W"):
        InMemoryImages(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), ["a", "b"], (0.5,) * 3, (0.5,) * 3, "x")


# --- checkpoints and weights ----------------------------------------------------------------------------------

def test_resuming_with_another_architecture_lists_the_differing_keys(tiny_config):
    config = tiny_config(epochs=2)
    Trainer(config, log=lambda _: None).fit(stop_after_epoch=1)
    before = (config.output and load_checkpoint(config.output))["model"]
    other = make_config({**config.to_dict(), "model": "resnet18_cifar"})
    with pytest.raises(UserError, match=r"does not fit .*missing from the file \(\d+\): .*It was written for "
                                        r"model test_resnet"):
        Trainer(other, resume=True, log=lambda _: None)
    after = load_checkpoint(config.output)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was overwritten


def test_weights_whose_sidecar_names_another_model_are_refused(tiny_config, tmp_path):
    config = tiny_config(epochs=1)
    train(config)
    sidecar = tmp_path / "run" / "model.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "model": "resnet18_cifar", "model_args": {}}))
    with pytest.raises(UserError, match=r"weights in .* do not fit|does not fit ResNet: .*shape in file vs model"):
        load_trained(tmp_path / "run")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_checkpoint_files_are_refused(tmp_path, content, capsys):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    code, err = run_cli(capsys, "eval", str(path))
    assert code == 2 and "is not a readable checkpoint" in err


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "nothing-here"))
    assert code == 2 and "nothing to resume" in err
