"""DINO's optimisation options: the cosine weight-decay schedule (any method, through SSLTrainingArguments), the
frozen last layer counted in epochs or steps, and per-parameter gradient clipping."""

import pytest
import torch
from conftest import tiny_dino
from transformers import TrainerCallback

from hf_ssl import TrainingProgress
from hf_ssl.schedules import cosine_schedule, weight_decay_schedule
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.gradient_clipping import clip_gradients_per_parameter_
from hf_ssl.training.trainer import SSLTrainer
from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def view_dataset(embedded_images, count=32):
    views = MultiCropConfig(global_crop_size=16, local_crop_size=8, num_local_crops=1)
    return apply_views(embedded_images["train"].select(range(count)), MultiCropTransform(views))


class OptimizerRecorder(TrainerCallback):
    """Per optimizer step, just before ``optimizer.step()``: each group's weight decay, and each gradient's norm."""

    def __init__(self):
        self.weight_decays, self.gradient_norms = [], []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, model=None, **kwargs):
        groups = getattr(optimizer, "optimizer", optimizer).param_groups
        self.weight_decays.append([(group["scheduled_weight_decay"], group["weight_decay"]) for group in groups])
        self.gradient_norms.append(
            [p.grad.norm().item() for p in model.parameters() if p.grad is not None]
        )


def make_trainer(output_dir, dataset, max_steps=4, **overrides):
    torch.manual_seed(0)
    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-3,
        logging_steps=1, save_steps=2, use_cpu=True, report_to="none", seed=7, disable_tqdm=True,
    )
    settings.update(overrides)
    recorder = OptimizerRecorder()
    trainer = SSLTrainer(model=tiny_dino(), args=SSLTrainingArguments(**settings), train_dataset=dataset,
                         callbacks=[recorder])
    return trainer, recorder


