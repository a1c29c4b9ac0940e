"""RefiNet (reusenet.hierarchy): affinity, clustering, routing, frozen trunk, deeper levels, the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from reusenet.cli import main
from reusenet.data import build_dataset
from reusenet.engine import Trainer, make_config
from reusenet.hierarchy import (
    RefiNet,
    class_affinity,
    cluster_accuracy,
    cluster_classes,
    confusion_affinity,
    load_refinet,
    mass_shift_affinity,
    pipeline,
    vote,
)
from reusenet.hierarchy.heads import ClusterHead, ClusterNet
from reusenet.models import create_model

# 4 held-out images of 3 classes; hand-computed affinities below.
PROBS = np.array([[0.7, 0.2, 0.1],   # class 0, predicted 0
                  [0.4, 0.6, 0.0],   # class 0, predicted 1
                  [0.1, 0.8, 0.1],   # class 1, predicted 1
                  [0.0, 0.3, 0.7]])  # class 2, predicted 2
LABELS = np.array([0, 0, 1, 2])


def test_eq6_mass_shift_affinity_by_hand():
    # A[p,q] = (sum over images of p of score q + sum over images of q of score p) / N1, N1 = 4
    expected = np.array([[2 * 1.1, 0.8 + 0.1, 0.1 + 0.0],
                         [0.8 + 0.1, 2 * 0.8, 0.1 + 0.3],
                         [0.1 + 0.0, 0.1 + 0.3, 2 * 0.7]]) / 4
    np.testing.assert_allclose(mass_shift_affinity(PROBS, LABELS, 3), expected)
    np.testing.assert_allclose(class_affinity(PROBS, LABELS, 3, "mass"), expected)


def test_eq7_confusion_affinity_by_hand():
    # F rows: class 0 -> [1/2, 1/2, 0], class 1 -> [0, 1, 0], class 2 -> [0, 0, 1]; A = (F + F^T) / 2
    expected = np.array([[0.5, 0.25, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(confusion_affinity(PROBS, LABELS, 3), expected)


CLUSTER_OF = torch.tensor([0, 0, 1, 1, 2, 2, 2])


@pytest.mark.parametrize("probs, expected", [
    # votes 2:2 between clusters 1 and 2, cluster 2 holds more of the top-5 mass (0.5 vs 0.3)
    ([0.1, 0.05, 0.15, 0.15, 0.3, 0.2, 0.05], 2),
    # the same vote count, now cluster 1 holds more mass (0.45 vs 0.32)
    ([0.11, 0.05, 0.3, 0.15, 0.2, 0.12, 0.07], 1),
    # 2 votes beat 1 vote carrying the largest single probability
    ([0.4, 0.03, 0.15, 0.14, 0.13, 0.12, 0.03], 1),
    # one-hot: the zero-probability classes of the "top-5" cast no vote
    ([0, 0, 0, 0, 0, 0, 1.0], 2),
    ([1.0, 0, 0, 0, 0, 0, 0], 0),
])
def test_top5_voting_and_tie_break(probs, expected):
    assert vote(torch.tensor([probs]), CLUSTER_OF, 3).item() == expected


def test_fewer_voters_follow_the_top1_cluster():
    probs = torch.tensor([[0.4, 0.03, 0.15, 0.14, 0.13, 0.12, 0.03]])  # top-5 voting picks cluster 1 (above)
    assert vote(probs, CLUSTER_OF, 3, voters=1).item() == 0


def test_vote_with_fewer_classes_than_voters():
    assert vote(torch.tensor([[0.3, 0.35, 0.35]]), torch.tensor([0, 0, 1]), 2).item() == 0


def test_cluster_accuracy():
    # true clusters of labels 0..3 are 0, 0, 1, 1; routed 0, 1, 1, 0 -> half right
    assert cluster_accuracy([0, 1, 2, 3], [0, 1, 1, 0], [0, 0, 1, 1]) == 50.0
    assert cluster_accuracy([0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 1, 1]) == 100.0


def planted_probs(seed=0, certainty=0.5, groups=3, classes=12, per_class=30):
    """Level-1 probabilities of 12 classes in 3 groups (class c in group c % 3): `certainty` extra mass on the
    true class, the confusion within the group, almost none across groups."""
    rng = np.random.default_rng(seed)
    group = np.arange(classes) % groups
    labels = np.repeat(np.arange(classes), per_class)
    probs = np.empty((len(labels), classes))
    for row, label in enumerate(labels):
        same = group == group[label]
        scores = 0.002 * rng.random(classes) + same * rng.random(classes) * 0.4
        scores[label] += certainty
        probs[row] = scores / scores.sum()
    return probs, labels, group


# Eq. 7 only sees top-1 mistakes: it needs a level 1 that makes some (the paper: "very sparse" otherwise).
@pytest.mark.parametrize("affinity, certainty", [("mass", 0.5), ("confusion", 0.1)])
def test_spectral_clustering_recovers_planted_groups(affinity, certainty):
    probs, labels, group = planted_probs(certainty=certainty)
    found = cluster_classes(class_affinity(probs, labels, 12, affinity), 3, "spectral")
    np.testing.assert_array_equal(found, group)  # both numbered by smallest class: 0, 1, 2, 0, 1, 2, ...


@pytest.mark.parametrize("method", ["agglomerative", "affinity-propagation", "kmedoids"])
def test_other_clusterings_recover_planted_groups(method):
    probs, labels, group = planted_probs(seed=1)
    np.testing.assert_array_equal(cluster_classes(class_affinity(probs, labels, 12), 3, method), group)


def tiny_refinet(num_classes=6, stage=2):
    level1 = create_model("test_resnet", num_classes=num_classes)
    names = [f"class_{i}" for i in range(num_classes)]
    data_config = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 1.0,
                   "interpolation": "bilinear"}
    return RefiNet(level1, names, stage, {"convs": 1, "width": 8, "drop_rate": 0.5}, data_config,
                   {"model": "test_resnet", "model_args": {}, "router": "vote"})


def test_soft_routing_equals_hard_routing_for_one_hot_level1():
    refinet = tiny_refinet()
    refinet.tree.split([0, 0, 1, 1, 1, 2])
    generator = torch.Generator().manual_seed(0)
    root = torch.nn.functional.one_hot(torch.randint(0, 6, (20,), generator=generator), 6).float()
    probs = {"root": root}
    for child in refinet.tree.children:
        probs[child.path] = torch.rand(20, len(child.classes), generator=generator).softmax(dim=1)
    hard, soft = refinet.combine(probs, "vote"), refinet.combine(probs, "soft")
    torch.testing.assert_close(soft, hard)
    # and they differ once level 1 hedges, so the test can tell them apart
    probs["root"] = torch.rand(20, 6, generator=generator).softmax(dim=1)
    assert not torch.allclose(refinet.combine(probs, "vote"), refinet.combine(probs, "soft"))


def test_hard_routing_puts_zero_outside_the_chosen_cluster():
    refinet = tiny_refinet()
    refinet.tree.split([0, 0, 1, 1, 1, 2])
    probs = {"root": torch.tensor([[0.05, 0.05, 0.3, 0.3, 0.2, 0.1]]), "c0": torch.tensor([[0.5, 0.5]]),
             "c1": torch.tensor([[0.2, 0.3, 0.5]]), "c2": torch.ones(1, 1)}
    torch.testing.assert_close(refinet.combine(probs, "vote"), torch.tensor([[0, 0, 0.2, 0.3, 0.5, 0]]))
    torch.testing.assert_close(refinet.combine(probs, "vote", levels=1), probs["root"])


def engine_settings(tmp_path, name, **extra):
    return make_config(dict(model=name, data="synthetic", epochs=1, batch_size=16, lr=0.01, optimizer="adam",
                            schedule="constant", precision="fp32", channels_last=False, workers=0,
                            tensorboard=False, progress=False, output=str(tmp_path / name), **extra))


def test_frozen_trunk_is_bit_identical_after_level2_training(tmp_path):
    refinet = tiny_refinet(num_classes=4)
    level1 = refinet.level1
    level1.train()
    with torch.no_grad():  # give BatchNorm statistics values that an accidental update would change
        level1(torch.randn(8, 3, 16, 16))
    before = {k: v.clone() for k, v in level1.state_dict().items()}
    refinet.tree.split([0, 0, 1, 1])
    node = refinet.tree.children[0]
    head = refinet.new_head(node)
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    data = build_dataset("synthetic", split="train", num_classes=4, image_size=16, num_samples=64)
    subset = pipeline.restrict(data, node.classes, refinet.classes)
    Trainer(engine_settings(tmp_path, "head"), model=ClusterNet(refinet.trunk, head),
            datasets={"train": subset}, log=lambda *_: None).fit()
    after = level1.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(head_before[k], head.state_dict()[k]) for k in head_before)
    assert not level1.training  # the trunk put level 1 back in eval mode before using it


def test_cut_stage_is_checked():
    with pytest.raises(ValueError, match="stage 9 is not a feature stage"):
        tiny_refinet(stage=9)


def test_cluster_head_outputs_cluster_classes_for_any_map_size():
    head = ClusterHead(in_chs=16, num_classes=3, convs=2, width=8)
    for size in (1, 2, 7):
        assert head(torch.randn(2, 16, size, size)).shape == (2, 3)


@pytest.fixture
def untrained_heads(monkeypatch):
    """Deeper levels without the training: fit_head only adds an (untrained) head."""
    monkeypatch.setattr(pipeline, "fit_head", lambda refinet, node, *rest: refinet.new_head(node))


@pytest.mark.parametrize("split, max_size", [("largest", None), ("size", 2)])
def test_deeper_levels_split_the_largest_cluster(untrained_heads, tmp_path, split, max_size):
    refinet = tiny_refinet(num_classes=12)
    refinet.tree.split([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # sizes 6, 3, 3
    for node in refinet.tree.children:
        refinet.new_head(node)
    held = build_dataset("synthetic", split="val", num_classes=12, image_size=16, num_samples=48)
    config = pipeline.RefiNetConfig(split=split, max_cluster_size=max_size, model="test_resnet")
    pipeline.deepen(refinet, config, {}, held, tmp_path, log=lambda *_: None)
    largest, *others = refinet.tree.children
    if split == "largest":
        assert [len(c.children) for c in refinet.tree.children] == [2, 0, 0]
        assert sorted(c for child in largest.children for c in child.classes) == list(range(6))
        assert [child.path for child in largest.children] == ["c0_0", "c0_1"]
    else:
        assert max(len(leaf.classes) for leaf in refinet.tree.leaves()) <= 2
        assert sorted(c for leaf in refinet.tree.leaves() for c in leaf.classes) == list(range(12))
    assert refinet.tree.depth() >= 3


def test_artifact_round_trip_predicts_the_same(tmp_path):
    refinet = tiny_refinet()
    refinet.tree.split([0, 0, 1, 1, 1, 2])
    refinet.tree.children[1].split([0, 1, 1])
    for node in refinet.tree.nodes()[1:]:
        if len(node.classes) > 1:
            refinet.new_head(node)
    refinet.new_router()
    refinet.save(tmp_path)
    loaded = load_refinet(tmp_path / "refinet.safetensors")
    assert loaded.tree.to_dict() == refinet.tree.to_dict()
    images = torch.randn(5, 3, 16, 16)
    for router in ("vote", "soft", "retrain"):
        torch.testing.assert_close(loaded.predict_proba(images, router), refinet.predict_proba(images, router),
                                   rtol=0, atol=0)
    png = tmp_path / "image.png"
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(png)
    [prediction] = loaded.predict_files([png], top=3)
    assert prediction["path"] == str(png) and len(prediction["classes"]) == 3
    assert prediction["classes"][0][0] in refinet.classes


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


TINY_RECIPE = """
data: synthetic
data_args: {num_classes: 6, image_size: 16, num_samples: 96}
model: test_resnet
stage: 2
k: 2
k_sweep: [2, 3]
head_convs: 1
head_width: 16
split: largest
retrain_router: true
tsne_points: 60
train: {epochs: 1, batch_size: 16, optimizer: adam, lr: 0.01, schedule: constant, precision: fp32,
        channels_last: false, workers: 0, tensorboard: false, progress: false}
