"""InfoNCE: parity with sentence-transformers' MultipleNegativesRankingLoss and open_clip's ClipLoss, the formula
written out, NT-Xent as a special case, bad input, and 2 processes = 1 process with the doubled batch."""

import math

import pytest
import test_distributed
import torch
from test_distributed import run_worker

from hf_ssl.losses import InfoNCELoss, NTXentLoss

WORKER = test_distributed.WORKER.with_name("distributed_worker_info_nce.py")


def embeddings(*shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in shapes]


def naive_info_nce(queries, keys, hard, temperature, symmetric):
    """van den Oord et al. 2018 Eq. 4 / CLIP Fig. 3 written out row by row."""
    q = [row / row.norm() for row in queries]
    k = [row / row.norm() for row in keys]
    h = [row / row.norm() for rows in (hard if hard is not None else []) for row in rows]

    def direction(rows, columns, extra):
        total = 0.0
        for i, row in enumerate(rows):
            scores = [torch.dot(row, column) / temperature for column in columns + extra]
            total = total - (scores[i] - torch.logsumexp(torch.stack(scores), dim=0))
        return total / len(rows)

    loss = direction(q, k, h)
    return (loss + direction(k, q, [])) / 2 if symmetric else loss


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_hard_negatives", [False, True])
def test_equals_the_formula_in_value_and_gradient(symmetric, with_hard_negatives):
    queries, keys, hard = embeddings((5, 7), (5, 7), (5, 2, 7))
    hard_negatives = hard if with_hard_negatives else None
    loss, stats = InfoNCELoss(0.1, symmetric=symmetric)(queries, keys, hard_negatives)
    expected = naive_info_nce(queries, keys, hard_negatives, 0.1, symmetric)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (queries, keys)), torch.autograd.grad(expected, (queries, keys))):
        torch.testing.assert_close(got, want)
    assert stats["logit_scale"].item() == pytest.approx(10.0)


@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_sentence_transformers_multiple_negatives_ranking(symmetric):
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )

    anchors, positives, negatives = embeddings((6, 8), (6, 8), (6, 8), seed=1)
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    reference = MultipleNegativesRankingLoss(
        None, scale=20.0, directions=directions, partition_mode="per_direction" if symmetric else "joint"
    )
    for extra in ([], [negatives]):
        expected = reference.compute_loss_from_embeddings([anchors, positives, *extra], labels=None)
        loss, _ = InfoNCELoss(0.05, symmetric=symmetric)(anchors, positives, extra[0] if extra else None)
        torch.testing.assert_close(loss, expected)
        grads = torch.autograd.grad(loss, (anchors, positives))
        for got, want in zip(grads, torch.autograd.grad(expected, (anchors, positives))):
            torch.testing.assert_close(got, want)


def test_matches_open_clip_clip_loss_with_learnable_scale():
    from open_clip.loss import ClipLoss

    images, texts = embeddings((7, 16), (7, 16), seed=2)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss, stats = InfoNCELoss(0.07, symmetric=True)(images, texts, logit_scale=logit_scale)
    normalized = [torch.nn.functional.normalize(x, dim=-1) for x in (images, texts)]
    reference_scale = logit_scale.exp()
    expected = ClipLoss()(*normalized, reference_scale)
    torch.testing.assert_close(loss, expected)
    inputs = (images, texts, logit_scale)
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(expected, inputs)):
        torch.testing.assert_close(got, want)
    assert stats["logit_scale"].item() == pytest.approx(1 / 0.07)


def test_own_learnable_temperature_is_a_parameter_and_is_clipped():
    loss_fn = InfoNCELoss(0.07, learnable_temperature=True, max_logit_scale=100.0)
    assert [name for name, _ in loss_fn.named_parameters()] == ["logit_scale"]
    queries, keys = embeddings((4, 5), (4, 5))
    loss, _ = loss_fn(queries.float(), keys.float())
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad != 0
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    assert loss_fn(queries.float(), keys.float())[1]["logit_scale"].item() == pytest.approx(100.0)
    assert "logit_scale" not in dict(InfoNCELoss(0.1).named_parameters())  # fixed: a non-persistent buffer
    assert "logit_scale" not in InfoNCELoss(0.1).state_dict()


def test_ntxent_is_the_symmetric_loss_with_query_negatives():
    z_a, z_b = embeddings((6, 5), (6, 5), seed=3)
    for temperature in (0.5, 0.1):
        expected, _ = NTXentLoss(temperature)(z_a, z_b)
        loss, _ = InfoNCELoss(temperature, symmetric=True, query_negatives=True)(z_a, z_b)
        torch.testing.assert_close(loss, expected)
        for got, want in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
            torch.testing.assert_close(got, want)


def test_known_tiny_example_and_diagnostics():
    # Orthogonal pairs, perfectly aligned: l = -log(e^{1/T} / (e^{1/T} + 1)) for each of the 2 rows.
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    loss, stats = InfoNCELoss(0.5)(queries, keys)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
    assert stats["positive_similarity"].item() == pytest.approx(1.0)
    assert stats["negative_similarity"].item() == pytest.approx(0.0, abs=1e-7)
    assert stats["retrieval_accuracy"].item() == 1.0
    swapped, swapped_stats = InfoNCELoss(0.5)(queries, keys.flip(0))
    assert swapped > loss and swapped_stats["retrieval_accuracy"].item() == 0.0


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="same batch size"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        InfoNCELoss()(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="same width"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="hard_negatives"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="Increase per_device_train_batch_size"):
        InfoNCELoss()(torch.randn(1, 8), torch.randn(1, 8))
    assert torch.isfinite(InfoNCELoss()(torch.randn(1, 8), torch.randn(1, 8), torch.randn(1, 8))[0])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="max_logit_scale"):
        InfoNCELoss(0.001, max_logit_scale=100)


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """The worker's ``all`` mode on 1 process with the global batch and on 2 gloo processes with half each."""
    tmp_path = tmp_path_factory.mktemp("gloo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_distributed, "WORKER", WORKER)
        single, double = run_worker(tmp_path, "all", 1), run_worker(tmp_path, "all", 2)
    assert single["world_size"] == 1 and double["world_size"] == 2
    return single["result"], double["result"]


def test_two_processes_match_one_process_with_double_batch(gloo_runs):
    """Keys, hard negatives (and queries as columns) gathered with gradients: loss and every row's gradient."""
    single, double = gloo_runs
    for variant, expected in single["loss"].items():
        for key, value in expected.items():
            torch.testing.assert_close(double["loss"][variant][key], value, msg=f"{variant}: {key}")
        assert expected["keys"].abs().sum() > 0


@pytest.mark.parametrize("model", ["clip", "sbert"])
def test_two_process_ddp_models_match_one_process(gloo_runs, model):
    """CLIP-style (symmetric, learnable temperature) and Sentence-BERT (symmetric MNRL + hard negatives) under DDP."""
    single, double = (run[model] for run in gloo_runs)
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert double["grads"].keys() == single["grads"].keys() and len(single["grads"]) > 10
    for name, grad in single["grads"].items():
        torch.testing.assert_close(double["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_gradient_gathering_one_process_is_unchanged():
    queries, keys = embeddings((5, 4), (5, 4))
    torch.testing.assert_close(
        InfoNCELoss(0.1, gather_with_grad=False)(queries, keys)[0], InfoNCELoss(0.1)(queries, keys)[0]
    )
