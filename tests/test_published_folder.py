"""What a published folder holds, checked the way a user without hf_ssl meets it.

- The root loads with plain transformers and says nothing: ``model.safetensors`` holds the published model alone, so
  ``AutoModel.from_pretrained`` reports no unexpected and no missing key and prints no LOAD REPORT; the method's
  state (student, heads, centre, queue, decoder, quantizer) sits in ``ssl_state.safetensors``, where
  ``AutoSSLModel`` finds it. Folders saved in the earlier layout (every weight in ``model.safetensors``) still load.
- Every output, checkpoints included, holds its processor: ``AutoImageProcessor`` / ``AutoTokenizer`` /
  ``AutoFeatureExtractor`` / ``AutoProcessor`` and the matching ``pipeline`` work on it in a process where hf_ssl
  cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_HF_SSL, TINY_DINO_RUN_FLAGS, tiny_dino, tiny_vit_config
from transformers import BertConfig, PreTrainedModel, ResNetConfig

from hf_ssl import AutoSSLModel
from hf_ssl.methods import METHOD_REGISTRY
from hf_ssl.methods.published_layout import SSL_STATE_NAME
from hf_ssl.modules.audio_encoder import audio_encoder_config
from hf_ssl.modules.backbones import encoder_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIKITEXT = "Salesforce/wikitext"
FSDD = "silky1708/Free-Spoken-Digit-Dataset"
EMOJI = "emoji_captions"
TINY_VIT = '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}'


def tiny_bert(vocab_size: int = 60) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


def tiny_resnet() -> ResNetConfig:
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", image_size=16)


def tiny_dino_on(config):
    return METHOD_REGISTRY["dino"].from_encoder_config(config, out_dim=64, hidden_dim=32, bottleneck_dim=16,
                                                       freeze_last_layer_epochs=0.0)


AUDIO_CONV = {"conv_dim": [16, 16, 16], "conv_stride": [5, 4, 2], "conv_kernel": [10, 8, 4], "hidden_size": 16,
              "num_conv_pos_embedding_groups": 2}
#: Every method at a tiny size, and the class a user loads its published folder with.
TINY_MODELS = {
    "dino": (lambda: tiny_dino(), "AutoModel"),
    "simclr": (lambda: METHOD_REGISTRY["simclr"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16), "AutoModel"),
    "simclr-resnet": (lambda: METHOD_REGISTRY["simclr"].from_encoder_config(
        tiny_resnet(), projection_hidden_dim=32, projection_dim=16), "AutoModel"),
    "dino-timm": (lambda: tiny_dino_on(encoder_config("timm:test_resnet", 32, 4, {})), "AutoModel"),
    "byol": (lambda: METHOD_REGISTRY["byol"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32), "AutoModel"),
    "simsiam": (lambda: METHOD_REGISTRY["simsiam"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=8), "AutoModel"),
    "moco_v2": (lambda: METHOD_REGISTRY["moco_v2"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, queue_size=24), "AutoModel"),
    "moco_v3": (lambda: METHOD_REGISTRY["moco_v3"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32), "AutoModel"),
    "mae": (lambda: METHOD_REGISTRY["mae"].from_encoder_config(
        tiny_vit_config(), decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=64), "AutoModel"),
    "cpc": (lambda: METHOD_REGISTRY["cpc"].from_encoder_config(
        audio_encoder_config("cpc-tiny", AUDIO_CONV), context_dim=16, prediction_steps=3, num_negatives=5),
        "AutoModel"),
    "wav2vec2": (lambda: METHOD_REGISTRY["wav2vec2"].from_encoder_config(audio_encoder_config("wav2vec2-tiny", {
        **AUDIO_CONV, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "num_conv_pos_embeddings": 8, "codevector_dim": 16, "proj_codevector_dim": 16,
        "num_codevectors_per_group": 8})), "Wav2Vec2ForPreTraining"),
    "sbert": (lambda: METHOD_REGISTRY["sbert"].from_encoder_config(tiny_bert()), "AutoModel"),
    "clip": (lambda: METHOD_REGISTRY["clip"].from_vision_text(tiny_vit_config(), tiny_bert(), projection_dim=16),
             "AutoModel"),
    # Where transformers has the method's own class, the root is that class's checkpoint: wav2vec 2.0's is
    # Wav2Vec2ForPreTraining (AutoModel lists its quantizer as unexpected, as for facebook/wav2vec2-base); masked-LM
    # outputs serve pipeline("fill-mask"): the root keeps the masked-LM head (and the pooler, as BERT's own checkpoints
    # do), the pair head goes to the method's state.
    "mlm": (lambda: METHOD_REGISTRY["mlm"].from_encoder_config(tiny_bert()), "AutoModelForMaskedLM"),
    "sop": (lambda: METHOD_REGISTRY["sop"].from_encoder_config(tiny_bert(), pair_task="sop"),
            "AutoModelForMaskedLM"),
}

#: Loads each (folder, Auto class) with plain transformers at warning verbosity: prints the loading info as JSON; the
#: LOAD REPORT, if transformers writes one, lands on stderr.
VANILLA_LOAD_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import transformers
    from transformers.utils import logging
    logging.set_verbosity_warning()
    results = {}
    for folder, class_name in json.loads(sys.argv[1]):
        model, info = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True)
        results[folder] = {"class": type(model).__name__, "unexpected": sorted(info["unexpected_keys"]),
                           "missing": sorted(info["missing_keys"])}
    print(json.dumps(results))
    """
)


