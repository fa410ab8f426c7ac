"""Publishing round trips against a local STAND-IN for the Hub HTTP API (tests/hub_stand_in.py), never a real hub.

Four ways to publish (the recipe with --push_to_hub, trainer.push_to_hub, hf_ssl.publishing.push_model, hf-ssl push)
each give a repository that plain transformers loads as the encoder with hf_ssl blocked, that hf_ssl.AutoSSLModel
loads as the whole pretraining model with the same encoder weights, and whose README.md is hf_ssl's card (model-index
equal to the run's metrics), never the stock Trainer / PreTrainedModel text. The write token never reaches a file or
the output. A few-label run publishes a classifier that pipeline() serves from the Hub.

huggingface_hub reads HF_ENDPOINT when imported, so pushes and loads run in subprocesses with the stand-in's address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BLOCK_HF_SSL, CLASSES, STOCK_CARD_TEXTS, TINY_DINO_RUN_FLAGS
from hub_stand_in import StandInHub
from huggingface_hub import ModelCard

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_secretvalue"
STOCK_TEXTS = STOCK_CARD_TEXTS
TINY = TINY_DINO_RUN_FLAGS + ["--final_probes", "knn"]
REPOS = ("org/recipe", "org/trainer", "org/model", "org/cli-push")

PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import ViTConfig
    from hf_ssl import DINOForPreTraining
    from hf_ssl.cli import main
    from hf_ssl.data import load_image_dataset
    from hf_ssl.publishing import push_model
    from hf_ssl.training import SSLTrainer, SSLTrainingArguments
    from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

    recipe_run, trainer_dir, recipe_argv, features_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    assert main(["pretrain", *json.loads(recipe_argv)]) == 0
    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)
    model = DINOForPreTraining.from_encoder_config(config, out_dim=64, hidden_dim=32, bottleneck_dim=16,
                                                   momentum_teacher=0.5, freeze_last_layer_epochs=0.0)
    images = load_image_dataset("embedded", "train", max_examples=32)
    views = MultiCropTransform(MultiCropConfig(global_crop_size=28, local_crop_size=14, num_local_crops=2))
    args = SSLTrainingArguments(trainer_dir, max_steps=2, per_device_train_batch_size=16, report_to="none",
                                use_cpu=True, push_to_hub=True, hub_model_id="org/trainer", save_strategy="no",
                                logging_steps=1, disable_tqdm=True)
    trainer = SSLTrainer(model=model, args=args, train_dataset=apply_views(images, views))
    trainer.train()
    trainer.push_to_hub()
    push_model(model, "org/model", run_directory=recipe_run)
    assert main(["push", recipe_run, "--hub_model_id", "org/cli-push", "--private"]) == 0
    # hf_ssl loads every published repository as the whole pretraining model
    from hf_ssl import AutoSSLModel
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    features = {"pixels": pixels}
    for repo in REPOS:
        full = AutoSSLModel.from_pretrained(repo).eval()
        with torch.no_grad():
            features[repo] = {"class": type(full).__name__, "cls":
            full.encoder(pixel_values=pixels).last_hidden_state[:, 0]}
    torch.save(features, features_path)
    # a private repository needs the token; AutoSSLModel passes `token=` on to the config too
    import os, tempfile
    token = os.environ.pop("HF_TOKEN")
    with tempfile.TemporaryDirectory() as fresh_cache:
        try:
            AutoSSLModel.from_pretrained("org/cli-push", cache_dir=fresh_cache)
            raise SystemExit("the private repository loaded without a token")
        except OSError:
            pass
        private = AutoSSLModel.from_pretrained("org/cli-push", token=token, cache_dir=fresh_cache)
        assert type(private).__name__ == "DINOForPreTraining"
    """
)