"""


@pytest.mark.slow  # six tiny trainings: ~30 s alone, minutes on a loaded machine
def test_cli_fit_eval_predict(capsys, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out_dir = tmp_path / "fit"
    code, out, err = run_cli(capsys, "refinet", "fit", "--recipe", recipe, "--output", out_dir)
    assert code == 0, err
    for name in ("refinet.safetensors", "refinet.json", "hierarchy.json", "results.md", "clusters.md",
                 "clustering.md", "cluster_accuracy_vs_k.png", "tsne.png"):
        assert (out_dir / name).is_file(), name
    hierarchy = json.loads((out_dir / "hierarchy.json").read_text())
    assert sorted(c for child in hierarchy["children"] for c in child["classes"]) == \
        sorted(f"class_{i}" for i in range(6))
    fitted = json.loads((out_dir / "results.json").read_text())
    assert [row["model"] for row in fitted] == ["flat (level 1)", "RefiNet-L2", "RefiNet-L2 soft",
                                                "RefiNet-L2 + retrain", "RefiNet-L3", "RefiNet-L3 soft"]

    code, out, err = run_cli(capsys, "refinet", "eval", out_dir, "--json")
    assert code == 0, err
    assert json.loads(out)["results"] == fitted  # the saved artifact predicts exactly what was fitted

    image = build_dataset("synthetic", split="test", num_classes=6, image_size=16, num_samples=96).images[0]
    png = tmp_path / "image.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(png)
    code, out, err = run_cli(capsys, "refinet", "predict", out_dir, png, "--top", "2")
    assert code == 0, err
    assert out.startswith(f"{png}: class_") and out.count("class_") == 2


def assert_one_line_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["fit", "--clustering", "spectrall"], "Did you mean: spectral"),
    (["fit", "--affinity", "eq8"], "affinity: 'eq8' is not one of mass, confusion"),
    (["fit", "--router", "votes"], "Did you mean: vote"),
    (["fit", "--split", "biggest"], "split: 'biggest'"),
    (["fit", "--recipe", "digitz"], "Did you mean: digits"),
    (["fit", "--set", "kk=3"], "unknown RefiNet setting 'kk'"),
    (["fit", "--set", "level1_train.epoch=3"], "unknown configuration key 'epoch'"),
    (["fit", "--router", "retrain"], "needs retrain_router: true"),
    (["eval", "/nonexistent/refinet"], "no RefiNet artifact at /nonexistent/refinet"),
    (["predict", "/nonexistent/refinet", "x.png"], "no RefiNet artifact"),
])
def test_bad_input_is_one_clear_line(capsys, args, fragment):
    code, _, err = run_cli(capsys, "refinet", *args)
    assert_one_line_error(code, err, fragment)


def test_k_larger_than_the_number_of_classes(capsys, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    code, _, err = run_cli(capsys, "refinet", "fit", "--recipe", recipe, "--k", "7", "--output", tmp_path / "o")
    assert_one_line_error(code, err, "k=7 clusters exceeds the 6 classes")
    assert not (tmp_path / "o" / "level1").exists()  # refused before any training
