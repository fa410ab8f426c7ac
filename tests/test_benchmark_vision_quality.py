"""The vision benchmark (benchmarks/vision_quality.py) rewrites a run's probes in its eval_results.json without
dropping the few-shot and OOD results that ``hf-ssl evaluate --update_card`` recorded there for the card."""

import json

import pytest
from conftest import benchmark_script

ENTRY = {"knn_top1": 0.31, "linear_probe_top1": 0.42, "steps": 12}
BASELINES = {"random_init": {"knn_top1": 0.28, "linear_probe_top1": 0.37}}


@pytest.fixture(scope="module")
def vision_quality():
    return benchmark_script("vision_quality")


def test_probes_are_rewritten_and_protocol_sections_kept(vision_quality, tmp_path):
    few_shot = {"pretrained": {"few_shot_5way_5shot_logistic": 0.35, "few_shot_5way_5shot_logistic_ci95": 0.01}}
    ood = {"pretrained": {"ood_mahalanobis_auroc_vs_emoji": 0.9}}
    few_shot_entry = {"task_type": "image-classification", "task_name": "few-shot image classification",
                      "dataset_type": "uoft-cs/cifar10", "dataset_name": "CIFAR-10", "metric_type": "accuracy",
                      "metric_value": 0.35, "dataset_split": "test", "metric_name": "5-way 5-shot, logistic"}
    stale_probe = {"task_type": "image-classification", "dataset_type": "uoft-cs/cifar10", "dataset_name": "CIFAR-10",
                   "metric_type": "accuracy", "metric_value": 0.01, "dataset_split": "test",
                   "metric_name": "kNN top-1 (an older bank)"}
    (tmp_path / "eval_results.json").write_text(json.dumps({
        "pretraining_steps": 3, "probes": {"pretrained": {"knn_top1": 0.01}}, "few_shot": few_shot, "ood": ood,
        "eval_results": [stale_probe, few_shot_entry]}))

    vision_quality.write_eval_results(tmp_path, ENTRY, BASELINES, bank=100, dataset="uoft-cs/cifar10")

    written = json.loads((tmp_path / "eval_results.json").read_text())
    assert written["pretraining_steps"] == 12
    assert written["probes"]["pretrained"] == {"knn_top1": 0.31, "linear_probe_top1": 0.42}
    assert written["few_shot"] == few_shot and written["ood"] == ood
    names = [result["metric_name"] for result in written["eval_results"]]
    assert "kNN top-1 (an older bank)" not in names and "5-way 5-shot, logistic" in names
    values = {result["metric_value"] for result in written["eval_results"] if not result.get("task_name")}
    assert values == {0.31, 0.42}


def test_a_run_without_eval_results_gets_the_probes_only(vision_quality, tmp_path):
    vision_quality.write_eval_results(tmp_path, ENTRY, BASELINES, bank=100, dataset="uoft-cs/cifar10")
    written = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(written) == {"pretraining_steps", "probes", "eval_results"} and len(written["eval_results"]) == 2