VANILLA_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging
    logging.set_verbosity_error()
    pixels = torch.load(sys.argv[1])["pixels"]
    out = {}
    for repo in sys.argv[3:]:
        encoder = AutoModel.from_pretrained(repo).eval()
        with torch.no_grad():
            out[repo] = {"class": type(encoder).__name__, "cls": encoder(pixel_values=pixels).last_hidden_state[:, 0]}
    torch.save(out, sys.argv[2])
    """
)


def _environment(hub: StandInHub, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=SECRET, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_HOME=str(home),
               HF_DATASETS_OFFLINE="1", PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
               TRANSFORMERS_VERBOSITY="error")
    return env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return completed


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Publish four repositories on one stand-in hub; yield the hub, the recipe's run directory and the output."""
    work = tmp_path_factory.mktemp("hub")
    with StandInHub() as hub:
        env = _environment(hub, work / "hf_home")
        recipe_run = work / "recipe-run"
        recipe_argv = [*TINY, "--output_dir", str(recipe_run), "--push_to_hub", "--hub_model_id", "org/recipe"]
        script = work / "push.py"
        script.write_text(f"REPOS = {list(REPOS)!r}\n" + PUSH_SCRIPT)
        pushed = _run([sys.executable, str(script), str(recipe_run), str(work / "trainer-run"),
                       json.dumps(recipe_argv), str(work / "hf_ssl_features.pt")], env, work)
        yield {"hub": hub, "env": env, "work": work, "run": recipe_run, "output": pushed.stdout + pushed.stderr}


def _card(hub: StandInHub, repo: str) -> ModelCard:
    return ModelCard(hub.files(repo)["README.md"].decode())


def test_every_way_of_publishing_carries_the_generated_card(published):
    hub = published["hub"]
    for repo in REPOS:
        files = hub.files(repo)
        assert {"config.json", "model.safetensors", "README.md"} <= set(files), (repo, sorted(files))
        text = files["README.md"].decode()
        assert not any(stock in text for stock in STOCK_TEXTS), repo
        assert "Caron et al. 2021" in text and "AutoModel.from_pretrained(\"" + repo + "\")" in text, repo
        assert not any(name.startswith("checkpoint-") for name in files), repo
    # the recipe's card has the run's numbers as model-index, equal to eval_results.json
    evaluation = json.loads((published["run"] / "eval_results.json").read_text())
    card = _card(hub, "org/recipe")
    values = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert values == {item["metric_name"]: item["metric_value"] for item in evaluation["eval_results"]}
    assert card.data.model_name == "recipe" and "training_curves.png" in hub.files("org/recipe")
    assert "hf_ssl_run.json" in hub.files("org/cli-push") and hub.repositories["org/cli-push"].private
    # push_model(run_directory=...) carries the run's results too; the trainer's card has its log history
    assert _card(hub, "org/model").data.eval_results
    assert "training_curves.png" in hub.files("org/trainer")
    # the card's command reproduces the run without publishing it again
    record = json.loads(hub.files("org/recipe")["hf_ssl_run.json"])
    assert record["argv"][: len(TINY)] == TINY and "--push_to_hub" in record["argv"]
    command = next(line for line in card.text.splitlines() if line.startswith("python recipes/pretrain.py"))
    assert "--max_steps 2" in command and "--push_to_hub" not in command and "hub_model_id" not in command


#: What a push of an image run carries at least (README.md, "What is uploaded"): the model and its processor, the run
#: record, evaluation and log history, and the card with its figure.
UPLOADED = {"config.json", "model.safetensors", "preprocessor_config.json", "hf_ssl_run.json", "eval_results.json",
            "trainer_state.json", "README.md", "training_curves.png"}


