"""reusenet.data: every dataset read from small files in its real on-disk format, and the loaders."""
import pickle
import warnings
from collections import Counter, OrderedDict
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from reusenet.data import DATASETS, ImageFiles, InMemoryImages, build_dataset, build_loader, dataset_splits
from reusenet.errors import UserError

SPLITS = ("train", "val", "test")
FILE_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN,
               "std": IMAGENET_DEFAULT_STD, "crop_pct": 0.875}


# ---------------------------------------------------------------- writers of the real on-disk formats

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickle(path, entry):
    with open(path, "wb") as file:
        pickle.dump(entry, file, protocol=2)  # like the official files: protocol 2, bytes keys


def write_cifar10(root, per_batch=10, test_count=10):
    """cifar-10-batches-py with five training batches, a test batch and batches.meta; returns the arrays."""
    rng = np.random.default_rng(0)
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test_count if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.permutation(np.arange(count) % 10)]
        _pickle(directory / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                   b"filenames": [f"{name}_{i}.png".encode() for i in range(count)]})
        arrays[name] = (data, np.asarray(labels))
    _pickle(directory / "batches.meta", {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                                         b"label_names": [name.encode() for name in CIFAR10_NAMES]})
    train = [arrays[name] for name in names[:5]]
    return directory, (np.concatenate([d for d, _ in train]), np.concatenate([lab for _, lab in train])), \
        arrays["test_batch"]