# ---------------------------------------------------------------------------------------------------------------------
# Weight-decay schedule
def test_weight_decay_schedule_is_the_cosine_schedule_or_constant():
    assert weight_decay_schedule(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert weight_decay_schedule(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert weight_decay_schedule(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert weight_decay_schedule(30, 100, 0.04, 0.4) == cosine_schedule(30, 100, 0.04, 0.4)
    assert weight_decay_schedule(70, 100, 0.05, None) == 0.05  # unset end: today's constant weight decay


def test_trainer_schedules_weight_decay_of_weights_only_logs_it_and_resumes_exactly(tmp_path, embedded_images):
    dataset = view_dataset(embedded_images)  # 4 steps of 8 = one epoch; checkpoint-2 mid-run
    full, full_record = make_trainer(tmp_path / "full", dataset, weight_decay=0.04, weight_decay_end=0.4)
    full.train()
    expected = [weight_decay_schedule(step, 4, 0.04, 0.4) for step in range(4)]
    for step, groups in enumerate(full_record.weight_decays):
        assert any(marked for marked, _ in groups) and not all(marked for marked, _ in groups)
        for marked, value in groups:  # weights follow the schedule; biases and norms stay at 0
            assert value == pytest.approx(expected[step] if marked else 0.0)
    train_logs = [log for log in full.state.log_history if "loss" in log]
    assert [log["weight_decay"] for log in train_logs] == pytest.approx(expected, abs=1e-6)  # logged rounded

    resumed, resumed_record = make_trainer(tmp_path / "resumed", dataset, weight_decay=0.04, weight_decay_end=0.4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    # the value is a function of the step: steps 2 and 3 decay as in the uninterrupted run, and so do the weights
    assert resumed_record.weight_decays == full_record.weight_decays[2:]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)


def test_constant_weight_decay_without_weight_decay_end(tmp_path, embedded_images):
    trainer, record = make_trainer(tmp_path, view_dataset(embedded_images, 8), max_steps=1, weight_decay=0.05)
    trainer.train()
    assert {value for groups in record.weight_decays for marked, value in groups if marked} == {0.05}
    assert not any("weight_decay" in log for log in trainer.state.log_history)


# ---------------------------------------------------------------------------------------------------------------------
# Per-parameter gradient clipping
def test_per_parameter_clipping_matches_the_reference_formula():
    generator = torch.Generator().manual_seed(0)
    parameters = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(4, 3), (7,), (2, 2, 2), (5,)]]
    for parameter, scale in zip(parameters, [10.0, 0.1, 3.0, 1.0]):
        parameter.grad = scale * torch.randn(parameter.shape, generator=generator)
    parameters.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient: skipped
    before = [p.grad.clone() for p in parameters[:-1]]
    total = clip_gradients_per_parameter_(parameters, max_norm=3.0)
    # DINO's utils.clip_gradients, written out
    for gradient, parameter in zip(before, parameters):
        norm = gradient.norm(2)
        coefficient = 3.0 / (norm + 1e-6)
        expected = gradient * coefficient if coefficient < 1 else gradient
        torch.testing.assert_close(parameter.grad, expected)
    torch.testing.assert_close(total, torch.stack([g.norm() for g in before]).norm())
    # not the global clipping: the small gradients keep their size
    assert torch.equal(parameters[1].grad, before[1]) and parameters[0].grad.norm() == pytest.approx(3.0, rel=1e-5)


def test_trainer_clips_each_parameter_with_per_parameter_clipping(tmp_path, embedded_images):
    dataset = view_dataset(embedded_images, 8)
    trainer, record = make_trainer(tmp_path, dataset, max_steps=1, max_grad_norm=1e-3,
                                   gradient_clipping="per_parameter")
    trainer.train()
    norms = torch.tensor(record.gradient_norms[0])
    # each gradient at most max_grad_norm, so jointly more (the global clipping would bound the joint norm)
    assert (norms <= 1e-3 * (1 + 1e-4)).all() and torch.linalg.vector_norm(norms) > 2e-3


def test_bad_optimisation_options_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="gradient_clipping must be one of global, per_parameter"):
        SSLTrainingArguments(output_dir=str(tmp_path), gradient_clipping="per_layer")
    with pytest.raises(ValueError, match="weight_decay_end must be >= 0"):
        SSLTrainingArguments(output_dir=str(tmp_path), weight_decay_end=-0.1)
    with pytest.raises(ValueError, match="freeze_last_layer_steps must be >= 0"):
        tiny_dino(freeze_last_layer_steps=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Frozen last layer
def prototype_changes(model, crops, steps, steps_per_epoch):
    """Train ``steps`` steps; per step, whether the prototypes (the head's last layer) moved."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    prototypes = model.student_head.last_layer.parametrizations.weight.original1
    moved = []
    for step in range(steps):
        before = prototypes.detach().clone()
        progress = TrainingProgress(step=step, max_steps=steps, steps_per_epoch=steps_per_epoch)
        model.set_progress(progress)
        model(**crops).loss.backward()
        model.before_optimizer_step(progress)
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step(progress)
        moved.append(not torch.equal(prototypes, before))
    return moved


def test_last_layer_frozen_for_epochs_then_trained(tiny_crops):
    assert prototype_changes(tiny_dino(freeze_last_layer_epochs=1.0), tiny_crops, 4, 2) == [False, False, True, True]


def test_last_layer_frozen_for_steps_when_an_epoch_is_the_whole_run(tiny_crops, monkeypatch):
    # Streamed data: one "epoch" is the whole run, so freeze_last_layer_epochs=1 would never train the prototypes
    # (and says so); freeze_last_layer_steps counts optimizer steps instead.
    warnings = []
    monkeypatch.setattr("hf_ssl.methods.dino.logger.warning", lambda *args: warnings.append(args[0] % args[1:]))
    model = tiny_dino(freeze_last_layer_epochs=1.0)
    model.set_progress(TrainingProgress(step=0, max_steps=3, steps_per_epoch=3))  # on_train_begin, then each step
    assert prototype_changes(model, tiny_crops, 3, 3) == [False] * 3
    assert len(warnings) == 1 and "freeze_last_layer_steps" in warnings[0]  # once
    model = tiny_dino(freeze_last_layer_epochs=1.0, freeze_last_layer_steps=2)
    assert prototype_changes(model, tiny_crops, 4, 4) == [False, False, True, True]
    assert len(warnings) == 1
