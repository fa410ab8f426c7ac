"""MoCo v2 / v3: losses against the papers' formulas, the queue, momentum, round trips, and 2 processes."""

import math

import pytest
import torch
from conftest import tiny_vit_config
from test_distributed import run_worker
from transformers import AutoModel

from hf_ssl import AutoSSLModel, TrainingProgress
from hf_ssl.distributed import all_gather_no_grad
from hf_ssl.losses.moco import MoCoQueueLoss, MoCoV3Loss
from hf_ssl.methods.moco_v2 import MoCoV2ForPreTraining
from hf_ssl.methods.moco_v3 import MoCoV3ForPreTraining


def naive_queue_infonce(q, k, queue, temperature):
    """He et al. 2020 Eq. 1 written out: one positive key, K negatives from the queue, mean over queries."""
    total = 0.0
    for query, key in zip(q, k):
        query = query / query.norm()
        key = key / key.norm()
        numerator = torch.exp(torch.dot(query, key) / temperature)
        denominator = numerator + sum(torch.exp(torch.dot(query, negative) / temperature) for negative in queue)
        total = total - torch.log(numerator / denominator)
    return total / len(q)


def naive_moco_v3_ctr(q, k, temperature):
    """Chen, Xie & He 2021 Algorithm 1 ``ctr`` written out: CE over in-batch keys, label i, times 2T."""
    keys = [key / key.norm() for key in k]
    total = 0.0
    for i, query in enumerate(q):
        query = query / query.norm()
        scores = [torch.exp(torch.dot(query, key) / temperature) for key in keys]
        total = total - torch.log(scores[i] / sum(scores))
    return total / len(q) * 2 * temperature


def tiny_moco_v2(**overrides):
    settings = {"projection_hidden_dim": 32, "projection_dim": 16, "queue_size": 24}
    settings.update(overrides)
    return MoCoV2ForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


def tiny_moco_v3(**overrides):
    settings = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32}
    settings.update(overrides)
    return MoCoV3ForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


@pytest.mark.parametrize("temperature", [0.2, 0.07])
def test_queue_loss_equals_the_formula_and_no_gradient_reaches_keys_or_queue(temperature):
    generator = torch.Generator().manual_seed(0)
    loss_fn = MoCoQueueLoss(dim=7, queue_size=6, temperature=temperature).double()
    q = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, stats = loss_fn(q, k)
    grad_q, grad_k = torch.autograd.grad(loss, (q, k), allow_unused=True)
    expected = naive_queue_infonce(q, k, loss_fn.queue, temperature)
    (expected_grad_q,) = torch.autograd.grad(expected, (q,))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad_q, expected_grad_q)
    assert grad_k is None
    assert not loss_fn.queue.requires_grad
    cosine = torch.nn.functional.cosine_similarity(q, k).mean()
    torch.testing.assert_close(stats["positive_similarity"], cosine.detach())


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_moco_v3_loss_equals_algorithm_1_and_no_gradient_reaches_keys(temperature):
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, _ = MoCoV3Loss(temperature)(q, k)
    grad_q, grad_k = torch.autograd.grad(loss, (q, k), allow_unused=True)
    expected = naive_moco_v3_ctr(q, k, temperature)
    (expected_grad_q,) = torch.autograd.grad(expected, (q,))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad_q, expected_grad_q)
    assert grad_k is None
    # Known value: orthogonal unit queries equal to their keys, T = 1 -> 2 * -log(e / (e + n - 1)).
    eye = torch.eye(3, dtype=torch.float64)
    assert MoCoV3Loss(1.0)(eye, eye)[0].item() == pytest.approx(-2 * math.log(math.e / (math.e + 2)))


