"""DeepCluster's clustering step around training (Caron et al. 2018, "Deep Clustering for Unsupervised Learning of
Visual Features", arXiv:1807.05520, §3.2-3.3 and the reference code's ``clustering.py`` / ``util.py``).

- :func:`cluster_features`: features -> PCA whitening -> L2 normalisation -> k-means -> pseudo-labels. k-means is
  scikit-learn's ``KMeans`` (the paper uses faiss, which is not a dependency here; for the sizes this package trains
  on, scikit-learn's Lloyd iterations are fast enough), followed by :func:`split_empty_clusters`;
- :func:`split_empty_clusters`: the paper's handling of empty clusters (§3.3): an empty cluster takes the centroid of
  a random non-empty one, slightly perturbed, and the points of that cluster are shared between the two;
- :class:`ClusterBalancedSampler`: the training order, each example drawn with probability proportional to
  ``1 / |its cluster|``, so that every cluster is sampled about equally (§3.3, "uniform over the classes");
- :class:`ClusterReassignment`: the ``TrainerCallback`` that, at the start of every training epoch, extracts the
  features of the whole training set (evaluation transform, no augmentation) on process 0, clusters them, and
  broadcasts the pseudo-labels; every process then gives them to the model, which re-initialises its classifier, and
  the classifier's optimizer state is dropped.

One training epoch is one clustering period: the sampler draws ``reassign_every`` steps' worth of examples per epoch
(or the whole training set when ``reassign_every`` is 0, the paper's once per pass). Because the order of an epoch is
fixed by its assignments, which the checkpoint carries (``assignments``, ``assignment_epoch``), a run resumed in the
middle of an epoch skips the clustering and replays the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from torch.utils.data import Sampler
from transformers import TrainerCallback

from ..distributed import broadcast_object
from ..evaluation.features import extract_features

#: Relative perturbation of a split centroid (faiss's ``EPS = 1 / 1024``, which the reference code runs).
SPLIT_PERTURBATION = 1 / 1024


def cluster_features(
    features: torch.Tensor | np.ndarray,
    num_clusters: int,
    *,
    pca_dim: int = 256,
    l2_normalize: bool = True,
    iterations: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """Pseudo-labels ``(N,)`` int64 of ``features`` ``(N, D)``: PCA to ``min(pca_dim, N, D)`` dimensions with
    whitening (``pca_dim=0``: none), L2 normalisation of the rows (``l2_normalize``), k-means with ``num_clusters``
    centroids (scikit-learn, k-means++ init, ``iterations`` Lloyd iterations, seeded by ``seed``), then
    :func:`split_empty_clusters`. Raises when there are fewer examples than clusters."""
    data = np.asarray(features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features,
                      dtype=np.float32)
    if data.ndim != 2 or data.shape[0] < num_clusters:
        raise ValueError(f"clustering needs (N, D) features with N >= num_clusters ({num_clusters}); got "
                         f"{data.shape}: lower num_clusters or train on more examples")
    if pca_dim > 0:
        components = min(pca_dim, data.shape[0], data.shape[1])
        data = PCA(components, whiten=True, random_state=seed).fit_transform(data).astype(np.float32)
    if l2_normalize:
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(num_clusters, n_init=1, max_iter=iterations, random_state=seed).fit(data)
    _, labels = split_empty_clusters(data, kmeans.cluster_centers_, kmeans.labels_, np.random.default_rng(seed))
    return torch.from_numpy(labels.astype(np.int64))


def split_empty_clusters(
    features: np.ndarray, centroids: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Give every empty cluster points by splitting a non-empty one (Caron et al. 2018 §3.3, as faiss does).

    For each empty cluster ``c`` in turn: a cluster ``j`` with at least 2 points is drawn with probability
    proportional to ``|j| - 1``; ``c`` takes ``j``'s centroid scaled by ``1 + eps`` on even dimensions and ``1 - eps``
    on odd ones, ``j``'s centroid the opposite (``eps = 1/1024``); ``j``'s points go to the nearer of the two
    (identical points, equally near both, are shared half and half); both centroids become the means of their points.
    Clusters with no point to spare (every cluster a singleton) stay empty.

    ``features`` ``(N, D)``, ``centroids`` ``(k, D)``, ``labels`` ``(N,)``. Returns new ``(centroids, labels)``.
    """
    centroids = np.array(centroids, dtype=np.float64)
    labels = np.array(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(centroids))
    signs = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0) * SPLIT_PERTURBATION
    for empty in np.flatnonzero(counts == 0):
        spare = np.maximum(counts - 1, 0).astype(np.float64)
        if spare.sum() == 0:
            break
        split = rng.choice(len(counts), p=spare / spare.sum())
        centroids[empty] = centroids[split] * (1 + signs)
        centroids[split] = centroids[split] * (1 - signs)
        members = np.flatnonzero(labels == split)
        points = features[members].astype(np.float64)
        to_empty = (np.linalg.norm(points - centroids[empty], axis=1)
                    < np.linalg.norm(points - centroids[split], axis=1))
        if to_empty.all() or not to_empty.any():  # identical points: no side is nearer
            to_empty = np.arange(len(members)) % 2 == 1
        labels[members[to_empty]] = empty
        for cluster in (empty, split):
            centroids[cluster] = features[labels == cluster].mean(axis=0)
        counts = np.bincount(labels, minlength=len(centroids))
    return centroids, labels


