"""MAE: masking, loss parity with transformers' ViTMAEForPreTraining, round trips, vanilla loading, unmasked probe
features, the reconstruction figure, the masked-image job, exact resume and bad input."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_vit_config
from test_dino_model import VANILLA_SCRIPT

from hf_ssl import AutoSSLModel, MAEForPreTraining
from hf_ssl.losses.masked_pixels import MaskedPixelLoss, patchify, unpatchify
from hf_ssl.methods.mae import MAEConfig, random_masking

DECODER = dict(decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
               decoder_intermediate_size=64)


def tiny_mae(image_size=16, **overrides):
    settings = {**DECODER, **overrides}
    return MAEForPreTraining.from_encoder_config(tiny_vit_config(image_size), **settings)


# ---------------------------------------------------------------------------------------------------------------------
# Masking
def test_masking_keeps_an_exact_count_with_a_different_mask_per_sample():
    torch.manual_seed(0)
    tokens = torch.randn(64, 16, 8)
    kept, mask, ids_restore = random_masking(tokens, 0.75)
    assert kept.shape == (64, 4, 8)
    assert torch.equal(mask.sum(dim=1), torch.full((64,), 12.0))  # exactly 75 % of 16 in every sample
    assert len({tuple(row.tolist()) for row in mask}) > 60  # per-sample random masks
    # every patch is masked in about 75 % of the samples: no position is favoured
    assert mask.mean(dim=0).sub(0.75).abs().max() < 0.25
    # kept tokens are the unmasked ones, and ids_restore inverts the shuffle
    for b in range(3):
        visible = tokens[b][mask[b] == 0]
        assert torch.equal(torch.sort(kept[b], dim=0).values, torch.sort(visible, dim=0).values)
    assert torch.equal(torch.sort(ids_restore, dim=1).values, torch.arange(16).expand(64, -1))


@pytest.mark.parametrize("ratio, visible", [(0.5, 8), (0.9, 1), (0.3, 11)])
def test_mask_ratio_from_the_config(ratio, visible):
    model = tiny_mae(mask_ratio=ratio)
    out = model(torch.randn(3, 3, 16, 16))
    assert torch.equal(out.mask.sum(dim=1), torch.full((3,), 16.0 - visible))
    latent, _, _ = model.encode_visible(torch.randn(3, 3, 16, 16))
    assert latent.shape == (3, 1 + visible, 32)  # CLS + visible tokens only: masked tokens never reach the encoder


def test_noise_decides_the_mask():
    model = tiny_mae()
    pixels = torch.randn(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    first, second = model(pixels, noise=noise), model(pixels, noise=noise)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.loss, second.loss)
    keep = noise.argsort(dim=1)[:, :4]
    expected = torch.ones(2, 16).scatter_(1, keep, 0.0)
    assert torch.equal(first.mask, expected)  # the 4 smallest noise values are kept, as ViTMAE


# ---------------------------------------------------------------------------------------------------------------------
# Loss
@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_parity_with_transformers_vit_mae(norm_pix_loss):
    from transformers import ViTMAEForPreTraining

    torch.manual_seed(0)
    model = tiny_mae(norm_pix_loss=norm_pix_loss, mask_ratio=0.6)
    reference = ViTMAEForPreTraining(model.vit_mae_config())
    reference.load_state_dict(model.state_dict(), strict=True)  # the same weights under the same names
    pixels, noise = torch.randn(3, 3, 16, 16), torch.rand(3, 16)
    ours, theirs = model(pixels, noise=noise), reference(pixel_values=pixels, noise=noise)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.mask, theirs.mask) and torch.equal(ours.ids_restore, theirs.ids_restore)
    assert torch.equal(patchify(pixels, 4), reference.patchify(pixels))


def test_loss_scores_masked_patches_only():
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 16, 16)
    predictions = torch.randn(2, 16, 48, requires_grad=True)
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1
    loss_fn = MaskedPixelLoss(patch_size=4, norm_pix_loss=False)
    loss = loss_fn(pixels, predictions, mask)
    loss.backward()
    assert predictions.grad[:, 5:].abs().sum() == 0 and predictions.grad[:, :5].abs().sum() > 0
    # naive formula: mean over masked patches of the per-patch mean squared error
    target = patchify(pixels, 4)
    naive = sum(((predictions[b, l] - target[b, l]) ** 2).mean() for b in range(2) for l in range(5)) / 10
    torch.testing.assert_close(loss, naive)
    # in the model too: the reported loss ignores the visible patches, which are logged separately
    model = tiny_mae()
    out = model(pixels)
    per_patch = model.loss_fn.per_patch_error(pixels, out.logits)
    torch.testing.assert_close(out.loss, per_patch[out.mask == 1].mean())
    torch.testing.assert_close(out.visible_patch_loss, per_patch[out.mask == 0].mean())


def test_norm_pix_targets_normalise_each_patch():
    pixels = torch.randn(2, 3, 8, 8) * 3 + 1
    patches = patchify(pixels, 4)
    targets = MaskedPixelLoss(4, norm_pix_loss=True).targets(pixels)
    expected = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    assert torch.equal(MaskedPixelLoss(4, norm_pix_loss=False).targets(pixels), patches)
    assert torch.equal(unpatchify(patches, 4, 8, 8), pixels)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
def test_round_trip_through_auto_ssl_model(tmp_path):
    torch.manual_seed(0)
    model = tiny_mae(mask_ratio=0.5, norm_pix_loss=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    pixels = torch.randn(4, 3, 16, 16)
    for _ in range(2):
        model(pixels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path)
    loaded = AutoSSLModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MAEForPreTraining)
    assert loaded.method_config == MAEConfig(**{**DECODER, "mask_ratio": 0.5, "norm_pix_loss": False})
    noise = torch.rand(4, 16)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(pixels, noise=noise).loss, model(pixels, noise=noise).loss)
    # the fixed sin-cos tables are restored and stay frozen
    assert not loaded.vit.embeddings.position_embeddings.requires_grad
    assert not loaded.decoder.decoder_pos_embed.requires_grad
    assert loaded.decoder.decoder_pos_embed.abs().sum() > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vit" and config["ssl_config"]["method"] == "mae"


def test_vanilla_transformers_loads_the_encoder_without_hf_ssl(tmp_path):
    torch.manual_seed(0)
    model = tiny_mae()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.randn(4, 3, 16, 16)).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path / "ckpt")
    pixels = torch.randn(4, 3, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    (tmp_path / "vanilla.py").write_text(VANILLA_SCRIPT)
    subprocess.run(
        [sys.executable, str(tmp_path / "vanilla.py"), str(tmp_path / "ckpt"), str(tmp_path / "pixels.pt"),
         str(tmp_path / "out.pt"), str(tmp_path / "finetune")],
        check=True, cwd=tmp_path,
    )
    result = torch.load(tmp_path / "out.pt")
    model.eval()
    with torch.no_grad():
        expected = model.encoder(pixel_values=pixels).last_hidden_state[:, 0]  # whole image, no masking
    assert result["class"] == "ViTModel"
    torch.testing.assert_close(result["encoder"], expected)
    torch.testing.assert_close(result["classifier"], expected)
    assert result["train_loss"] > 0


def test_probe_features_come_from_an_unmasked_forward(embedded_images):
    from hf_ssl.evaluation.features import default_eval_transform, extract_features
    from hf_ssl.modules.backbones import image_features

    torch.manual_seed(0)
    model = tiny_mae()
    images = embedded_images["test"].select(range(8))
    transform = default_eval_transform(16)
    features, labels = extract_features(model, images, transform=transform)
    again, _ = extract_features(model, images, transform=transform)
    assert torch.equal(features, again)  # no random masking
    pixels = torch.stack([transform(image) for image in images["image"]])
    model.eval()
    with torch.no_grad():
        whole = image_features(model.vit, pixels)
        hidden = model.vit(pixel_values=pixels).last_hidden_state
        masked, _, _ = model.encode_visible(pixels)
    assert hidden.shape[1] == 17  # every patch + CLS
    torch.testing.assert_close(features, whole)
    assert not torch.allclose(features, masked[:, 0])


# ---------------------------------------------------------------------------------------------------------------------
# Figure, job and resume
def test_reconstruction_figure_is_written(tmp_path, embedded_images):
    from PIL import Image

    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.evaluation.reconstruction import (
        ReconstructionFigure,
        reconstruction_panels,
    )

    model = tiny_mae().train()
    figure = ReconstructionFigure(
        embedded_images["test"], tmp_path / "reconstructions.png", default_eval_transform(16), num_images=4,
        num_loss_images=16,
    )
    metrics = figure(model)
    assert model.training  # the evaluator restores training mode
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000
    width, height = Image.open(tmp_path / "reconstructions.png").size
    assert width > height > 0
    assert metrics["masked_pixel_loss"] > 0 and figure(model) == metrics  # fixed masks: the same number again
    pixels = figure.pixel_values[:2]
    panels, _ = reconstruction_panels(model, pixels, torch.rand(2, 16))
    visible = panels["masked"] != 0
    assert torch.equal(panels["reconstruction"][visible], pixels[visible])  # visible patches are the original


def test_masked_image_job_end_to_end(tmp_path):
    from hf_ssl.jobs.runner import run

    output_dir = tmp_path / "run"
    probes = run([
        "recipes/configs/mae-vit-tiny-embedded.yaml",
        "--encoder_config_overrides", '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, '
        '"intermediate_size": 64}',
        "--decoder_hidden_size", "32", "--decoder_num_hidden_layers", "1", "--decoder_num_attention_heads", "2",
        "--decoder_intermediate_size", "64", "--max_train_examples", "64", "--max_eval_examples", "32",
        "--per_device_train_batch_size", "16", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--finetune_steps", "1", "--finetune_batch_size", "16", "--finetune_train_examples", "32",
        "--reconstruction_loss_images", "16", "--knn_k", "5", "--output_dir", str(output_dir), "--disable_tqdm", "true",
    ])
    assert (output_dir / "reconstructions.png").is_file()
    assert set(probes) >= {"pretrained", "random_init", "raw_pixels"}
    assert {"linear_probe_top1", "knn_top1", "finetune_top1", "masked_pixel_loss"} <= set(probes["pretrained"])
    assert "finetune_top1" in probes["random_init"]
    results = json.loads((output_dir / "eval_results.json").read_text())
    names = [item["metric_name"] for item in results["eval_results"]]
    assert names[0].startswith("linear probe") and any(name.startswith("fine-tune") for name in names)
    record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    assert record["job"] == "masked_image" and record["figures"] == {"reconstructions": "reconstructions.png"}
    assert record["finetune_probe"]["finetune_steps"] == 1


def _trainer(output_dir, dataset, max_steps):
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer

    torch.manual_seed(0)
    args = SSLTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-3,
        logging_steps=1, save_steps=2, use_cpu=True, report_to="none", seed=7, disable_tqdm=True,
    )
    return SSLTrainer(model=tiny_mae(), args=args, train_dataset=dataset)


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, embedded_images):
    from hf_ssl.views import apply_views
    from hf_ssl.views.single_view import SingleViewConfig, SingleViewTransform

    # 3 steps of 8 per epoch: the resume point (step 2) is mid-epoch and step 4 is in the next epoch
    dataset = apply_views(embedded_images["train"].select(range(24)), SingleViewTransform(SingleViewConfig(16)))
    full = _trainer(tmp_path / "full", dataset, max_steps=4)
    full.train()
    _trainer(tmp_path / "part", dataset, max_steps=4).train()  # only to produce checkpoint-2 with the same arguments
    resumed = _trainer(tmp_path / "part", dataset, max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key)
    assert resumed.state.global_step == 4
    losses = [log["loss"] for log in full.state.log_history if "loss" in log]
    resumed_losses = [log["loss"] for log in resumed.state.log_history if "loss" in log]
    assert len(losses) == 4 and resumed_losses == losses  # history restored, then the same masks (RNG restored)
    # and the run did train: the weights moved away from the initial ones
    assert not torch.allclose(full.model.vit.layers[0].mlp.fc1.weight, tiny_mae().vit.layers[0].mlp.fc1.weight)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
def test_bad_input_names_the_fix():
    model = tiny_mae()
    with pytest.raises(ValueError, match="not a whole number of 4x4 patches"):
        model(torch.randn(2, 3, 18, 18))
    with pytest.raises(ValueError, match="built for 16x16"):
        model(torch.randn(2, 3, 20, 20))
    with pytest.raises(ValueError, match="one view per image"):
        model(torch.randn(2, 1, 3, 16, 16))
    for ratio in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="mask_ratio must be strictly between 0 and 1"):
            tiny_mae(mask_ratio=ratio)
    with pytest.raises(ValueError, match="keeps no patch"):
        tiny_mae(mask_ratio=0.97)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="not a whole number"):
        MAEForPreTraining.from_encoder_config(tiny_vit_config(image_size=18), **DECODER)
    with pytest.raises(ValueError, match="noise must be"):
        model(torch.randn(2, 3, 16, 16), noise=torch.rand(2, 15))


def test_single_view_transform_refuses_small_images_and_bad_settings(embedded_images):
    from hf_ssl.views import apply_views
    from hf_ssl.views.single_view import SingleViewConfig, SingleViewTransform

    with pytest.raises(ValueError, match="at most 28"):
        apply_views(embedded_images["train"].select(range(4)), SingleViewTransform(SingleViewConfig(32)))
    with pytest.raises(ValueError, match="crop_scale"):
        SingleViewConfig(16, crop_scale=[0.0, 1.0])
    views = apply_views(embedded_images["train"].select(range(4)), SingleViewTransform(SingleViewConfig(16)))
    assert views[0]["pixel_values"].shape == (3, 16, 16)
    assert torch.equal(views[1]["pixel_values"], views[1]["pixel_values"])  # seeded per example
