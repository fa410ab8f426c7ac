"""Weighted k-nearest-neighbour classification of frozen features (Wu et al. 2018, "Unsupervised Feature Learning
via Non-Parametric Instance Discrimination", https://arxiv.org/abs/1805.01978; used as-is by DINO, Caron et al. 2021,
``eval_knn.py``): L2-normalised features, cosine similarity to a bank of labelled training features, the k most similar
neighbours vote for their class with weight ``exp(similarity / T)``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .features import FrozenFeatureEvaluator, check_features, count_classes
from .metrics import accuracy

#: The probe's defaults: k = 200 neighbours and T = 0.1 (Wu et al. 2018, §3.4; DINO's ``eval_knn.py`` reports 20 and
#: 200 with T = 0.07). Declared once: every kNN in hf_ssl (monitor, final comparison, ``hf-ssl evaluate``) uses them.
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted kNN classification (Wu et al. 2018, eq. 9; DINO ``eval_knn.py``).

    Features are L2-normalised; each test row takes its ``k`` most cosine-similar training rows
    ``s_1..s_k`` and predicts ``argmax_c sum_i exp(s_i / T) [label_i == c]``.

    Args:
        train_features: ``(N, D)`` feature bank.
        train_labels: ``(N,)`` class ids in ``[0, num_classes)``.
        test_features: ``(M, D)`` queries.
        k: neighbours per query (DINO: 20 or 200); clipped to ``N`` when larger.
        temperature: ``T`` in the vote weights (DINO: 0.07, Wu et al.: 0.07/0.1).
        num_classes: number of classes; defaults to ``train_labels.max() + 1``.
        chunk_size: test rows per similarity block; memory is ``O(chunk_size * N)``.

    Returns:
        ``(M,)`` int64 predicted class ids, on the device of ``test_features``.
    """
    check_features(train_features, train_labels, "train")
    check_features(test_features, None, "test")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features has {test_features.shape[1]} dimensions but train_features has "
            f"{train_features.shape[1]}; extract both with the same encoder."
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    num_classes = count_classes(train_labels, num_classes)
    device = test_features.device
    bank = F.normalize(train_features.to(device=device, dtype=torch.float32), dim=1)
    bank_labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, bank.shape[0])

    predictions = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        similarity, neighbours = (queries @ bank.T).topk(k, dim=1)  # (chunk, k), sorted high to low
        # exp(s / T), shifted by the row's largest similarity: the same argmax, but no overflow for small T.
        weights = torch.exp((similarity - similarity[:, :1]) / temperature)
        votes = torch.zeros(queries.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_labels[neighbours], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``(test_features (M, D), test_labels (M,))``, through ``evaluate``."""
    check_features(test_features, test_labels, "test")
    predictions = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
    )
    return accuracy(predictions, test_labels)


class KNNEvaluator(FrozenFeatureEvaluator):
    """Weighted kNN top-1 accuracy (:func:`knn_predict`) of a model's frozen features, as ``{"knn_top1": acc}``.

    Cheap to construct (datasets are only checked and, with ``max_*_examples``, index-subset); each call extracts
    features of both datasets with the current weights.

    Example::

        evaluator = KNNEvaluator(cifar_train, cifar_test, k=20, temperature=0.07, max_train_examples=10_000)
        evaluator(model)  # {"knn_top1": 0.71}
    """

    default_name = "knn"

    def __init__(
        self,
        train_dataset,
        eval_dataset,
        *,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        chunk_size: int = 1024,
        **kwargs,
    ):
        super().__init__(train_dataset, eval_dataset, **kwargs)
        if k < 1 or not temperature > 0:
            raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size

    def _score(self, train_features, train_labels, eval_features, eval_labels) -> float:
        return knn_accuracy(
            train_features,
            train_labels,
            eval_features,
            eval_labels,
            k=self.k,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
        )
