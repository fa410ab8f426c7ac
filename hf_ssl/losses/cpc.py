"""InfoNCE for k-step-ahead prediction, the loss of Contrastive Predictive Coding (van den Oord et al. 2018,
"Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748, Eq. 4) with the negative sampling of
its audio experiments and of wav2vec (Schneider et al. 2019, arXiv:1904.05862).

Two pieces: :func:`sample_negative_frames` draws the negatives (never a padded frame), :class:`CPCInfoNCELoss` scores
the predictions against the true future frame and those negatives.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

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
    transformers' wav2vec 2.0 loss does for identical codevectors. Negatives come from the local batch.

    Args:
        num_negatives: N (CPC's reference implementation: 128; wav2vec: 10).
        negative_sampling: see :func:`sample_negative_frames`.

    Inputs to ``forward``:
        predictions: ``(batch, frames, K, dim)``; ``predictions[b, t, k - 1]`` predicts ``targets[b, t + k]``.
        targets: ``(batch, frames, dim)`` encoder outputs z.
        frame_mask: ``(batch, frames)`` bool, True for real frames (a valid prefix per utterance).
        negative_indices: optional ``(batch, frames, N)`` flat indices into ``batch * frames`` (default: sampled).

    Returns:
        ``(loss, stats)``: the scalar loss and detached ``accuracy`` (fraction of predictions whose positive scores
        highest) and ``num_predictions``.
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
        if negative_indices is None:
            negative_indices = sample_negative_frames(frame_mask, self.num_negatives, self.negative_sampling)
        flat_targets = targets.reshape(batch * frames, dim)
        negatives = flat_targets[negative_indices]  # (B, T, N, dim)

        # Positive of (b, t, k): frame t + k of the same utterance; valid when both t and t + k are real frames.
        time = torch.arange(frames, device=targets.device)
        future = time[:, None] + torch.arange(1, steps + 1, device=targets.device)[None, :]  # (T, K)
        in_range = future < frames
        future = future.clamp_max(frames - 1)
        positives = targets[:, future]  # (B, T, K, dim)
        valid = frame_mask[:, :, None] & frame_mask[:, future] & in_range[None]  # (B, T, K)

        positive_logits = (predictions * positives).sum(-1, keepdim=True)  # (B, T, K, 1)
        negative_logits = torch.einsum("btkd,btnd->btkn", predictions, negatives)  # (B, T, K, N)
        positive_index = torch.arange(batch, device=targets.device)[:, None, None] * frames + future[None]  # (B,T,K)
        negative_logits = negative_logits.masked_fill(
            negative_indices[:, :, None, :] == positive_index[..., None], float("-inf")
        )
        logits = torch.cat([positive_logits, negative_logits], dim=-1)[valid]  # (P, 1 + N)
        if logits.shape[0] == 0:
            raise ValueError(
                "no (frame, future frame) pair in this batch: every utterance is at most 1 frame long after the "
                "convolutional encoder; use longer audio crops"
            )
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = cross_entropy(logits.float(), target)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == 0).float().mean()
        return loss, {"accuracy": accuracy, "num_predictions": torch.tensor(float(logits.shape[0]))}
