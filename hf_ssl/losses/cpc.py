"""InfoNCE for k-step-ahead prediction, the loss of Contrastive Predictive Coding (van den Oord et al. 2018,
"Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748, Eq. 4) with the negative sampling of
its audio experiments and of wav2vec (Schneider et al. 2019, arXiv:1904.05862).

Two pieces: :func:`sample_negative_frames` draws the negatives (never a padded frame), :class:`CPCInfoNCELoss` scores
the predictions against the true future frame and those negatives.

Data parallel: the candidate frames are gathered from every process (with gradients) and the negatives drawn from the
global batch with a seed shared by all processes, so N processes with one shard each compute exactly the loss and
(DDP-averaged) gradients of one process with the whole batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy, pad

from ..distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_sum,
    rank,
    world_size,
)

NEGATIVE_SAMPLING_MODES = ("batch", "same_utterance", "other_utterances")


def sample_negative_frames(
    frame_mask: torch.Tensor,
    num_negatives: int,
    mode: str = "batch",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_negatives`` negative frames for every frame of a padded batch, uniformly among valid frames.

    Args:
        frame_mask: ``(batch, frames)`` bool, True for real (not padded) frames.
        num_negatives: N, negatives per anchor frame (shared by the K prediction steps of that anchor, as in the
            reference CPC audio implementation).
        mode: where the negatives come from.

            - ``"batch"``: any valid frame of the batch, this utterance's and the others' (CPC's "mixed speaker"
              sampling, the default of the paper's audio experiments);
            - ``"same_utterance"``: only the anchor's own utterance (wav2vec 1.0; CPC's "same speaker" ablation);
            - ``"other_utterances"``: only the other utterances of the batch.
        generator: optional ``torch.Generator`` (default: the global RNG, which the trainer checkpoints).

    Returns:
        ``(batch, frames, N)`` int64 indices into the flattened ``(batch * frames)`` frames; every index points at a
        frame with ``frame_mask`` True. Rows of padded anchors are filled too (with valid frames) and must be ignored.
    """
    if frame_mask.dim() != 2 or frame_mask.dtype != torch.bool:
        raise ValueError(
            f"frame_mask must be a (batch, frames) bool tensor, got {frame_mask.dtype} {tuple(frame_mask.shape)}"
        )
    if mode not in NEGATIVE_SAMPLING_MODES:
        raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING_MODES}, got {mode!r}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    batch, frames = frame_mask.shape
    device = frame_mask.device
    pool = frame_mask.flatten().nonzero().squeeze(1)  # (M,) flat indices of the valid frames, utterance by utterance
    lengths = frame_mask.sum(dim=1)  # (B,)
    starts = torch.cumsum(lengths, 0) - lengths  # (B,) where each utterance's frames begin in `pool`
    total = pool.numel()
    if mode == "same_utterance" and int(lengths.min()) < 2:
        raise ValueError("same_utterance negatives need at least 2 valid frames in every utterance; use longer audio")
    if mode == "other_utterances" and batch < 2:
        raise ValueError("other_utterances negatives need at least 2 utterances per batch; increase the batch size")
    if total < 2:
        raise ValueError("the batch has fewer than 2 valid frames: nothing to contrast with; use longer audio")

    uniform = torch.rand((batch, frames, num_negatives), generator=generator, device=device)
    if mode == "batch":
        position = (uniform * total).long()
    elif mode == "same_utterance":
        position = starts[:, None, None] + (uniform * lengths[:, None, None]).long()
    else:  # other_utterances: skip the anchor's own block of the pool
        position = (uniform * (total - lengths)[:, None, None]).long()
        position = position + (position >= starts[:, None, None]) * lengths[:, None, None]
    position = position.clamp_max(total - 1)  # guards against rand() rounding up to 1.0 in low precision
    return pool[position]