def write_cifar100(root):
    """cifar-100-python with train (2 images per class), test (1 per class) and meta."""
    rng = np.random.default_rng(1)
    directory = root / "cifar-100-python"
    directory.mkdir(parents=True)
    arrays = {}
    for name, per_class in (("train", 2), ("test", 1)):
        fine = rng.permutation(np.arange(100 * per_class) % 100)
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        _pickle(directory / name, {b"filenames": [b"x.png"] * len(fine), b"batch_label": name.encode(),
                                   b"fine_labels": [int(x) for x in fine],
                                   b"coarse_labels": [int(x) // 5 for x in fine], b"data": data})
        arrays[name] = (data, fine)
    fine_names = [f"fine{i:02d}".encode() for i in range(100)]
    _pickle(directory / "meta", {b"fine_label_names": fine_names,
                                 b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return directory, arrays


TINY_WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900"]
TINY_WORDS = ["goldfish, Carassius auratus", "European fire salamander, Salamandra salamandra",
              "bullfrog, Rana catesbeiana", "tailed frog, bell toad, ribbed toad"]


def _red_of(label):  # the red channel encodes the class
    return 30 + 60 * label


def _green_of(index):  # the green channel of a val image encodes its number
    return 10 + 14 * index


def write_tiny_imagenet(root, train_per_class=3, val_per_class=4):
    """tiny-imagenet-200 with one grayscale and one corrupt training JPEG; returns the corrupt path."""
    directory = root / "tiny-imagenet-200"
    (directory / "val" / "images").mkdir(parents=True)
    (directory / "test" / "images").mkdir(parents=True)  # unlabelled in the real dataset; unused
    (directory / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    words = ["n00001740\tentity", *(f"{w}\t{n}" for w, n in zip(TINY_WNIDS, TINY_WORDS, strict=True))]
    (directory / "words.txt").write_text("\n".join(words) + "\n")
    for label, wnid in enumerate(TINY_WNIDS):
        images = directory / "train" / wnid / "images"
        images.mkdir(parents=True)
        (directory / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(train_per_class):
            mode = "L" if (label, i) == (1, 0) else "RGB"  # the real dataset has grayscale JPEGs
            image = Image.new("RGB", (64, 64), (_red_of(label), 100, 100)).convert(mode)
            image.save(images / f"{wnid}_{i}.JPEG")
    corrupt = directory / "train" / TINY_WNIDS[2] / "images" / f"{TINY_WNIDS[2]}_{train_per_class}.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    lines = []
    for index in range(val_per_class * len(TINY_WNIDS)):
        label, name = index % len(TINY_WNIDS), f"val_{index}.JPEG"
        size = 32 if index == 5 else 64  # one odd size, resized on load
        image = Image.new("RGB", (size, size), (_red_of(label), _green_of(index), 128))
        image.save(directory / "val" / "images" / name)
        lines.append(f"{name}\t{TINY_WNIDS[label]}\t0\t0\t63\t63")
    (directory / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return directory, str(corrupt)


def write_image_folder(directory, classes=("cat", "dog", "fox"), per_class=10):
    """Class folders mixing RGB/grayscale JPEGs and RGBA/palette PNGs of a non-square size."""
    for label, name in enumerate(classes):
        (directory / name).mkdir(parents=True)
        for i in range(per_class):
            mode = ("RGB", "L", "RGBA", "P")[i % 4]
            extension = "png" if mode in ("RGBA", "P") else "jpg"
            image = Image.new("RGB", (40, 30), (_red_of(label), 20 * i, 50)).convert(mode)
            image.save(directory / name / f"{name}_{i}.{extension}")


def write_bad_files(directory):
    """A file that is not an image and a truncated JPEG; returns their paths."""
    garbage = directory / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    whole = directory / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    truncated = directory / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:400])
    whole.unlink()
    return {str(garbage), str(truncated)}


def write_imagenet(root, wnids=("n01440764", "n01443537", "n01484850", "n01491361", "n01494475"),
                   train_per_class=3, val_per_class=2):
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (48, 40), (_red_of(label % 4), i, 0))
                image.save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return list(wnids)


def normalise(images, dataset):
    mean = torch.tensor(dataset.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def image_rows(dataset):
    return {bytes(row) for row in dataset.images.reshape(len(dataset), -1).numpy()}


def unnormalise(images, dataset):
    mean = torch.tensor(dataset.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std).view(1, 3, 1, 1)
    return ((images * std + mean) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- build_dataset arguments

def test_unknown_dataset_lists_the_valid_names_and_suggests_one():
    with pytest.raises(UserError, match="cifar10, cifar100") as error:
        build_dataset("cifar-10")
    assert "Did you mean: cifar10" in str(error.value)
    assert all(name in str(error.value) for name in DATASETS)
    with pytest.raises(UserError, match=r"Did you mean: imagenet-subset\?"):
        build_dataset("imagenet")


def test_split_a_dataset_lacks_names_the_available_ones():
    with pytest.raises(UserError, match="available splits: train, val"):
        build_dataset("imagenet-subset", "/nowhere", "test")
    with pytest.raises(UserError, match="Did you mean: test"):
        build_dataset("digits", split="tset")
    assert dataset_splits("imagenet-subset") == ("train", "val")
    assert dataset_splits("cifar10", val_size=0) == ("train", "test")


def test_keywords_go_only_to_datasets_that_take_them():
    assert len(build_dataset("synthetic", num_samples=7)) == 7
    with pytest.raises(UserError, match="digits takes no extra keywords, got val_size="):
        build_dataset("digits", val_size=10)
    with pytest.raises(UserError, match="its extra keywords are: num_samples"):
        build_dataset("synthetic", num_sample=10)
    with pytest.raises(UserError, match="synthetic does not take classes"):
        build_dataset("synthetic", classes=["a"])
    with pytest.raises(UserError, match="data_config's input_size"):
        build_dataset("folder", "/nowhere", image_size=64)
    for bad in ({"seed": -1}, {"num_classes": 0}, {"image_size": 2.5}, {"classes": "0"}):
        with pytest.raises(UserError):
            build_dataset("digits", **bad)


def test_in_memory_images_reject_tensors_of_the_wrong_kind():
    with pytest.raises(UserError, match="uint8 tensor of shape N x 3 x H x W"):
        InMemoryImages(torch.zeros(2, 3, 4, 4), torch.zeros(2), ["a"], (0.5,) * 3, (0.5,) * 3, name="mine")
    with pytest.raises(UserError, match="labels must have shape"):
        images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
        InMemoryImages(images, torch.zeros(3), ["a"], (0.5,) * 3, (0.5,) * 3, name="mine")


# ---------------------------------------------------------------- digits

def test_digits_is_a_fixed_stratified_70_10_20_split_of_all_1797_scans():
    splits = {split: build_dataset("digits", split=split) for split in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [1257, 180, 360]
    for split, dataset in splits.items():
        assert dataset.images.shape == (len(dataset), 3, 32, 32) and dataset.images.dtype == torch.uint8
        assert dataset.images.is_contiguous() and dataset.labels.dtype == torch.int64
        assert dataset.classes == [str(d) for d in range(10)] and dataset.image_size == 32
        share = dataset.labels.bincount(minlength=10).float() / len(dataset)
        overall = torch.from_numpy(np.bincount(load_digits().target)).float() / 1797
        assert (share - overall).abs().max() < 0.01, split  # stratified
    assert torch.equal(splits["train"].images[:, 0], splits["train"].images[:, 2])  # gray replicated
    assert splits["train"].images.max() == 255


def test_digits_split_ignores_the_seed_and_covers_the_scans_exactly_once():
    reference = build_dataset("digits", split="val")
    again = build_dataset("digits", split="val", seed=7)
    assert torch.equal(reference.images, again.images) and torch.equal(reference.labels, again.labels)
    # At the native 8x8 size each image is the scan scaled by 255/16; the three splits partition them.
    native = [build_dataset("digits", split=s, image_size=8) for s in SPLITS]
    seen = Counter((d.images[i, 0].numpy().tobytes(), int(d.labels[i]))
                   for d in native for i in range(len(d)))
    digits = load_digits()
    scans = np.round(digits.images * 255 / 16).astype(np.uint8)
    assert seen == Counter((scan.tobytes(), int(t)) for scan, t in zip(scans, digits.target, strict=True))


def test_digits_statistics_come_from_the_train_split():
    train = build_dataset("digits")
    pixels = train.images.double() / 255
    assert np.allclose(train.mean, pixels.mean(dim=(0, 2, 3)).numpy())
    assert np.allclose(train.std, pixels.std(dim=(0, 2, 3), unbiased=False).numpy())
    assert build_dataset("digits", split="test").mean == train.mean


# ---------------------------------------------------------------- CIFAR

def test_cifar10_train_and_test_round_trip_the_pickled_values(tmp_path):
    directory, (train_data, train_labels), (test_data, test_labels) = write_cifar10(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train", val_size=0)
    assert torch.equal(train.images, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))
    assert train.labels.tolist() == train_labels.tolist()
    assert train.classes == CIFAR10_NAMES and train.num_classes == 10
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    test = build_dataset("cifar10", directory, "test")  # root may be the batches directory itself
    assert torch.equal(test.images, torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == test_labels.tolist()


def test_cifar10_val_is_a_seeded_stratified_holdout_from_the_training_files(tmp_path):
    _, (train_data, _), _ = write_cifar10(tmp_path)
    val = build_dataset("cifar10", tmp_path, "val", seed=3, val_size=10)
    train = build_dataset("cifar10", tmp_path, "train", seed=3, val_size=10)
    assert (len(val), len(train)) == (10, 40)
    assert val.labels.bincount(minlength=10).tolist() == [1] * 10
    assert image_rows(val).isdisjoint(image_rows(train))
    assert image_rows(val) | image_rows(train) == {bytes(row) for row in train_data}
    assert torch.equal(build_dataset("cifar10", tmp_path, "val", seed=3, val_size=10).images, val.images)
    assert not torch.equal(build_dataset("cifar10", tmp_path, "val", seed=4, val_size=10).images, val.images)
    with pytest.raises(UserError, match="val_size"):  # the default 5000 cannot come out of 50 images
        build_dataset("cifar10", tmp_path, "val")
    with pytest.raises(UserError, match="val_size=0"):
        build_dataset("cifar10", tmp_path, "val", val_size=0)


def test_cifar_class_subset_relabels_in_dataset_order(tmp_path):
    _, (_, train_labels), _ = write_cifar10(tmp_path)
    subset = build_dataset("cifar10", tmp_path, classes=["dog", "cat"], val_size=0)
    assert subset.classes == ["cat", "dog"]
    assert subset.labels.tolist() == [0 if label == 3 else 1 for label in train_labels if label in (3, 5)]
    with pytest.raises(UserError, match="Did you mean: dog"):
        build_dataset("cifar10", tmp_path, classes=["dgo"], val_size=0)


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    _, arrays = write_cifar100(tmp_path)
    test = build_dataset("cifar100", tmp_path, "test")
    assert torch.equal(test.images, torch.from_numpy(arrays["test"][0].reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == arrays["test"][1].tolist()
    assert test.classes == [f"fine{i:02d}" for i in range(100)]
    assert test.mean == (0.5071, 0.4865, 0.4409)
    train = build_dataset("cifar100", tmp_path, "train", val_size=100, image_size=16)
    assert train.images.shape == (100, 3, 16, 16)
    assert train.labels.bincount(minlength=100).tolist() == [1] * 100


def test_cifar_missing_files_name_every_expected_path(tmp_path):
    with pytest.raises(UserError) as error:
        build_dataset("cifar10", tmp_path / "absent")
    message = str(error.value)
    for name in ("data_batch_1", "data_batch_5", "batches.meta"):
        assert str(tmp_path / "absent" / "cifar-10-batches-py" / name) in message
    assert "does not exist" in message and "download=True" in message and "--download" in message
    with pytest.raises(UserError, match="cifar-100-python/meta"):
        build_dataset("cifar100", tmp_path, "test")


def test_cifar_download_failure_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="download failed") as error:
        build_dataset("cifar10", tmp_path, download=True)
    assert str(tmp_path / "cifar-10-batches-py") in str(error.value)


def test_cifar_files_in_the_wrong_format_are_named(tmp_path):
    directory, _, _ = write_cifar10(tmp_path)
    (directory / "data_batch_2").write_text("this is a text file\n")
    with pytest.raises(UserError, match="data_batch_2 is not a CIFAR python pickle"):
        build_dataset("cifar10", tmp_path, val_size=0)
    _pickle(directory / "data_batch_2", {b"data": np.zeros((3, 10), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(UserError, match=r"data_batch_2 is not a cifar10 batch: expected b'data' \(N x 3072"):
        build_dataset("cifar10", tmp_path, val_size=0)
    _pickle(directory / "data_batch_2", OrderedDict(data=1))  # any object beyond arrays is refused
    with pytest.raises(UserError, match="unexpected object collections.OrderedDict"):
        build_dataset("cifar10", tmp_path, val_size=0)


# ---------------------------------------------------------------- Tiny ImageNet

def test_tiny_imagenet_train_skips_the_corrupt_jpeg_and_converts_grayscale(tmp_path):
    _, corrupt = write_tiny_imagenet(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable") as warned:
        train = build_dataset("tiny-imagenet", tmp_path)
    assert corrupt in str(warned[0].message)
    assert train.skipped == [corrupt] and len(train) == 4 * 3
    assert train.images.shape == (12, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.classes == ["goldfish", "European fire salamander", "bullfrog", "tailed frog"]
    assert train.wnids == TINY_WNIDS and train.mean == IMAGENET_DEFAULT_MEAN
    centre = train.images[:, :, 32, 32].int()
    gray = (centre[:, 0] == centre[:, 1]) & (centre[:, 1] == centre[:, 2])
    assert gray.sum() == 1  # the grayscale JPEG, now three equal channels
    red = torch.tensor([_red_of(label) for label in train.labels.tolist()])
    assert ((centre[:, 0] - red).abs()[~gray] <= 3).all()


def test_tiny_imagenet_val_and_test_are_disjoint_stratified_halves_of_the_labelled_val(tmp_path):
    write_tiny_imagenet(tmp_path)
    halves = {split: build_dataset("tiny-imagenet", tmp_path, split, seed=5) for split in ("val", "test")}
    numbers = {}
    for split, half in halves.items():
        assert half.images.shape == (8, 3, 64, 64)  # the 32x32 one resized too
        assert half.labels.bincount().tolist() == [2, 2, 2, 2]
        centre = half.images[:, :, 32, 32].int()
        numbers[split] = [round((g - 10) / 14) for g in centre[:, 1].tolist()]
        assert [number % 4 for number in numbers[split]] == half.labels.tolist()  # as annotated
    assert set(numbers["val"]).isdisjoint(numbers["test"])
    assert set(numbers["val"]) | set(numbers["test"]) == set(range(16))
    other_seed = build_dataset("tiny-imagenet", tmp_path, "val", seed=6)
    assert not torch.equal(other_seed.images, halves["val"].images)


def test_tiny_imagenet_class_subset_is_reproducible_and_shared_by_all_splits(tmp_path):
    directory, _ = write_tiny_imagenet(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt training JPEG
        subsets = [build_dataset("tiny-imagenet", directory, s, seed=11, num_classes=2) for s in SPLITS]
    again = build_dataset("tiny-imagenet", tmp_path, "val", seed=11, num_classes=2)
    assert again.wnids == subsets[0].wnids == subsets[1].wnids == subsets[2].wnids
    assert torch.equal(again.images, subsets[1].images)
    wnids = subsets[0].wnids
    assert len(wnids) == 2 and wnids == sorted(wnids, key=TINY_WNIDS.index)
    assert all(set(s.labels.tolist()) == {0, 1} for s in subsets)
    chosen = build_dataset("tiny-imagenet", tmp_path, "test", classes=[TINY_WNIDS[3]], image_size=32)
    assert chosen.classes == ["tailed frog"] and chosen.images.shape == (2, 3, 32, 32)
    with pytest.raises(UserError, match="Did you mean: n01443537"):
        build_dataset("tiny-imagenet", tmp_path, "val", classes=["n01443538"])


def test_tiny_imagenet_missing_files_are_named(tmp_path):
    directory, _ = write_tiny_imagenet(tmp_path)
    (directory / "val" / "val_annotations.txt").unlink()
    with pytest.raises(UserError, match="val_annotations.txt") as error:
        build_dataset("tiny-imagenet", tmp_path, "val")
    assert str(directory / "val" / "val_annotations.txt") in str(error.value)
    (directory / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="val_annotations.txt:1: expected"):
        build_dataset("tiny-imagenet", tmp_path, "val")


# ---------------------------------------------------------------- folder and imagenet-subset

def test_folder_without_split_folders_is_carved_80_10_10_stratified(tmp_path):
    write_image_folder(tmp_path)
    splits = {split: build_dataset("folder", tmp_path, split, seed=2) for split in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [24, 3, 3]
    assert all(isinstance(d, ImageFiles) and d.classes == ["cat", "dog", "fox"] and d.mean is None
               for d in splits.values())
    assert sorted(label for _, label in splits["val"].samples) == [0, 1, 2]
    paths = [set(path for path, _ in splits[s].samples) for s in SPLITS]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert len(paths[0] | paths[1] | paths[2]) == 30
    assert build_dataset("folder", tmp_path, "val", seed=2).samples == splits["val"].samples
    assert build_dataset("folder", tmp_path, "val", seed=9).samples != splits["val"].samples


def test_folder_uses_split_folders_and_carves_only_the_missing_ones(tmp_path):
    write_image_folder(tmp_path / "train")
    write_image_folder(tmp_path / "val", per_class=2)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.warns(UserWarning, match="without images: empty"):
        splits = {split: build_dataset("folder", tmp_path, split) for split in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [27, 6, 3]
    assert splits["train"].classes == ["cat", "dog", "fox"]
    for dataset in splits.values():  # labels follow the class folder
        assert all(path.split("/")[-2] == dataset.classes[label] for path, label in dataset.samples)
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(UserError, match="folders the training data lacks: zebra"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_dataset("folder", tmp_path, "val")


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_dataset("folder", tmp_path)


def test_imagenet_subset_draws_the_same_classes_for_train_and_val(tmp_path):
    wnids = write_imagenet(tmp_path)
    train = build_dataset("imagenet-subset", tmp_path, "train", seed=1, num_classes=3)
    val = build_dataset("imagenet-subset", tmp_path, "val", seed=1, num_classes=3)
    assert train.classes == val.classes == train.wnids and len(train.classes) == 3
    assert train.classes == sorted(train.classes) and set(train.classes) <= set(wnids)
    assert (len(train), len(val)) == (9, 6)
    for dataset in (train, val):
        assert all(path.split("/")[-2] == dataset.classes[label] for path, label in dataset.samples)
    assert build_dataset("imagenet-subset", tmp_path, "val", seed=1, num_classes=3).samples == val.samples
    named = build_dataset("imagenet-subset", tmp_path, "val", classes=[wnids[4], wnids[0]])
    assert named.classes == [wnids[0], wnids[4]]


def test_imagenet_subset_rejects_a_flat_val_folder(tmp_path):
    write_imagenet(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match=r"expected .*val/<wnid>/\*\.JPEG"):
        build_dataset("imagenet-subset", tmp_path, "val")


# ---------------------------------------------------------------- in-memory loader

def test_eval_loader_is_sequential_unaugmented_and_normalised():
    dataset = build_dataset("digits", split="val")
    loader = build_loader(dataset, 50, train=False, data_config={"mean": (0, 0, 0)})  # for files only
    batches = list(loader)
    assert len(loader) == 4 and [len(labels) for _, labels in batches] == [50, 50, 50, 30]
    images = torch.cat([images for images, _ in batches])
    assert images.dtype == torch.float32
    assert torch.allclose(images, normalise(dataset.images, dataset), atol=1e-5)
    assert torch.equal(torch.cat([labels for _, labels in batches]), dataset.labels)


def test_train_loader_depends_only_on_seed_and_epoch():
    dataset = build_dataset("synthetic", num_samples=100, num_classes=4, image_size=16)

    def epoch(seed, number):
        loader = build_loader(dataset, 32, train=True, seed=seed)
        loader.set_epoch(number)
        torch.manual_seed(number * 1000 + seed)  # the global RNG must play no part
        return loader.epoch_indices(), list(loader)

    (order, batches), (same_order, same_batches) = epoch(1, 3), epoch(1, 3)
    assert len(batches) == 3  # 100 // 32, the partial batch dropped in training
    assert torch.equal(order, same_order)
    for (images, labels), (same_images, same_labels) in zip(batches, same_batches, strict=True):
        assert torch.equal(images, same_images) and torch.equal(labels, same_labels)
    assert not torch.equal(epoch(1, 4)[0], order) and not torch.equal(epoch(2, 3)[0], order)
    assert sorted(order.tolist()) == list(range(100))


def test_hflip_alone_gives_each_image_or_its_mirror():
    dataset = build_dataset("synthetic", num_samples=64, image_size=8)
    loader = build_loader(dataset, 64, train=True, crop_padding=0, hflip=True)
    (images, labels), = list(loader)
    originals = dataset.images[loader.epoch_indices()]
    assert torch.equal(labels, dataset.labels[loader.epoch_indices()])
    restored = unnormalise(images, dataset)
    same = (restored == originals).flatten(1).all(1)
    mirrored = (restored == originals.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 10 < mirrored.sum() < 54  # about half flipped


def test_random_crop_shifts_each_image_within_the_zero_padding():
    dataset = build_dataset("synthetic", num_samples=64, image_size=8)
    loader = build_loader(dataset, 64, train=True, crop_padding=2, hflip=False)
    (images, _), = list(loader)
    restored, originals = unnormalise(images, dataset), dataset.images[loader.epoch_indices()]
    padded = torch.nn.functional.pad(originals, (2, 2, 2, 2))
    offsets = []
    for crop, source in zip(restored, padded, strict=True):
        matches = [(top, left) for top in range(5) for left in range(5)
                   if torch.equal(crop, source[:, top:top + 8, left:left + 8])]
        assert matches, "output is not a crop of the zero-padded image"
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # per-sample offsets, not one for the batch


def test_training_shards_are_padded_like_distributed_sampler():
    dataset = build_dataset("synthetic", num_samples=11, image_size=8)
    loaders = [build_loader(dataset, 4, train=True, seed=5, rank=rank, world_size=2) for rank in (0, 1)]
    for loader in loaders:
        loader.set_epoch(2)
    shards = [loader.epoch_indices() for loader in loaders]
    assert [len(shard) for shard in shards] == [6, 6]
    padded = torch.stack(shards, dim=1).flatten()  # the epoch order the ranks interleave
    assert sorted(padded[:11].tolist()) == list(range(11)) and padded[11] == padded[0]
    assert [len(loader) for loader in loaders] == [1, 1]
    assert sum(len(labels) for loader in loaders for _, labels in loader) == 8


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_evaluation_shards_count_every_image_exactly_once(kind, tmp_path):
    dataset = build_dataset("synthetic", num_samples=11, image_size=8) if kind == "memory" else \
        _image_folder(tmp_path, count=11)
    config = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    loaders = [build_loader(dataset, 4, train=False, rank=rank, world_size=2, workers=0, data_config=config)
               for rank in (0, 1)]
    assert [len(loader) for loader in loaders] == [2, 2]
    assert [sum(len(labels) for _, labels in loader) for loader in loaders] == [6, 5]


def test_an_epoch_resumed_at_a_batch_yields_the_same_remaining_batches():
    dataset = build_dataset("synthetic", num_samples=40, image_size=8)
    loader = build_loader(dataset, 8, train=True, seed=3, crop_padding=2)
    loader.set_epoch(1)
    whole = list(loader)
    loader.set_epoch(1, start_batch=3)
    rest = list(loader)
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                  for a, b in zip(whole[3:], rest, strict=True))
    assert len(list(loader)) == 5  # the start applies to one iteration only


def _image_folder(root, count):
    from PIL import Image

    from reusenet.data import ImageFiles

    samples = []
    for index in range(count):
        path = root / f"{index}.png"
        Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(path)
        samples.append((str(path), index % 2))
    return ImageFiles(samples, ["a", "b"], "pngs")


def test_loader_arguments_are_checked():
    dataset = build_dataset("synthetic", num_samples=4, image_size=8)
    for bad in ({"batch_size": 0}, {"rank": 2, "world_size": 2}, {"crop_padding": -1}):
        with pytest.raises(UserError):
            build_loader(dataset, **{"batch_size": 2, **bad}, train=True)
    with pytest.raises(UserError, match="InMemoryImages or ImageFiles"):
        build_loader([1, 2, 3], 2, train=True)


# ---------------------------------------------------------------- file loader

@pytest.mark.parametrize("workers", [0, 2])
def test_file_loader_skips_unreadable_files_and_completes_the_epoch(tmp_path, workers):
    for split, per_class in (("train", 10), ("val", 1), ("test", 1)):
        write_image_folder(tmp_path / split, per_class=per_class)
    bad = write_bad_files(tmp_path / "train" / "dog")
    dataset = build_dataset("folder", tmp_path)
    assert len(dataset) == 32
    loader = build_loader(dataset, 8, train=True, data_config=FILE_CONFIG, workers=workers)
    assert len(loader) == 4
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(loader)
        reported = " ".join(str(warning.message) for warning in caught)
        assert all(path in reported for path in bad) if epoch == 0 else not caught  # reported once
        assert sum(len(labels) for _, labels in batches) == 30
        for images, labels in batches:
            assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
            assert labels.dtype == torch.int64 and len(images) == len(labels) <= 8
        assert set(loader.skipped) == bad and len(loader.skipped) == 2


def test_file_loader_eval_is_deterministic_and_needs_a_data_config(tmp_path):
    write_imagenet(tmp_path)
    dataset = build_dataset("imagenet-subset", tmp_path, "val")
    with pytest.raises(UserError, match="data_config"):
        build_loader(dataset, 4, train=False)
    loader = build_loader(dataset, 4, train=False, data_config=FILE_CONFIG, workers=0)
    first, second = list(loader), list(loader)
    assert [len(labels) for _, labels in first] == [4, 4, 2]
    assert torch.cat([labels for _, labels in first]).tolist() == [label for _, label in dataset.samples]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    # A solid red image normalises to (r/255 - mean)/std in the red channel.
    expected = (_red_of(0) / 255 - IMAGENET_DEFAULT_MEAN[0]) / IMAGENET_DEFAULT_STD[0]
    assert first[0][0][0, 0, 16, 16].item() == pytest.approx(expected, abs=0.03)


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_disjoint_and_learnable():
    splits = {split: build_dataset("synthetic", split=split, seed=3, num_classes=5) for split in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [1000, 200, 200]
    assert splits["train"].images.shape[1:] == (3, 32, 32) and splits["train"].num_classes == 5
    for seed, same in ((3, True), (4, False)):
        again = build_dataset("synthetic", split="val", seed=seed, num_classes=5)
        assert torch.equal(again.images, splits["val"].images) == same
    assert not torch.equal(splits["val"].images, splits["test"].images)
    pixels = splits["train"].images.double() / 255
    assert np.allclose(splits["train"].mean, pixels.mean(dim=(0, 2, 3)), atol=0.02)
    assert np.allclose(splits["train"].std, pixels.std(dim=(0, 2, 3)), atol=0.02)
    # Nearest class mean, fitted on train, classifies val: the classes carry signal shared across splits.
    train, val = splits["train"], splits["val"]
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(5)]).flatten(1)
    predicted = torch.cdist(val.images.float().flatten(1), means).argmin(1)
    assert (predicted == val.labels).float().mean() > 0.95
