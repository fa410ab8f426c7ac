"""MixMatch (Berthelot et al. 2019): label guessing (average over K views, sharpened), MixUp with lambda' = max(lambda,
1 - lambda) over labelled and unlabelled examples, the two losses against Algorithm 1 written out, a run with exact
resume, and text refused with the fix."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F

from hf_ssl.semi import SEMI_METHOD_REGISTRY, MixMatch, MixMatchConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mixup_keeps_each_example_closer_to_itself():
    method = MixMatch()
    inputs, targets = torch.arange(6.0)[:, None].repeat(1, 3), F.one_hot(torch.arange(6), 6).float()
    for seed in range(10):
        torch.manual_seed(seed)
        mixed, mixed_targets, partners = method.mixup(inputs, targets)
        assert sorted(partners.tolist()) == list(range(6))
        own = mixed_targets[torch.arange(6), torch.arange(6)]
        assert torch.all(own >= 0.5 - 1e-6)  # lambda' >= 1/2 (an example mixed with itself has weight 1)
        torch.testing.assert_close(mixed[:, 0], mixed_targets @ torch.arange(6.0))  # inputs mixed as the targets


def test_the_step_is_algorithm_1_written_out():
    model = tiny_classifier().eval()
    method = MixMatch(unsupervised_weight=10.0, rampup_fraction=0.0, temperature=0.5)
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    torch.manual_seed(4)
    output = method.compute_loss(model, labelled, unlabelled, progress())
    torch.manual_seed(4)
    alpha = torch.tensor(0.75)
    weight = torch.distributions.Beta(alpha, alpha).sample().item()
    weight = max(weight, 1 - weight)
    partners = torch.randperm(4 + 16)
    with torch.no_grad():
        views = [view["pixel_values"] for view in unlabelled["views"]]
        average = torch.stack([model(pixel_values=view).logits.softmax(-1) for view in views]).mean(0)
        guess = average ** 2 / (average ** 2).sum(-1, keepdim=True)
        x = torch.cat([labelled["pixel_values"], *views])
        y = torch.cat([F.one_hot(labelled["labels"], 10).float(), guess, guess])
        x, y = weight * x + (1 - weight) * x[partners], weight * y + (1 - weight) * y[partners]
        logits = model(pixel_values=x).logits
        expected = (-(y[:4] * logits[:4].log_softmax(-1)).sum(-1).mean()
                    + 10.0 * ((logits[4:].softmax(-1) - y[4:]) ** 2).mean())
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_audio_batches_mix_their_attention_masks():
    """A Wav2Vec2 classifier's batches carry an ``attention_mask`` per clip: the mixed batch gets one row per mixed
    clip, covering the samples of both partners."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", num_labels=10)).eval()
    method = MixMatch(unsupervised_weight=10.0, rampup_fraction=0.0)
    method.setup(model, num_unlabelled=6)
    generator = torch.Generator().manual_seed(1)

    def clips(count, padded):  # the first `padded` clips end in 300 samples of padding
        mask = torch.ones(count, 800, dtype=torch.long)
        mask[:padded, 500:] = 0
        return {"input_values": torch.randn(count, 800, generator=generator) * mask, "attention_mask": mask}

    labelled = {**clips(2, 1), "labels": torch.tensor([3, 7])}
    unlabelled = {"views": [clips(6, 2), clips(6, 2)], "indices": torch.arange(6)}
    torch.manual_seed(4)
    output = method.compute_loss(model, labelled, unlabelled, progress())
    torch.manual_seed(4)
    alpha = torch.tensor(0.75)
    weight = torch.distributions.Beta(alpha, alpha).sample().item()
    weight = max(weight, 1 - weight)
    partners = torch.randperm(2 + 12)
    with torch.no_grad():
        views = unlabelled["views"]
        average = torch.stack([model(**view).logits.softmax(-1) for view in views]).mean(0)
        guess = average ** 2 / (average ** 2).sum(-1, keepdim=True)
        x = torch.cat([labelled["input_values"], *(view["input_values"] for view in views)])
        mask = torch.cat([labelled["attention_mask"], *(view["attention_mask"] for view in views)])
        y = torch.cat([F.one_hot(labelled["labels"], 10).float(), guess, guess])
        x, y, mask = (weight * x + (1 - weight) * x[partners], weight * y + (1 - weight) * y[partners],
                      torch.maximum(mask, mask[partners]))
        logits = model(input_values=x, attention_mask=mask).logits
        expected = (-(y[:2] * logits[:2].log_softmax(-1)).sum(-1).mean()
                    + 10.0 * ((logits[2:].softmax(-1) - y[2:]) ** 2).mean())
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_mixmatch_trains_and_resumes_exactly(tmp_path, fashion):  # noqa: F811 (the fixture)
    def method():
        return MixMatch(rampup_fraction=0.0)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    logged = [entry for entry in full.state.log_history if "loss" in entry]
    assert all(entry["unsupervised_loss"] > 0 for entry in logged)


def test_registered_bad_settings_and_text_refused_with_the_fix():
    assert SEMI_METHOD_REGISTRY["mixmatch"] is MixMatch
    for settings, message in (({"temperature": 0.0}, "temperature"), ({"mixup_beta_alpha": 0.0}, "mixup_beta")):
        with pytest.raises(ValueError, match=message):
            MixMatchConfig(**settings)
    method = MixMatch()
    method.num_classes = 3
    text = {"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="use --method uda or fixmatch"):
        method.compute_loss(None, text, {"views": [{"input_ids": torch.ones(2, 4, dtype=torch.long)}] * 2},
                            progress())
