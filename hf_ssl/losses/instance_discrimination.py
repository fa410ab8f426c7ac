"""Non-parametric instance discrimination against a memory bank (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", arXiv:1805.01978, §3.1-3.4).

Every training example ``i`` is its own class. Its class "weight" is ``v_i``, the L2-normalised 128-d feature of that
example kept in a memory bank ``V`` ``(N, dim)``; a feature ``f`` (normalised) of example ``i`` is scored against the
bank with temperature ``T``:

    P(i | f) = exp(v_i . f / T) / Z,    Z = sum_{j=1..N} exp(v_j . f / T)                       (Eq. 2)

- ``objective="softmax"``: the full non-parametric softmax, ``-log P(i | f)`` (Eq. 2, every bank entry scored);
- ``objective="nce"`` (the paper's): noise-contrastive estimation with ``m`` noise samples drawn uniformly from the
  bank (``P_n = 1 / N``) and ``Z`` treated as a constant, estimated once by Monte Carlo on the first batch,
  ``Z ~ N * mean_j exp(v_j . f / T)`` (Eq. 8, over every score of that batch, as the reference code does), after which
  ``P(i | f) = exp(v_i . f / T) / Z``. With ``h(i, f) = P(i | f) / (P(i | f) + m P_n)``:

      J_NCE = - log h(i, f) - sum_{k=1..m} log(1 - h(j_k, f))                                   (Eq. 6-7)

  averaged over the batch. The positive's score uses its bank entry ``v_i``, as in the paper and its code.
- proximal regularisation (§3.4, Eq. 10), optional: ``+ lambda * ||f_i - v_i||^2``, with ``v_i`` the bank entry before
  this step's update (``proximal_weight = lambda``; 0 turns it off).

After the loss, :meth:`MemoryBankLoss.update` writes the batch into the bank with momentum ``m`` (§3.4):
``v_i <- normalise(m v_i + (1 - m) f_i)`` (``momentum = 0.5`` in the paper and its code).

Several processes: each scores its own rows; :meth:`update` gathers ``(index, feature)`` from every process (rank
order) before writing, so every process holds the same bank. Noise indices are drawn for the whole global batch from
a generator seeded by ``(sampling_seed, draws)`` (both buffers) and each process takes its rows: 2 processes with half
the batch draw, score and write exactly what 1 process with the whole batch does, and a resumed run draws the same
noise as the uninterrupted one. The bank, ``Z`` and the draw counter are buffers, so every checkpoint carries them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize

from ..distributed import all_gather_no_grad, all_reduce_sum, rank, world_size

#: The two objectives of Wu et al. 2018: noise-contrastive estimation (the paper's) or the full softmax.
OBJECTIVES = ("nce", "softmax")


class MemoryBankLoss(nn.Module):
    """Instance discrimination against a memory bank of every training example (see the module docstring).

    Args:
        num_examples: N, the size of the training set (one bank entry per example, addressed by its dataset index).
        dim: feature dimension (128 in the paper).
        temperature: T (0.07).
        objective: ``"nce"`` (the paper's) or ``"softmax"`` (exact, scores all N entries per example).
        num_negatives: m, noise samples per example for NCE (4096 in the paper).
        momentum: of the bank update (0.5).
        proximal_weight: lambda of the proximal regularisation (0: off).

    Buffers: ``bank`` ``(N, dim)`` (random unit vectors at init), ``normalization_constant`` (NCE's ``Z``; -1 until the
    first training batch estimates it), ``sampling_seed`` (drawn from torch's global generator at construction, so it
    follows the run's seed) and ``draws`` (training forwards so far).
    """

    def __init__(
        self,
        num_examples: int,
        dim: int = 128,
        temperature: float = 0.07,
        objective: str = "nce",
        num_negatives: int = 4096,
        momentum: float = 0.5,
        proximal_weight: float = 0.0,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if num_examples < 2 or dim < 1 or num_negatives < 1:
            raise ValueError(f"num_examples must be >= 2, dim and num_negatives >= 1; got {num_examples}, {dim}, "
                             f"{num_negatives}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (e.g. 0.07), got {temperature}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if proximal_weight < 0:
            raise ValueError(f"proximal_weight must be >= 0 (0: no proximal term), got {proximal_weight}")
        self.temperature = temperature
        self.objective = objective
        self.num_negatives = num_negatives
        self.momentum = momentum
        self.proximal_weight = proximal_weight
        self.register_buffer("bank", normalize(torch.randn(num_examples, dim), dim=1))
        self.register_buffer("normalization_constant", torch.tensor(-1.0, dtype=torch.float64))
        self.register_buffer("sampling_seed", torch.randint(2**31, (), dtype=torch.long))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"num_examples={self.bank.shape[0]}, dim={self.bank.shape[1]}, objective={self.objective}, "
                f"temperature={self.temperature}, num_negatives={self.num_negatives}, momentum={self.momentum}")

    @property
    def num_examples(self) -> int:
        return self.bank.shape[0]

    def forward(self, features: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``features``: ``(n, dim)`` (need not be normalised), ``indices``: ``(n,)`` their dataset indices. Returns
        ``(loss, stats)``: the mean loss over the local rows and detached ``positive_similarity`` (``f_i . v_i``) and
        ``negative_similarity`` (to the noise samples, or to every other entry for the softmax)."""
        self.check_inputs(features, indices)
        features = normalize(features, dim=1)
        # A copy: update() later writes the bank in place, which must not touch what backward needs.
        positives = self.bank[indices].to(features.dtype)  # (n, dim)
        if self.objective == "softmax":
            bank = self.bank.detach().clone().to(features.dtype)
            logits = features @ bank.T / self.temperature  # (n, N)
            loss = cross_entropy(logits, indices)
            with torch.no_grad():
                similarity = logits.detach() * self.temperature
                others = similarity.sum(dim=1) - similarity.gather(1, indices[:, None]).squeeze(1)
                negative_similarity = (others / (self.num_examples - 1)).mean()
        else:
            noise = self.bank[self.noise_indices(features.shape[0], features.device)].to(features.dtype)  # (n, m, dim)
            positive_scores = (features * positives).sum(dim=1, keepdim=True) / self.temperature  # (n, 1)
            noise_scores = torch.einsum("nd,nmd->nm", features, noise) / self.temperature  # (n, m)
            scores = torch.cat([positive_scores, noise_scores], dim=1)
            log_z = self.log_normalization_constant(scores.detach())
            loss = nce_loss(scores - log_z, self.num_negatives, self.num_examples)
            negative_similarity = noise_scores.detach().mean() * self.temperature
        if self.proximal_weight > 0:
            loss = loss + self.proximal_weight * (features - positives).pow(2).sum(dim=1).mean()
        stats = {
            "positive_similarity": (features.detach() * positives).sum(dim=1).mean(),
            "negative_similarity": negative_similarity,
        }
        return loss, stats

    def check_inputs(self, features: torch.Tensor, indices: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.bank.shape[1] or indices.shape != features.shape[:1]:
            raise ValueError(
                f"features must be (batch, {self.bank.shape[1]}) and indices (batch,), the examples' dataset indices; "
                f"got {tuple(features.shape)} and {tuple(indices.shape)}"
            )
        if indices.dtype != torch.long:
            raise ValueError(f"indices must be int64 dataset indices (the `ssl_index` column), got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_examples):
            raise ValueError(
                f"dataset indices must be in [0, {self.num_examples}), got {int(indices.min())}..{int(indices.max())}: "
                "the memory bank was built for another dataset size; set num_examples to the training set's size"
            )

    @torch.no_grad()
    def noise_indices(self, local_batch: int, device: torch.device) -> torch.Tensor:
        """``(local_batch, m)`` indices drawn uniformly from the bank, this process's rows of a draw for the whole
        global batch (the same on every process); advances ``draws`` in training mode."""
        generator = torch.Generator().manual_seed((int(self.sampling_seed) << 32) + int(self.draws))
        everything = torch.randint(self.num_examples, (world_size() * local_batch, self.num_negatives),
                                   generator=generator)
        if self.training:
            self.draws += 1
        return everything[rank() * local_batch : (rank() + 1) * local_batch].to(device)

    @torch.no_grad()
    def log_normalization_constant(self, scores: torch.Tensor) -> torch.Tensor:
        """``log Z``; on the first training batch ``Z = N * mean(exp(scores))`` over the scores of every process
        (positives and noise, as the reference code), kept from then on."""
        if float(self.normalization_constant) < 0:
            totals = torch.stack([scores.double().exp().sum(), torch.tensor(float(scores.numel()), dtype=torch.float64,
                                                                              device=scores.device)])
            totals = all_reduce_sum(totals)
            estimate = self.num_examples * totals[0] / totals[1]
            if not self.training:
                return estimate.log().to(scores.dtype)
            self.normalization_constant.fill_(float(estimate))
        return self.normalization_constant.log().to(scores.dtype)

    @torch.no_grad()
    def update(self, features: torch.Tensor, indices: torch.Tensor) -> None:
        """``v_i <- normalise(m v_i + (1 - m) f_i)`` for the rows of every process (gathered in rank order)."""
        features = all_gather_no_grad(normalize(features.detach().float(), dim=1))
        indices = all_gather_no_grad(indices)
        mixed = self.momentum * self.bank[indices] + (1 - self.momentum) * features.to(self.bank.dtype)
        self.bank.index_copy_(0, indices, normalize(mixed, dim=1))


def nce_loss(log_probabilities: torch.Tensor, num_negatives: int, num_examples: int) -> torch.Tensor:
    """Wu et al. 2018 Eq. 6-7 from ``log P(j | f)`` ``(n, 1 + m)`` (column 0: the positive; the rest: the noise):
    ``- log h(i) - sum_k log(1 - h(j_k))`` with ``h = P / (P + m / N)``, mean over the rows (in log space)."""
    log_noise = torch.full_like(log_probabilities, math.log(num_negatives / num_examples))
    log_denominator = torch.logaddexp(log_probabilities, log_noise)
    positive = log_probabilities[:, 0] - log_denominator[:, 0]  # log h(i, f)
    negative = (log_noise[:, 1:] - log_denominator[:, 1:]).sum(dim=1)  # sum_k log(1 - h(j_k, f))
    return -(positive + negative).mean()