def test_enqueue_wraps_around_and_replaces_the_oldest_keys():
    loss_fn = MoCoQueueLoss(dim=3, queue_size=12, temperature=0.2)
    initial = loss_fn.queue.clone()
    assert torch.allclose(initial.norm(dim=1), torch.ones(12))
    batches = [torch.randn(2, 3) for _ in range(8)]
    loss_fn.enqueue([batches[0], batches[1]])  # 4 keys per step: view 0 then view 1
    assert int(loss_fn.queue_ptr) == 4
    torch.testing.assert_close(loss_fn.queue[:2], torch.nn.functional.normalize(batches[0], dim=1))
    torch.testing.assert_close(loss_fn.queue[2:4], torch.nn.functional.normalize(batches[1], dim=1))
    torch.testing.assert_close(loss_fn.queue[4:], initial[4:])
    loss_fn.enqueue(torch.cat(batches[2:4]))
    loss_fn.enqueue(torch.cat(batches[4:6]))
    assert int(loss_fn.queue_ptr) == 0  # wrapped
    loss_fn.enqueue(torch.cat(batches[6:8]))  # the oldest (step 1) keys are replaced, the rest stay
    assert int(loss_fn.queue_ptr) == 4
    normalized = torch.nn.functional.normalize(torch.cat(batches), dim=1)
    torch.testing.assert_close(loss_fn.queue[:4], normalized[12:16])
    torch.testing.assert_close(loss_fn.queue[4:12], normalized[4:12])
    with pytest.raises(ValueError, match="set queue_size to a multiple of 5"):
        loss_fn.enqueue(torch.randn(5, 3))
    torch.testing.assert_close(all_gather_no_grad(normalized), normalized)


def test_forward_shapes_enqueue_only_in_training_and_bad_input(tiny_crops):
    model = tiny_moco_v2()
    model.eval()
    queue = model.loss_fn.queue.clone()
    out = model(global_crops=tiny_crops["global_crops"])
    assert out.loss.dim() == 0 and out.queries.shape == out.keys.shape == (8, 16)
    torch.testing.assert_close(model.loss_fn.queue, queue)
    model.train()
    out = model(global_crops=tiny_crops["global_crops"])
    assert int(model.loss_fn.queue_ptr) == 8
    torch.testing.assert_close(model.loss_fn.queue[:8], torch.nn.functional.normalize(out.keys, dim=1))
    with pytest.raises(ValueError, match="set queue_size to a multiple of 8"):
        tiny_moco_v2(queue_size=20)(global_crops=tiny_crops["global_crops"])
    for model in (tiny_moco_v2(), tiny_moco_v3()):
        with pytest.raises(ValueError, match="num_global_crops=2"):
            model(global_crops=torch.randn(4, 3, 3, 16, 16))
        with pytest.raises(ValueError, match="num_local_crops=0"):
            model(**tiny_crops)
    out = tiny_moco_v3()(global_crops=tiny_crops["global_crops"])
    assert out.loss.dim() == 0 and out.queries.shape == (8, 16)


def test_momentum_schedule_and_ema_after_a_step(tiny_crops):
    v2 = tiny_moco_v2()
    for step in (0, 5, 10):
        v2.set_progress(TrainingProgress(step=step, max_steps=10, steps_per_epoch=5))
        assert v2.schedule_values()["teacher_momentum"] == pytest.approx(0.999)
    model = tiny_moco_v3()
    expected = {0: 0.99, 5: 0.995, 10: 1.0, 20: 1.0}
    for step, momentum in expected.items():
        model.set_progress(TrainingProgress(step=step, max_steps=10, steps_per_epoch=5))
        assert model.schedule_values()["teacher_momentum"] == pytest.approx(momentum)
    for model in (v2, tiny_moco_v3()):
        assert all(not p.requires_grad for p in model.encoder.parameters())
        assert all(not p.requires_grad for p in model.key_projector.parameters())
        for a, b in zip(model.encoder.parameters(), model.student_encoder.parameters()):
            torch.testing.assert_close(a, b)
        progress = TrainingProgress(step=0, max_steps=10, steps_per_epoch=5)
        model.set_progress(progress)
        momentum = model.schedule_values()["teacher_momentum"]
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        model(global_crops=tiny_crops["global_crops"]).loss.backward()
        key_before = [p.clone() for p in model.key_projector.parameters()]
        optimizer.step()
        model.after_optimizer_step(progress)
        for key, old, query in zip(model.key_projector.parameters(), key_before, model.projector.parameters()):
            torch.testing.assert_close(key, momentum * old + (1 - momentum) * query)
        changed = any(
            not torch.equal(a, b) for a, b in zip(model.encoder.parameters(), model.student_encoder.parameters())
        )
        assert changed


