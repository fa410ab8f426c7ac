"""Model cards generated from a real (tiny) run directory: parsed back with huggingface_hub.ModelCard, model-index equal
to the run's metrics, a reproduction command that parses to the recorded settings, figures, limits, and no token."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
from conftest import STOCK_CARD_TEXTS, TINY_DINO_RUN_FLAGS
from huggingface_hub import ModelCard

from hf_ssl.jobs.runner import parse_arguments, run
from hf_ssl.publishing.figures import curves_from_log_history
from hf_ssl.publishing.model_card import (
    build_model_card,
    limitations,
    reproduce_command,
    write_model_card,
)
from hf_ssl.publishing.run_record import TRAINING_CURVES, RunDirectory, redacted_argv

SECRET = "hf_secretvalue"
STOCK_TEXTS = STOCK_CARD_TEXTS
TINY = TINY_DINO_RUN_FLAGS + ["--momentum_teacher", "0.9"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run (embedded Fashion-MNIST, 2 DINO steps); `--hub_token` given but nothing is pushed; `--overwrite`
    (a flag of this run's folder, not of its settings)."""
    out = tmp_path_factory.mktemp("card") / "dino-tiny"
    run([*TINY, "--output_dir", str(out), "--hub_token", SECRET, "--overwrite"])
    return out


def test_the_run_writes_a_card_whose_model_index_equals_its_metrics(run_dir):
    card = ModelCard.load(run_dir / "README.md")
    evaluation = json.loads((run_dir / "eval_results.json").read_text())
    assert card.data.model_name == "dino-tiny"
    assert [(r.metric_name, r.metric_value, r.dataset_split) for r in card.data.eval_results] == [
        (item["metric_name"], item["metric_value"], item["dataset_split"]) for item in evaluation["eval_results"]
    ]
    text = card.text
    assert not any(stock in text for stock in STOCK_TEXTS)
    assert "Caron et al. 2021" in text and "https://arxiv.org/abs/2104.14294" in text  # method + paper
    assert "MIT (Copyright 2017 Zalando SE)" in text and "64 examples" in text  # data, licence, size
    assert "| `momentum_teacher` | 0.9 |" in text and "| `num_local_crops` | 2 |" in text  # settings
    assert "16 = 16 x 1 x 1" in text and "2 optimizer steps" in text  # batch, budget
    probes = evaluation["probes"]
    assert f"| raw_pixels | {probes['raw_pixels']['knn_top1']:.4f} |" in text  # baselines table
    assert f"![{TRAINING_CURVES}]({TRAINING_CURVES})" in text and (run_dir / TRAINING_CURVES).stat().st_size > 1000
    # the loading code names the folder the card's own reproduction command writes (never a path of this machine)
    assert 'AutoModel.from_pretrained("outputs/dino-tiny")' in text and str(run_dir) not in text


def test_the_card_states_the_encoder_size_that_vanilla_transformers_loads(run_dir):
    from transformers import AutoModel

    from safetensors.torch import load_file

    encoder = AutoModel.from_pretrained(run_dir)
    text = (run_dir / "README.md").read_text()
    assert f"({encoder.num_parameters():,})" in text
    # every tensor of the pretraining checkpoint: the published root and the method's ssl_state beside it
    tensors = sum(t.numel() for name in ("model.safetensors", "ssl_state.safetensors")
                  for t in load_file(run_dir / name).values())
    assert "every tensor of the pretraining checkpoint" in text and f"({tensors:,})" in text


def test_the_reproduction_command_parses_to_the_recorded_settings(run_dir):
    record = json.loads((run_dir / "hf_ssl_run.json").read_text())
    for source in (record, {key: value for key, value in record.items() if key != "argv"}):  # argv, or settings
        command = reproduce_command(source)
        assert command.startswith("python recipes/pretrain.py") and SECRET not in command
        assert "--hub_token" not in command and "--push_to_hub" not in command and "--overwrite" not in command
        encoder, data, views, method, training = parse_arguments(shlex.split(command)[2:])
        assert method.to_dict() == record["method"]
        assert vars(data) == record["data"] and vars(views) == record["views"]
        assert training.max_steps == 2 and training.per_device_train_batch_size == 16


def test_no_token_in_the_record_the_card_or_the_log_history(run_dir):
    record = json.loads((run_dir / "hf_ssl_run.json").read_text())
    assert record["argv"][record["argv"].index("--hub_token") + 1] == "<redacted>"
    holding_the_secret = {path.name for path in run_dir.rglob("*")
                          if path.is_file() and SECRET.encode() in path.read_bytes()}
    # Only Trainer's own pickle of TrainingArguments keeps a token given on the command line; hf_ssl never uploads it
    # (hf_ssl.publishing.hub.IGNORED_IN_UPLOADS). Prefer HF_TOKEN, which is never stored.
    assert holding_the_secret <= {"training_args.bin"}
    assert redacted_argv(["--hub_token=x", "--tokenizer_name", "bert"]) == ["--hub_token=<redacted>", "--tokenizer_name",
                                                                          "bert"]


