"""UDA (Xie et al. 2020): sharpening, the masked KL consistency and training-signal annealing against the paper's
formulas written out, the per-step objective, and a trainer run that logs, evaluates and resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F

from hf_ssl.losses.consistency import SharpenedKLLoss, sharpen
from hf_ssl.semi import SEMI_METHOD_REGISTRY, UDA, UDAConfig
from hf_ssl.semi.uda import tsa_threshold

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sharpening_is_the_normalised_power():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    powered = probabilities ** (1 / 0.4)
    torch.testing.assert_close(sharpen(probabilities, 0.4), powered / powered.sum(-1, keepdim=True))
    torch.testing.assert_close(sharpen(probabilities, 1.0), probabilities)
    with pytest.raises(ValueError, match="> 0"):
        sharpen(probabilities, 0.0)


def test_masked_kl_to_the_sharpened_target_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator, requires_grad=True)
    target_logits = torch.randn(6, 4, generator=generator) * 3
    target_logits.requires_grad_(True)
    loss, decided = SharpenedKLLoss(temperature=0.5, threshold=0.6)(logits, target_logits)
    # written out: q = sharpen(softmax(target)), mask on the unsharpened confidence, mean over the whole batch
    with torch.no_grad():
        p = target_logits.softmax(-1)
        q = p ** 2 / (p ** 2).sum(-1, keepdim=True)
        mask = (p.max(-1).values >= 0.6).float()
    naive = (mask * (q * (q.log() - logits.log_softmax(-1))).sum(-1)).sum() / 6
    torch.testing.assert_close(loss, naive)
    assert 0 < mask.sum() < 6, "the case must hold kept and masked rows"
    assert torch.equal(decided.mask, mask) and torch.equal(decided.labels, p.argmax(-1))
    loss.backward()
    expected_grad = mask[:, None] * (logits.softmax(-1) - q) / 6  # d KL / d logits = p - q, per kept row
    torch.testing.assert_close(logits.grad, expected_grad.detach())
    assert target_logits.grad is None  # the target is a constant


def test_training_signal_annealing_thresholds_at_chosen_steps():
    classes = 10
    assert tsa_threshold(50, 100, classes, "none") == 1.0
    assert tsa_threshold(50, 100, classes, "linear") == pytest.approx(0.5 * 0.9 + 0.1)
    assert tsa_threshold(50, 100, classes, "log") == pytest.approx((1 - math.exp(-2.5)) * 0.9 + 0.1)
    assert tsa_threshold(50, 100, classes, "exp") == pytest.approx(math.exp(-2.5) * 0.9 + 0.1)
    # start and end: 1/K to 1 (log ends at 1 - e^-5, exp starts at e^-5, as the paper's schedules do)
    assert [tsa_threshold(0, 100, classes, s) for s in ("linear", "log", "exp")] == pytest.approx(
        [0.1, 0.1, math.exp(-5) * 0.9 + 0.1])
    assert [tsa_threshold(100, 100, classes, s) for s in ("linear", "log", "exp")] == pytest.approx(
        [1.0, (1 - math.exp(-5)) * 0.9 + 0.1, 1.0])


def test_annealing_drops_the_labelled_examples_already_learnt():
    method = UDA(tsa_schedule="linear")
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.2]], requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    loss, kept = method.annealed_supervised_loss(logits, labels, progress(step=20, max_steps=100))
    eta = 0.2 * (2 / 3) + 1 / 3  # 0.467: the first example (p = 0.96) is learnt, the others (p < 0.4) are not
    per_example = F.cross_entropy(logits, labels, reduction="none")
    assert logits.softmax(-1)[0, 0] > eta > logits.softmax(-1)[1:, 1:].max()
    torch.testing.assert_close(loss, per_example[1:].mean())
    assert kept == pytest.approx(2 / 3)
    loss_all, kept_all = UDA().annealed_supervised_loss(logits, labels, progress(step=20, max_steps=100))
    torch.testing.assert_close(loss_all, per_example.mean())
    assert kept_all == 1.0


def test_uda_step_is_the_papers_equation():
    model = tiny_classifier()
    method = UDA(threshold=0.0, temperature=0.5, unsupervised_weight=2.0)  # threshold 0: every target counts
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    output = method.compute_loss(model.eval(), labelled, unlabelled, progress())
    with torch.no_grad():
        logits_l = model(pixel_values=labelled["pixel_values"]).logits
        weak, strong = (model(**view).logits for view in unlabelled["views"])
        q = weak.softmax(-1) ** 2
        q = q / q.sum(-1, keepdim=True)
        consistency = (q * (q.log() - strong.log_softmax(-1))).sum(-1).mean()
        expected = F.cross_entropy(logits_l, labelled["labels"]) + 2.0 * consistency
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    assert output.diagnostics["mask_rate"] == 1.0 and output.diagnostics["tsa_kept_rate"] == 1.0


def test_uda_is_registered_and_refuses_bad_settings():
    assert SEMI_METHOD_REGISTRY["uda"] is UDA
    for settings, message in (({"temperature": 0.0}, "temperature"), ({"threshold": 1.5}, "threshold"),
                              ({"tsa_schedule": "cosine"}, "tsa_schedule"),
                              ({"tsa_schedule": "log", "mixup_alpha": 0.5}, "annealing needs each labelled")):
        with pytest.raises(ValueError, match=message):
            UDAConfig(**settings)


def test_uda_trains_logs_and_resumes_exactly(tmp_path, fashion):  # noqa: F811 (the fixture)
    def method():
        return UDA(unlabelled_batch_ratio=2, threshold=0.0, tsa_schedule="log")  # tiny model: low confidence

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    logged = [entry for entry in full.state.log_history if "loss" in entry]
    for name in ("supervised_loss", "unsupervised_loss", "mask_rate", "tsa_kept_rate", "pseudo_label_accuracy"):
        assert name in logged[-1], name
    assert any(entry["unsupervised_loss"] > 0 for entry in logged)
