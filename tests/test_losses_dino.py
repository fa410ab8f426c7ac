"""DINO loss against the paper's formula written out naively (Caron et al. 2021, Eq. 3-4)."""

import math

import pytest
import torch

from hf_ssl.losses import DINOLoss


def naive_dino_loss(student, teacher, center, num_global, student_temp, teacher_temp):
    """Loop over images, teacher views t and student views s != t: -sum_k q_t,k log p_s,k, then average."""
    batch = teacher.shape[0] // num_global
    num_student = student.shape[0] // batch
    total, pairs = 0.0, 0
    for t in range(num_global):
        for s in range(num_student):
            if s == t:
                continue
            for i in range(batch):
                q = torch.softmax((teacher[t * batch + i] - center[0]) / teacher_temp, dim=-1)
                log_p = torch.log_softmax(student[s * batch + i] / student_temp, dim=-1)
                total = total + (-(q * log_p).sum())
            pairs += 1
    return total / (pairs * batch)


@pytest.mark.parametrize("num_student_views", [2, 5])
def test_loss_matches_naive_formula(num_student_views):
    torch.manual_seed(0)
    batch, classes = 3, 7
    loss_fn = DINOLoss(classes, student_temperature=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, classes))
    student = torch.randn(num_student_views * batch, classes, requires_grad=True)
    teacher = torch.randn(2 * batch, classes)
    center = loss_fn.center.clone()
    loss, stats = loss_fn(student, teacher, num_global_views=2, teacher_temperature=0.04)
    expected = naive_dino_loss(student, teacher, center, 2, 0.1, 0.04)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    grad, = torch.autograd.grad(loss, student)
    expected_grad, = torch.autograd.grad(naive_dino_loss(student, teacher, center, 2, 0.1, 0.04), student)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert 0 <= stats["teacher_entropy"] <= math.log(classes)
    torch.testing.assert_close(stats["teacher_student_kl"], loss.detach() - stats["teacher_entropy"])


def test_center_update_is_ema_of_teacher_mean():
    torch.manual_seed(1)
    loss_fn = DINOLoss(5, center_momentum=0.8)
    teacher = torch.randn(6, 5)
    loss_fn(torch.randn(6, 5), teacher, num_global_views=2, teacher_temperature=0.04)
    torch.testing.assert_close(loss_fn.center, 0.2 * teacher.mean(0, keepdim=True))
    before = loss_fn.center.clone()
    loss_fn.eval()  # evaluation must not move the centre
    loss_fn(torch.randn(6, 5), torch.randn(6, 5), num_global_views=2, teacher_temperature=0.04)
    torch.testing.assert_close(loss_fn.center, before)


def test_no_gradient_flows_to_teacher():
    loss_fn = DINOLoss(4)
    teacher = torch.randn(4, 4, requires_grad=True)
    loss, _ = loss_fn(torch.randn(6, 4, requires_grad=True), teacher, num_global_views=2, teacher_temperature=0.04)
    loss.backward()
    assert teacher.grad is None


@pytest.mark.parametrize(
    "student_shape, teacher_shape, message",
    [((6, 5), (4, 4), "columns"), ((5, 4), (4, 4), "whole number of views"), ((2, 4), (2, 4), "at least two views")],
)
def test_bad_shapes_are_refused(student_shape, teacher_shape, message):
    loss_fn = DINOLoss(4)
    with pytest.raises(ValueError, match=message):
        loss_fn(torch.randn(*student_shape), torch.randn(*teacher_shape), num_global_views=2 if teacher_shape[0] == 4 else 1,
                teacher_temperature=0.04)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="student_temperature"):
        DINOLoss(4, student_temperature=0)
    with pytest.raises(ValueError, match="center_momentum"):
        DINOLoss(4, center_momentum=1.0)
