"""Tests for hf_ssl.evaluation: kNN against the paper formula, linear-probe sanity, offline metric, features."""

import math
import socket

import datasets
import evaluate
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import ResNetConfig, ViTConfig, ViTMAEConfig, ViTModel

from hf_ssl.evaluation.comparison import (
    compare_with_random_init,
    evaluate_checkpoint,
    format_comparison,
)
from hf_ssl.evaluation.features import (
    default_eval_transform,
    extract_features,
    raw_pixel_features,
)
from hf_ssl.evaluation.knn import KNNEvaluator, knn_accuracy, knn_predict
from hf_ssl.evaluation.linear_probe import LinearProbeEvaluator, linear_probe_accuracy
from hf_ssl.evaluation.metrics import ACCURACY_METRIC_PATH
from hf_ssl.modules.backbones import build_encoder

NUM_CLASSES = 3


def tiny_vit_config() -> ViTConfig:
    return ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )


@pytest.fixture
def tiny_vit():
    torch.manual_seed(0)
    return build_encoder(tiny_vit_config())


def image_dataset(num_images: int, seed: int = 0) -> datasets.Dataset:
    """Images whose mean colour depends on the class, in mixed sizes and modes (RGB, greyscale, RGBA)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])
    images, labels = [], []
    for i in range(num_images):
        label = i % NUM_CLASSES
        height, width = [(16, 16), (12, 20), (40, 28)][i % 3]
        pixels = np.clip(colours[label] + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        if i % 5 == 3:
            image = image.convert("L")
        elif i % 5 == 4:
            image = image.convert("RGBA")
        images.append(image)
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


class SSLWrapper(nn.Module):
    """Stands in for an hf_ssl pretraining model: publishes its encoder as ``.encoder``, has a head besides."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(32, 8)


# ----------------------------------------------------------------------------------------------------------------------
# kNN
# ----------------------------------------------------------------------------------------------------------------------


def naive_weighted_knn(train_x, train_y, test_x, k, temperature, num_classes):
    """Wu et al. 2018 / DINO eval_knn, one query at a time in plain Python."""
    predictions = []
    for query in test_x.tolist():
        similarities = []
        for row, label in zip(train_x.tolist(), train_y.tolist(), strict=True):
            cosine = sum(a * b for a, b in zip(query, row, strict=True)) / (
                math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in row))
            )
            similarities.append((cosine, label))
        neighbours = sorted(similarities, key=lambda pair: pair[0], reverse=True)[:k]
        votes = [0.0] * num_classes
        for cosine, label in neighbours:
            votes[label] += math.exp(cosine / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return predictions


@pytest.mark.parametrize("k,temperature,chunk_size", [(7, 0.1, 1024), (1, 0.07, 5), (20, 0.5, 3)])
def test_knn_predict_matches_naive_loop(k, temperature, chunk_size):
    generator = torch.Generator().manual_seed(k)
    train_x = torch.randn(80, 6, generator=generator) * 3 + 1
    train_y = torch.randint(0, 4, (80,), generator=generator)
    test_x = torch.randn(25, 6, generator=generator) * 3 + 1
    predicted = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, chunk_size=chunk_size)
    assert predicted.dtype == torch.long and predicted.shape == (25,)
    assert predicted.tolist() == naive_weighted_knn(train_x, train_y, test_x, k, temperature, 4)


def test_knn_k_larger_than_bank_is_clipped():
    generator = torch.Generator().manual_seed(1)
    train_x, train_y = torch.randn(9, 5, generator=generator), torch.arange(9) % 3
    test_x = torch.randn(4, 5, generator=generator)
    clipped = knn_predict(train_x, train_y, test_x, k=500)
    assert clipped.tolist() == knn_predict(train_x, train_y, test_x, k=9).tolist()
    assert clipped.tolist() == naive_weighted_knn(train_x, train_y, test_x, 9, 0.1, 3)


def test_knn_tiny_temperature_does_not_overflow():
    generator = torch.Generator().manual_seed(2)
    train_x, train_y = torch.randn(50, 4, generator=generator), torch.randint(0, 5, (50,), generator=generator)
    test_x = torch.randn(10, 4, generator=generator)
    # exp(1 / 0.001) overflows float32; with the max-shift the vote is the nearest neighbour's label.
    assert (
        knn_predict(train_x, train_y, test_x, k=10, temperature=1e-3).tolist()
        == knn_predict(train_x, train_y, test_x, k=1).tolist()
    )


def test_knn_accuracy_on_separable_blobs():
    train_x, train_y, test_x, test_y = gaussian_blobs(separation=4.0)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=20) > 0.9


# ----------------------------------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------------------------------


