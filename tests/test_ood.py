"""Out-of-distribution detection with frozen features (hf_ssl.evaluation.ood), and ``hf-ssl evaluate --probes
few_shot ood`` on a tiny ViT, recorded in the checkpoint's card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from hf_ssl.cli import main as cli_main
from hf_ssl.evaluation.ood import (
    knn_ood_scores,
    mahalanobis_ood_scores,
    ood_evaluation,
    ood_metrics,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_identical_distributions_give_chance_auroc():
    rng = np.random.default_rng(0)
    metrics = ood_metrics(rng.normal(size=20_000), rng.normal(size=20_000))
    assert abs(metrics["auroc"] - 0.5) < 0.01  # the AUROC's standard error here is about 0.003
    assert abs(metrics["fpr95"] - 0.95) < 0.02
    generator = torch.Generator().manual_seed(0)
    train, inside, same = (torch.randn(n, 16, generator=generator) for n in (3000, 2000, 2000))
    results = ood_evaluation(train, inside, {"same": same}, train_labels=torch.arange(3000) % 4, k=10)
    for score in ("knn", "mahalanobis"):
        assert abs(results[f"ood_same_{score}_auroc"] - 0.5) < 0.04


def test_separable_scores_give_auroc_1_and_fpr95_0_and_the_threshold_is_read_at_95_percent_tpr():
    inside, outside = np.arange(100.0), np.array([2.5, 50.5, 200.0])
    assert ood_metrics(np.arange(100.0) + 1000, np.arange(50.0)) == {"auroc": 1.0, "fpr95": 0.0}
    assert ood_metrics(np.arange(50.0), np.arange(100.0) + 1000) == {"auroc": 0.0, "fpr95": 1.0}
    # 95% of the positives (in-distribution) score >= 5; of the negatives, 50.5 and 200 do too
    assert ood_metrics(inside, outside)["fpr95"] == pytest.approx(2 / 3)
    generator = torch.Generator().manual_seed(1)
    train = torch.randn(400, 8, generator=generator) + torch.tensor([6.0] + [0.0] * 7)
    near = torch.randn(300, 8, generator=generator) + torch.tensor([6.0] + [0.0] * 7)
    far = torch.randn(300, 8, generator=generator) - torch.tensor([6.0] + [0.0] * 7)
    results = ood_evaluation(train, near, {"far": far}, k=5, num_clusters=2)
    for score in ("knn", "mahalanobis"):
        assert results[f"ood_far_{score}_auroc"] == 1.0 and results[f"ood_far_{score}_fpr95"] == 0.0


def test_mahalanobis_matches_a_naive_per_example_formula():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(90) % 3
    train = torch.randn(90, 5, generator=generator) + 2 * F.one_hot(labels, 5).float()
    test = torch.randn(7, 5, generator=generator)
    unit = F.normalize(train.double(), dim=1).numpy()
    means = [unit[labels.numpy() == c].mean(axis=0) for c in range(3)]
    shared = sum(np.outer(x - means[c], x - means[c]) for x, c in zip(unit, labels.numpy())) / len(unit)
    precision = np.linalg.pinv(shared)
    expected = []
    for z in F.normalize(test.double(), dim=1).numpy():
        expected.append(-min(float((z - mean) @ precision @ (z - mean)) for mean in means))
    scores = mahalanobis_ood_scores(train, test, train_labels=labels, chunk_size=3)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6)
    # without labels and one cluster: one Gaussian around the mean of all training features
    single = np.cov(unit.T, bias=True)
    mean = unit.mean(axis=0)
    expected = [-float((z - mean) @ np.linalg.pinv(single) @ (z - mean)) for z in F.normalize(test.double(), dim=1)
                .numpy()]
    np.testing.assert_allclose(mahalanobis_ood_scores(train, test, num_clusters=1).numpy(), expected, rtol=1e-6)


def test_knn_score_is_minus_the_kth_neighbour_distance_of_normalised_features():
    generator = torch.Generator().manual_seed(3)
    train, test = torch.randn(50, 6, generator=generator), torch.randn(4, 6, generator=generator)
    distances = torch.cdist(F.normalize(test, dim=1).double(), F.normalize(train, dim=1).double())
    expected = -distances.sort(dim=1).values[:, 6]  # the 7th nearest
    torch.testing.assert_close(knn_ood_scores(train, test, k=7), expected)
    with pytest.raises(ValueError, match="ood_knn_k"):
        knn_ood_scores(train, test, k=51)


def _write_images(folder, count: int, colour, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")


def test_evaluate_cli_runs_few_shot_and_ood_against_random_init_and_records_them_in_the_card(tmp_path, capsys):
    from conftest import tiny_dino

    checkpoint = tmp_path / "run"
    tiny_dino().save_pretrained(checkpoint)
    (checkpoint / "hf_ssl_run.json").write_text(json.dumps({"job": "image", "data": {"dataset": "my_images"}}))
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, count in (("train", 6), ("test", 4)):
        for seed, (name, colour) in enumerate(colours.items()):
            _write_images(tmp_path / "images" / split / name, count, colour, seed + 10 * count)
    _write_images(tmp_path / "grey", 8, (128, 128, 128), 99)
    flags = ["--dataset", str(tmp_path / "images"), "--probes", "few_shot", "ood", "--few_shot_ways", "2",
             "--few_shot_shots", "1", "2", "--few_shot_queries", "2", "--few_shot_episodes", "5",
             "--ood_datasets", str(tmp_path / "grey"), "--ood_knn_k", "3"]
    assert cli_main(["evaluate", str(checkpoint), *flags]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) >= {"few_shot_2way_1shot_prototype", "few_shot_2way_2shot_logistic_ci95",
                           "ood_grey_knn_auroc", "ood_grey_mahalanobis_fpr95"}
    assert all(0.0 <= value <= 1.0 for value in scores.values())

    assert cli_main(["evaluate", str(checkpoint), *flags, "--compare_random_init", "--update_card"]) == 0
    printed = capsys.readouterr().out
    assert "| `ood_grey_knn_auroc` |" in printed and "random_init" in printed and "raw_pixels" in printed
    recorded = json.loads((checkpoint / "eval_results.json").read_text())
    assert set(recorded["few_shot"]) == set(recorded["ood"]) == {"pretrained", "random_init", "raw_pixels"}
    assert recorded["few_shot"]["pretrained"] == {k: v for k, v in scores.items() if k.startswith("few_shot")}
    names = [result["metric_name"] for result in recorded["eval_results"]]
    assert len(names) == 2 * 3 + 2 * 2  # 2 shot counts x 3 classifiers; 2 scores x (AUROC, FPR@95)
    assert any(name.startswith("2-way 1-shot, nearest prototype") for name in names)
    card = (checkpoint / "README.md").read_text()
    assert "few-shot image classification" in card and "out-of-distribution detection vs" in card
    assert " ± " in card and "FPR at 95% TPR vs grey" in card
    # evaluating again replaces the entries instead of adding copies
    assert cli_main(["evaluate", str(checkpoint), *flags, "--update_card"]) == 0
    assert len(json.loads((checkpoint / "eval_results.json").read_text())["eval_results"]) == len(names)
    capsys.readouterr()
    assert cli_main(["evaluate", str(checkpoint), "--dataset", str(tmp_path / "images"), "--probes", "ood"]) == 1
    assert "--ood_datasets" in capsys.readouterr().err  # one line that names the fix
