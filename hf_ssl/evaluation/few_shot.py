"""Few-shot classification of frozen features: N-way K-shot episodes sampled from a labelled (test) split.

The protocol of "A Closer Look at Few-Shot Learning" (Chen et al. 2019, https://arxiv.org/abs/1904.04232) and
"Rethinking Few-Shot Image Classification" (Tian et al. 2020, https://arxiv.org/abs/2003.11539): each episode draws
``ways`` classes, ``shots`` support and ``queries`` query images of each (support and query disjoint), a classifier is
fitted on the support features only, and the query accuracy is averaged over ``episodes`` episodes, reported as
mean ± 1.96 · std / sqrt(episodes) (the 95 % confidence interval of Chen et al.'s code, ``np.std`` over episodes).

Features are extracted once; every episode is a set of row indices into that feature matrix, so 600 episodes take
seconds. Episodes are seeded by ``(seed, ways, shots)`` only: every encoder probed on the same split sees the same
episodes, and every classifier the same support and query sets (paired comparisons).

Classifiers (:data:`FEW_SHOT_CLASSIFIERS`):

- ``prototype``: nearest class prototype (Snell et al. 2017, https://arxiv.org/abs/1703.05175), squared Euclidean
  distance between L2-normalised features and the mean of each class's L2-normalised support features;
- ``cosine``: a cosine classifier trained on the support set (Chen et al. 2019's baseline++ head:
  ``logits = s · cos(x, w_c)``, scale ``s`` = :data:`COSINE_SCALE`), initialised at the normalised prototypes
  (weight imprinting) and trained with cross-entropy for :data:`COSINE_STEPS` full-batch Adam steps (Chen et al.
  start from random weights and use mini-batch SGD; starting at the prototypes makes it deterministic and never worse
  at step 0). All episodes train at once as one batched tensor;
- ``logistic``: scikit-learn ``LogisticRegression`` (L-BFGS, C = 1, ``max_iter`` 1000) on L2-normalised support
  features, as Tian et al. 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .features import check_features, check_image_dataset, extract_features

#: Chen et al. 2019 / Tian et al. 2020 defaults: 5-way 1-shot and 5-shot, 15 queries per class, 600 episodes.
DEFAULT_WAYS = 5
DEFAULT_SHOTS = (1, 5)
DEFAULT_QUERIES = 15
DEFAULT_EPISODES = 600
FEW_SHOT_CLASSIFIERS = ("prototype", "cosine", "logistic")
#: z of the two-sided 95 % normal interval.
CONFIDENCE_Z = 1.96
#: The cosine classifier's logit scale (baseline++ uses 2 for few classes, 10 for many; 10 trains faster) and steps.
COSINE_SCALE = 10.0
COSINE_STEPS = 100
COSINE_LEARNING_RATE = 0.01


@dataclass(frozen=True)
class Episodes:
    """Row indices of ``E`` episodes into one feature matrix.

    ``classes`` ``(E, ways)`` original class ids; ``support`` ``(E, ways * shots)`` and ``query``
    ``(E, ways * queries)`` row indices, class-major: the episode label of position ``i`` is ``i // shots`` (support)
    or ``i // queries`` (query), i.e. ``support_labels`` / ``query_labels``, the same for every episode.
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    support_labels: np.ndarray
    query_labels: np.ndarray


def sample_episodes(
    labels: torch.Tensor | np.ndarray,
    *,
    ways: int = DEFAULT_WAYS,
    shots: int = 1,
    queries: int = DEFAULT_QUERIES,
    episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
) -> Episodes:
    """Sample ``episodes`` class-balanced ``ways``-way ``shots``-shot episodes from ``labels`` ``(N,)``.

    Classes with fewer than ``shots + queries`` examples are never drawn. Seeded by ``(seed, ways, shots, queries)``:
    the same labels give the same episodes.
    """
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries), ("episodes", episodes)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("labels must be a non-empty 1-D array of class ids (one per feature row).")
    needed = shots + queries
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= needed]
    if len(eligible) < ways:
        raise ValueError(
            f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes of at least {needed} "
            f"examples; the split has {len(eligible)} such classes. Lower --few_shot_ways/--few_shot_queries or use a "
            "larger split."
        )
    members = {int(c): np.flatnonzero(labels == c) for c in eligible}
    rng = np.random.default_rng([seed, ways, shots, queries])
    chosen = np.empty((episodes, ways), dtype=np.int64)
    support = np.empty((episodes, ways, shots), dtype=np.int64)
    query = np.empty((episodes, ways, queries), dtype=np.int64)
    for episode in range(episodes):
        chosen[episode] = rng.choice(eligible, size=ways, replace=False)
        for position, label in enumerate(chosen[episode]):
            picked = rng.choice(members[int(label)], size=needed, replace=False)
            support[episode, position], query[episode, position] = picked[:shots], picked[shots:]
    return Episodes(
        classes=chosen,
        support=support.reshape(episodes, ways * shots),
        query=query.reshape(episodes, ways * queries),
        support_labels=np.repeat(np.arange(ways), shots),
        query_labels=np.repeat(np.arange(ways), queries),
    )


