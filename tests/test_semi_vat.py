"""VAT (Miyato et al. 2018): the power iteration against the same steps written out, the adversarial direction
against random ones of the same norm, the per-step objective, text perturbed in embedding space (padding untouched),
a training run with exact resume, and the errors that name the fix."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_audio_classifier, tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F
from transformers import BertConfig, BertForSequenceClassification

from hf_ssl.semi import SEMI_METHOD_REGISTRY, VAT, VATConfig
from hf_ssl.semi.vat import kl_from_logits, normalise_per_example

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_power_iteration_is_the_papers_finite_difference_step():
    model = tiny_classifier().eval()
    view = {"pixel_values": torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))}
    method = VAT(xi=1e-1, epsilon=2.0)  # a xi large enough that float32 rounding does not steer the direction
    torch.manual_seed(7)
    clean, adversarial = method.adversarial_batch(model, view)
    # written out with the same random start
    torch.manual_seed(7)
    x = view["pixel_values"]
    d = torch.randn_like(x)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    r = (1e-1 * d).requires_grad_(True)
    with torch.no_grad():
        log_p = model(pixel_values=x).logits.log_softmax(-1)
    kl = (log_p.exp() * (log_p - model(pixel_values=x + r).logits.log_softmax(-1))).sum(-1).mean()
    (g,) = torch.autograd.grad(kl, r)
    expected = x + 2.0 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(adversarial["pixel_values"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(clean, model(**view).logits)
    norms = (adversarial["pixel_values"] - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 2.0))


def test_the_adversarial_direction_moves_the_prediction_more_than_random_ones():
    model = tiny_classifier(seed=2).eval()
    view = {"pixel_values": torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))}
    torch.manual_seed(0)
    _, adversarial = VAT(xi=1e-2, epsilon=1.0, power_iterations=2).adversarial_batch(model, view)
    with torch.no_grad():
        clean = model(**view).logits
        vat_kl = kl_from_logits(clean, model(**adversarial).logits)
        random_kls = []
        for seed in range(20):
            noise = torch.randn(view["pixel_values"].shape, generator=torch.Generator().manual_seed(100 + seed))
            moved = view["pixel_values"] + normalise_per_example(noise)
            random_kls.append(kl_from_logits(clean, model(pixel_values=moved).logits))
    assert vat_kl > 3 * max(random_kls), (vat_kl, max(random_kls))


def test_vat_step_is_the_papers_objective():
    model = tiny_classifier()
    method = VAT(unsupervised_weight=2.0, rampup_fraction=0.0, entropy_weight=0.5)
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    unlabelled["views"] = unlabelled["views"][:1]
    torch.manual_seed(3)
    output = method.compute_loss(model.eval(), labelled, unlabelled, progress())
    torch.manual_seed(3)
    _, adversarial = method.adversarial_batch(model, unlabelled["views"][0])
    with torch.no_grad():
        logits_l = model(pixel_values=labelled["pixel_values"]).logits
        clean = model(**unlabelled["views"][0]).logits
        p = clean.softmax(-1)
        kl = (p * (p.log() - model(**adversarial).logits.log_softmax(-1))).sum(-1).mean()
        entropy = -(p * p.log()).sum(-1).mean()
        expected = F.cross_entropy(logits_l, labelled["labels"]) + 2.0 * (kl + 0.5 * entropy)
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)


def test_text_is_perturbed_in_embedding_space_and_padding_is_left_alone():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    method = VAT(epsilon=1.0, xi=1e-2)
    method.setup(model, num_unlabelled=2)
    labelled = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2])}
    unlabelled = {"views": [{"input_ids": ids, "attention_mask": mask}], "indices": torch.arange(2)}
    output = method.compute_loss(model, labelled, unlabelled, progress())
    output.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # the embeddings train through VAT
    embeddings = model.get_input_embeddings()(ids).detach()
    _, adversarial = method.adversarial_batch(model, {"inputs_embeds": embeddings, "attention_mask": mask})
    moved = (adversarial["inputs_embeds"] - embeddings).norm(dim=-1)
    assert torch.all(moved[1, 3:] == 0) and torch.all(moved[1, :3] > 0)
    torch.testing.assert_close(moved.pow(2).sum(-1).sqrt(), torch.ones(2))


def test_audio_classifiers_in_training_mode_take_the_perturbation():
    """Wav2Vec2's feature encoder marks its input as requiring grad in training mode, which a non-leaf input refuses:
    the power iteration differentiates by the perturbed clip itself, and the step trains the whole classifier."""
    model = tiny_audio_classifier().train()
    method = VAT(rampup_fraction=0.0)
    method.setup(model, num_unlabelled=6)
    generator = torch.Generator().manual_seed(0)
    labelled = {"input_values": torch.randn(2, 780, generator=generator),
                "attention_mask": torch.ones(2, 780, dtype=torch.long), "labels": torch.tensor([1, 4])}
    view = {"input_values": torch.randn(6, 800, generator=generator),
            "attention_mask": torch.ones(6, 800, dtype=torch.long)}
    output = method.compute_loss(model, labelled, {"views": [view], "indices": torch.arange(6)}, progress())
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert model.wav2vec2.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0


def test_vat_trains_logs_and_resumes_exactly(tmp_path, fashion):  # noqa: F811 (the fixture)
    def method():
        return VAT(unlabelled_batch_ratio=2, epsilon=1.0, entropy_weight=0.06)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    logged = [entry for entry in full.state.log_history if "loss" in entry]
    assert any(entry["unsupervised_loss"] > 0 for entry in logged)


def test_bad_settings_and_inputs_are_refused_with_the_fix():
    assert SEMI_METHOD_REGISTRY["vat"] is VAT
    for settings, message in (({"epsilon": 0.0}, "epsilon"), ({"power_iterations": 0}, "power_iterations"),
                              ({"entropy_weight": -1.0}, "entropy_weight")):
        with pytest.raises(ValueError, match=message):
            VATConfig(**settings)
    with pytest.raises(ValueError, match="continuous input"):
        VAT().adversarial_batch(tiny_classifier(), {"token_type_ids": torch.zeros(2, 3, dtype=torch.long)})
