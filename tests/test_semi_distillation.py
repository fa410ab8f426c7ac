"""Knowledge distillation (Hinton et al. 2015): the T^2-scaled KL against its formula in value and gradient, the
per-step objective with a teacher of another size, a frozen teacher kept out of checkpoints, exact resume with the
teacher loaded again from its path, and the errors that name the fix."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F

from hf_ssl.losses.consistency import DistillationLoss
from hf_ssl.semi import SEMI_METHOD_REGISTRY, Distillation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_distillation_loss_is_t_squared_kl_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 4, generator=generator, requires_grad=True)
    teacher = torch.randn(5, 4, generator=generator, requires_grad=True)
    temperature = 3.0
    loss = DistillationLoss(temperature)(student, teacher)
    target = (teacher / temperature).softmax(-1)
    naive = temperature ** 2 * (target * (target.log() - (student / temperature).log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(loss, naive)
    torch.testing.assert_close(loss, temperature ** 2 * F.kl_div((student / temperature).log_softmax(-1), target,
                                                                 reduction="batchmean"))
    loss.backward()
    # d/ds of T^2 KL(q || softmax(s / T)) = T (softmax(s / T) - q) per row, over the batch
    expected = temperature * ((student / temperature).softmax(-1) - target) / 5
    torch.testing.assert_close(student.grad, expected.detach())
    assert teacher.grad is None
    with pytest.raises(ValueError, match="> 0"):
        DistillationLoss(0.0)


def test_distillation_step_is_hintons_objective_with_a_teacher_of_another_size():
    student, teacher = tiny_classifier(seed=0), tiny_classifier(seed=1, hidden_size=48, num_hidden_layers=2)
    method = Distillation(teacher_model=teacher, temperature=2.0, supervised_weight=0.5, unsupervised_weight=3.0)
    method.setup(student, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    unlabelled["views"] = unlabelled["views"][:1]  # distillation's one view
    output = method.compute_loss(student.eval(), labelled, unlabelled, progress())
    with torch.no_grad():
        logits_l = student(pixel_values=labelled["pixel_values"]).logits
        view = unlabelled["views"][0]
        target = (teacher(**view).logits / 2).softmax(-1)
        kl = (target * (target.log() - (student(**view).logits / 2).log_softmax(-1))).sum(-1).mean()
        expected = 0.5 * F.cross_entropy(logits_l, labelled["labels"]) + 3.0 * 4.0 * kl
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    assert "teacher_model" not in dict(method.named_modules()) and not list(method.parameters())


def test_the_teacher_stays_frozen_out_of_checkpoints_and_resume_is_exact(tmp_path, fashion):  # noqa: F811
    teacher_dir = tmp_path / "teacher"
    tiny_classifier(seed=3).save_pretrained(teacher_dir)
    teacher_before = {name: value.clone() for name, value in tiny_classifier(seed=3).state_dict().items()}

    def method():
        return Distillation(teacher=str(teacher_dir), unlabelled_batch_ratio=2)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    for name, value in full.method.teacher_model.state_dict().items():  # the teacher never trains
        torch.testing.assert_close(value, teacher_before[name], msg=name)
    assert all(not name.startswith("teacher") for name in full.method.state_dict())
    logged = [entry for entry in full.state.log_history if "loss" in entry]
    assert all(entry["unsupervised_loss"] > 0 for entry in logged)


def test_a_missing_or_mismatched_teacher_is_refused_with_the_fix():
    assert SEMI_METHOD_REGISTRY["distillation"] is Distillation
    with pytest.raises(ValueError, match="--teacher"):
        Distillation().setup(tiny_classifier(), num_unlabelled=8)
    with pytest.raises(ValueError, match="same classes"):
        Distillation(teacher_model=tiny_classifier(num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                                      label2id={"a": 0, "b": 1, "c": 2})).setup(tiny_classifier(), num_unlabelled=8)
    with pytest.raises(ValueError, match="temperature"):
        Distillation(temperature=-1.0)
