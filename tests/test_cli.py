"""The command line: end-to-end runs and one clear line (no traceback) for every mistake."""
import json
import subprocess
import sys

import pytest

from reusenet.cli import main

TINY = ["--model", "test_resnet", "--data", "synthetic", "--epochs", "1", "--batch-size", "16",
        "--precision", "fp32", "--no-progress", "--set", "workers=0", "--set", "tensorboard=false",
        "--set", "channels_last=false", "--set", "data_args={num_classes: 3, image_size: 16, num_samples: 48}"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["train", "--data", "cifar10", "--data-root", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["train", "--model", "resnet18_cifarr", "--data", "synthetic"], "Did you mean: resnet18_cifar"),
    (["train", "--set", "learning_rate=0.1"], "unknown configuration key 'learning_rate'"),
    (["train", "--batch-size", "-4"], "batch_size must be positive"),
    (["train", "--set", "schedule=cosin"], "Did you mean: cosine"),
    (["train", "--recipe", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["train", "--data", "imagenet"], "Did you mean: imagenet-subset"),
    (["eval", "/nonexistent/run"], "/nonexistent/run does not exist"),
    (["models", "--filter", "nothing*"], "no reusenet model matches"),
])
def test_mistakes_print_one_clear_line_and_exit_2(capsys, tmp_path, args, fragment):
    code, _, err = run_cli(capsys, *args, *(["--output", str(tmp_path / "r")] if args[0] == "train" else []))
    assert_one_line_error(code, err, fragment)


def test_wrong_format_recipe_file(capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("epochs: [1, 2\n")
    code, _, err = run_cli(capsys, "train", "--recipe", str(recipe))
    assert_one_line_error(code, err, "is not valid YAML")


def test_wrong_format_dataset_files(capsys, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        (folder / name).write_text("not a pickle")
    code, _, err = run_cli(capsys, "train", "--data", "cifar10", "--data-root", str(tmp_path),
                           "--output", str(tmp_path / "r"))
    assert_one_line_error(code, err, "data_batch_1")


def test_train_then_eval_and_resume_from_the_command_line(capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, "--output", str(run))
    assert code == 0, err
    assert "done: val top-1" in out
    results = json.loads((run / "results.json").read_text())
    code, out, _ = run_cli(capsys, "eval", str(run), "--split", "test")
    assert code == 0
    assert f"top-1 {results['test_acc1']:.2f}%" in out
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 0, err
    assert len(json.loads((run / "summary.json").read_text())) == 2
    code, _, err = run_cli(capsys, "train", *TINY, "--output", str(run))
    assert_one_line_error(code, err, "already holds a run")


def test_models_lists_params_and_gmacs(capsys):
    code, out, _ = run_cli(capsys, "models", "--filter", "resnet18_cifar", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["model"], row["input"]) == ("resnet18_cifar", "32x32")
    assert (round(row["params_M"], 2), round(row["GMACs"], 2)) == (11.22, 0.56)  # REAF paper, Table 4


def test_console_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "reusenet", "recipes"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "reaf-cifar100" in result.stdout and "digits" in result.stdout


def test_eval_reads_a_checkpoint_file_directly(capsys, tmp_path):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--output", str(run))[0] == 0
    results = json.loads((run / "results.json").read_text())
    code, out, _ = run_cli(capsys, "eval", str(run / "last.pt"), "--split", "test")
    assert code == 0
    assert f"top-1 {results['test_acc1']:.2f}%" in out