def prototype_predict(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int):
    """Nearest prototype (Snell et al. 2017) on L2-normalised features, batched over episodes.

    ``support`` ``(E, S, D)``, ``support_labels`` ``(S,)`` in ``[0, ways)``, ``query`` ``(E, Q, D)`` ->
    ``(E, Q)`` predicted episode labels.
    """
    prototypes = _prototypes(F.normalize(support, dim=-1), support_labels, ways)
    return torch.cdist(F.normalize(query, dim=-1), prototypes).argmin(dim=-1)


def cosine_classifier_predict(
    support: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    ways: int,
    *,
    scale: float = COSINE_SCALE,
    steps: int = COSINE_STEPS,
    lr: float = COSINE_LEARNING_RATE,
) -> torch.Tensor:
    """A baseline++ cosine classifier (Chen et al. 2019) trained on each episode's support set, batched.

    Weights ``(E, ways, D)`` start at the normalised prototypes; ``steps`` full-batch Adam steps minimise the sum over
    episodes of each episode's mean cross-entropy of ``scale · cos(x, w_c)`` (Adam is elementwise, so episodes do not
    interact). Shapes as :func:`prototype_predict`.
    """
    support = F.normalize(support.float(), dim=-1)
    weights = nn.Parameter(F.normalize(_prototypes(support, support_labels, ways), dim=-1).clone())
    optimizer = torch.optim.Adam([weights], lr=lr)
    targets = support_labels.expand(support.shape[0], -1)
    with torch.enable_grad():
        for _ in range(steps):
            logits = scale * support @ F.normalize(weights, dim=-1).transpose(1, 2)  # (E, S, ways)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / targets.shape[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (F.normalize(query.float(), dim=-1) @ F.normalize(weights, dim=-1).transpose(1, 2)).argmax(dim=-1)


def logistic_regression_predict(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int):
    """scikit-learn ``LogisticRegression`` on L2-normalised features (Tian et al. 2020), one fit per episode.
    Shapes as :func:`prototype_predict`."""
    from sklearn.linear_model import LogisticRegression

    support = F.normalize(support.double(), dim=-1).numpy()
    query = F.normalize(query.double(), dim=-1).numpy()
    labels = support_labels.numpy()
    predictions = np.empty(query.shape[:2], dtype=np.int64)
    for episode in range(support.shape[0]):
        classifier = LogisticRegression(max_iter=1000, random_state=0)
        predictions[episode] = classifier.fit(support[episode], labels).predict(query[episode])
    return torch.from_numpy(predictions)


#: How each classifier is named in results and cards.
CLASSIFIER_DESCRIPTIONS = {
    "prototype": "nearest prototype on L2-normalised features",
    "cosine": "cosine classifier (baseline++) trained on the support set",
    "logistic": "logistic regression on L2-normalised features",
}
#: ``name -> predict(support (E, S, D), support_labels (S,), query (E, Q, D), ways) -> (E, Q)``.
CLASSIFIERS: dict[str, Callable[..., torch.Tensor]] = {
    "prototype": prototype_predict,
    "cosine": cosine_classifier_predict,
    "logistic": logistic_regression_predict,
}