def test_the_jobs_figures_are_embedded_and_copied_next_to_a_card_written_elsewhere(run_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoint-*", "README.md", "*.png"))
    figure = plt.figure(figsize=(1, 1))
    figure.savefig(copy / "reconstructions.png")
    plt.close(figure)
    output = write_model_card(copy, output=tmp_path / "model_cards" / "dino-tiny" / "README.md", repo_id="org/x")
    text = output.read_text()
    assert "![reconstructions.png](reconstructions.png)" in text and 'from_pretrained("org/x")' in text
    assert (output.parent / "reconstructions.png").is_file() and (output.parent / TRAINING_CURVES).is_file()
    # the log history comes from the last checkpoint when the root has no trainer_state.json
    assert RunDirectory.load(copy).log_history == RunDirectory.load(run_dir).log_history != []


def test_a_saved_model_without_run_record_still_gets_an_honest_card(tmp_path):
    from conftest import tiny_dino

    tiny_dino().save_pretrained(tmp_path / "model")
    card = build_model_card(tmp_path / "model", repo_id="org/model", license="apache-2.0")
    assert card.data.license == "apache-2.0" and card.data.eval_results is None
    assert "No final evaluation was recorded" in card.text and "has no `hf_ssl_run.json`" in card.text
    assert 'hf_ssl.AutoSSLModel.from_pretrained("org/model")' in card.text


def test_folders_that_are_not_runs_are_refused(tmp_path):
    from conftest import tiny_vit_config
    from transformers import ViTModel

    with pytest.raises(FileNotFoundError, match="output_dir"):
        build_model_card(tmp_path)
    ViTModel(tiny_vit_config()).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="not the output of an hf_ssl run"):
        build_model_card(tmp_path / "vit")


def test_limits_name_every_baseline_that_wins(run_dir):
    run_directory = RunDirectory.load(run_dir)
    run_directory.evaluation = {"pretraining_steps": 50, "probes": {
        "pretrained": {"knn_top1": 0.6, "linear_probe_top1": 0.7, "perplexity": 10.0, "mlm_loss": 2.0},
        "random_init": {"knn_top1": 0.5, "linear_probe_top1": 0.8, "perplexity": 12.0, "mlm_loss": 1.5},
    }}
    notes = limitations(run_directory, {"licence": "MIT"})
    assert sum("`random_init` scores" in note for note in notes) == 2  # linear probe (higher), loss (lower)
    assert any("linear_probe_top1" in note and "0.8000" in note for note in notes)
    assert any("mlm_loss" in note and "lower is better" in note for note in notes)
    assert not any("perplexity" in note for note in notes)
    assert any("50 optimizer steps" in note for note in notes)


def test_curves_leave_out_the_end_of_training_summary():
    history = [{"step": 1, "loss": 2.0, "learning_rate": 0.1, "epoch": 0.5},
               {"step": 2, "loss": 1.0, "eval_knn_top1": 0.4, "epoch": 1.0},
               {"step": 2, "train_runtime": 3.0, "train_loss": 1.5, "epoch": 1.0}]
    curves = curves_from_log_history(history)
    assert list(curves) == ["loss", "learning_rate", "eval_knn_top1"]
    assert curves["loss"] == ([1.0, 2.0], [2.0, 1.0])


def test_auto_classes_resolve_hf_ssl_checkpoints_and_import_hf_ssl_changes_no_transformers_mapping(run_dir):
    """The design decision of hf_ssl/hub.py's docs: the checkpoint's config is the encoder's own, so AutoConfig and
    AutoModel resolve it with or without hf_ssl; the whole model comes through hf_ssl.AutoSSLModel (the method is in
    ssl_config, which no config-class-keyed Auto mapping can see); AutoModelForPreTraining stays transformers'."""
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, ViTConfig

    import hf_ssl

    config = AutoConfig.from_pretrained(run_dir)
    assert type(config) is ViTConfig and config.ssl_config["method"] == "dino"
    assert type(AutoModel.from_pretrained(run_dir)).__name__ == "ViTModel"
    assert type(hf_ssl.AutoSSLModel.from_pretrained(run_dir)).__name__ == "DINOForPreTraining"
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForPreTraining.from_pretrained(run_dir)