def run_without_hf_ssl(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "warning", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                               timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


def assert_same_state(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert set(want) == set(got), set(want) ^ set(got)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_every_method_publishes_a_root_that_plain_transformers_loads_without_a_report(tmp_path):
    folders, models = [], {}
    for name, (build, auto_class) in TINY_MODELS.items():
        torch.manual_seed(0)
        models[name] = build().eval()
        models[name].save_pretrained(tmp_path / name)
        folders.append((str(tmp_path / name), auto_class))
    completed = run_without_hf_ssl(VANILLA_LOAD_SCRIPT, json.dumps(folders))
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    for name, (_, auto_class) in TINY_MODELS.items():
        info = loaded[str(tmp_path / name)]
        assert info["missing"] == [], (name, info)
        if auto_class.endswith("ForMaskedLM"):  # BertForMaskedLM / AlbertForMaskedLM have no pooler
            assert all(".pooler." in key for key in info["unexpected"]), (name, info)
        else:
            assert info["unexpected"] == [], (name, info)
    reports = [line for line in completed.stderr.splitlines() if "LOAD REPORT" in line]
    assert all("ForMaskedLM LOAD REPORT" in line for line in reports), completed.stderr[-3000:]
    # the pair head of SOP is the method's, not the fill-mask model's
    assert "sop_classifier" not in json.dumps(loaded[str(tmp_path / "sop")])
    for name, model in models.items():
        restored, info = type(model).from_pretrained(tmp_path / name, output_loading_info=True) if name != "mae" else (
            AutoSSLModel.from_pretrained(tmp_path / name), {})
        assert not any(info.values()), (name, info)
        assert_same_state(model, restored)
        assert type(AutoSSLModel.from_pretrained(tmp_path / name)) is type(model)
    assert (tmp_path / "dino" / SSL_STATE_NAME).is_file() and not (tmp_path / "clip" / SSL_STATE_NAME).is_file()


def test_loading_a_dino_output_with_plain_transformers_prints_no_load_report(tmp_path):
    """The user's view: loading a DINO output with plain transformers prints nothing at warning verbosity."""
    tiny_dino().save_pretrained(tmp_path / "dino")
    completed = run_without_hf_ssl(
        BLOCK_HF_SSL + textwrap.dedent(
            """
            from transformers import AutoModel
            from transformers.utils import logging
            logging.set_verbosity_warning()
            encoder = AutoModel.from_pretrained(sys.argv[1])
            print(type(encoder).__name__)
            """
        ),
        str(tmp_path / "dino"),
    )
    assert completed.stdout.strip().splitlines()[-1] == "ViTModel"
    assert "LOAD REPORT" not in completed.stderr and "UNEXPECTED" not in completed.stderr, completed.stderr[-3000:]


def test_a_folder_of_the_earlier_layout_loads_whole_and_saves_in_the_published_layout(tmp_path):
    torch.manual_seed(0)
    model = tiny_dino().eval()
    PreTrainedModel.save_pretrained(model, tmp_path / "earlier")  # every weight in model.safetensors, as before
    assert not (tmp_path / "earlier" / SSL_STATE_NAME).exists()
    restored = AutoSSLModel.from_pretrained(tmp_path / "earlier")
    assert_same_state(model, restored)
    restored.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / SSL_STATE_NAME).is_file()
    assert_same_state(model, AutoSSLModel.from_pretrained(tmp_path / "again"))
    completed = run_without_hf_ssl(VANILLA_LOAD_SCRIPT, json.dumps([[str(tmp_path / "again"), "AutoModel"]]))
    assert json.loads(completed.stdout.strip().splitlines()[-1])[str(tmp_path / "again")] == {
        "class": "ViTModel", "unexpected": [], "missing": []}


def test_a_sharded_root_keeps_only_the_encoder_shards_and_loads_whole(tmp_path):
    torch.manual_seed(0)
    model = tiny_dino().eval()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] and all(key.startswith("vit.") for key in index["weight_map"])
    assert {path.name for path in tmp_path.glob("model-*.safetensors")} == set(index["weight_map"].values())
    assert_same_state(model, AutoSSLModel.from_pretrained(tmp_path))


