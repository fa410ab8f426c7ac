"""Out-of-distribution detection with frozen (self-supervised) features.

Scores (higher = more in-distribution), both on L2-normalised features and fitted on the in-distribution *train*
features only:

- ``knn``: minus the distance to the k-th nearest training feature (Sun et al. 2022, "Out-of-Distribution Detection
  with Deep Nearest Neighbors", https://arxiv.org/abs/2204.06507; k = 50 for CIFAR-10 with the whole training set,
  smaller k for a subsampled bank, k scaling with the sampled fraction);
- ``mahalanobis``: minus the smallest Mahalanobis distance to the class means (or, without labels, to k-means
  cluster means: SSD, Sehwag et al. 2021, https://arxiv.org/abs/2103.12051) under one covariance shared by all
  classes (the tied covariance of Lee et al. 2018, https://arxiv.org/abs/1807.03888; SSD's code fits one per
  cluster), inverted with the pseudo-inverse.

Metrics (:func:`ood_metrics`, through scikit-learn): AUROC and FPR at 95 % TPR, with the **in-distribution images
as the positive class**: FPR@95 is the share of out-of-distribution images scored above the threshold that keeps
95 % of the in-distribution images (lower is better).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .features import check_features

#: Sun et al. 2022's k for CIFAR-10 (whole training set as the bank).
DEFAULT_OOD_K = 50
#: The in-distribution recall at which the false-positive rate is read.
TPR_LEVEL = 0.95
OOD_SCORES = ("knn", "mahalanobis")


@torch.no_grad()
def knn_ood_scores(
    train_features: torch.Tensor, test_features: torch.Tensor, *, k: int = DEFAULT_OOD_K, chunk_size: int = 1024
) -> torch.Tensor:
    """``-||z - z_(k)||`` for every test row: minus the Euclidean distance between the L2-normalised test feature and
    its k-th nearest L2-normalised training feature (Sun et al. 2022). ``(N, D)``, ``(M, D)`` -> ``(M,)`` float64."""
    check_features(train_features, None, "train")
    check_features(test_features, None, "test")
    _check_dimensions(train_features, test_features)
    if not 1 <= k <= train_features.shape[0]:
        raise ValueError(f"k must be between 1 and the {train_features.shape[0]} train features, got {k}; lower "
                         "--ood_knn_k or use more train examples.")
    bank = F.normalize(train_features.double(), dim=1)
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].double(), dim=1)
        kth_similarity = (queries @ bank.T).topk(k, dim=1).values[:, -1]
        scores.append(-torch.sqrt((2.0 - 2.0 * kth_similarity).clamp_min(0.0)))  # |a - b|^2 = 2 - 2 cos for unit a, b
    return torch.cat(scores)


def cluster_assignments(features: torch.Tensor, num_clusters: int, seed: int = 0) -> torch.Tensor:
    """k-means cluster ids ``(N,)`` of L2-normalised ``features`` (scikit-learn ``KMeans``, 10 initialisations,
    ``random_state=seed``): SSD's stand-in for class labels. One cluster assigns every row to 0."""
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be a positive integer, got {num_clusters}.")
    if num_clusters == 1:
        return torch.zeros(features.shape[0], dtype=torch.long)
    from sklearn.cluster import KMeans

    normalised = F.normalize(features.double(), dim=1).numpy()
    kmeans = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed)
    return torch.from_numpy(kmeans.fit_predict(normalised).astype(np.int64))