def test_a_run_on_several_corpora_names_each_with_its_licence(run_dir):
    from hf_ssl.publishing.model_card import dataset_description

    run_directory = RunDirectory.load(run_dir)
    run_directory.record["data"] = {"dataset": ["Salesforce/wikitext?config=wikitext-2-raw-v1",
                                                "stanfordnlp/snli?split=validation&columns=premise+hypothesis"]}
    data = dataset_description(run_directory)
    assert "WikiText" in data["name"] and "SNLI" in data["name"] and " + " in data["name"]
    assert "only its `validation` split" in data["name"]
    assert "CC BY-SA 3.0" in data["licence"] and "CC BY-SA 4.0" in data["licence"]
    assert "Merity" in data["citation"] and "Bowman" in data["citation"]
    assert data["hub_ids"] == ["Salesforce/wikitext", "stanfordnlp/snli"]
    # a record that names local copies (a folder, a file of one) gets the same facts, and no local path on the card
    run_directory.record["data"] = {"dataset": ["/data/copies/wikitext2", "/data/copies/snli_devtest/snli_validation.tsv"]}
    data = dataset_description(run_directory)
    assert "only `snli_validation.tsv`" in data["name"] and "CC BY-SA 3.0" in data["licence"]
    assert "/data/copies" not in data["name"] + data["source"]
    assert data["source"] == "Salesforce/wikitext, stanfordnlp/snli?split=validation"
    run_directory.record["data"] = {"dataset": ["Salesforce/wikitext", "my_corpus.txt"]}
    data = dataset_description(run_directory)
    assert data["licence"].startswith("unknown") and "my_corpus.txt" in data["licence"]


def test_the_model_index_names_the_hub_dataset_never_a_local_path(run_dir):
    """The embedded run's card: ``datasets:`` and each model-index ``dataset.type`` are Fashion-MNIST's Hub id, its
    ``dataset.name`` a readable name that says it is a subset; a record naming a local copy (or ``embedded``) is
    mapped the same way."""
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        ("zalando-datasets/fashion_mnist",
         "Fashion-MNIST (subset embedded in hf_ssl: 1,000 train / 200 test images per class)")}
    assert "dataset: embedded" not in str(card.data.to_dict())

    from hf_ssl.publishing.model_card import card_eval_results

    run_directory = RunDirectory.load(run_dir)
    for item in run_directory.evaluation["eval_results"]:
        item.update(dataset_type="/data/copies/cifar10_jpg", dataset_name="/data/copies/cifar10_jpg")
    assert {(r.dataset_type, r.dataset_name) for r in card_eval_results(run_directory)} == {
        ("uoft-cs/cifar10", "CIFAR-10")}
    for item in run_directory.evaluation["eval_results"]:
        item.update(dataset_type="Salesforce/wikitext,/data/copies/snli_devtest/snli_validation.tsv",
                    dataset_name="wikitext2 + snli_validation.tsv")
    assert {(r.dataset_type, r.dataset_name) for r in card_eval_results(run_directory)} == {
        ("Salesforce/wikitext,stanfordnlp/snli", "WikiText-2 + SNLI")}
    for item in run_directory.evaluation["eval_results"]:  # a dataset hf_ssl does not know keeps the job's name
        item.update(dataset_type="mteb/stsbenchmark-sts", dataset_name="STS Benchmark")
    assert {(r.dataset_type, r.dataset_name) for r in card_eval_results(run_directory)} == {
        ("mteb/stsbenchmark-sts", "STS Benchmark")}


def test_the_reproduction_command_runs_on_another_machine(run_dir):
    """A recorded output folder that is absolute or temporary becomes outputs/<name>, and a local copy of a known
    dataset its Hub id (a file of the copy keeps its split); other values stay as recorded."""
    record = json.loads((run_dir / "hf_ssl_run.json").read_text())
    command = shlex.split(reproduce_command(record))
    assert command[command.index("--output_dir") + 1] == "outputs/dino-tiny" and str(run_dir) not in command
    argv = ["recipes/configs/mlm-bert-tiny-snli.yaml", "--output_dir", "/tmp/pytest-of-me/run/out", "--dataset",
            "/data/copies/wikitext2", "/data/copies/snli_devtest/snli_validation.tsv", "my_corpus.txt",
            "--sts_dataset=/data/copies/stsbenchmark", "--max_steps", "3"]
    command = shlex.split(reproduce_command({"argv": argv}))
    assert command[2:] == ["recipes/configs/mlm-bert-tiny-snli.yaml", "--output_dir", "outputs/out", "--dataset",
                           "Salesforce/wikitext", "stanfordnlp/snli?split=validation", "my_corpus.txt",
                           "--sts_dataset=sentence-transformers/stsb", "--max_steps", "3"]
    kept = ["x.yaml", "--output_dir", "outputs/mine", "--dataset", "embedded"]
    assert shlex.split(reproduce_command({"argv": kept}))[2:] == kept
    assert shlex.split(reproduce_command({"argv": ["x.yaml", "--output_dir=../tmp/run"]}))[2:] == [
        "x.yaml", "--output_dir=outputs/run"]
