"""MoCo losses: InfoNCE against a queue of momentum keys (MoCo v1/v2: He et al. 2020, "Momentum Contrast for
Unsupervised Visual Representation Learning", arXiv:1911.05722, Eq. 1 and Algorithm 1; Chen et al. 2020, "Improved
Baselines with Momentum Contrastive Learning", arXiv:2003.04297) and the in-batch contrastive loss of MoCo v3 (Chen,
Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers", arXiv:2104.02057, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize

from ..distributed import all_gather_no_grad, rank


class MoCoQueueLoss(nn.Module):
    """InfoNCE of queries against their positive key and a queue of negative keys (MoCo, He et al. 2020 Eq. 1).

    With ``q`` and ``k+`` the L2-normalised query and its key (another view of the same image, from the momentum
    encoder), ``k_1..k_K`` the queue and ``T`` the temperature:

        l(q) = - log [ exp(q . k+ / T) / (exp(q . k+ / T) + sum_{i=1..K} exp(q . k_i / T)) ]

    averaged over the local queries. No gradient reaches the keys or the queue (the key encoder is updated by EMA).

    The queue is a buffer of this module, ``queue`` ``(K, dim)`` (rows L2-normalised, random at init as in the
    reference code) with the write position ``queue_ptr``: both are in the owning model's ``state_dict``, so every
    checkpoint carries them and a resumed run continues with the same negatives.

    :meth:`enqueue` gathers the keys of **all** processes (rank order) and writes them at the pointer, replacing the
    oldest keys; every process then holds the same queue. ``K`` must be a multiple of the number of keys enqueued
    per step (so a write never straddles the end), else ``ValueError``.

    Args:
        dim: key dimension (the projection dimension, 128 in MoCo v2).
        queue_size: K (65536 in the paper).
        temperature: T (0.2 in MoCo v2; 0.07 in MoCo v1).
    """

    def __init__(self, dim: int, queue_size: int = 65536, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (e.g. 0.2), got {temperature}")
        if dim < 1 or queue_size < 1:
            raise ValueError(f"dim and queue_size must be >= 1, got {dim} and {queue_size}")
        self.temperature = temperature
        self.register_buffer("queue", normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"queue_size={self.queue.shape[0]}, dim={self.queue.shape[1]}, temperature={self.temperature}"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``q``: ``(n, dim)`` queries (with gradient), ``k``: ``(n, dim)`` their positive keys. Need not be
        normalised. Returns ``(loss, stats)`` with detached ``positive_similarity`` / ``negative_similarity``."""
        if q.dim() != 2 or q.shape != k.shape or q.shape[1] != self.queue.shape[1]:
            raise ValueError(
                f"q and k must both be (batch, {self.queue.shape[1]}) (row i of each: two views of image i); "
                f"got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        q = normalize(q, dim=1)
        k = normalize(k.detach(), dim=1)
        # A copy: enqueue() later writes the buffer in place, which must not touch what backward needs.
        queue = self.queue.detach().clone().to(q.dtype)
        positive = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
        negative = q @ queue.T  # (n, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = cross_entropy(logits, labels)
        stats = {"positive_similarity": positive.detach().mean(), "negative_similarity": negative.detach().mean()}
        return loss, stats

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Gather ``keys`` from every process and write them into the queue at the pointer (oldest replaced).

        ``keys``: ``(n, dim)``, or a sequence of such tensors (one per view); each is gathered separately and the
        results concatenated, so the queue order (view 0 of every process in rank order, then view 1, ...) is the
        one a single process with the whole global batch would write.
        """
        parts = [keys] if isinstance(keys, torch.Tensor) else list(keys)
        gathered = torch.cat([all_gather_no_grad(normalize(part.detach(), dim=1)) for part in parts])
        size = self.queue.shape[0]
        count = gathered.shape[0]
        if size % count != 0:
            raise ValueError(
                f"queue_size ({size}) must be a multiple of the keys enqueued per step ({count} = views x "
                f"per_device_train_batch_size x processes); set queue_size to a multiple of {count}, e.g. "
                f"{max(count, size // count * count)}"
            )
        pointer = int(self.queue_ptr)
        self.queue[pointer : pointer + count] = gathered.to(self.queue.dtype)
        self.queue_ptr.fill_((pointer + count) % size)


class MoCoV3Loss(nn.Module):
    """MoCo v3's contrastive loss (Chen, Xie & He 2021, Algorithm 1 ``ctr``): in-batch InfoNCE.

    Local queries ``q`` ``(n, dim)`` are scored against the keys ``k`` of the whole global batch, gathered from every
    process without gradient (``(N, dim)``, rank order); the positive of local query ``i`` on process ``r`` is key
    ``r * n + i``:

        l(q_i) = - log [ exp(q_i . k_{i} / T) / sum_{j=1..N} exp(q_i . k_j / T) ]
        ctr(q, k) = 2 T * mean_i l(q_i)

    (the factor ``2 T`` as in the paper's pseudo-code). The mean over local rows, averaged over processes by DDP,
    equals the one-process loss of the global batch. No queue.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (e.g. 0.2), got {temperature}")
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if q.dim() != 2 or q.shape != k.shape:
            raise ValueError(
                f"q and k must both be (batch, dim) with the same shape (row i of each: two views of image i); "
                f"got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        local_batch = q.shape[0]
        q = normalize(q, dim=1)
        keys = all_gather_no_grad(normalize(k.detach(), dim=1)).to(q.dtype)  # (N, dim)
        if keys.shape[0] < 2:
            raise ValueError("MoCo v3 needs at least 2 images in the global batch; increase per_device_train_batch_size")
        logits = q @ keys.T / self.temperature  # (n, N)
        labels = torch.arange(local_batch, device=q.device) + rank() * local_batch
        loss = cross_entropy(logits, labels) * (2 * self.temperature)
        with torch.no_grad():
            similarity = logits.detach() * self.temperature
            positive_mask = torch.zeros_like(similarity, dtype=torch.bool)
            positive_mask[torch.arange(local_batch, device=q.device), labels] = True
            stats = {
                "positive_similarity": similarity[positive_mask].mean(),
                "negative_similarity": similarity[~positive_mask].mean(),
            }
        return loss, stats