def test_published_pooler_is_the_same_at_every_save_and_leaves_the_random_state_alone(tmp_path):
    from safetensors.torch import load_file

    model = tiny_dino()
    model.save_pretrained(tmp_path / "one")
    state = torch.random.get_rng_state()
    model.save_pretrained(tmp_path / "two")
    assert torch.equal(state, torch.random.get_rng_state())
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert "vit.pooler.dense.weight" in one and torch.equal(one["vit.pooler.dense.weight"],
                                                            two["vit.pooler.dense.weight"])


# ----------------------------------------------------------------------------------------------------------------------
# Processors, from tiny runs of each job
IMAGE_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, pipeline
    from transformers.utils import logging
    logging.set_verbosity_warning()
    image = Image.fromarray((np.arange(40 * 28 * 3) % 251).astype("uint8").reshape(28, 40, 3))
    out = {}
    for folder in sys.argv[1:]:
        processor = AutoImageProcessor.from_pretrained(folder)
        features = pipeline("image-feature-extraction", model=folder)(image)
        out[folder] = {"size": dict(processor.crop_size), "mean": processor.image_mean, "std": processor.image_std,
                       "pixels": processor(image, return_tensors="pt")["pixel_values"].tolist(),
                       "features": features}
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("method", ["dino", "mae"])
def test_image_outputs_and_checkpoints_hold_the_image_processor_of_the_run(tmp_path, method):
    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.jobs.runner import run

    out = tmp_path / "run"
    flags = [*TINY_DINO_RUN_FLAGS, "--final_comparison", "false", "--save_steps", "2"]
    if method == "mae":
        flags = ["recipes/configs/mae-vit-tiny-embedded.yaml", "--encoder_config_overrides", TINY_VIT,
                 "--decoder_hidden_size", "32", "--decoder_num_hidden_layers", "1", "--decoder_num_attention_heads",
                 "2", "--decoder_intermediate_size", "64", "--max_train_examples", "32", "--max_eval_examples", "16",
                 "--per_device_train_batch_size", "16", "--max_steps", "2", "--eval_strategy", "no", "--save_steps",
                 "2", "--reconstruction_images", "0", "--final_comparison", "false", "--disable_tqdm", "true"]
    run([*flags, "--mean", "0.3", "0.3", "0.3", "--std", "0.2", "0.25", "0.3", "--output_dir", str(out)])
    checkpoint = out / "checkpoint-2"
    completed = run_without_hf_ssl(IMAGE_SCRIPT, str(out), str(checkpoint))
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "LOAD REPORT" not in completed.stderr, completed.stderr[-3000:]
    encoder = AutoSSLModel.from_pretrained(out).encoder.eval()
    import numpy as np
    from PIL import Image

    image = Image.fromarray((np.arange(40 * 28 * 3) % 251).astype("uint8").reshape(28, 40, 3))
    pixels = default_eval_transform(28, [0.3] * 3, [0.2, 0.25, 0.3])(image)[None]
    with torch.no_grad():
        expected = encoder(pixel_values=pixels).last_hidden_state
    for folder in (out, checkpoint):
        values = seen[str(folder)]
        assert values["size"] == {"height": 28, "width": 28}
        assert values["mean"] == [0.3] * 3 and values["std"] == [0.2, 0.25, 0.3]
        # the processor prepares images as the run's probes did (shorter side to 28 px, center crop, normalise)
        torch.testing.assert_close(torch.tensor(values["pixels"]), pixels, atol=1e-5, rtol=0)
        if folder == out:
            torch.testing.assert_close(torch.tensor(values["features"]), expected, atol=1e-4, rtol=0)