class ClusterBalancedSampler(Sampler[int]):
    """``num_samples`` training indices per epoch, drawn with replacement with probability proportional to
    ``1 / |cluster of the example|`` (Caron et al. 2018 §3.3: sampling uniform over the pseudo-classes, which keeps a
    few huge clusters from dominating the classification). Examples with no pseudo-label (-1) are never drawn.

    The order depends on ``(seed, epoch)`` and the assignments only, the same on every process (accelerate shards its
    batches). :meth:`set_assignments` before each epoch (:class:`ClusterReassignment` does); :meth:`set_epoch`
    (``SSLTrainer`` calls it).
    """

    def __init__(self, num_samples: int, seed: int = 0):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self.assignments: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_assignments(self, assignments: torch.Tensor) -> None:
        self.assignments = assignments.detach().cpu().clone()

    def weights(self) -> torch.Tensor:
        """``(N,)`` float64: ``1 / |cluster|`` per example (0 without a pseudo-label)."""
        if self.assignments is None:
            raise ValueError("the sampler has no cluster assignments yet: call set_assignments (ClusterReassignment "
                             "does at each epoch's start)")
        labelled = self.assignments >= 0
        counts = torch.bincount(self.assignments[labelled])
        weights = torch.zeros(len(self.assignments), dtype=torch.float64)
        weights[labelled] = 1.0 / counts[self.assignments[labelled]].double()
        return weights

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.multinomial(self.weights(), self.num_samples, replacement=True, generator=generator).tolist())


class ClusterReassignment(TrainerCallback):
    """Re-clusters the training set at the start of every training epoch and hands the pseudo-labels to the model
    (``set_assignments``) and the :class:`ClusterBalancedSampler` (see the module docstring).

    Args:
        images: the training images (a ``datasets.Dataset`` with an ``image`` column), in the dataset order of the
            ``ssl_index`` the model receives.
        transform: image -> ``(C, H, W)`` tensor without augmentation (the probes' evaluation transform).
        sampler: the training order to update.
        seed: k-means, PCA and the classifier's re-initialisation are seeded by ``(seed, epoch)``.

    The model needs ``assignments``, ``assignment_epoch``, ``set_assignments`` and a ``method_config`` with
    ``num_clusters``, ``pca_dim``, ``l2_normalize``, ``kmeans_iterations`` and ``cluster_batch_size``
    (:class:`hf_ssl.methods.deepcluster.DeepClusterForPreTraining`). Features are extracted and clustered on process 0
    while the others wait for the broadcast (sharded FSDP models are not supported: every process would have to join
    the encoder's forward).
    """

    def __init__(self, images, transform, sampler: ClusterBalancedSampler, seed: int = 0):
        self.images = images
        self.transform = transform
        self.sampler = sampler
        self.seed = seed

    def on_epoch_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        model = getattr(model, "module", model)
        epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        if int(model.assignment_epoch) != epoch:  # a run resumed in this epoch already has its assignments
            labels = self.pseudo_labels(model, epoch) if state.is_world_process_zero else None
            labels = broadcast_object(labels)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            model.set_assignments(labels, epoch, generator)
            forget_optimizer_state(optimizer, model.classifier.parameters())
        self.sampler.set_assignments(model.assignments)

    def pseudo_labels(self, model, epoch: int) -> torch.Tensor:
        settings = model.method_config
        features, _ = extract_features(model.encoder, self.images, label_column=None, transform=self.transform,
                                       batch_size=settings.cluster_batch_size)
        return cluster_features(features, settings.num_clusters, pca_dim=settings.pca_dim,
                                l2_normalize=settings.l2_normalize, iterations=settings.kmeans_iterations,
                                seed=(self.seed * 1_000_003 + epoch) % 2**32)


def forget_optimizer_state(optimizer, parameters) -> None:
    """Drop the optimizer's state (Adam moments, momentum) of ``parameters``, which were just re-initialised."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if inner is None:
        return
    for parameter in parameters:
        inner.state.pop(parameter, None)
