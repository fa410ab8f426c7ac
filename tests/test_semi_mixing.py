"""Mixup / CutMix of the labelled batch with soft targets, usable by every semi-supervised method and by the
supervised-only baseline: the mixed pixels agree with the soft labels, the loss is the soft-target cross-entropy, and
a training run sees mixed labels while evaluation does not."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_classifier
from test_semi_supervised import fashion, make_trainer  # noqa: F401 (fashion: a fixture)

from hf_ssl.semi import FixMatch, SupervisedOnly, SupervisedOnlyConfig
from hf_ssl.views.mixing import LabelledBatchMixer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mixup_blends_each_image_with_its_neighbour_in_the_proportions_of_its_soft_label():
    torch.manual_seed(0)
    pixels, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed = LabelledBatchMixer(num_classes=5, mixup_alpha=1.0)({"pixel_values": pixels, "labels": labels, "x": 1})
    soft = mixed["labels"]
    assert soft.shape == (4, 5) and torch.allclose(soft.sum(-1), torch.ones(4)) and mixed["x"] == 1
    weight = soft[0, 0]  # image 0 = weight * image 0 + (1 - weight) * its partner (the batch rolled by one)
    partner = int(soft[0, 1:].argmax()) + 1
    torch.testing.assert_close(mixed["pixel_values"][0], weight * pixels[0] + (1 - weight) * pixels[partner])


def test_cutmix_pastes_a_box_whose_area_is_the_partners_share():
    torch.manual_seed(1)
    pixels, labels = torch.zeros(2, 1, 16, 16), torch.tensor([0, 1])
    pixels[1] = 1.0
    mixed = LabelledBatchMixer(num_classes=2, cutmix_alpha=1.0)({"pixel_values": pixels, "labels": labels})
    pasted = mixed["pixel_values"][0].mean()  # the share of image 0 covered by image 1's ones
    torch.testing.assert_close(mixed["labels"][0, 1], pasted)


def test_soft_targets_are_learnt_with_the_probability_cross_entropy():
    method = SupervisedOnly()
    logits = torch.randn(3, 4, requires_grad=True)
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.2, 0.0, 0.0, 0.8]])
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(method.supervised_loss(logits, soft), expected)


def test_every_method_trains_on_mixed_labelled_batches_and_evaluates_on_plain_ones(tmp_path, fashion):  # noqa: F811
    for method in (SupervisedOnly(mixup_alpha=0.4, cutmix_alpha=1.0),
                   FixMatch(unlabelled_batch_ratio=2, mixup_alpha=0.4)):
        seen = []
        original = method.supervised_loss

        def recording(logits, labels, original=original, seen=seen):
            seen.append(tuple(labels.shape))
            return original(logits, labels)

        method.supervised_loss = recording
        trainer = make_trainer(tmp_path / type(method).__name__, fashion, method, max_steps=2)
        trainer.train()
        assert seen and all(shape == (4, 10) for shape in seen), seen  # (B, K) soft labels in every training step
        assert "eval_accuracy" in trainer.evaluate()


def test_bad_mixing_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha must be >= 0"):
        SupervisedOnlyConfig(mixup_alpha=-0.1)
    with pytest.raises(ValueError, match="set mixup_alpha or cutmix_alpha"):
        LabelledBatchMixer(num_classes=3)
    with pytest.raises(ValueError, match="text and audio"):
        LabelledBatchMixer(3, mixup_alpha=1.0)({"input_ids": torch.ones(2, 5, dtype=torch.long),
                                                "labels": torch.tensor([0, 1])})
    model = tiny_classifier()
    method = SupervisedOnly()
    method.setup(model, num_unlabelled=4)
    batch = {"pixel_values": torch.zeros(2, 3, 16, 16), "labels": torch.tensor([0, 1])}
    assert method.mix_labelled(batch) is batch  # off by default
