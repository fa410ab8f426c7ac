"""Multi-crop views: shapes, reproducibility, and refusals of bad input."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_ssl.data.collators import stack_views
from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views


def small_config(**overrides):
    values = dict(global_crop_size=16, local_crop_size=8, num_local_crops=3)
    values.update(overrides)
    return MultiCropConfig(**values)


def test_shapes_and_collation(embedded_images):
    dataset = apply_views(embedded_images["train"].select(range(4)), MultiCropTransform(small_config()))
    batch = stack_views([dataset[i] for i in range(4)])
    assert batch["global_crops"].shape == (4, 2, 3, 16, 16)
    assert batch["local_crops"].shape == (4, 3, 3, 8, 8)
    assert set(batch) == {"global_crops", "local_crops"}  # label-free views by default; indices are not model inputs
    with pytest.raises(ValueError, match="label column 'class'"):
        apply_views(embedded_images["train"].select(range(2)), MultiCropTransform(small_config(), label_column="class"))


def test_views_depend_only_on_seed_epoch_and_index(embedded_images):
    images = embedded_images["train"].select(range(6))
    transform = MultiCropTransform(small_config(), seed=1)
    dataset = apply_views(images, transform)
    first = dataset[3]["global_crops"]
    _ = dataset[0:6]  # other examples drawn in between do not change example 3
    torch.testing.assert_close(dataset[3]["global_crops"], first)
    assert not torch.equal(dataset[3]["global_crops"][0], dataset[3]["global_crops"][1])  # two different crops
    transform.set_epoch(1)
    assert not torch.equal(dataset[3]["global_crops"], first)  # a new epoch draws new views
    other_seed = apply_views(images, MultiCropTransform(small_config(), seed=2))
    assert not torch.equal(other_seed[3]["global_crops"], first)


def test_images_smaller_than_the_crop_are_refused(embedded_images):
    with pytest.raises(ValueError, match="global_crop_size"):
        apply_views(embedded_images["train"].select(range(2)), MultiCropTransform(small_config(global_crop_size=32)))


def test_text_dataset_is_refused():
    text = datasets.Dataset.from_dict({"text": ["a sentence", "another one"]})
    with pytest.raises(ValueError, match="image_column"):
        apply_views(text, MultiCropTransform(small_config()))


def test_empty_dataset_is_refused(embedded_images):
    with pytest.raises(ValueError, match="empty"):
        apply_views(embedded_images["train"].select([]), MultiCropTransform(small_config()))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_global_crops=0), "num_global_crops"),
        (dict(num_global_crops=1, num_local_crops=0), "at least 2 crops"),
        (dict(global_crop_scale=[0.5, 0.2]), "global_crop_scale"),
        (dict(local_crop_scale=[0.1]), "2 values"),
    ],
)
def test_bad_view_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_grayscale_and_rgba_images_become_rgb():
    images = [Image.fromarray(np.zeros((20, 20), dtype=np.uint8)), Image.new("RGBA", (20, 20))]
    dataset = apply_views(datasets.Dataset.from_dict({"image": images}), MultiCropTransform(small_config()))
    assert dataset[0]["global_crops"].shape[1] == 3 and dataset[1]["global_crops"].shape[1] == 3
