"""DINOForPreTraining: forward, per-step interface, round trips and vanilla transformers loading."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_HF_SSL, tiny_dino, tiny_vit_config

from hf_ssl import AutoSSLModel, DINOForPreTraining, TrainingProgress


def train_steps(model, crops, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        progress = TrainingProgress(step=step, max_steps=steps, steps_per_epoch=steps)
        model.set_progress(progress)
        loss = model(**crops).loss
        loss.backward()
        model.before_optimizer_step(progress)
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step(progress)
        losses.append(loss.item())
    return losses


def test_forward_shapes_and_teacher_starts_as_student(tiny_crops):
    model = tiny_dino()
    out = model(**tiny_crops)
    assert out.loss.dim() == 0 and out.student_logits.shape == (5 * 4, 64) and out.teacher_logits.shape == (8, 64)
    for t, s in zip(model.encoder.parameters(), model.student_encoder.parameters()):
        torch.testing.assert_close(t, s)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.teacher_head.parameters())


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_crops):
    torch.manual_seed(0)
    model = tiny_dino()
    # On one repeated batch the loss first drops, then rises again as the centre catches up with the teacher's
    # dominant prototype (the centre's job); the first steps are the meaningful ones.
    losses = train_steps(model, tiny_crops, steps=5, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_teacher_follows_student_by_ema(tiny_crops):
    model = tiny_dino(momentum_teacher=0.5, momentum_teacher_end=0.5)
    teacher_before = [p.clone() for p in model.encoder.parameters()]
    train_steps(model, tiny_crops, steps=1)
    for before, teacher, student in zip(teacher_before, model.encoder.parameters(), model.student_encoder.parameters()):
        torch.testing.assert_close(teacher, 0.5 * before + 0.5 * student)


def test_last_layer_frozen_during_first_epoch(tiny_crops):
    model = tiny_dino(freeze_last_layer_epochs=1.0)
    prototypes = model.student_head.last_layer.parametrizations.weight.original1
    before = prototypes.clone()
    train_steps(model, tiny_crops, steps=2)  # steps_per_epoch = 2: both steps are in the first epoch
    torch.testing.assert_close(prototypes, before)
    model = tiny_dino(freeze_last_layer_epochs=0.0)
    prototypes = model.student_head.last_layer.parametrizations.weight.original1
    before = prototypes.clone()
    train_steps(model, tiny_crops, steps=1)
    assert not torch.equal(prototypes, before)


def test_schedules_follow_progress():
    model = tiny_dino(warmup_teacher_temperature=0.04, teacher_temperature=0.07, warmup_teacher_temperature_epochs=1)
    model.set_progress(TrainingProgress(step=5, max_steps=20, steps_per_epoch=10))
    values = model.schedule_values()
    assert values["teacher_temperature"] == pytest.approx(0.055)
    assert 0.996 < values["teacher_momentum"] < 1.0


def test_save_and_from_pretrained_round_trip(tmp_path, tiny_crops):
    torch.manual_seed(0)
    model = tiny_dino()
    train_steps(model, tiny_crops, steps=2)
    model.save_pretrained(tmp_path)
    for loaded in (DINOForPreTraining.from_pretrained(tmp_path), AutoSSLModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, DINOForPreTraining)
        assert loaded.method_config == model.method_config
        torch.testing.assert_close(loaded.loss_fn.center, model.loss_fn.center)
        model.eval(), loaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(**tiny_crops).loss, model(**tiny_crops).loss)
            torch.testing.assert_close(loaded(**tiny_crops).teacher_logits, model(**tiny_crops).teacher_logits)


VANILLA_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, AutoModelForImageClassification, Trainer, TrainingArguments
    from transformers.utils import logging
    logging.set_verbosity_error()
    folder, pixels_path, out_path = sys.argv[1:4]
    pixels = torch.load(pixels_path)
    encoder = AutoModel.from_pretrained(folder).eval()
    classifier = AutoModelForImageClassification.from_pretrained(folder, num_labels=3).eval()
    with torch.no_grad():
        cls_encoder = encoder(pixel_values=pixels).last_hidden_state[:, 0]
        cls_classifier = classifier.vit(pixel_values=pixels).last_hidden_state[:, 0]
    # A plain Trainer fine-tunes the published encoder.
    class Images(torch.utils.data.Dataset):
        def __len__(self): return 8
        def __getitem__(self, i): return {"pixel_values": pixels[i % len(pixels)], "labels": i % 3}
    args = TrainingArguments(sys.argv[4], max_steps=2, per_device_train_batch_size=4, report_to="none", use_cpu=True)
    result = Trainer(model=classifier.train(), args=args, train_dataset=Images()).train()
    torch.save({"encoder": cls_encoder, "classifier": cls_classifier, "class": type(encoder).__name__,
                "train_loss": result.training_loss}, out_path)
    """
)


def test_vanilla_transformers_loads_the_teacher_without_hf_ssl(tmp_path, tiny_crops):
    torch.manual_seed(0)
    model = tiny_dino(momentum_teacher=0.5, momentum_teacher_end=0.5)
    train_steps(model, tiny_crops, steps=3)  # teacher and student now differ
    model.save_pretrained(tmp_path / "ckpt")
    pixels = torch.randn(4, 3, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    script = tmp_path / "vanilla.py"
    script.write_text(VANILLA_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt"), str(tmp_path / "pixels.pt"), str(tmp_path / "out.pt"),
         str(tmp_path / "finetune")],
        check=True, cwd=tmp_path,
    )
    result = torch.load(tmp_path / "out.pt")
    model.eval()
    with torch.no_grad():
        teacher = model.encoder(pixel_values=pixels).last_hidden_state[:, 0]
        student = model.student_encoder(pixel_values=pixels).last_hidden_state[:, 0]
    assert result["class"] == "ViTModel"
    torch.testing.assert_close(result["encoder"], teacher)
    torch.testing.assert_close(result["classifier"], teacher)
    assert not torch.allclose(result["encoder"], student)
    assert result["train_loss"] > 0
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "vit" and config["ssl_config"]["method"] == "dino"


def test_timm_backbone_through_timm_wrapper(tmp_path):
    from transformers import AutoModel, TimmWrapperConfig

    model = DINOForPreTraining.from_encoder_config(
        TimmWrapperConfig(architecture="resnet18"), out_dim=32, hidden_dim=32, bottleneck_dim=16
    )
    crops = {"global_crops": torch.randn(2, 2, 3, 32, 32), "local_crops": torch.randn(2, 2, 3, 16, 16)}
    assert torch.isfinite(model(**crops).loss)
    assert any(key.startswith("timm_model.") for key in model.state_dict())
    model.save_pretrained(tmp_path)
    vanilla = AutoModel.from_pretrained(tmp_path).eval()
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vanilla(pixel_values=pixels).pooler_output, model.encoder(pixel_values=pixels).pooler_output)


def test_bad_inputs_name_the_fix(tiny_crops):
    model = tiny_dino()
    with pytest.raises(ValueError, match="global_crops must be"):
        model(global_crops=torch.randn(4, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 2 crops"):
        model(global_crops=torch.randn(4, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="out_dim"):
        tiny_dino(out_dim=1)
    with pytest.raises(ValueError, match="unknown dino settings"):
        DINOForPreTraining.from_encoder_config(tiny_vit_config(), not_a_setting=1)
    with pytest.raises(ValueError, match="ssl_config"):
        DINOForPreTraining(tiny_vit_config())
