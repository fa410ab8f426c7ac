"""MixMatch (Berthelot et al. 2019): label guessing (average over K views, sharpened), MixUp with lambda' = max(lambda,
1 - lambda) over labelled and unlabelled examples, the two losses against Algorithm 1 written out (images, audio, and
text mixed as token embeddings), a run with exact resume, and inputs it cannot mix refused with the fix."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_audio_classifier, tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F
from transformers import BertConfig, BertForSequenceClassification

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


def algorithm_1_written_out(model, labelled, views, key, seed=4, weight_u=10.0):
    """MixMatch's loss at temperature 0.5 and alpha 0.75 (Algorithm 1), drawing lambda and the partners as the
    method does after ``torch.manual_seed(seed)``; an ``attention_mask`` of the inputs covers both partners."""
    torch.manual_seed(seed)
    alpha = torch.tensor(0.75)
    weight = torch.distributions.Beta(alpha, alpha).sample().item()
    weight = max(weight, 1 - weight)
    count = len(labelled["labels"])
    partners = torch.randperm(count + sum(len(view[key]) for view in views))
    with torch.no_grad():
        average = torch.stack([model(**view).logits.softmax(-1) for view in views]).mean(0)
        guess = average ** 2 / (average ** 2).sum(-1, keepdim=True)
        batches = [labelled, *views]
        length = max(batch[key].shape[1] for batch in batches)  # audio: zero-padded on the right to the longest

        def padded(name):  # along the sequence dimension (dim 1)
            return torch.cat([F.pad(batch[name], (0, 0) * (batch[name].dim() - 2) + (0, length - batch[name].shape[1]))
                              for batch in batches])

        x = padded(key)
        y = torch.cat([F.one_hot(labelled["labels"], 10).float(), *([guess] * len(views))])
        x, y = weight * x + (1 - weight) * x[partners], weight * y + (1 - weight) * y[partners]
        inputs = {key: x}
        if "attention_mask" in labelled:
            mask = padded("attention_mask")
            inputs["attention_mask"] = torch.maximum(mask, mask[partners])
        logits = model(**inputs).logits
        return (-(y[:count] * logits[:count].log_softmax(-1)).sum(-1).mean()
                + weight_u * ((logits[count:].softmax(-1) - y[count:]) ** 2).mean())


def test_the_step_is_algorithm_1_written_out():
    model = tiny_classifier().eval()
    method = MixMatch(unsupervised_weight=10.0, rampup_fraction=0.0, temperature=0.5)
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    torch.manual_seed(4)
    output = method.compute_loss(model, labelled, unlabelled, progress())
    expected = algorithm_1_written_out(model, labelled, unlabelled["views"], "pixel_values")
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_audio_batches_mix_their_attention_masks():
    """A Wav2Vec2 classifier's batches carry an ``attention_mask`` per clip and may differ in length (each padded to
    its longest clip): the mixed batch is padded to the longest of all, and its mask covers both partners."""
    model = tiny_audio_classifier().eval()
    method = MixMatch(unsupervised_weight=10.0, rampup_fraction=0.0)
    method.setup(model, num_unlabelled=6)
    generator = torch.Generator().manual_seed(1)

    def clips(count, padded, length=800):  # the first `padded` clips end in padding from sample 500 on
        mask = torch.ones(count, length, dtype=torch.long)
        mask[:padded, 500:] = 0
        return {"input_values": torch.randn(count, length, generator=generator) * mask, "attention_mask": mask}

    labelled = {**clips(2, 1, length=780), "labels": torch.tensor([3, 7])}
    unlabelled = {"views": [clips(6, 2), clips(6, 2)], "indices": torch.arange(6)}
    torch.manual_seed(4)
    output = method.compute_loss(model, labelled, unlabelled, progress())
    expected = algorithm_1_written_out(model, labelled, unlabelled["views"], "input_values")
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_text_batches_mix_their_token_embeddings():
    """Token ids cannot be blended: MixMatch mixes the embeddings of the classifier's own table (padding zeroed, the
    mask covering both partners), so the step is Algorithm 1 on those embeddings, and the table trains through it."""
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=10)).eval()
    method = MixMatch(unsupervised_weight=10.0, rampup_fraction=0.0)
    method.setup(model, num_unlabelled=6)
    generator = torch.Generator().manual_seed(2)

    def sentences(count, length, padded):  # the first `padded` sentences end in padding (token 0) from position 3 on
        mask = torch.ones(count, length, dtype=torch.long)
        mask[:padded, 3:] = 0
        return {"input_ids": torch.randint(1, 50, (count, length), generator=generator) * mask, "attention_mask": mask}

    labelled = {**sentences(2, 5, 1), "labels": torch.tensor([3, 7])}
    unlabelled = {"views": [sentences(3, 7, 2), sentences(3, 6, 1)], "indices": torch.arange(3)}
    torch.manual_seed(4)
    output = method.compute_loss(model, labelled, unlabelled, progress())
    table = model.get_input_embeddings()

    def embedded(batch):
        embeddings = table(batch["input_ids"]) * batch["attention_mask"].unsqueeze(-1)
        return {"inputs_embeds": embeddings, "attention_mask": batch["attention_mask"],
                **({"labels": batch["labels"]} if "labels" in batch else {})}

    expected = algorithm_1_written_out(model, embedded(labelled), [embedded(view) for view in unlabelled["views"]],
                                       "inputs_embeds")
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    output.loss.backward()
    assert table.weight.grad.abs().sum() > 0


def test_mixmatch_trains_and_resumes_exactly(tmp_path, fashion):  # noqa: F811 (the fixture)
    def method():
        return MixMatch(rampup_fraction=0.0)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    logged = [entry for entry in full.state.log_history if "loss" in entry]
    assert all(entry["unsupervised_loss"] > 0 for entry in logged)


def test_registered_bad_settings_and_unmixable_inputs_refused_with_the_fix():
    assert SEMI_METHOD_REGISTRY["mixmatch"] is MixMatch
    for settings, message in (({"temperature": 0.0}, "temperature"), ({"mixup_beta_alpha": 0.0}, "mixup_beta")):
        with pytest.raises(ValueError, match=message):
            MixMatchConfig(**settings)
    method = MixMatch()
    method.num_classes = 3
    unknown = {"graph_nodes": torch.ones(2, 5, 3), "labels": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="use --method fixmatch"):
        method.compute_loss(None, unknown, {"views": [{"graph_nodes": torch.ones(2, 5, 3)}] * 2}, progress())
