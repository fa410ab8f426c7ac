"""FixMatch's loss against USB (semilearn), the reference codebase of semi-supervised methods, on the same logits.

Runs only where semilearn is installed (the ``peer`` extra). semilearn pins an older torchaudio, so install it in its
own environment that shares this one's packages: ``python -m venv --system-site-packages .peer && .peer/bin/pip
install -e ".[peer,test]" && .peer/bin/python -m pytest tests/test_peer_semilearn.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_classifier

from hf_ssl.schedules import TrainingProgress
from hf_ssl.semi import FixMatch

semilearn_hooks = pytest.importorskip("semilearn.algorithms.hooks")
semilearn_criterions = pytest.importorskip("semilearn.core.criterions")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def usb_fixmatch_loss(model, labelled, weak, strong, threshold: float, weight: float) -> torch.Tensor:
    """semilearn's ``FixMatch.train_step`` (``use_cat``), step by step with its own hooks and criterions."""
    num_labelled = labelled["labels"].shape[0]
    logits = model(pixel_values=torch.cat([labelled["pixel_values"], weak, strong])).logits
    logits_labelled = logits[:num_labelled]
    logits_weak, logits_strong = logits[num_labelled:].chunk(2)
    supervised = semilearn_criterions.ce_loss(logits_labelled, labelled["labels"], reduction="mean")
    probabilities = torch.softmax(logits_weak.detach(), dim=-1)  # compute_prob
    algorithm = SimpleNamespace(p_cutoff=threshold)
    mask = semilearn_hooks.FixedThresholdingHook().masking(algorithm, logits_x_ulb=probabilities, softmax_x_ulb=False)
    targets = semilearn_hooks.PseudoLabelingHook().gen_ulb_targets(algorithm, logits=probabilities,
                                                                    use_hard_label=True, T=0.5, softmax=False)
    return supervised + weight * semilearn_criterions.consistency_loss(logits_strong, targets, "ce", mask=mask)


@pytest.mark.parametrize("kept", ["all", "half", "none"])
def test_fixmatch_loss_and_gradients_equal_usbs(kept):
    generator = torch.Generator().manual_seed(1)
    labelled = {"pixel_values": torch.randn(4, 3, 16, 16, generator=generator),
                "labels": torch.randint(0, 10, (4,), generator=generator)}
    weak, strong = (torch.randn(12, 3, 16, 16, generator=generator) for _ in range(2))
    ours_model, usb_model = tiny_classifier(), tiny_classifier()
    with torch.no_grad():  # a threshold that keeps every pseudo-label, the more confident half, or none
        confidence = ours_model(pixel_values=weak).logits.softmax(-1).amax(-1)
    threshold = {"all": 0.0, "half": float(confidence.median()) + 1e-6, "none": 1.0}[kept]
    method = FixMatch(threshold=threshold, unsupervised_weight=1.5)
    method.setup(ours_model, num_unlabelled=12)
    ours = method.compute_loss(ours_model.train(), labelled, {"views": [{"pixel_values": weak},
                                                                        {"pixel_values": strong}],
                                                              "indices": torch.arange(12)},
                               TrainingProgress(10, 100, 10))
    usb = usb_fixmatch_loss(usb_model.train(), labelled, weak, strong, threshold, 1.5)
    torch.testing.assert_close(ours.loss, usb, rtol=1e-5, atol=1e-6)
    ours.loss.backward()
    usb.backward()
    for (name, mine), theirs in zip(ours_model.named_parameters(), usb_model.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6, msg=name)
    expected_rate = {"all": 1.0, "half": 0.5, "none": 0.0}[kept]  # torch's median of 12 is the 6th smallest
    assert float(ours.diagnostics["mask_rate"]) == pytest.approx(expected_rate)
