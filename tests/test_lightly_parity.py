"""Loss parity with lightly (1.6), the library hf_ssl's vision losses are most often compared against.

lightly is a test extra; these tests are skipped where it is not installed. Each test feeds the same embeddings to
both implementations and compares the loss value and the gradient it sends back.
"""

import pytest
import torch

lightly_loss = pytest.importorskip("lightly.loss")

from hf_ssl.losses import DINOLoss, MoCoQueueLoss, NegativeCosineSimilarity, NTXentLoss  # noqa: E402


def _pair(batch=8, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch, dim, generator=generator, requires_grad=True)
    z_b = torch.randn(batch, dim, generator=generator, requires_grad=True)
    return z_a, z_b


def _loss_and_grads(loss, *inputs):
    grads = torch.autograd.grad(loss, inputs)
    return loss.detach(), grads


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_lightly(temperature):
    z_a, z_b = _pair()
    ours, ours_grads = _loss_and_grads(NTXentLoss(temperature)(z_a, z_b)[0], z_a, z_b)
    theirs, theirs_grads = _loss_and_grads(lightly_loss.NTXentLoss(temperature=temperature)(z_a, z_b), z_a, z_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for mine, reference in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)


def test_negative_cosine_matches_lightly_with_the_stop_gradient_built_in():
    """Ours stops the gradient to the target itself (SimSiam/BYOL); lightly leaves that to the caller's detach()."""
    prediction, target = _pair()
    ours, ours_grads = _loss_and_grads(NegativeCosineSimilarity()(prediction, target)[0], prediction)
    theirs, theirs_grads = _loss_and_grads(
        lightly_loss.NegativeCosineSimilarity()(prediction, target.detach()), prediction
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grads[0], theirs_grads[0])


def test_moco_queue_loss_matches_lightly_memory_bank_formulation():
    """lightly's NTXentLoss with a memory bank is MoCo's InfoNCE: queries against their key and the bank."""
    dim, queue_size, temperature = 16, 32, 0.2
    q, k = _pair(dim=dim)
    ours = MoCoQueueLoss(dim, queue_size=queue_size, temperature=temperature)
    theirs = lightly_loss.NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, dim))
    bank = theirs.memory_bank.bank
    # Same negatives in both: lightly keeps the bank as (dim, K) or (K, dim) depending on its version.
    bank.copy_(ours.queue.T if bank.shape[0] == dim else ours.queue)
    ours_loss, ours_grads = _loss_and_grads(ours(q, k)[0], q)
    theirs_loss, theirs_grads = _loss_and_grads(theirs(q, k), q)
    torch.testing.assert_close(ours_loss, theirs_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grads[0], theirs_grads[0], rtol=1e-4, atol=1e-6)


def test_dino_loss_matches_lightly_including_the_centre():
    out_dim, batch, global_views, all_views = 32, 4, 2, 5
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(global_views * batch, out_dim, generator=generator)
    student = torch.randn(all_views * batch, out_dim, generator=generator, requires_grad=True)
    ours = DINOLoss(out_dim, student_temperature=0.1, center_momentum=0.9)
    theirs = lightly_loss.DINOLoss(output_dim=out_dim, teacher_temp=0.04, warmup_teacher_temp=0.04,
                                   student_temp=0.1, center_momentum=0.9)
    for step in range(3):  # the centre moves after each step in both
        ours_loss, ours_grads = _loss_and_grads(ours(student, teacher + step, global_views, 0.04)[0], student)
        theirs_loss, theirs_grads = _loss_and_grads(
            theirs(list((teacher + step).chunk(global_views)), list(student.chunk(all_views)), teacher_temp=0.04),
            student,
        )
        torch.testing.assert_close(ours_loss, theirs_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours_grads[0], theirs_grads[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(ours.center, theirs.center.reshape(ours.center.shape))