@torch.no_grad()
def mahalanobis_statistics(
    train_features: torch.Tensor,
    *,
    train_labels: torch.Tensor | None = None,
    num_clusters: int = 1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means (C, D), precision (D, D))`` of the L2-normalised training features, float64.

    ``means`` are the means of each class (``train_labels``) or, without labels, of each of ``num_clusters``
    k-means clusters (:func:`cluster_assignments`); ``precision`` is the pseudo-inverse of the covariance of the
    training features around their own mean, shared by all classes (``1/N`` normalisation).
    """
    check_features(train_features, train_labels, "train")
    train = F.normalize(train_features.double(), dim=1)
    if train_labels is None:
        assignments = cluster_assignments(train, num_clusters, seed)
    else:
        assignments = torch.unique(train_labels.cpu(), return_inverse=True)[1]  # dense ids of the classes present
    one_hot = F.one_hot(assignments, int(assignments.max()) + 1).double()  # (N, C)
    means = (one_hot.T @ train) / one_hot.sum(dim=0)[:, None]
    centred = train - means[assignments]
    return means, torch.linalg.pinv(centred.T @ centred / train.shape[0], hermitian=True)


@torch.no_grad()
def mahalanobis_ood_scores(
    train_features: torch.Tensor,
    test_features: torch.Tensor,
    *,
    train_labels: torch.Tensor | None = None,
    num_clusters: int = 1,
    seed: int = 0,
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """``-min_c (z - mu_c)^T Sigma^+ (z - mu_c)`` for every L2-normalised test row ``z``, with the class (or
    cluster) means and shared covariance of :func:`mahalanobis_statistics` (pass ``statistics`` to reuse them).
    ``(N, D)``, ``(M, D)`` -> ``(M,)`` float64."""
    check_features(test_features, None, "test")
    _check_dimensions(train_features, test_features)
    if statistics is None:
        statistics = mahalanobis_statistics(train_features, train_labels=train_labels, num_clusters=num_clusters,
                                            seed=seed)
    means, precision = statistics
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].double(), dim=1)
        differences = queries[:, None, :] - means[None, :, :]  # (m, C, D)
        distances = ((differences @ precision) * differences).sum(dim=-1)  # (m, C)
        scores.append(-distances.min(dim=1).values)
    return torch.cat(scores)


def ood_metrics(in_scores, out_scores) -> dict[str, float]:
    """``{"auroc": ..., "fpr95": ...}`` of scores where higher means in-distribution; the in-distribution examples
    are the positive class. ``fpr95``: the false-positive rate at the first ROC point with TPR >= 0.95."""
    from sklearn.metrics import roc_auc_score, roc_curve

    in_scores, out_scores = _as_scores(in_scores, "in_scores"), _as_scores(out_scores, "out_scores")
    truth = np.concatenate([np.ones(in_scores.size), np.zeros(out_scores.size)])
    scores = np.concatenate([in_scores, out_scores])
    false_positive_rate, true_positive_rate, _ = roc_curve(truth, scores)
    at_level = int(np.searchsorted(true_positive_rate, TPR_LEVEL, side="left"))
    return {"auroc": float(roc_auc_score(truth, scores)), "fpr95": float(false_positive_rate[at_level])}


def ood_key(dataset: str, score: str, metric: str) -> str:
    """The result key of one pair, e.g. ``ood_fashion_mnist_knn_auroc``."""
    return f"ood_{dataset}_{score}_{metric}"


def ood_evaluation(
    train_features: torch.Tensor,
    in_features: torch.Tensor,
    ood_features: Mapping[str, torch.Tensor],
    *,
    train_labels: torch.Tensor | None = None,
    scores: Sequence[str] = OOD_SCORES,
    k: int = DEFAULT_OOD_K,
    num_clusters: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """AUROC and FPR@95 of each score for the in-distribution test features against each out-of-distribution set.

    Args:
        train_features: ``(N, D)`` in-distribution training features (the kNN bank, the means and covariance).
        in_features: ``(M, D)`` in-distribution test features (the positives).
        ood_features: ``{name: (M_o, D)}`` out-of-distribution features, one entry per data set.
        train_labels: ``(N,)`` class ids for the Mahalanobis class means; ``None``: k-means with ``num_clusters``.
        scores: any of :data:`OOD_SCORES`.
        k: the kNN score's neighbour rank.

    Returns:
        ``{ood_key(name, score, "auroc"): ..., ood_key(name, score, "fpr95"): ...}``.
    """
    scores = (scores,) if isinstance(scores, str) else tuple(scores)
    unknown = [score for score in scores if score not in OOD_SCORES]
    if unknown or not scores:
        raise ValueError(f"OOD scores must be a non-empty subset of {OOD_SCORES}, got {list(scores)}.")
    if not ood_features:
        raise ValueError("ood_features is empty; pass at least one out-of-distribution set, e.g. {'svhn': features}.")
    results: dict[str, float] = {}
    for score in scores:
        if score == "knn":
            def scorer(features):
                return knn_ood_scores(train_features, features, k=k)
        else:  # the means and covariance (k-means included) are fitted once, for every set
            statistics = mahalanobis_statistics(train_features, train_labels=train_labels,
                                                num_clusters=num_clusters, seed=seed)

            def scorer(features):
                return mahalanobis_ood_scores(train_features, features, statistics=statistics)
        in_scores = scorer(in_features)
        for name, features in ood_features.items():
            for metric, value in ood_metrics(in_scores, scorer(features)).items():
                results[ood_key(name, score, metric)] = value
    return results


def _as_scores(values, name: str) -> np.ndarray:
    array = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, one per example.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite scores; check the features for NaN values.")
    return array


def _check_dimensions(train_features: torch.Tensor, test_features: torch.Tensor) -> None:
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"test features have {test_features.shape[1]} dimensions but train features "
                         f"{train_features.shape[1]}; extract both with the same encoder.")
