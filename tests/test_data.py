"""Tests of hf_ssl.data.images: every source loads into the standard form, and bad input fails with a helpful ValueError."""

from __future__ import annotations

import zipfile

import datasets
import numpy as np
import pytest
from conftest import local_dataset
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from hf_ssl.data.image_formats import FASHION_MNIST_CLASS_NAMES, build_embedded_subset
from hf_ssl.data.images import dataset_fingerprint_info, load_image_dataset, standardize_image_dataset

# Hub ids; the tests read their local copies (CIFAR-10 JPEG zips, Fashion-MNIST IDX files) through HF_SSL_DATA_DIR
CIFAR10 = "uoft-cs/cifar10"
FASHION_MNIST = "zalando-datasets/fashion_mnist"
needs_cifar10 = pytest.mark.needs_data(CIFAR10)
needs_fashion_mnist = pytest.mark.needs_data(FASHION_MNIST)


def _labels(dataset: Dataset) -> np.ndarray:
    return dataset.select_columns(["label"]).with_format("numpy")[:]["label"]


@pytest.fixture(scope="module")
def embedded() -> DatasetDict:
    return load_image_dataset("embedded")


def test_embedded_subset_is_in_standard_form(embedded):
    assert isinstance(embedded, DatasetDict)
    assert {name: split.num_rows for name, split in embedded.items()} == {"train": 10000, "test": 2000}
    for split in embedded.values():
        assert split.column_names == ["image", "label"]
        assert isinstance(split.features["image"], Image)
        assert isinstance(split.features["label"], ClassLabel)
        assert split.features["label"].names == list(FASHION_MNIST_CLASS_NAMES)
    assert np.bincount(_labels(embedded["train"])).tolist() == [1000] * 10
    assert np.bincount(_labels(embedded["test"])).tolist() == [200] * 10
    image = embedded["train"][0]["image"]
    assert isinstance(image, PILImage.Image)
    assert image.size == (28, 28) and image.mode == "L"
    assert np.asarray(image).std() > 0  # real pixels, not a blank placeholder


def test_embedded_single_split_and_fingerprint_info():
    test_split = load_image_dataset("embedded", split="test")
    assert isinstance(test_split, Dataset) and test_split.num_rows == 2000
    info = dataset_fingerprint_info(test_split)
    assert info["splits"] == {"test": 2000}
    assert info["num_classes"] == 10 and info["class_names"][0] == "T-shirt/top"
    assert info["license"] == "MIT" and "1708.07747" in info["citation"]


def test_max_examples_is_class_balanced_and_deterministic():
    first = load_image_dataset("embedded", "train", max_examples=100, seed=3)
    again = load_image_dataset("embedded", "train", max_examples=100, seed=3)
    other_seed = load_image_dataset("embedded", "train", max_examples=100, seed=4)
    assert first.num_rows == 100
    assert np.bincount(_labels(first)).tolist() == [10] * 10
    first_pixels = np.stack([np.asarray(row["image"]) for row in first])
    assert np.array_equal(first_pixels, np.stack([np.asarray(row["image"]) for row in again]))
    assert not np.array_equal(first_pixels, np.stack([np.asarray(row["image"]) for row in other_seed]))
    subsets = load_image_dataset("embedded", max_examples=15)
    assert {name: split.num_rows for name, split in subsets.items()} == {"train": 15, "test": 15}
    assert load_image_dataset("embedded", "test", max_examples=10**6).num_rows == 2000


def test_unknown_split_lists_available_splits():
    with pytest.raises(ValueError, match="available splits") as raised:
        load_image_dataset("embedded", split="validation")
    assert "'train'" in str(raised.value) and "'test'" in str(raised.value)


def test_missing_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_dataset(str(tmp_path / "no_such_folder"))


