"""InfoNCE: parity with sentence-transformers' MultipleNegativesRankingLoss and open_clip's ClipLoss, the formula
written out, NT-Xent as a special case, several positives per row (SupCon's L_out), bad input, and 2 processes = 1
process with the doubled batch (with repeated positive ids: test_clip.py)."""

import math

import pytest
import test_distributed
import torch
from test_distributed import one_and_two_processes

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
    for bad_ids in (torch.tensor([0, 1, 2]), torch.zeros(4), torch.zeros(4, 1, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"positive_ids must be one integer id per row, shape \(4,\)"):
            InfoNCELoss()(torch.randn(4, 8), torch.randn(4, 8), positive_ids=bad_ids)


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """The worker's ``all`` mode on 1 process with the global batch and on 2 gloo processes with half each."""
    return one_and_two_processes(tmp_path_factory.mktemp("gloo"), "all", WORKER)


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


# ----------------------------------------------------------------------------------------------------------------------
# Several positives per row: rows sharing a positive id (a caption, a class)
VARIANTS = {
    "one_way": {},
    "symmetric": {"symmetric": True},
    "symmetric_hard": {"symmetric": True},
    "query_negatives": {"symmetric": True, "query_negatives": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_distinct_positive_ids_give_exactly_the_one_positive_loss(variant):
    queries, keys, hard = embeddings((6, 5), (6, 5), (6, 2, 5), seed=4)
    hard_negatives = hard if variant.endswith("hard") else None
    loss_fn = InfoNCELoss(0.1, **VARIANTS[variant])
    expected, expected_stats = loss_fn(queries, keys, hard_negatives)
    loss, stats = loss_fn(queries, keys, hard_negatives, positive_ids=torch.tensor([5, 3, 9, 0, 1, 2]))
    assert torch.equal(loss, expected)  # bit for bit: the multi-positive term is an exact zero
    for got, want in zip(torch.autograd.grad(loss, (queries, keys)), torch.autograd.grad(expected, (queries, keys))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    for name, value in expected_stats.items():
        assert torch.equal(stats[name], value), name


def naive_multi_positive(queries, keys, hard, ids, temperature, symmetric):
    """Khosla et al. 2020 Eq. 2 (L_out) across two modalities, row by row: -mean over the positives p of row i of
    log softmax_p, the softmax over every column (all keys + hard negatives)."""
    q = [row / row.norm() for row in queries]
    k = [row / row.norm() for row in keys]
    h = [row / row.norm() for rows in (hard if hard is not None else []) for row in rows]

    def direction(rows, columns, extra):
        total = 0.0
        for i, row in enumerate(rows):
            scores = torch.stack([torch.dot(row, column) / temperature for column in columns + extra])
            log_probs = scores - torch.logsumexp(scores, dim=0)
            positives = [j for j in range(len(columns)) if ids[j] == ids[i]]
            total = total - sum(log_probs[j] for j in positives) / len(positives)
        return total / len(rows)

    loss = direction(q, k, h)
    return (loss + direction(k, q, [])) / 2 if symmetric else loss


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_hard_negatives", [False, True])
def test_rows_sharing_an_id_are_positives_formula_in_value_and_gradient(symmetric, with_hard_negatives):
    queries, keys, hard = embeddings((7, 5), (7, 5), (7, 2, 5), seed=5)
    hard_negatives = hard if with_hard_negatives else None
    ids = [0, 1, 0, 2, 1, 0, 3]
    loss, stats = InfoNCELoss(0.1, symmetric=symmetric)(queries, keys, hard_negatives, positive_ids=torch.tensor(ids))
    expected = naive_multi_positive(queries, keys, hard_negatives, ids, 0.1, symmetric)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (queries, keys)), torch.autograd.grad(expected, (queries, keys))):
        torch.testing.assert_close(got, want)
    one_positive, _ = InfoNCELoss(0.1, symmetric=symmetric)(queries, keys, hard_negatives)
    assert not torch.isclose(loss, one_positive)  # the repeats are no longer negatives
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).T
    same = torch.tensor(ids)[:, None] == torch.tensor(ids)[None, :]
    torch.testing.assert_close(stats["positive_similarity"], cosine[same].mean().detach())
    torch.testing.assert_close(stats["negative_similarity"], cosine[~same].mean().detach())


def test_supcon_is_the_symmetric_loss_with_query_negatives_and_ids():
    """Two views z_a, z_b of N examples with class ids: Khosla et al. 2020 Eq. 2 over the 2N views, each anchor's
    positives every other view of its class, its denominator every other view."""
    z_a, z_b = embeddings((6, 4), (6, 4), seed=6)
    ids = [0, 1, 1, 0, 2, 1]
    temperature = 0.3
    views = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=-1)
    labels = ids + ids
    total = 0.0
    for i in range(12):
        others = [a for a in range(12) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        log_denominator = torch.logsumexp(torch.stack([views[i] @ views[a] / temperature for a in others]), dim=0)
        total = total - sum(views[i] @ views[p] / temperature - log_denominator for p in positives) / len(positives)
    expected = total / 12
    loss, _ = InfoNCELoss(temperature, symmetric=True, query_negatives=True)(z_a, z_b, positive_ids=torch.tensor(ids))
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (z_a, z_b)), torch.autograd.grad(expected, (z_a, z_b))):
        torch.testing.assert_close(got, want)


def test_a_repeated_pair_known_example():
    """Orthogonal embeddings, rows 0 and 1 the same pair twice, perfectly aligned. With the shared id both keys are
    positives of both queries: the loss is the closed form below, the twins get the same gradient and a query that
    retrieves its twin's key counts as right (one positive per row: row 1 retrieves key 0, a "negative")."""
    e1, e2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    queries = torch.stack([e1, e1, e2]).requires_grad_()
    keys = torch.stack([e1, e1, e2]).requires_grad_()
    loss, stats = InfoNCELoss(0.5)(queries, keys, positive_ids=torch.tensor([7, 7, 3]))
    e = math.e
    # rows 0, 1: logits (2, 2, 0), target (1/2, 1/2, 0); row 2: logits (0, 0, 2), target (0, 0, 1)
    expected = (2 * -math.log(e**2 / (2 * e**2 + 1)) - math.log(e**2 / (e**2 + 2))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    grad_keys = torch.autograd.grad(loss, keys)[0]
    torch.testing.assert_close(grad_keys[0], grad_keys[1])
    assert stats["retrieval_accuracy"].item() == 1.0 and stats["positive_similarity"].item() == pytest.approx(1.0)
    assert stats["negative_similarity"].item() == pytest.approx(0.0)
    assert InfoNCELoss(0.5)(queries, keys)[1]["retrieval_accuracy"].item() == pytest.approx(2 / 3)


def test_identical_twin_keys_leave_the_loss_unchanged():
    """Where the rows sharing an id have identical keys (the same caption through a deterministic text tower), the
    soft target changes neither loss nor gradient: the twins' logits are equal, so spreading the target over them
    is the same cross-entropy. Only the diagnostics change (a twin retrieved counts as right)."""
    queries, keys = embeddings((6, 5), (3, 5), seed=8)
    rows = [0, 1, 0, 2, 1, 0]
    loss_fn = InfoNCELoss(0.1, symmetric=True)
    loss, _ = loss_fn(queries, keys[rows], positive_ids=torch.tensor(rows))
    expected, _ = loss_fn(queries, keys[rows])
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (queries, keys)), torch.autograd.grad(expected, (queries, keys))):
        torch.testing.assert_close(got, want)