@pytest.mark.needs_data(WIKITEXT)
def test_text_outputs_and_checkpoints_hold_the_tokenizer_and_serve_fill_mask(tmp_path):
    from hf_ssl.jobs.runner import run

    out = tmp_path / "run"
    run(["recipes/configs/sop-albert-mini-wikitext.yaml", "--output_dir", str(out), "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--max_train_documents", "6",
         "--max_eval_sequences", "16", "--max_seq_length", "64", "--tokenizer_vocab_size", "800",
         "--encoder_config_overrides", '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, '
         '"intermediate_size": 64}', "--eval_strategy", "no", "--save_steps", "2", "--final_comparison", "false",
         "--disable_tqdm", "true"])
    completed = run_without_hf_ssl(BLOCK_HF_SSL + textwrap.dedent(
        """
        from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
        out = {}
        for folder in sys.argv[1:]:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            fill = pipeline("fill-mask", model=folder)
            _, info = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
            out[folder] = {"predictions": len(fill(f"the {tokenizer.mask_token} of the city")),
                           "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"])}
        print(json.dumps(out))
        """), str(out), str(out / "checkpoint-2"))
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    for folder in (out, out / "checkpoint-2"):
        # the fill-mask model is whole; only the encoder's pooler is beyond it (the SOP head is the method's state)
        assert seen[str(folder)] == {"predictions": 5, "missing": [],
                                     "unexpected": ["albert.pooler.bias", "albert.pooler.weight"]}


@pytest.mark.needs_data(FSDD)
def test_audio_outputs_and_checkpoints_hold_the_feature_extractor(tmp_path):
    from hf_ssl.jobs.runner import run

    out = tmp_path / "run"
    run(["recipes/configs/cpc-tiny-fsdd.yaml", "--output_dir", str(out), "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--max_train_examples", "16", "--max_eval_examples", "8",
         "--crop_seconds", "0.3", "--save_steps", "2", "--final_comparison", "false", "--eval_strategy", "no",
         "--encoder_config_overrides", '{"conv_dim": [16, 16, 16, 16, 16], "hidden_size": 16, '
         '"num_conv_pos_embedding_groups": 2}', "--context_dim", "16", "--num_negatives", "4",
         "--disable_tqdm", "true"])
    completed = run_without_hf_ssl(BLOCK_HF_SSL + textwrap.dedent(
        """
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging
        logging.set_verbosity_warning()
        out = {}
        for folder in sys.argv[1:]:
            extractor = AutoFeatureExtractor.from_pretrained(folder)
            encoder = AutoModel.from_pretrained(folder)
            inputs = extractor([np.sin(np.arange(4800) / 7.0)], sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                out[folder] = {"rate": extractor.sampling_rate,
                               "hidden": list(encoder(**inputs).last_hidden_state.shape)}
        print(json.dumps(out))
        """), str(out), str(out / "checkpoint-2"))
    assert "LOAD REPORT" not in completed.stderr, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    for folder in (out, out / "checkpoint-2"):
        assert seen[str(folder)]["rate"] == 16000 and seen[str(folder)]["hidden"][0] == 1