@pytest.mark.parametrize("builder", [tiny_moco_v2, tiny_moco_v3])
def test_round_trip_restores_queue_and_vanilla_automodel_is_the_key_encoder(tmp_path, tiny_crops, builder):
    torch.manual_seed(0)
    model = builder(momentum_teacher=0.5, momentum_teacher_end=0.5)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    progress = TrainingProgress(step=0, max_steps=10, steps_per_epoch=5)
    for _ in range(2):
        model.set_progress(progress)
        model(global_crops=tiny_crops["global_crops"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step(progress)
    model.save_pretrained(tmp_path)
    loaded = AutoSSLModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.method_config == model.method_config
    expected_state = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected_state[name], msg=name)
    if builder is tiny_moco_v2:
        assert int(loaded.loss_fn.queue_ptr) == 16
        torch.testing.assert_close(loaded.loss_fn.queue, model.loss_fn.queue)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(global_crops=tiny_crops["global_crops"]).loss, model(global_crops=tiny_crops["global_crops"]).loss
        )
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder).__name__ == "ViTModel"
    pixels = tiny_crops["global_crops"][:, 0]
    with torch.no_grad():
        vanilla = encoder(pixel_values=pixels).last_hidden_state[:, 0]
        torch.testing.assert_close(vanilla, model.encoder(pixel_values=pixels).last_hidden_state[:, 0])
        student = model.student_encoder(pixel_values=pixels).last_hidden_state[:, 0]
    assert not torch.allclose(vanilla, student)  # the key (momentum) encoder, not the query encoder




@pytest.mark.parametrize("method", ["moco_v2", "moco_v3"])
def test_two_processes_match_one_process_with_double_batch(tmp_path, method):
    """MoCo v3: gathered keys; MoCo v2: the gathered queue (and shuffled BN's permutation round trip)."""
    single = run_worker(tmp_path, method, 1)["result"]
    double = run_worker(tmp_path, method, 2)["result"]
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert double["grads"].keys() == single["grads"].keys() and single["grads"]
    for name, grad in single["grads"].items():
        torch.testing.assert_close(double["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if method == "moco_v2":
        torch.testing.assert_close(double["queue"], single["queue"], rtol=1e-5, atol=1e-6)
        assert int(double["queue_ptr"]) == int(single["queue_ptr"]) == 16
        # Rank order: view 0 of rank 0, view 0 of rank 1, then view 1 of rank 0, view 1 of rank 1.
        rank0, rank1 = double["keys_per_rank"]
        expected = torch.nn.functional.normalize(torch.cat([rank0[:4], rank1[:4], rank0[4:], rank1[4:]]), dim=1)
        torch.testing.assert_close(double["queue"][:16], expected)
        check_shuffled_batch_norm(double["shuffle"]["per_rank"])


def check_shuffled_batch_norm(per_rank):
    """Shuffled BN's gather-permute-scatter (2 processes): every key returns to its owner, rows are mixed."""
    computed_on = []
    for values in per_rank:
        inputs, doubled, where = values[:8], values[8:16], values[16:]
        torch.testing.assert_close(doubled, 2 * inputs)  # each process gets its own rows back, in order
        computed_on.append(where)
    # The shared permutation mixes the ranks: some rows are encoded by the other process (BatchNorm sees both).
    assert any((where != rank).any() for rank, where in enumerate(computed_on))
    assert torch.cat(computed_on).eq(0).sum() == 4  # each process encodes exactly its share

