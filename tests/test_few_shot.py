"""Few-shot episodes on frozen features (hf_ssl.evaluation.few_shot): sampling, classifiers, the interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hf_ssl.evaluation.few_shot import (
    FEW_SHOT_CLASSIFIERS,
    episode_accuracies,
    few_shot_evaluation,
    mean_confidence_interval,
    sample_episodes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _labels(classes: int = 8, per_class: int = 30) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(per_class)[torch.randperm(classes * per_class,
                                                                              generator=torch.Generator().manual_seed(0))]


def test_episodes_are_class_balanced_disjoint_and_seeded():
    labels = _labels()
    episodes = sample_episodes(labels, ways=5, shots=5, queries=15, episodes=50, seed=3)
    assert episodes.support.shape == (50, 25) and episodes.query.shape == (50, 75)
    values = labels.numpy()
    for episode in range(50):
        classes = episodes.classes[episode]
        assert len(set(classes.tolist())) == 5
        # class-major: position i of the support belongs to class classes[i // shots], likewise for queries
        assert (values[episodes.support[episode]] == classes[episodes.support_labels]).all()
        assert (values[episodes.query[episode]] == classes[episodes.query_labels]).all()
        assert not set(episodes.support[episode]) & set(episodes.query[episode])
        assert len(set(episodes.query[episode])) == 75
    again = sample_episodes(labels, ways=5, shots=5, queries=15, episodes=50, seed=3)
    assert np.array_equal(again.support, episodes.support) and np.array_equal(again.query, episodes.query)
    other = sample_episodes(labels, ways=5, shots=5, queries=15, episodes=50, seed=4)
    assert not np.array_equal(other.support, episodes.support)


def test_one_hot_class_features_give_perfect_accuracy_with_every_classifier():
    labels = _labels()
    features = F.one_hot(labels, 8).float()
    results = few_shot_evaluation(features, labels, shots=(1, 5), episodes=15)
    for shots in (1, 5):
        for classifier in FEW_SHOT_CLASSIFIERS:
            assert results[f"few_shot_5way_{shots}shot_{classifier}"] == 1.0
            assert results[f"few_shot_5way_{shots}shot_{classifier}_ci95"] == 0.0


def test_interval_is_1_96_std_over_sqrt_episodes():
    mean, interval = mean_confidence_interval([0.2, 0.4, 0.6, 1.0])
    assert mean == pytest.approx(0.55)
    assert interval == pytest.approx(1.96 * np.std([0.2, 0.4, 0.6, 1.0]) / math.sqrt(4))
    generator = torch.Generator().manual_seed(1)
    labels = _labels()
    features = torch.randn(len(labels), 16, generator=generator) + 1.5 * F.one_hot(labels, 16).float()
    results = few_shot_evaluation(features, labels, shots=(1,), episodes=60, classifiers=("prototype",), seed=7)
    accuracies = episode_accuracies(features, sample_episodes(labels, shots=1, episodes=60, seed=7), "prototype")
    assert 0.2 < results["few_shot_5way_1shot_prototype"] < 1.0  # informative but noisy features
    assert results["few_shot_5way_1shot_prototype"] == pytest.approx(accuracies.mean())
    assert results["few_shot_5way_1shot_prototype_ci95"] == pytest.approx(1.96 * accuracies.std() / math.sqrt(60))


def test_prototype_and_logistic_match_a_naive_episode_loop():
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(2)
    labels = _labels()
    features = torch.randn(len(labels), 12, generator=generator) + F.one_hot(labels, 12).float()
    episodes = sample_episodes(labels, shots=3, queries=4, episodes=10, seed=0)
    unit = F.normalize(features, dim=1).numpy()
    prototype, logistic = [], []
    for support, query in zip(episodes.support, episodes.query):
        centres = np.stack([unit[support[episodes.support_labels == c]].mean(0) for c in range(5)])
        nearest = np.argmin(((unit[query][:, None] - centres[None]) ** 2).sum(-1), axis=1)
        prototype.append((nearest == episodes.query_labels).mean())
        fitted = LogisticRegression(max_iter=1000).fit(unit[support], episodes.support_labels)
        logistic.append((fitted.predict(unit[query]) == episodes.query_labels).mean())
    np.testing.assert_allclose(episode_accuracies(features, episodes, "prototype"), prototype)
    np.testing.assert_allclose(episode_accuracies(features, episodes, "logistic"), logistic)
    separated = features + 3 * F.one_hot(labels, 12).float()  # the support-trained cosine classifier learns it
    assert episode_accuracies(separated, episodes, "cosine").mean() > 0.9


def test_too_few_classes_and_unknown_classifiers_are_refused():
    labels = torch.arange(3).repeat_interleave(20)
    with pytest.raises(ValueError, match="need 5 classes"):
        sample_episodes(labels, ways=5)
    with pytest.raises(ValueError, match="prototype"):
        few_shot_evaluation(torch.zeros(60, 4), labels, ways=2, classifiers=("svm",))