@pytest.mark.needs_data(EMOJI)
def test_image_text_outputs_and_checkpoints_hold_the_dual_encoder_processor(tmp_path):
    from hf_ssl.jobs.runner import run

    out = tmp_path / "run"
    run(["recipes/configs/clip-vit-tiny-minilm-emoji.yaml", "--output_dir", str(out), "--dataset", EMOJI,
         "--image_size", "16", "--encoder_config_overrides", TINY_VIT, "--projection_dim", "16", "--max_steps", "2",
         "--per_device_train_batch_size", "8", "--max_eval_examples", "16", "--eval_strategy", "no",
         "--save_strategy", "steps", "--save_steps", "2", "--use_cpu", "true", "--disable_tqdm", "true"])
    completed = run_without_hf_ssl(BLOCK_HF_SSL + textwrap.dedent(
        """
        import torch
        from PIL import Image
        from transformers import AutoModel, AutoProcessor
        from transformers.utils import logging
        logging.set_verbosity_warning()
        out = {}
        image = Image.new("RGB", (20, 16), (200, 30, 30))
        for folder in sys.argv[1:]:
            processor = AutoProcessor.from_pretrained(folder)
            model = AutoModel.from_pretrained(folder)
            inputs = processor(text=["red face", "blue arrow"], images=[image], return_tensors="pt", padding=True)
            with torch.no_grad():
                logits = model(**inputs).logits_per_image
            # (pipeline("zero-shot-image-classification") takes CLIP-family configs only, not dual encoders)
            out[folder] = {"processor": type(processor).__name__, "pixels": list(inputs["pixel_values"].shape),
                           "logits": list(logits.shape)}
        print(json.dumps(out))
        """), str(out), str(out / "checkpoint-2"))
    assert "LOAD REPORT" not in completed.stderr, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    for folder in (out, out / "checkpoint-2"):
        assert seen[str(folder)] == {"processor": "VisionTextDualEncoderProcessor", "pixels": [1, 3, 16, 16],
                                     "logits": [1, 2]}


def test_image_processor_settings_are_refused_with_the_fix():
    from hf_ssl.views.processors import build_image_processor

    with pytest.raises(ValueError, match="positive number of pixels"):
        build_image_processor(0, [0.5] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="3 values of mean and std"):
        build_image_processor(28, [0.5], [0.5])


def test_the_image_processor_reproduces_the_evaluation_transform():
    import numpy as np
    from PIL import Image

    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.views.processors import build_image_processor

    image = Image.fromarray((np.arange(48 * 32 * 3) % 253).astype("uint8").reshape(32, 48, 3))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    processed = build_image_processor(16, mean, std)(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processed, default_eval_transform(16, mean, std)(image)[None], atol=1e-5, rtol=0)


SEMI_IMAGE_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline
    out = {}
    for folder in sys.argv[1:]:
        processor = AutoImageProcessor.from_pretrained(folder)
        top = pipeline("image-classification", model=folder)(Image.new("L", (28, 28)))[0]
        out[folder] = {"processor": type(processor).__name__, "size": dict(processor.size), "label": top["label"]}
    print(json.dumps(out))
    """
)


def test_semi_supervised_outputs_and_checkpoints_hold_the_classifier_processor(tmp_path):
    from conftest import CLASSES

    from hf_ssl.jobs.runner import run

    out = tmp_path / "run"
    run(["--method", "fixmatch", "--dataset", "embedded", "--encoder", "vit-tiny", "--encoder_config_overrides",
         TINY_VIT, "--patch_size", "7", "--image_size", "28", "--labels_per_class", "2", "--max_unlabelled_examples",
         "32", "--max_eval_examples", "20", "--unlabelled_batch_ratio", "2", "--per_device_train_batch_size", "4",
         "--max_steps", "2", "--save_steps", "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
         "--output_dir", str(out)])
    seen = json.loads(run_without_hf_ssl(SEMI_IMAGE_SCRIPT, str(out), str(out / "checkpoint-2")).stdout.splitlines()[-1])
    for folder in (out, out / "checkpoint-2"):
        values = seen[str(folder)]
        assert values["processor"].startswith("ViTImageProcessor") and values["size"] == {"height": 28, "width": 28}
        assert values["label"] in CLASSES
