"""The recipe / CLI job: argument parsing, overrides, bad input, and a short end-to-end run on real images."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_ssl.cli import main as cli_main
from hf_ssl.jobs.image import EMBEDDED_DEFAULTS
from hf_ssl.jobs.image import build_image_model as build_model
from hf_ssl.jobs.runner import parse_arguments, run
from hf_ssl.methods import METHOD_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
# Pretraining recipes (the semi-supervised ones, <method>-<backbone>-<dataset>-<labels>.yaml, are tested beside their
# trainer in test_semi_supervised.py).
CONFIGS = [path for path in sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
           if path.name.split("-")[0] in METHOD_REGISTRY]


def test_config_file_then_flags_override_it(tmp_path):
    config = tmp_path / "dino-test.yaml"
    config.write_text(yaml.safe_dump({"method": "dino", "out_dim": 128, "global_crop_size": 16, "output_dir": "x"}))
    encoder, data, views, method, training = parse_arguments([str(config), "--out_dim", "64", "--max_steps", "3"])
    assert method.out_dim == 64 and views.global_crop_size == 16 and training.max_steps == 3
    assert training.remove_unused_columns is False and training.dataloader_drop_last is True


def test_no_config_file_means_the_embedded_default():
    encoder, data, views, method, training = parse_arguments(["--max_steps", "2"])
    assert data.dataset == "embedded" and training.max_steps == 2
    assert method.out_dim == EMBEDDED_DEFAULTS["out_dim"]


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_recipe_config_parses_and_builds(path):
    method_name = path.name.split("-")[0]
    assert method_name in METHOD_REGISTRY, "configs are named <method>-<backbone>-<dataset>.yaml"
    *job_arguments, method, training = parse_arguments([str(path), "--output_dir", "unused"])
    assert type(method).method == method_name
    if METHOD_REGISTRY[method_name].pretraining_job == "image":  # other jobs build from data; their tests do that
        encoder, data, views = job_arguments
        model = build_model(encoder, views, method)
        assert model.method_config == method


def test_unknown_method_and_missing_config_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        parse_arguments(["--method", "not-a-method"])
    with pytest.raises(FileNotFoundError, match="recipes/configs"):
        parse_arguments(["does-not-exist.yaml"])


def test_impossible_patch_size_is_refused():
    encoder, data, views, method, training = parse_arguments(["--patch_size", "5", "--global_crop_size", "28"])
    with pytest.raises(ValueError, match="patch_size 5 does not tile 28 px"):
        build_model(encoder, views, method)


def test_text_dataset_is_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("just words")
    with pytest.raises(ValueError):
        run(["--dataset", str(folder), "--output_dir", str(tmp_path / "out"), "--max_steps", "1"])


TINY_RUN = [
    "--max_steps", "2", "--per_device_train_batch_size", "16", "--max_train_examples", "64",
    "--max_eval_examples", "40", "--knn_k", "10", "--encoder_config_overrides",
    '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
    "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--num_local_crops", "2", "--save_steps", "1",
    "--final_probes", "knn", "--disable_tqdm", "true",
]


def record_global_batch(output_dir) -> int:
    return json.loads((output_dir / "hf_ssl_run.json").read_text())["global_batch_size"]


def test_end_to_end_run_saves_a_vanilla_loadable_model(tmp_path, capsys):
    out = tmp_path / "run"
    results = run(["--output_dir", str(out), *TINY_RUN])
    printed = capsys.readouterr().out
    assert "world size: 1, per-device batch: 16, global batch: 16" in printed
    assert f"Saved the model, its run record (hf_ssl_run.json), evaluation and model card (README.md) to {out}" in printed
    assert record_global_batch(out) == 16
    assert set(results) == {"pretrained", "random_init", "raw_pixels"}
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["ssl_config"]["method"] == "dino"
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["method"]["out_dim"] == 64 and "hub_token" not in record["training"]
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["pretraining_steps"] == 2 and saved["probes"]["pretrained"]["knn_top1"] >= 0


def test_cli_help_and_list(capsys):
    assert cli_main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert cli_main(["list"]) == 0
    assert "dino" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2


def test_console_script_is_installed():
    completed = subprocess.run([sys.executable, "-m", "hf_ssl.cli", "list"], capture_output=True, text=True)
    assert completed.returncode == 0 and "--out_dim" in completed.stdout


def test_pretraining_continues_from_a_saved_model_and_the_cli_evaluates_it(tmp_path, capsys):
    import torch

    from hf_ssl import AutoSSLModel

    first, second = tmp_path / "first", tmp_path / "second"
    run(["--output_dir", str(first), *TINY_RUN, "--final_comparison", "false"])
    # learning rate 0: if the second run starts from the first run's weights, its student stays exactly there
    run(["--output_dir", str(second), *TINY_RUN, "--final_comparison", "false", "--init_from", str(first),
         "--learning_rate", "0"])
    before, after = AutoSSLModel.from_pretrained(first), AutoSSLModel.from_pretrained(second)
    for key, value in before.student_encoder.state_dict().items():
        torch.testing.assert_close(after.student_encoder.state_dict()[key], value, msg=key)
    assert not torch.equal(before.loss_fn.center, after.loss_fn.center)  # the centre kept moving
    capsys.readouterr()
    assert cli_main(["evaluate", str(second), "--dataset", "embedded", "--probes", "knn", "--knn_k", "10",
                     "--max_train_examples", "100"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["knn_top1"] <= 1


def test_crops_below_the_encoder_resolution_train_cheaply_and_publish_at_image_size(tmp_path):
    """--image_size 28 with 14 px crops: the encoder is a 28 px model (vanilla loading, eval at 28 px), trained on
    the cheaper 14 px crops through interpolated position embeddings."""
    import torch
    from transformers import AutoModel

    out = tmp_path / "run"
    run(["--output_dir", str(out), *TINY_RUN, "--global_crop_size", "14", "--local_crop_size", "7",
         "--image_size", "28", "--final_comparison", "false"])
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 28 and config["patch_size"] == 7
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["encoder"]["image_size"] == 28 and record["views"]["global_crop_size"] == 14
    encoder = AutoModel.from_pretrained(out)
    assert encoder(pixel_values=torch.zeros(1, 3, 28, 28)).last_hidden_state.shape[1] == 1 + 4 * 4


def test_image_size_below_the_training_crops_is_refused():
    encoder, data, views, method, training = parse_arguments(["--image_size", "14", "--global_crop_size", "28"])
    with pytest.raises(ValueError, match="image_size 14 is smaller than global_crop_size 28"):
        build_model(encoder, views, method)


def test_a_training_time_budget_stops_the_run_and_saves_it(tmp_path):
    from hf_ssl.training.callbacks import TrainingTimeBudget

    out = tmp_path / "run"
    run(["--output_dir", str(out), *TINY_RUN, "--max_steps", "50", "--max_train_minutes", "1e-6",
         "--final_comparison", "false"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 50
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-1").is_dir()
    with pytest.raises(ValueError, match="positive minutes"):
        TrainingTimeBudget(0)
