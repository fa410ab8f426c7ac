"""CLIP-style dual encoder (its 2-process check is in test_info_nce.py): loss = open_clip's ClipLoss on its features, vanilla VisionTextDualEncoderModel loading
without hf_ssl, locked text tower, the job end to end on the emoji captions, zero-shot /
retrieval metrics, and bad input."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_HF_SSL, tiny_vit_config
from test_sentence_bert import TinyTokenizer, tiny_bert_config, tiny_text_batch

from hf_ssl import AutoSSLModel, CLIPStyleForPreTraining
from hf_ssl.data.collators import ImageCaptionCollator
from hf_ssl.data.pairs import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, load_emoji_captions
from hf_ssl.evaluation.retrieval import retrieval_recall
from hf_ssl.evaluation.zero_shot import zero_shot_accuracy

EMOJI = "emoji_captions"  # a folder with no Hub copy, found by this name under HF_SSL_DATA_DIR


def tiny_clip(**settings):
    return CLIPStyleForPreTraining.from_vision_text(tiny_vit_config(), tiny_bert_config(), projection_dim=16,
                                                    **settings)


def clip_batch(batch=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=generator), **tiny_text_batch(batch, generator)}


def test_loss_is_clip_loss_of_the_dual_encoder_features():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model = tiny_clip()
    batch = clip_batch()
    output = model(**batch)
    dual = model.encoder
    assert type(dual).__name__ == "VisionTextDualEncoderModel"
    images = torch.nn.functional.normalize(dual.get_image_features(pixel_values=batch["pixel_values"]).pooler_output,
                                           dim=-1)
    texts = torch.nn.functional.normalize(
        dual.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output,
        dim=-1)
    expected = ClipLoss()(images, texts, dual.logit_scale.exp())
    torch.testing.assert_close(output.loss, expected)
    # The vanilla model's own contrastive loss (return_loss=True) is the same symmetric cross-entropy.
    torch.testing.assert_close(dual(**batch, return_loss=True).loss, expected)
    assert output.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_training_lowers_the_loss_and_the_temperature_is_learned_and_clipped():
    # At the default init (std 0.02) a 1-layer tiny tower's pooled output barely depends on its input; std 0.2 lets
    # 8 steps separate the pairs.
    vision, text = tiny_vit_config(), tiny_bert_config()
    vision.initializer_range = text.initializer_range = 0.2
    torch.manual_seed(0)
    model = CLIPStyleForPreTraining.from_vision_text(vision, text, projection_dim=16, max_logit_scale=20.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = clip_batch(batch=8)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        loss.backward()
        assert model.logit_scale.grad is not None
        optimizer.step()
        model.after_optimizer_step(None)
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses
    assert model.logit_scale.item() <= math.log(20.0) + 1e-6
    assert model.logit_scale.item() != pytest.approx(math.log(1 / 0.07))


def test_locked_text_tower_gets_no_gradient_and_cached_features_are_exact():
    torch.manual_seed(0)
    model = tiny_clip(freeze_text_model=True).train()
    assert not model.text_model.training and model.vision_model.training
    batch = clip_batch()
    output = model(**batch)  # training: cached locked-tower features
    output.loss.backward()
    assert all(p.grad is None for p in model.text_model.parameters())
    assert model.text_projection.weight.grad is not None and model.visual_projection.weight.grad is not None
    model.eval()
    with torch.no_grad():
        reference = model.embed_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(output.text_embeds.detach(), reference, atol=1e-6, rtol=1e-5)


VANILLA_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, VisionTextDualEncoderModel
    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = torch.load(inputs_path)
    model = VisionTextDualEncoderModel.from_pretrained(folder).eval()
    with torch.no_grad():
        output = model(**inputs)
    torch.save({"auto_class": type(AutoModel.from_pretrained(folder)).__name__, "logits": output.logits_per_image,
                "image": output.image_embeds, "text": output.text_embeds}, out_path)
    """
)