def gaussian_blobs(separation: float, num_classes: int = 4, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * separation
    train_y = torch.arange(400) % num_classes
    test_y = torch.arange(400) % num_classes
    train_x = centres[train_y] + torch.randn(400, dim, generator=generator) + 5.0  # offset: standardisation matters
    test_x = centres[test_y] + torch.randn(400, dim, generator=generator) + 5.0
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("solver", ["lbfgs", "adamw"])
def test_linear_probe_separable_blobs(solver):
    train_x, train_y, test_x, test_y = gaussian_blobs(separation=3.0)
    kwargs = {"epochs": 30, "batch_size": 64, "lr": 1e-2} if solver == "adamw" else {}
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, solver=solver, **kwargs) > 0.9


def test_linear_probe_random_labels_is_chance():
    train_x, _, test_x, _ = gaussian_blobs(separation=3.0)
    generator = torch.Generator().manual_seed(3)
    train_y, test_y = torch.randint(0, 4, (400,), generator=generator), torch.randint(0, 4, (400,), generator=generator)
    assert abs(linear_probe_accuracy(train_x, train_y, test_x, test_y) - 0.25) < 0.08


def test_linear_probe_is_deterministic():
    train_x, train_y, test_x, test_y = gaussian_blobs(separation=0.5)
    first = linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=20)
    assert first == linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=20)


# ----------------------------------------------------------------------------------------------------------------------
# Metric
# ----------------------------------------------------------------------------------------------------------------------


def test_accuracy_metric_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the accuracy metric tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    metric = evaluate.load(ACCURACY_METRIC_PATH)
    assert isinstance(metric, evaluate.Metric)
    assert metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1]) == {"accuracy": 0.75}
    weighted = metric.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    assert weighted["accuracy"] == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------------------------------


def test_default_eval_transform_resizes_any_image():
    transform = default_eval_transform(16)
    for image in (Image.new("RGB", (8, 12)), Image.new("L", (50, 30)), Image.new("RGBA", (16, 16))):
        pixels = transform(image)
        assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
    white = transform(Image.new("RGB", (20, 20), (255, 255, 255)))
    assert torch.allclose(white[0], torch.full((16, 16), (1 - 0.485) / 0.229))


def test_extract_features_tiny_vit_restores_train_mode(tiny_vit):
    dataset = image_dataset(7)
    tiny_vit.train()
    tiny_vit.embeddings.eval()  # a mixed state must come back as it was
    features, labels = extract_features(tiny_vit, dataset, batch_size=3)
    assert features.shape == (7, 32) and features.dtype == torch.float32
    assert labels.tolist() == [i % NUM_CLASSES for i in range(7)]
    assert tiny_vit.training and tiny_vit.layernorm.training and not tiny_vit.embeddings.training

    in_one_batch, _ = extract_features(tiny_vit, dataset, batch_size=64)
    torch.testing.assert_close(features, in_one_batch, rtol=1e-5, atol=1e-5)
    # an hf_ssl-style model is probed through its published `.encoder`
    wrapped, _ = extract_features(SSLWrapper(tiny_vit), dataset, batch_size=64)
    torch.testing.assert_close(wrapped, in_one_batch)


def test_extract_features_resnet_is_not_unwrapped():
    # ResNetModel (like BertModel) has an `encoder` attribute that is its stage stack, not a published encoder
    torch.manual_seed(0)
    resnet = build_encoder(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    features, labels = extract_features(resnet, image_dataset(4))
    assert features.shape == (4, 16) and labels.shape == (4,)


def test_extract_features_without_labels_and_with_numpy_images(tiny_vit):
    arrays = [np.full((10, 10, 3), 30 * i, dtype=np.uint8) for i in range(4)]
    features, labels = extract_features(tiny_vit, datasets.Dataset.from_dict({"image": arrays}))
    assert features.shape == (4, 32) and labels is None


def test_extract_features_vit_mae_is_unmasked():
    torch.manual_seed(0)
    config = ViTMAEConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        mask_ratio=0.75,
    )
    encoder = build_encoder(config)
    dataset = image_dataset(3)
    torch.manual_seed(1)
    first, _ = extract_features(encoder, dataset)
    torch.manual_seed(2)
    second, _ = extract_features(encoder, dataset)  # masking would draw a different 25% of the patches
    torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-5)
    assert encoder.config.mask_ratio == 0.75


def test_raw_pixel_features_shape():
    features, labels = raw_pixel_features(image_dataset(4), image_size=8)
    assert features.shape == (4, 3 * 8 * 8) and labels.shape == (4,)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluators and checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def test_knn_evaluator_returns_top1_and_keeps_train_mode(tiny_vit):
    evaluator = KNNEvaluator(image_dataset(24), image_dataset(9, seed=1), k=5, batch_size=8, max_train_examples=18)
    assert len(evaluator.train_dataset) == 18
    model = SSLWrapper(tiny_vit).train()
    scores = evaluator(model)
    assert set(scores) == {"knn_top1"} and isinstance(scores["knn_top1"], float)
    assert 0.0 <= scores["knn_top1"] <= 1.0
    assert model.training and tiny_vit.training
    assert evaluator(model) == scores  # deterministic