def test_a_push_uploads_exactly_the_listed_files(published):
    """The recipe's push (which Trainer's checkpoint pushes precede, each with its training_args.bin) and ``hf-ssl
    push`` of the same run folder both leave exactly the folder's files minus ``training_args.bin`` and the
    ``checkpoint-*`` folders. The push is recorded in the run's record, so cards of runs started from it name the
    repository as their base model."""
    hub, run_dir = published["hub"], published["run"]
    assert (run_dir / "training_args.bin").is_file() and any(run_dir.glob("checkpoint-*"))
    assert hub.commit_count("org/recipe") > 1  # the checkpoint pushes happened
    expected = {path.name for path in run_dir.iterdir() if path.is_file()} - {"training_args.bin"}
    assert expected >= UPLOADED
    for repo in ("org/recipe", "org/cli-push"):
        assert set(hub.files(repo)) == expected, (repo, sorted(set(hub.files(repo)) ^ expected))
    record = json.loads((run_dir / "hf_ssl_run.json").read_text())
    assert record["publication"] == {"hub_model_id": "org/cli-push"}  # the last push of the folder


def test_published_repositories_load_as_encoder_without_hf_ssl_and_as_pretraining_model_with_it(published):
    import torch

    work = published["work"]
    script = work / "vanilla.py"
    script.write_text(VANILLA_SCRIPT)
    _run([sys.executable, str(script), str(work / "hf_ssl_features.pt"), str(work / "vanilla.pt"), *REPOS],
         published["env"], work)
    vanilla, full = torch.load(work / "vanilla.pt"), torch.load(work / "hf_ssl_features.pt")
    for repo in REPOS:
        assert vanilla[repo]["class"] == "ViTModel" and full[repo]["class"] == "DINOForPreTraining", repo
        torch.testing.assert_close(vanilla[repo]["cls"], full[repo]["cls"], msg=repo)


def test_the_token_reaches_the_hub_but_no_file_card_or_log(published):
    hub = published["hub"]
    assert any(SECRET in header for header in hub.authorizations)  # so the searches below can fail
    assert SECRET not in published["output"]
    for path in published["work"].rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for repo in REPOS:
        for name, content in hub.files(repo).items():
            assert SECRET.encode() not in content, (repo, name)


FINETUNE_FLAGS = [
    "finetune", "--method", "fixmatch", "--dataset", "embedded", "--encoder", "vit-tiny", "--encoder_config_overrides",
    '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}', "--patch_size",
    "7", "--image_size", "28", "--labels_per_class", "2", "--max_unlabelled_examples", "32", "--max_eval_examples",
    "20", "--unlabelled_batch_ratio", "2", "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_steps",
    "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
]
CLASSIFY_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    from PIL import Image
    from transformers import pipeline
    for repo in sys.argv[1:]:
        print(json.dumps(pipeline("image-classification", model=repo)(Image.new("L", (28, 28)))[0]))
    """
)


def test_a_few_label_run_publishes_a_classifier_that_pipelines_serve_from_the_hub(tmp_path):
    """``hf-ssl finetune --push_to_hub`` and ``hf-ssl push`` of its output: the classifier, its processor and the
    classifier card (pipeline tag, method, labels), which plain transformers serves with hf_ssl blocked."""
    with StandInHub() as hub:
        env = _environment(hub, tmp_path / "hf_home")
        run = tmp_path / "run"
        script = (f"from hf_ssl.cli import main\nimport sys\nflags = {FINETUNE_FLAGS!r}\n"
                  f"assert main([*flags, '--output_dir', {str(run)!r}, '--push_to_hub', '--hub_model_id', 'org/fm']) "
                  f"== 0\nassert main(['push', {str(run)!r}, '--hub_model_id', 'org/fm-push']) == 0\n")
        _run([sys.executable, "-c", script], env, tmp_path)
        for repo in ("org/fm", "org/fm-push"):
            files = hub.files(repo)
            assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files), repo
            card = ModelCard(files["README.md"].decode())
            assert card.data.pipeline_tag == "image-classification" and "fixmatch" in card.text.lower(), repo
            assert not any(stock in card.text for stock in STOCK_TEXTS), repo
        served = _run([sys.executable, "-c", CLASSIFY_SCRIPT, "org/fm", "org/fm-push"], env, tmp_path).stdout
        labels = [json.loads(line)["label"] for line in served.strip().splitlines()[-2:]]
        assert len(labels) == 2 and set(labels) <= set(CLASSES), labels
