"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", arXiv:2002.05709, Eq. 1 and Algorithm 1)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize

from ..distributed import all_gather_with_grad, rank, world_size


class NTXentLoss(nn.Module):
    """NT-Xent / InfoNCE over the 2N views of a batch of N images, negatives from the global batch.

    With ``z`` the L2-normalised embeddings of all 2N views, ``sim(u, v) = u . v`` (cosine similarity), ``T`` the
    temperature and ``j(i)`` the other view of anchor ``i``'s image (Eq. 1):

        l(i) = - log [ exp(sim(z_i, z_j(i)) / T) / sum_{k != i} exp(sim(z_i, z_k) / T) ]
        loss = 1 / (2N) * sum_i l(i)

    so every anchor has one positive and 2N - 2 negatives (the other images' views, both of them). N is the *global*
    batch: both views' embeddings are gathered from every process with
    :func:`hf_ssl.distributed.all_gather_with_grad` (gradients flow back to the process that made them), and each
    process scores only its own 2n anchors against the 2N gathered candidates, so memory is ``O(n * N)``, linear in
    the global batch. The loss returned is the mean over the local anchors; averaging it over processes (what DDP does
    to the gradients) gives exactly the one-process loss of the N-image batch. Every process must pass the same
    local batch size n (all-gather needs equal shapes; ``dataloader_drop_last=True`` ensures it).

    Args:
        temperature: T (0.5 in the paper's CIFAR-10 experiments, 0.1 at ImageNet scale with large batches). Lower T
            weights hard negatives more.

    Inputs to ``forward``:
        z_a, z_b: ``(n, dim)`` projections of two views of the same n images; row i of ``z_a`` and row i of ``z_b``
            are a positive pair. Need not be normalised.

    Returns:
        ``(loss, stats)``: the scalar loss and detached diagnostics over the local batch, ``positive_similarity``
        (mean cosine of the positive pairs, 1 = views aligned) and ``negative_similarity`` (mean cosine to the
        negatives; near 1 as well means collapse).

    Related: InfoNCE / CPC (van den Oord et al. 2018) is the same cross-entropy; MoCo (He et al. 2020) takes the
    negatives from a queue of momentum-encoder keys instead of the batch; SupCon (Khosla et al. 2020) allows several
    positives per anchor.
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (e.g. 0.5 or 0.1), got {temperature}")
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if z_a.dim() != 2 or z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must both be (batch, dim) with the same shape (row i of each: two views of image i); "
                f"got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
            )
        local_batch = z_a.shape[0]
        processes = world_size()
        global_batch = local_batch * processes
        if global_batch < 2:
            raise ValueError(
                f"NT-Xent needs at least 2 images in the global batch (the negatives are the other images' views); "
                f"got {global_batch}. Increase per_device_train_batch_size."
            )
        z_a = normalize(z_a, dim=-1)
        z_b = normalize(z_b, dim=-1)
        anchors = torch.cat([z_a, z_b])  # (2n, dim): local view a, then local view b
        # (2N, dim): all processes' view a in rank order, then all processes' view b.
        candidates = torch.cat([all_gather_with_grad(z_a), all_gather_with_grad(z_b)])
        logits = anchors @ candidates.T / self.temperature  # (2n, 2N)

        # Global column of each local anchor: view a of local image i is column offset + i, view b N + offset + i.
        offset = rank() * local_batch
        local_index = torch.arange(local_batch, device=z_a.device) + offset
        self_columns = torch.cat([local_index, local_index + global_batch])
        positive_columns = torch.cat([local_index + global_batch, local_index])
        rows = torch.arange(2 * local_batch, device=z_a.device)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[rows, self_columns] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        loss = cross_entropy(logits, positive_columns)

        with torch.no_grad():
            positive = (z_a * z_b).sum(dim=-1).mean()
            negative_mask = ~self_mask
            negative_mask[rows, positive_columns] = False
            similarity = (anchors @ candidates.T).detach()
            negative = similarity[negative_mask].mean()
        return loss, {"positive_similarity": positive.detach(), "negative_similarity": negative}
