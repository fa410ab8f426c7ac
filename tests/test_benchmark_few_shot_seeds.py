"""The few-shot / OOD seed summary (benchmarks/few_shot_ood_seeds.py) reads both kinds of record, averages each
metric over the seeds, and refuses runs evaluated with another protocol or a seed given twice."""

import json

import pytest
from conftest import benchmark_script

PROTOCOL = ("--dataset uoft-cs/cifar10 --probes few_shot ood --few_shot_episodes 600 --max_test_examples 3000 "
            "--ood_knn_k 3")


@pytest.fixture(scope="module")
def seeds_script():
    return benchmark_script("few_shot_ood_seeds")


def few_shot_ood_record(path, checkpoint, accuracy, auroc, protocol=PROTOCOL, baselines=False):
    few_shot = {"pretrained": {"few_shot_5way_5shot_logistic": accuracy, "few_shot_5way_5shot_logistic_ci95": 0.01}}
    ood = {"pretrained": {"ood_fashion_mnist_mahalanobis_auroc": auroc}}
    if baselines:
        few_shot["random_init"] = {"few_shot_5way_5shot_logistic": 0.33}
        ood["random_init"] = {"ood_fashion_mnist_mahalanobis_auroc": 0.64}
    path.write_text(json.dumps({"checkpoint": checkpoint, "few_shot": few_shot, "ood": ood,
                                "evaluate_command": f"hf-ssl evaluate {checkpoint} {protocol}"}))
    return path


def reference_record(path, checkpoint, accuracy, auroc):
    """What benchmarks/reference_cards.sh writes: the evaluation under ``few_shot_ood``, with the card flags."""
    inner = json.loads(few_shot_ood_record(path, checkpoint, accuracy, auroc, baselines=True).read_text())
    command = f"hf-ssl evaluate {checkpoint} {PROTOCOL} --compare_random_init --update_card"
    path.write_text(json.dumps({"methods": {}, "few_shot_ood": {"command": command, "few_shot": inner["few_shot"],
                                                                "ood": inner["ood"]}}))
    return path


def test_mean_and_spread_over_seeds_from_both_kinds_of_record(seeds_script, tmp_path):
    runs = [("simclr", 42, reference_record(tmp_path / "a.json", "runs/simclr", 0.40, 0.90)),
            ("simclr", 0, few_shot_ood_record(tmp_path / "b.json", "runs/simclr-seed0", 0.38, 0.80)),
            ("simclr", 1, few_shot_ood_record(tmp_path / "c.json", "runs/simclr-seed1", 0.36, 0.85))]

    result = seeds_script.summarise(runs)

    summary = result["methods"]["simclr"]["summary"]
    assert summary["few_shot_5way_5shot_logistic"] == {"mean": 0.38, "std": 0.02, "min": 0.36, "max": 0.40,
                                                       "seeds": 3}
    assert summary["ood_fashion_mnist_mahalanobis_auroc"]["mean"] == pytest.approx(0.85)
    assert "few_shot_5way_5shot_logistic_ci95" not in summary  # an episode interval, not a seed statistic
    assert result["methods"]["simclr"]["seeds"]["42"]["checkpoint"] == "runs/simclr"
    assert result["baselines"]["random_init"] == {"few_shot_5way_5shot_logistic": 0.33,
                                                  "ood_fashion_mnist_mahalanobis_auroc": 0.64}


def test_another_protocol_or_a_repeated_seed_is_refused(seeds_script, tmp_path):
    first = few_shot_ood_record(tmp_path / "a.json", "runs/a", 0.40, 0.90)
    other = few_shot_ood_record(tmp_path / "b.json", "runs/b", 0.38, 0.80, protocol=PROTOCOL.replace("600", "100"))
    with pytest.raises(SystemExit, match="another protocol"):
        seeds_script.summarise([("simclr", 0, first), ("simclr", 1, other)])
    with pytest.raises(SystemExit, match="given twice"):
        seeds_script.summarise([("simclr", 0, first), ("simclr", 0, first)])