def test_save_load_and_vanilla_vision_text_dual_encoder_without_hf_ssl(tmp_path):
    torch.manual_seed(0)
    model = tiny_clip()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(2):
        model(**clip_batch(seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "vision-text-dual-encoder" and config["ssl_config"]["method"] == "clip"
    model.eval()
    batch = clip_batch(seed=5)
    with torch.no_grad():
        expected = model(**batch)
    for loaded in (CLIPStyleForPreTraining.from_pretrained(tmp_path / "ckpt"), AutoSSLModel.from_pretrained(tmp_path / "ckpt")):
        assert isinstance(loaded, CLIPStyleForPreTraining)
        with torch.no_grad():
            got = loaded.eval()(**batch)
        torch.testing.assert_close(got.loss, expected.loss)
        torch.testing.assert_close(loaded.logit_scale, model.logit_scale)
    torch.save(batch, tmp_path / "inputs.pt")
    script = tmp_path / "vanilla.py"
    script.write_text(VANILLA_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt"), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], check=True, cwd=tmp_path, capture_output=True)
    vanilla = torch.load(tmp_path / "out.pt")
    assert vanilla["auto_class"] == "VisionTextDualEncoderModel"
    normalize = torch.nn.functional.normalize
    torch.testing.assert_close(vanilla["image"], normalize(expected.image_embeds, dim=-1))
    torch.testing.assert_close(vanilla["text"], normalize(expected.text_embeds, dim=-1))
    logits = model.logit_scale.exp() * normalize(expected.image_embeds, dim=-1) @ normalize(expected.text_embeds, dim=-1).T
    torch.testing.assert_close(vanilla["logits"], logits.detach())


def test_retrieval_recall_and_zero_shot_on_known_embeddings():
    images = torch.eye(4)
    texts = torch.eye(4)[[0, 1, 3, 2]]  # captions 2 and 3 swapped
    recall = retrieval_recall(images, texts, ks=(1, 2))
    assert recall["image_to_text_recall@1"] == 0.5 and recall["text_to_image_recall@1"] == 0.5
    assert recall["image_to_text_recall@2"] == 0.5  # the swapped match is orthogonal: tied with the rest
    assert retrieval_recall(images, images, ks=(1,))["image_to_text_recall@1"] == 1.0
    with pytest.raises(ValueError, match="one caption per image"):
        retrieval_recall(torch.eye(4), torch.eye(3))


@pytest.mark.needs_data(EMOJI)
def test_emoji_split_by_code_point_and_job_end_to_end(tmp_path):
    from hf_ssl.jobs.runner import run

    train, test = load_emoji_captions(EMOJI, "train"), load_emoji_captions(EMOJI, "test")
    assert len(train) + len(test) == 1373 and 0.15 < len(test) / 1373 < 0.25
    assert not set(train["codepoint"]) & set(test["codepoint"])
    assert not set(train["text"]) & set(test["text"])
    assert set(TRAIN_TEMPLATES).isdisjoint(HELD_OUT_TEMPLATES)
    probes = run([
        "recipes/configs/clip-vit-tiny-minilm-emoji.yaml", "--output_dir", str(tmp_path / "out"),
        "--dataset", EMOJI, "--image_size", "16", "--encoder_config_overrides",
        '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
        "--projection_dim", "16", "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--max_eval_examples", "40", "--eval_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true",
    ])
    assert set(probes) == {"pretrained", "before_training"}
    assert set(probes["pretrained"]) == {f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5)}
    from transformers import VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

    processor = VisionTextDualEncoderProcessor.from_pretrained(tmp_path / "out")
    vanilla = VisionTextDualEncoderModel.from_pretrained(tmp_path / "out").eval()
    inputs = processor(text=["grinning face", "up down arrow"], images=[test[0]["image"].convert("RGB")] * 2,
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        assert vanilla(**inputs).logits_per_image.shape == (2, 2)
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert all("held-out" in r["metric_name"] for r in saved["eval_results"])


def test_a_caption_folder_of_your_own_is_split_by_caption(tmp_path):
    """A metadata.jsonl with only file_name and text (no codepoint): pairs are held out by a hash of the caption, so
    train and test share no caption, and together they are the whole folder."""
    from PIL import Image

    captions = [f"a {colour} square number {index}" for index, colour in enumerate(["red", "green", "blue"] * 10)]
    with (tmp_path / "metadata.jsonl").open("w") as handle:
        for index, caption in enumerate(captions):
            Image.new("RGB", (8, 8), (index * 8, 0, 0)).save(tmp_path / f"{index}.png")
            handle.write(json.dumps({"file_name": f"{index}.png", "text": caption}) + "\n")
    train, test = (load_emoji_captions(tmp_path, split, held_out_fraction=0.3) for split in ("train", "test"))
    assert len(test) > 0 and not set(train["text"]) & set(test["text"])
    assert sorted(list(train["text"]) + list(test["text"])) == sorted(captions)


def test_zero_shot_on_templated_labels(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    from hf_ssl.data.pairs import caption_with_templates
    from hf_ssl.evaluation.features import default_eval_transform

    images = [PILImage.new("RGB", (16, 16), color) for color in ("red", "blue", "red", "blue")]
    dataset = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]},
                                features=Features({"image": Image(), "label": ClassLabel(names=["cat", "ship"])}))
    captioned = caption_with_templates(dataset, TRAIN_TEMPLATES, seed=0)
    assert all(text.endswith(("cat.", "ship.")) for text in captioned["text"])
    torch.manual_seed(0)
    accuracy = zero_shot_accuracy(tiny_clip(), TinyTokenizer(), dataset, ["cat", "ship"], HELD_OUT_TEMPLATES,
                                  default_eval_transform(16, (0.5,) * 3, (0.5,) * 3))
    assert accuracy in (0.0, 0.5, 1.0)  # identical images of a class get the same prediction


def test_bad_input_fails_with_a_clear_message():
    from PIL import Image as PILImage

    from hf_ssl.evaluation.features import default_eval_transform

    collator = ImageCaptionCollator(TinyTokenizer(), default_eval_transform(16))
    image = PILImage.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="have no caption"):
        collator([{"image": image, "text": "a cat"}, {"image": image}])
    with pytest.raises(ValueError, match="needs an `image`"):
        collator([{"image": None, "text": "a cat"}])
    model = tiny_clip()
    batch = clip_batch()
    with pytest.raises(ValueError, match="6 images and 4 captions"):
        model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"][:4],
              attention_mask=batch["attention_mask"][:4])
    with pytest.raises(ValueError, match="needs images and their captions"):
        model(pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="VisionTextDualEncoderConfig"):
        CLIPStyleForPreTraining.from_encoder_config(tiny_vit_config())
    with pytest.raises(ValueError, match="max_logit_scale must be > 0"):
        tiny_clip(max_logit_scale=0.0)


@pytest.mark.parametrize("config", ["clip-vit-tiny-minilm-emoji.yaml", "clip-vit-tiny-minilm-cifar10.yaml"])
def test_recipe_configs_parse(config):
    from hf_ssl.jobs import DualEncoderArguments, ImageTextDataArguments
    from hf_ssl.jobs.runner import parse_arguments
    from hf_ssl.methods import CLIPStyleConfig

    encoder_args, data_args, method_config, training_args = parse_arguments([f"recipes/configs/{config}",
                                                                             "--output_dir", "x"])
    assert isinstance(encoder_args, DualEncoderArguments) and isinstance(data_args, ImageTextDataArguments)
    assert isinstance(method_config, CLIPStyleConfig) and method_config.freeze_text_model
    assert json.loads(encoder_args.encoder_config_overrides) == {"num_hidden_layers": 4}
    assert training_args.output_dir == "x"