def test_linear_probe_evaluator(tiny_vit):
    evaluator = LinearProbeEvaluator(image_dataset(24), image_dataset(9, seed=1), epochs=20)
    scores = evaluator(tiny_vit)
    assert set(scores) == {"linear_probe_top1"} and 0.0 <= scores["linear_probe_top1"] <= 1.0


def test_evaluate_checkpoint_loads_saved_encoder(tmp_path, tiny_vit):
    tiny_vit.save_pretrained(tmp_path / "encoder")
    train, test = image_dataset(15), image_dataset(6, seed=1)
    from_directory = evaluate_checkpoint(str(tmp_path / "encoder"), train, test, k=5, batch_size=8)
    assert set(from_directory) == {"knn_top1", "linear_probe_top1"}
    from_module = evaluate_checkpoint(tiny_vit, train, test, k=5, batch_size=8)
    assert from_module == pytest.approx(from_directory)
    loaded = ViTModel.from_pretrained(tmp_path / "encoder")
    assert evaluate_checkpoint(loaded, train, test, probes=("knn",), k=5) == {"knn_top1": from_directory["knn_top1"]}


def test_compare_with_random_init(tiny_vit):
    results = compare_with_random_init(
        tiny_vit, image_dataset(15), image_dataset(6, seed=1), k=5, linear_probe_kwargs={"epochs": 10}
    )
    assert set(results) == {"pretrained", "random_init", "raw_pixels"}
    for scores in results.values():
        assert set(scores) == {"knn_top1", "linear_probe_top1"}
    # the colour-coded images are easy from raw pixels (greyscale ones lose the colour)
    assert results["raw_pixels"]["knn_top1"] > 0.6
    assert "random_init" in format_comparison(results)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_input_raises_with_fix():
    features, labels = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match="one label per feature row"):
        knn_predict(features, labels[:7], features)
    with pytest.raises(ValueError, match="one label per feature row"):
        linear_probe_accuracy(features, labels, features, labels[:3])
    with pytest.raises(ValueError, match="empty.*at least one train"):
        knn_predict(torch.empty(0, 4), torch.empty(0, dtype=torch.long), features)
    with pytest.raises(ValueError, match="same encoder"):
        knn_predict(features, labels, torch.randn(3, 5))
    with pytest.raises(ValueError, match="integer class ids"):
        knn_accuracy(features, labels.float(), features, labels)


def test_dataset_without_image_column_raises(tiny_vit):
    no_images = datasets.Dataset.from_dict({"pixels": [np.zeros((4, 4, 3), np.uint8)], "label": [0]})
    with pytest.raises(ValueError, match="image_column="):
        extract_features(tiny_vit, no_images)
    with pytest.raises(ValueError, match="image_column="):
        KNNEvaluator(no_images, no_images)
    with pytest.raises(ValueError, match="pass one split"):
        extract_features(tiny_vit, datasets.DatasetDict({"train": image_dataset(2)}))
    unlabelled = datasets.Dataset.from_dict({"image": [np.zeros((4, 4, 3), np.uint8)]})
    with pytest.raises(ValueError, match="label_column="):
        evaluate_checkpoint(tiny_vit, unlabelled, unlabelled)


def test_finetuning_several_checkpoints_seeds_each_model_alike(tmp_path, embedded_images):
    """The budget curve's fine-tunes: every checkpoint starts from the same seed, so a checkpoint's accuracy does not
    depend on which others are fine-tuned before it, and one checkpoint plus random init is exactly
    :func:`compare_finetuning_with_random_init`."""
    from hf_ssl.evaluation.finetune import (
        FineTuneProbeArguments,
        compare_finetuning_with_random_init,
        finetune_checkpoints,
    )

    folders = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64)
        folders[f"seed{seed}"] = str(tmp_path / f"seed{seed}")
        ViTModel(config, add_pooling_layer=False).save_pretrained(folders[f"seed{seed}"])  # an encoder, as published
    train, test = embedded_images["train"].select(range(32)), embedded_images["test"].select(range(32))
    arguments = FineTuneProbeArguments(finetune_steps=3, finetune_batch_size=8, finetune_train_examples=None,
                                       finetune_eval_examples=None, finetune_learning_rate=0.01)
    common = {"image_size": 16, "seed": 5}
    both = finetune_checkpoints(folders, train, test, arguments, **common)
    second_alone = finetune_checkpoints({"seed1": folders["seed1"]}, train, test, arguments, random_init=False,
                                        **common)
    pair = compare_finetuning_with_random_init(folders["seed0"], train, test, arguments, **common)
    assert set(both) == {"seed0", "seed1", "random_init"} and set(second_alone) == {"seed1"}
    assert both["seed1"] == second_alone["seed1"]
    assert pair == {"pretrained": both["seed0"], "random_init": both["random_init"]}
    with pytest.raises(ValueError, match="at least one checkpoint"):
        finetune_checkpoints({}, train, test, arguments, **common)