def mean_confidence_interval(accuracies: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(mean, 1.96 · std / sqrt(n))`` of per-episode accuracies (``std`` with ``ddof=0``, as Chen et al.)."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("accuracies must be a non-empty 1-D sequence, one value per episode.")
    return float(values.mean()), float(CONFIDENCE_Z * values.std() / math.sqrt(values.size))


def episode_accuracies(
    features: torch.Tensor,
    episodes: Episodes,
    classifier: str | Callable[..., torch.Tensor],
    *,
    chunk_size: int = 100,
) -> np.ndarray:
    """Query accuracy of ``classifier`` (a name in :data:`CLASSIFIERS` or a predict function) in every episode:
    ``(E,)`` float64. Episodes are classified ``chunk_size`` at a time (memory ``O(chunk_size * queries * D)``; every
    classifier treats episodes independently, so the chunking does not change the result)."""
    predict = CLASSIFIERS[classifier] if isinstance(classifier, str) else classifier
    features = features.detach().float().cpu()
    ways = episodes.classes.shape[1]
    support_labels = torch.from_numpy(episodes.support_labels)
    correct = []
    for start in range(0, episodes.support.shape[0], chunk_size):
        support = features[torch.from_numpy(episodes.support[start : start + chunk_size])]  # (e, ways * shots, D)
        query = features[torch.from_numpy(episodes.query[start : start + chunk_size])]
        correct.append(predict(support, support_labels, query, ways).cpu().numpy() == episodes.query_labels[None, :])
    return np.concatenate(correct).mean(axis=1).astype(np.float64)


def few_shot_key(ways: int, shots: int, classifier: str) -> str:
    """The result key of one setting, e.g. ``few_shot_5way_1shot_prototype`` (its interval: ``..._ci95``)."""
    return f"few_shot_{ways}way_{shots}shot_{classifier}"


def few_shot_evaluation(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    ways: int = DEFAULT_WAYS,
    shots: Sequence[int] = DEFAULT_SHOTS,
    queries: int = DEFAULT_QUERIES,
    episodes: int = DEFAULT_EPISODES,
    classifiers: Sequence[str] = FEW_SHOT_CLASSIFIERS,
    seed: int = 0,
) -> dict[str, float]:
    """Mean query accuracy and its 95 % interval for every shot count and classifier.

    Args:
        features: ``(N, D)`` frozen features of a labelled split (the test split: episodes must not come from the
            data a probe trained on); labels: ``(N,)`` class ids.
        ways, shots, queries, episodes: the episode settings (:func:`sample_episodes`); one episode set per shot
            count, shared by all classifiers.
        classifiers: names in :data:`FEW_SHOT_CLASSIFIERS`.
        seed: episode seed.

    Returns:
        ``{few_shot_key(ways, k, c): mean, few_shot_key(ways, k, c) + "_ci95": half-width}`` for each ``k``, ``c``.
    """
    check_features(features, labels, "few_shot")
    classifiers = check_classifiers(classifiers)
    shots = (shots,) if isinstance(shots, int) else tuple(shots)
    if not shots:
        raise ValueError("shots must name at least one shot count, e.g. (1, 5).")
    results: dict[str, float] = {}
    for shot in shots:
        episode_set = sample_episodes(labels, ways=ways, shots=shot, queries=queries, episodes=episodes, seed=seed)
        for classifier in classifiers:
            mean, interval = mean_confidence_interval(episode_accuracies(features, episode_set, classifier))
            key = few_shot_key(ways, shot, classifier)
            results[key], results[f"{key}_ci95"] = mean, interval
    return results


def check_classifiers(classifiers: Sequence[str]) -> tuple[str, ...]:
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    unknown = [name for name in classifiers if name not in CLASSIFIERS]
    if unknown or not classifiers:
        raise ValueError(f"few-shot classifiers must be a non-empty subset of {FEW_SHOT_CLASSIFIERS}, got "
                         f"{list(classifiers)}.")
    return classifiers


class FewShotEvaluator:
    """Few-shot accuracy of a model's frozen features on ``dataset`` (:func:`few_shot_evaluation`), as an evaluator
    (``model -> {metric: value}``) for ``SSLTrainer(evaluators=[...])``; every call extracts features with the
    current weights and scores the same episodes.

    Example::

        FewShotEvaluator(cifar_test, shots=(1, 5), episodes=600)(model)  # {"few_shot_5way_1shot_prototype": ...}
    """

    def __init__(
        self,
        dataset,
        *,
        transform: Callable[[Any], torch.Tensor] | None = None,
        batch_size: int = 256,
        image_column: str = "image",
        label_column: str = "label",
        **settings,
    ):
        check_image_dataset(dataset, image_column, "dataset")
        if label_column not in dataset.column_names:
            raise ValueError(f"dataset has no label column {label_column!r} (columns: {dataset.column_names}); pass "
                             "label_column=<name of the integer class column>.")
        check_classifiers(settings.get("classifiers", FEW_SHOT_CLASSIFIERS))
        self.dataset, self.transform, self.batch_size = dataset, transform, batch_size
        self.image_column, self.label_column, self.settings = image_column, label_column, settings

    def __call__(self, model: nn.Module) -> dict[str, float]:
        features, labels = extract_features(model, self.dataset, image_column=self.image_column,
                                            label_column=self.label_column, batch_size=self.batch_size,
                                            transform=self.transform)
        return few_shot_evaluation(features, labels, **self.settings)


def _prototypes(support: torch.Tensor, support_labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means ``(E, ways, D)`` of ``support`` ``(E, S, D)``."""
    one_hot = F.one_hot(support_labels.long(), ways).to(support.dtype)  # (S, ways)
    return (one_hot.T @ support) / one_hot.sum(dim=0)[:, None]
