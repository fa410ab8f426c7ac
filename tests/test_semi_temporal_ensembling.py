"""Temporal ensembling (Laine & Aila 2017): the per-example moving average with bias correction against the formula,
examples without a past prediction left out, the whole global batch remembered on every process, and exact resume
with the memory in the checkpoint."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F

import hf_ssl.semi.temporal_ensembling as temporal_ensembling
from hf_ssl.semi import SEMI_METHOD_REGISTRY, TemporalEnsembling, TemporalEnsemblingConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_targets_are_the_bias_corrected_moving_average_of_past_predictions():
    method = TemporalEnsembling(ensemble_momentum=0.6)
    method.setup(tiny_classifier(), num_unlabelled=5)
    first, second = torch.tensor([[0.7, 0.3] + [0.0] * 8]), torch.tensor([[0.2, 0.8] + [0.0] * 8])
    index = torch.tensor([3])
    targets, kept = method.targets(index)
    assert kept.item() == 0.0  # never predicted: no target yet
    method.remember(index, first)
    targets, kept = method.targets(index)
    torch.testing.assert_close(targets, first)  # (1 - a) z / (1 - a) = z
    method.remember(index, second)
    targets, _ = method.targets(index)
    expected = (0.6 * 0.4 * first + 0.4 * second) / (1 - 0.6 ** 2)
    torch.testing.assert_close(targets, expected)
    assert method.ensemble_updates.tolist() == [0, 0, 0, 2, 0]


def test_the_step_is_the_papers_objective_over_the_examples_with_a_target():
    model = tiny_classifier()
    method = TemporalEnsembling(unsupervised_weight=2.0, rampup_fraction=0.0)
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    unlabelled["views"] = unlabelled["views"][:1]
    past = torch.softmax(torch.randn(4, 10), dim=-1)
    method.remember(torch.arange(4), past)  # examples 0-3 have a past, 4-7 not
    output = method.compute_loss(model.eval(), labelled, unlabelled, progress())
    with torch.no_grad():
        logits_l = model(pixel_values=labelled["pixel_values"]).logits
        p = model(**unlabelled["views"][0]).logits.softmax(-1)
        consistency = ((p[:4] - past) ** 2).mean()
        expected = F.cross_entropy(logits_l, labelled["labels"]) + 2.0 * consistency
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-6)
    assert output.diagnostics["ensemble_kept_rate"] == 0.5


def test_every_process_remembers_the_whole_global_batch(monkeypatch):
    """With 2 processes, rank 0 sees examples 0-1 and rank 1 examples 2-3: the gathered update writes all four."""
    other_rank = {"indices": torch.tensor([2, 3]), "probabilities": torch.full((2, 10), 0.1)}

    def gather_two_ranks(tensor):
        other = other_rank["indices"] if tensor.dtype == torch.long else other_rank["probabilities"]
        return torch.cat([tensor, other])

    monkeypatch.setattr(temporal_ensembling, "all_gather_no_grad", gather_two_ranks)
    method = TemporalEnsembling()
    method.setup(tiny_classifier(), num_unlabelled=4)
    method.remember(torch.tensor([0, 1]), torch.softmax(torch.randn(2, 10), dim=-1))
    assert method.ensemble_updates.tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(method.targets(torch.tensor([2, 3]))[0], torch.full((2, 10), 0.1))


def test_temporal_ensembling_trains_and_resumes_exactly_with_its_memory(tmp_path, fashion):  # noqa: F811
    def method():
        return TemporalEnsembling(unlabelled_batch_ratio=2, rampup_fraction=0.0)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    assert int(full.method.ensemble_updates.sum()) == 6 * 8  # 8 unlabelled examples a step


def test_registered_and_bad_settings_refused():
    assert SEMI_METHOD_REGISTRY["temporal_ensembling"] is TemporalEnsembling
    with pytest.raises(ValueError, match="ensemble_momentum"):
        TemporalEnsemblingConfig(ensemble_momentum=1.0)
