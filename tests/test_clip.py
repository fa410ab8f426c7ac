"""CLIP-style dual encoder (its 2-process check is in test_info_nce.py): loss = open_clip's ClipLoss on its features, vanilla VisionTextDualEncoderModel loading
without hf_ssl, locked text tower, the job end to end on the emoji captions, zero-shot /
retrieval metrics, and bad input. Repeated captions / classes as positives of each other, on 1 and 2 processes and
through the CIFAR-10 job."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import test_distributed
import torch
from conftest import BLOCK_HF_SSL, tiny_vit_config
from test_distributed import one_and_two_processes
from test_sentence_bert import TinyTokenizer, tiny_bert_config, tiny_text_batch

from hf_ssl import AutoSSLModel, CLIPStyleForPreTraining
from hf_ssl.data.collators import ImageCaptionCollator
from hf_ssl.data.pairs import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, load_emoji_captions
from hf_ssl.evaluation.retrieval import retrieval_recall
from hf_ssl.evaluation.zero_shot import zero_shot_accuracy
from hf_ssl.losses import InfoNCELoss
from hf_ssl.methods.clip import caption_ids

EMOJI = "emoji_captions"  # a folder with no Hub copy, found by this name under HF_SSL_DATA_DIR


def tiny_clip(initializer_range=None, **settings):
    vision, text = tiny_vit_config(), tiny_bert_config()
    if initializer_range is not None:  # at the default (0.02) the 1-layer towers' outputs barely depend on the input
        vision.initializer_range = text.initializer_range = initializer_range
    return CLIPStyleForPreTraining.from_vision_text(vision, text, projection_dim=16, **settings)


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


# ----------------------------------------------------------------------------------------------------------------------
# Repeated captions and classes: positives of each other
CIFAR10 = "uoft-cs/cifar10"
MULTI_POSITIVE_WORKER = test_distributed.WORKER.with_name("distributed_worker_clip_multi_positive.py")


def repeated_caption_batch(rows=(0, 1, 0, 2, 1, 0)):
    """Six images, captions 0, 1, 0, 2, 1, 0 of three distinct ones (padded differently where repeated)."""
    batch = clip_batch()
    batch["input_ids"], batch["attention_mask"] = batch["input_ids"][list(rows)], batch["attention_mask"][list(rows)]
    return batch


def test_repeated_captions_are_positives_of_each_other():
    """Ids from the captions: the soft-target loss on the model's own features. Text dropout makes the twins' caption
    embeddings differ, so the loss differs from the one-positive ClipLoss (with identical twin embeddings the two
    coincide, see test_info_nce.py); ``multi_positive=False`` is ClipLoss, and batch-given ids replace caption ids."""
    from open_clip.loss import ClipLoss

    batch = repeated_caption_batch()
    normalize = torch.nn.functional.normalize

    def clip_loss(output, model):
        return ClipLoss()(normalize(output.image_embeds, dim=-1), normalize(output.text_embeds, dim=-1),
                          model.logit_scale.exp())

    torch.manual_seed(0)
    model = tiny_clip(initializer_range=0.2)
    for module in model.text_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    output = model.train()(**batch)
    expected, _ = InfoNCELoss(0.07, symmetric=True)(output.image_embeds, output.text_embeds,
                                                    logit_scale=model.logit_scale,
                                                    positive_ids=torch.tensor([0, 1, 0, 2, 1, 0]))
    torch.testing.assert_close(output.loss, expected)
    assert (output.loss - clip_loss(output, model)).abs() > 1e-3  # the twins are no longer negatives
    torch.manual_seed(0)
    one_positive = tiny_clip(initializer_range=0.2, multi_positive=False)
    original = one_positive(**batch)
    torch.testing.assert_close(original.loss, clip_loss(original, one_positive))
    # Batch-given ids (e.g. the class) take the place of the caption ids.
    grouped = model.eval()(**clip_batch(), positive_ids=torch.tensor([4, 4, 4, 9, 9, 9]))
    expected, _ = InfoNCELoss(0.07, symmetric=True)(grouped.image_embeds, grouped.text_embeds,
                                                    logit_scale=model.logit_scale,
                                                    positive_ids=torch.tensor([0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(grouped.loss, expected)
    assert (grouped.loss - clip_loss(grouped, model)).abs() > 1e-2
    with pytest.raises(ValueError, match="set multi_positive true or leave positive_ids out"):
        one_positive(**clip_batch(), positive_ids=torch.zeros(6, dtype=torch.long))


def test_caption_ids_are_equal_exactly_for_equal_captions_whatever_the_padding():
    input_ids = torch.tensor([[101, 7, 8, 0, 0], [101, 7, 8, 9, 0], [101, 7, 8, 0, 0], [101, 8, 7, 0, 0]])
    attention_mask = (input_ids != 0).long()
    ids = caption_ids(input_ids, attention_mask).tolist()
    assert ids[0] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3
    assert caption_ids(input_ids[:1, :3], attention_mask[:1, :3]).tolist() == ids[:1]  # shorter padding, same id


def test_image_caption_collator_passes_a_positive_column():
    from PIL import Image as PILImage

    from hf_ssl.evaluation.features import default_eval_transform

    image = PILImage.new("RGB", (16, 16))
    rows = [{"image": image, "text": f"a photo of a {name}.", "label": label}
            for name, label in (("cat", 3), ("ship", 8), ("cat", 3))]
    collator = ImageCaptionCollator(TinyTokenizer(), default_eval_transform(16), positive_column="label")
    assert collator(rows)["positive_ids"].tolist() == [3, 8, 3]
    assert "positive_ids" not in ImageCaptionCollator(TinyTokenizer(), default_eval_transform(16))(rows)
    with pytest.raises(ValueError, match="integer `label`"):
        collator([{"image": image, "text": "a cat"}])


@pytest.fixture(scope="module")
def multi_positive_gloo_runs(tmp_path_factory):
    """The multi-positive worker on 1 process with the global batch and on 2 gloo processes with half each."""
    return one_and_two_processes(tmp_path_factory.mktemp("gloo"), "all", MULTI_POSITIVE_WORKER)


def test_two_processes_with_repeated_ids_match_one_process_with_double_batch(multi_positive_gloo_runs):
    """Positive ids shared across the two shards: each process needs the gathered ids (the global positive mask)."""
    single, double = multi_positive_gloo_runs
    for variant, expected in single["loss"].items():
        for key, value in expected.items():
            torch.testing.assert_close(double["loss"][variant][key], value, msg=f"{variant}: {key}")
        assert expected["keys"].abs().sum() > 0


@pytest.mark.parametrize("variant", ["repeated_captions", "class_ids"])
def test_two_process_clip_with_repeats_matches_one_process(multi_positive_gloo_runs, variant):
    """The DDP model with captions repeated across the shards (ids from the captions) or with class ids."""
    single, double = (run[variant] for run in multi_positive_gloo_runs)
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert double["grads"].keys() == single["grads"].keys() and len(single["grads"]) > 10
    for name, grad in single["grads"].items():
        torch.testing.assert_close(double["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.needs_data(CIFAR10)
def test_cifar10_recipe_trains_with_more_pairs_than_classes(tmp_path, monkeypatch):
    """A global batch of 20 over 10 classes (each caption template names one of them): no longer refused, and the
    class label reaches the loss as positive_ids, so same-class images are positives of each other."""
    from hf_ssl.jobs.runner import run

    seen = []
    forward = CLIPStyleForPreTraining.forward

    def recording_forward(self, *args, **kwargs):
        seen.append(kwargs.get("positive_ids"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CLIPStyleForPreTraining, "forward", recording_forward)
    probes = run([
        "recipes/configs/clip-vit-tiny-minilm-cifar10.yaml", "--output_dir", str(tmp_path / "out"),
        "--image_size", "16", "--encoder_config_overrides",
        '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
        "--projection_dim", "16", "--max_steps", "2", "--per_device_train_batch_size", "20",
        "--max_train_examples", "200", "--max_eval_examples", "40", "--eval_strategy", "no", "--use_cpu", "true",
        "--disable_tqdm", "true",
    ])
    assert set(probes["pretrained"]) == {"zero_shot_top1_held_out_templates", "zero_shot_top1_train_templates"}
    training_batches = [ids for ids in seen if ids is not None]
    assert len(training_batches) == 2
    assert all(ids.shape == (20,) and len(ids.unique()) <= 10 for ids in training_batches)  # classes repeat


@pytest.mark.parametrize(("no_duplicates", "multi_positive", "batch", "expected"), [
    (None, True, 10, True), (None, True, 20, False), (None, False, 10, True), (True, True, 10, True),
    (False, True, 10, False), (False, False, 10, False),
])
def test_batches_are_deduplicated_where_a_batch_fits_the_classes(no_duplicates, multi_positive, batch, expected):
    """Unset, de-duplication is on while a global batch fits the distinct classes (more negatives per batch), off
    beyond (repeats become positives), and always on for the one-positive loss; an explicit value wins."""
    from hf_ssl.jobs.image_text import _deduplicate

    labels = [index % 10 for index in range(100)]
    assert _deduplicate(no_duplicates, multi_positive, labels, batch) is expected



def test_captioned_image_views_belong_to_the_example(embedded_images):
    """The training crop of an image-caption row is seeded by (seed, epoch, index): the same in any batch, new at the
    next epoch; the caption and other columns pass through, and the collator stacks the crops as they are."""
    from torchvision.transforms import v2

    from hf_ssl.data.collators import ImageCaptionCollator
    from hf_ssl.views import CaptionedImageView, apply_views

    crop = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(16, scale=(0.2, 1.0), antialias=True),
                       v2.ToDtype(torch.float32, scale=True)])
    rows = embedded_images["train"].select(range(6)).map(lambda row, i: {"text": f"caption {i}"}, with_indices=True)
    views = apply_views(rows, CaptionedImageView(crop, seed=3))
    whole = [views[i] for i in range(6)]
    assert [row["text"] for row in whole] == [f"caption {i}" for i in range(6)] and "label" in whole[0]
    assert all(row["pixel_values"].shape == (3, 16, 16) for row in whole)
    later = views.select(range(3, 6))  # the same examples in another batch
    for i in range(3):
        assert torch.equal(later[i]["pixel_values"], whole[3 + i]["pixel_values"])
    assert not torch.equal(whole[0]["pixel_values"], whole[1]["pixel_values"])
    views.format["format_kwargs"]["transform"].set_epoch(1)
    assert not torch.equal(views[0]["pixel_values"], whole[0]["pixel_values"])

    class Tokens:
        def __call__(self, texts, **kwargs):
            return {"input_ids": torch.ones(len(texts), 3, dtype=torch.long)}

    batch = ImageCaptionCollator(Tokens(), image_transform=None)(whole[:2])
    assert torch.equal(batch["pixel_values"], torch.stack([whole[0]["pixel_values"], whole[1]["pixel_values"]]))