def test_empty_folder_and_empty_dataset_raise(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_image_dataset(str(tmp_path))
    empty = Dataset.from_dict({"image": []}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match="empty") as raised:
        standardize_image_dataset(DatasetDict({"train": empty}), source="my_images")
    assert "my_images" in str(raised.value)


def test_text_dataset_asks_for_image_column():
    text = Dataset.from_dict({"text": ["a sentence", "another one"], "label": [0, 1]})
    with pytest.raises(ValueError, match="image_column") as raised:
        standardize_image_dataset(text)
    assert "text" in str(raised.value)
    with pytest.raises(ValueError, match="cannot be read as images"):
        standardize_image_dataset(text, image_column="text")


@pytest.mark.filterwarnings("ignore:Downcasting array dtype")  # lists of ints arrive as int64 pixels
def test_standardize_renames_casts_and_drops_columns():
    pixels = [np.full((4, 4, 3), value, dtype=np.uint8) for value in (0, 128, 255)]
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"img": pixels, "fine_label": ["dog", "cat", "dog"], "caption": ["x"] * 3}),
            "test": Dataset.from_dict({"img": pixels[:1], "fine_label": ["bird"], "caption": ["y"]}),
        }
    )
    standard = standardize_image_dataset(raw)
    for split in standard.values():
        assert split.column_names == ["image", "label"]
        assert split.features["label"] == ClassLabel(names=["bird", "cat", "dog"])  # one mapping for all splits
    assert standard["train"]["label"][:] == [2, 1, 2]
    assert np.asarray(standard["train"][1]["image"]).tolist() == pixels[1].tolist()

    numbered = Dataset.from_dict(
        {"picture": pixels, "target": [0, 2, 1]}, features=Features({"picture": Image(), "target": Value("int64")})
    )
    standard = standardize_image_dataset(numbered, label_column="target")
    assert standard.features["label"].names == ["0", "1", "2"]
    unlabelled = standardize_image_dataset(numbered)  # "target" is no common label name: image only
    assert unlabelled.column_names == ["image"]


def test_image_folder_with_class_subfolders(tmp_path):
    for class_name, value in (("circle", 50), ("square", 200)):
        (tmp_path / class_name).mkdir()
        for index in range(3):
            PILImage.new("RGB", (8, 8), (value, index, 0)).save(tmp_path / class_name / f"{index}.png")
    loaded = load_image_dataset(str(tmp_path), split="train")
    assert loaded.column_names == ["image", "label"]
    assert loaded.features["label"].names == ["circle", "square"]
    assert loaded.num_rows == 6 and loaded[0]["image"].size == (8, 8)
    with pytest.raises(ValueError, match="available splits"):
        load_image_dataset(str(tmp_path), split="test")


def test_hub_failure_names_the_dataset(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fail at once instead of retrying the network
    with pytest.raises(ValueError, match="someone-unknown/no-such-dataset"):
        load_image_dataset("someone-unknown/no-such-dataset", split="train")


@needs_cifar10
def test_cifar10_zip_folder():
    loaded = load_image_dataset(CIFAR10)
    assert {name: split.num_rows for name, split in loaded.items()} == {"train": 50000, "test": 10000}
    with zipfile.ZipFile(local_dataset(CIFAR10) / "test.zip") as archive:
        folder_names = sorted({name.split("/")[1] for name in archive.namelist() if name.endswith(".jpg")})
    assert len(folder_names) == 10
    for split in loaded.values():
        assert split.column_names == ["image", "label"]
        assert split.features["label"].names == folder_names
    assert np.bincount(_labels(loaded["test"])).tolist() == [1000] * 10
    image = loaded["test"][0]["image"]
    assert image.size == (32, 32) and image.mode == "RGB"


@needs_fashion_mnist
def test_fashion_mnist_idx_folder(embedded):
    loaded = load_image_dataset(FASHION_MNIST)
    assert {name: split.num_rows for name, split in loaded.items()} == {"train": 60000, "test": 10000}
    assert loaded["train"].features["label"].names == list(FASHION_MNIST_CLASS_NAMES)
    first = loaded["train"][0]
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    # The embedded subset keeps the first images of each class in file order, so row 0 is the same image.
    assert np.array_equal(np.asarray(first["image"]), np.asarray(embedded["train"][0]["image"]))
    assert first["label"] == embedded["train"][0]["label"]


@needs_fashion_mnist
def test_build_embedded_subset_takes_first_images_per_class(tmp_path, embedded):
    out = tmp_path / "subset.npz"
    build_embedded_subset(str(local_dataset(FASHION_MNIST)), str(out), train_per_class=3, test_per_class=2)
    with np.load(out) as archive:
        assert archive["train_images"].shape == (30, 28, 28) and archive["train_images"].dtype == np.uint8
        assert np.bincount(archive["train_labels"]).tolist() == [3] * 10
        assert np.bincount(archive["test_labels"]).tolist() == [2] * 10
        shipped_first = np.asarray(embedded["train"][0]["image"])
        assert np.array_equal(archive["train_images"][0], shipped_first)
