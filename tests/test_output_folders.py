"""One run per output folder: a folder holding a run is refused before anything loads, unless the new run resumes it
(``--resume_from_checkpoint``, ``true`` for its last checkpoint) or replaces it (``--overwrite``, which deletes the
old run's files and only those); a checkpoint trained by another method is refused before its weights are read."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import TrainerCallback

from hf_ssl.cli import main
from hf_ssl.jobs.runner import run
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.errors import UsageError
from hf_ssl.training.output_dir import checkpoint_method, prepare_output_dir, run_files

TINY = [
    "--max_steps", "2", "--per_device_train_batch_size", "16", "--max_train_examples", "64", "--max_eval_examples",
    "40", "--knn_k", "10", "--encoder_config_overrides",
    '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
    "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--num_local_crops", "2", "--save_steps", "1",
    "--final_comparison", "false", "--eval_strategy", "no", "--disable_tqdm", "true",
]


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    """A finished two-step DINO run with checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("dino") / "run"
    run(["--output_dir", str(out), *TINY])
    return out


class _StartingStep(TrainerCallback):
    """Notes the step training starts from (a resumed run: its checkpoint's)."""

    step = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


def _old_run(folder):
    """A folder as an earlier run left it, with files of the user's beside it."""
    for step in (1, 5, 9):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"old")
    for name in ("model.safetensors", "ssl_state.safetensors", "config.json", "hf_ssl_run.json", "eval_results.json",
                 "trainer_state.json"):
        (folder / name).write_text("{}")
    (folder / "README.md").write_text("the old run's card")
    (folder / "attention_maps.png").write_bytes(b"old figure")
    (folder / "runs" / "old-events").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "my_data").mkdir()
    (folder / "my_data" / "config.json").write_text("{}")
    return folder


def test_a_folder_holding_a_run_is_refused_before_anything_loads(tmp_path, capsys):
    out = _old_run(tmp_path / "run")
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    with pytest.raises(UsageError) as refused:
        run(["--output_dir", str(out), *TINY])
    message = str(refused.value)
    assert "already holds a run" in message and "checkpoint-9" in message
    assert "--resume_from_checkpoint" in message and "--overwrite" in message and "--output_dir" in message
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before  # nothing written, nothing deleted
    assert main(["pretrain", "--output_dir", str(out), *TINY]) == 2  # the CLI: that message on one line
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--overwrite" in error


def test_a_folder_without_a_run_is_accepted(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.json").write_text("{}")  # a config alone is no model
    assert prepare_output_dir(SSLTrainingArguments(output_dir=str(tmp_path), report_to="none"), "dino") is None
    assert (tmp_path / "notes.txt").is_file()


def test_overwrite_deletes_the_old_run_and_only_it(tmp_path):
    out = _old_run(tmp_path / "run")
    # No attention maps in the new run, so a figure left in the folder can only be the old run's.
    run(["--output_dir", str(out), *TINY, "--overwrite", "--save_total_limit", "1", "--attention_map_images", "0"])
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-2"]  # no old checkpoint survives
    assert not (out / "attention_maps.png").exists() and not (out / "runs").exists()
    assert (out / "ssl_state.safetensors").read_bytes() != b"{}"  # the new run's method state, not the old one's
    assert (out / "README.md").read_text() != "the old run's card"
    assert json.loads((out / "hf_ssl_run.json").read_text())["training"]["overwrite_output_dir"] is True
    assert (out / "notes.txt").read_text() == "mine" and (out / "my_data" / "config.json").is_file()
    assert {path.name for path in run_files(out)} >= {"checkpoint-2", "model.safetensors", "hf_ssl_run.json"}
    assert "notes.txt" not in {path.name for path in run_files(out)}


def test_resume_true_continues_from_the_last_checkpoint(dino_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(dino_run, out)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["RunMethodRecord"]["args"] == {"method": "dino", "job": "image"}
    start = _StartingStep()
    run(["--output_dir", str(out), *TINY, "--max_steps", "3", "--resume_from_checkpoint", "true"], callbacks=[start])
    assert start.step == 2  # resumed from checkpoint-2, not a new run from step 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["training"]["resume_from_checkpoint"] == str(out / "checkpoint-2")


def test_resume_true_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"--resume_from_checkpoint true found no checkpoint-N folder in .*empty"):
        run(["--output_dir", str(tmp_path / "empty"), *TINY, "--resume_from_checkpoint", "true"])
    with pytest.raises(UsageError, match="no such checkpoint folder"):
        run(["--output_dir", str(tmp_path / "empty"), *TINY, "--resume_from_checkpoint", str(tmp_path / "nope")])


def test_a_checkpoint_of_another_method_is_refused_before_loading(dino_run, tmp_path):
    checkpoint = dino_run / "checkpoint-2"
    with pytest.raises(UsageError, match="was trained with dino, not simclr: resume it with --method dino"):
        run(["--method", "simclr", "--output_dir", str(dino_run), "--resume_from_checkpoint", str(checkpoint),
             "--max_steps", "3"])
    earlier = tmp_path / "earlier" / "checkpoint-7"  # a pretraining checkpoint without the record: its config tells
    earlier.mkdir(parents=True)
    (earlier / "config.json").write_text(json.dumps({"model_type": "vit", "ssl_config": {"method": "byol"}}))
    assert checkpoint_method(earlier) == ("byol", None)
    # A semi-supervised checkpoint's config.json is a classifier's: the record in its trainer state tells.
    semi = tmp_path / "semi" / "checkpoint-4"
    semi.mkdir(parents=True)
    (semi / "trainer_state.json").write_text(json.dumps(
        {"stateful_callbacks": {"RunMethodRecord": {"args": {"method": "fixmatch", "job": "semi_text"}}}}))
    assert checkpoint_method(semi) == ("fixmatch", "semi_text")
    with pytest.raises(UsageError, match="trained with fixmatch, not mean_teacher"):
        run(["--method", "mean_teacher", "--output_dir", str(semi.parent), "--resume_from_checkpoint", "true"])
    with pytest.raises(UsageError, match="fixmatch's semi_text job, not its semi_image job"):
        run(["--method", "fixmatch", "--output_dir", str(semi.parent), "--resume_from_checkpoint", "true"])


def test_overwrite_and_resume_from_the_same_folder_contradict(dino_run):
    with pytest.raises(UsageError, match="drop one of the two flags"):
        run(["--output_dir", str(dino_run), *TINY, "--overwrite", "--resume_from_checkpoint", "true"])


def test_the_trainer_itself_refuses_a_checkpoint_of_another_method(dino_run, tmp_path, embedded_images):
    """Code that drives SSLTrainer directly gets the same refusal from ``train(resume_from_checkpoint=...)``."""
    from conftest import tiny_vit_config

    from hf_ssl import SimCLRForPreTraining
    from hf_ssl.training import SSLTrainer
    from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

    views = MultiCropConfig(global_crop_size=16, local_crop_size=8, num_local_crops=0)
    dataset = apply_views(embedded_images["train"].select(range(16)), MultiCropTransform(views))
    model = SimCLRForPreTraining.from_encoder_config(tiny_vit_config(16))
    trainer = SSLTrainer(model=model, train_dataset=dataset, args=SSLTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=3, use_cpu=True, report_to="none"))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(UsageError, match="trained with dino, not simclr"):
        trainer.train(resume_from_checkpoint=str(dino_run / "checkpoint-2"))
    assert all(value.equal(before[name]) for name, value in model.state_dict().items())  # nothing was loaded
