"""Noisy Student (Xie et al. 2020): the teacher labels each unlabelled example once (a memory in the checkpoint), the
student's loss against the formula (soft / hard, confidence filter, class balance), exact resume of a round, and the
rounds of `hf-ssl finetune`, where each student teaches the next and a rerun restarts at the first unfinished round."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import local_dataset, tiny_classifier
from test_semi_supervised import fashion, progress, resume_matches_uninterrupted, tiny_batches  # noqa: F401 (fashion: a fixture)
from torch.nn import functional as F

from hf_ssl.jobs.rounds import run_rounds
from hf_ssl.jobs.runner import run
from hf_ssl.semi import SEMI_METHOD_REGISTRY, NoisyStudent, NoisyStudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("soft", [True, False])
def test_the_student_learns_the_teachers_confident_labels_on_the_noised_view(soft):
    student, teacher = tiny_classifier(seed=0), tiny_classifier(seed=1, hidden_size=48).eval()
    method = NoisyStudent(teacher_model=teacher, soft_pseudo_labels=soft, confidence_threshold=0.128,
                          unsupervised_weight=2.0)
    method.setup(student, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    output = method.compute_loss(student.eval(), labelled, unlabelled, progress())
    clean, noised = (view["pixel_values"] for view in unlabelled["views"])
    with torch.no_grad():
        q = teacher(pixel_values=clean).logits.softmax(-1)
        kept = (q.max(-1).values >= 0.128).float()
        log_p = student(pixel_values=noised).logits.log_softmax(-1)
        per_example = -(q * log_p).sum(-1) if soft else F.nll_loss(log_p, q.argmax(-1), reduction="none")
        expected = (F.cross_entropy(student(pixel_values=labelled["pixel_values"]).logits, labelled["labels"])
                    + 2.0 * (kept * per_example).sum() / kept.sum())
    assert 0 < kept.sum() < 8, "the case must hold kept and filtered examples"
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.pseudo_labels[:8], q)  # remembered: the teacher labels each example once
    assert method.pseudo_labelled[:8].all()


def test_remembered_labels_are_reused_and_class_balance_weighs_each_class_the_same():
    method = NoisyStudent(teacher_model=tiny_classifier(seed=1), class_balance=True, confidence_threshold=0.0)
    method.setup(tiny_classifier(), num_unlabelled=4)
    method.pseudo_labels[:] = torch.eye(10)[[0, 0, 0, 1]]
    method.pseudo_labelled[:] = True
    view = {"pixel_values": torch.full((4, 3, 16, 16), float("nan"))}  # the teacher must not run again
    torch.testing.assert_close(method.label(torch.arange(4), view), torch.eye(10)[[0, 0, 0, 1]])
    weights = method.class_weights()
    torch.testing.assert_close(weights[[0, 1]], torch.tensor([4 / 30, 4 / 10]))  # n / (K n_c): 3 x 0 and 1 x 1
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)  # the classes weigh the same in total


def test_a_round_resumes_exactly_with_its_pseudo_labels(tmp_path, fashion):  # noqa: F811 (the fixture)
    teacher_dir = tmp_path / "teacher"
    tiny_classifier(seed=3).save_pretrained(teacher_dir)

    def method():
        return NoisyStudent(teacher=str(teacher_dir), unlabelled_batch_ratio=2, confidence_threshold=0.0)

    full = resume_matches_uninterrupted(tmp_path, fashion, method)
    assert int(full.method.pseudo_labelled.sum()) > 0


def test_rounds_chain_teachers_and_a_rerun_restarts_at_the_first_unfinished_round(tmp_path, capsys):
    local_dataset("uoft-cs/cifar10")
    tiny = ["--per_device_train_batch_size", "4", "--max_steps", "1", "--max_eval_examples", "20",
            "--max_unlabelled_examples", "64", "--encoder_config_overrides",
            '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    run(["--method", "supervised", "--output_dir", str(tmp_path / "teacher"), *tiny])
    rounds = ["--method", "noisy_student", "--teacher", str(tmp_path / "teacher"), "--rounds", "2",
              "--output_dir", str(tmp_path / "ns"), *tiny]
    run_rounds(rounds)
    records = [json.loads((tmp_path / "ns" / f"round-{k}" / "hf_ssl_run.json").read_text()) for k in (1, 2)]
    assert [record["method"]["teacher"] for record in records] == [str(tmp_path / "teacher"),
                                                                    str(tmp_path / "ns" / "round-1")]
    (tmp_path / "ns" / "round-2" / "eval_results.json").unlink()  # round 2 "interrupted" before its end
    capsys.readouterr()
    run_rounds(rounds)
    printed = capsys.readouterr().out
    assert "Round 1 of 2 is finished" in printed and "Round 2 of 2: teacher" in printed


def test_registered_and_bad_settings_refused():
    assert SEMI_METHOD_REGISTRY["noisy_student"] is NoisyStudent
    for settings, message in (({"confidence_threshold": 2.0}, "confidence_threshold"), ({"rounds": 0}, "rounds")):
        with pytest.raises(ValueError, match=message):
            NoisyStudentConfig(**settings)