class CPCInfoNCELoss(nn.Module):
    """InfoNCE over K future steps with sampled negatives (CPC Eq. 4).

    For every valid anchor frame t of utterance b and every step k = 1..K with t + k still a valid frame, the
    prediction ``p = W_k c_t`` scores the true future ``z_{t+k}`` against N sampled negatives ``z_n``:

        l(b, t, k) = - log [ exp(p . z_{t+k}) / (exp(p . z_{t+k}) + sum_n exp(p . z_n)) ]
        loss = mean over all valid (b, t, k)

    The score is the log-bilinear ``f_k = exp(z^T W_k c_t)`` of the paper (no temperature). A negative that *is* the
    positive frame (possible because negatives are shared across the K steps) is removed from that row, as
    transformers' wav2vec 2.0 loss does for identical codevectors.

    Across processes (``torch.distributed``): negatives come from the *global* batch, the shards of every process
    gathered in rank order with gradients (:func:`gather_candidate_frames`), and are drawn for the whole global batch
    from a seed that rank 0 takes from its RNG and shares, each process keeping its own rows, so an utterance gets the
    same negatives whichever process holds it. Each process divides its summed loss by the global prediction count
    over the number of processes: DDP's gradient average is then the gradient of the global mean, and the mean of the
    processes' losses is the one-process loss.

    Args:
        num_negatives: N (CPC's reference implementation: 128; wav2vec: 10).
        negative_sampling: see :func:`sample_negative_frames`.

    Inputs to ``forward``:
        predictions: ``(batch, frames, K, dim)``; ``predictions[b, t, k - 1]`` predicts ``targets[b, t + k]``.
        targets: ``(batch, frames, dim)`` encoder outputs z.
        frame_mask: ``(batch, frames)`` bool, True for real frames (a valid prefix per utterance).
        negative_indices: optional ``(batch, frames, N)`` flat indices into the frames of the batch, ``batch * frames``
            on one process (across processes: into the gathered ``global_batch * max_frames``; default: sampled).

    Returns:
        ``(loss, stats)``: the scalar loss and detached ``accuracy`` (fraction of the global batch's predictions whose
        positive scores highest) and ``num_predictions`` (of the global batch).
    """

    def __init__(self, num_negatives: int = 128, negative_sampling: str = "batch"):
        super().__init__()
        if negative_sampling not in NEGATIVE_SAMPLING_MODES:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING_MODES}, got {negative_sampling!r}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives
        self.negative_sampling = negative_sampling

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}, negative_sampling={self.negative_sampling!r}"

    def forward(
        self,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        frame_mask: torch.Tensor,
        negative_indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, frames, steps, dim = predictions.shape
        if targets.shape != (batch, frames, dim) or frame_mask.shape != (batch, frames):
            raise ValueError(
                f"predictions (batch, frames, K, dim) = {tuple(predictions.shape)} needs targets (batch, frames, dim) "
                f"and frame_mask (batch, frames); got {tuple(targets.shape)} and {tuple(frame_mask.shape)}"
            )
        candidates, candidate_mask, first_row = gather_candidate_frames(targets, frame_mask)  # (B_g, T_g, dim)
        global_frames = candidate_mask.shape[1]
        if negative_indices is None:
            global_indices = sample_negative_frames(
                candidate_mask, self.num_negatives, self.negative_sampling, generator=_shared_generator(targets.device)
            )
            negative_indices = global_indices[first_row : first_row + batch, :frames]
        negatives = candidates.reshape(-1, dim)[negative_indices]  # (B, T, N, dim)

        # Positive of (b, t, k): frame t + k of the same utterance; valid when both t and t + k are real frames.
        time = torch.arange(frames, device=targets.device)
        future = time[:, None] + torch.arange(1, steps + 1, device=targets.device)[None, :]  # (T, K)
        in_range = future < frames
        future = future.clamp_max(frames - 1)
        positives = targets[:, future]  # (B, T, K, dim)
        valid = frame_mask[:, :, None] & frame_mask[:, future] & in_range[None]  # (B, T, K)

        positive_logits = (predictions * positives).sum(-1, keepdim=True)  # (B, T, K, 1)
        negative_logits = torch.einsum("btkd,btnd->btkn", predictions, negatives)  # (B, T, K, N)
        rows = first_row + torch.arange(batch, device=targets.device)
        positive_index = rows[:, None, None] * global_frames + future[None]  # (B, T, K) in the gathered frames
        negative_logits = negative_logits.masked_fill(
            negative_indices[:, :, None, :] == positive_index[..., None], float("-inf")
        )
        logits = torch.cat([positive_logits, negative_logits], dim=-1)[valid]  # (P, 1 + N)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == 0).sum()
            counts = all_reduce_sum(torch.stack([correct.new_tensor(logits.shape[0]), correct]).float())
        if counts[0] == 0:
            raise ValueError(
                "no (frame, future frame) pair in this batch: every utterance is at most 1 frame long after the "
                "convolutional encoder; use longer audio crops"
            )
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        # Sum over this process's predictions / (global count / processes): DDP's average is the global mean.
        loss = cross_entropy(logits.float(), target, reduction="sum") * (world_size() / float(counts[0]))
        return loss, {"accuracy": counts[1] / counts[0], "num_predictions": counts[0].cpu()}


def gather_candidate_frames(
    targets: torch.Tensor, frame_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The frames of the global batch, negatives' candidates: every process's ``(batch, frames, dim)`` shard,
    gathered in rank order with gradients and padded to the longest shard's frames.

    Returns ``(candidates, candidate_mask, first_row)``: ``(global_batch, max_frames, dim)``, its ``(global_batch,
    max_frames)`` bool mask of real frames, and the row where this process's utterances start. Shards may differ in
    batch size and frames (each collator pads to its own longest utterance). One process: the inputs and 0.
    """
    if world_size() == 1:
        return targets, frame_mask, 0
    batch, frames, _ = targets.shape
    sizes = all_gather_no_grad(torch.tensor([[batch, frames]], device=targets.device))  # (world, 2)
    max_batch, max_frames = (int(size) for size in sizes.max(dim=0).values)
    padding = (0, max_frames - frames, 0, max_batch - batch)
    gathered = all_gather_with_grad(pad(targets, (0, 0, *padding)))  # (world * max_batch, max_frames, dim)
    gathered_mask = all_gather_no_grad(pad(frame_mask.to(torch.uint8), padding)).bool()
    shard_sizes = sizes[:, 0].tolist()
    keep = torch.cat(
        [torch.arange(size, device=targets.device) + shard * max_batch for shard, size in enumerate(shard_sizes)]
    )
    return gathered[keep], gathered_mask[keep], sum(shard_sizes[: rank()])


def _shared_generator(device: torch.device) -> torch.Generator:
    """A generator seeded from rank 0's global RNG (the trainer seeds and checkpoints it), the same on every process."""
    seed = torch.randint(2**62, (1,))
    if world_size() > 1:
        seed = all_gather_no_grad(seed.to(device))[0].cpu()
    return torch.Generator(device=device).manual_seed(int(seed))
