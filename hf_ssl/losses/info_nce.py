"""InfoNCE with in-batch (and cross-process) negatives: the contrastive loss of CLIP and of Sentence-BERT's
multiple-negatives ranking, written once.

van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748 (Eq. 4);
Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision", arXiv:2103.00020
(Fig. 3: symmetric cross-entropy over the image-text similarity matrix, learnable temperature); Henderson et al. 2017,
"Efficient Natural Language Response Suggestion for Smart Reply", arXiv:1705.00652 (multiple-negatives ranking);
Khosla et al. 2020, "Supervised Contrastive Learning", arXiv:2004.11362 (Eq. 2, L_out: several positives per anchor).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize

from ..distributed import all_gather_no_grad, all_gather_with_grad, rank, world_size


class InfoNCELoss(nn.Module):
    """Cross-entropy of each query against every key of the global batch (its own key is the positive).

    With ``q``, ``k`` the L2-normalised query and key embeddings (row i of each: a positive pair, e.g. an image and
    its caption, or an anchor sentence and its paraphrase), ``s = exp(logit_scale)`` the inverse temperature and N the
    global batch::

        l(q_i) = - log [ exp(s q_i.k_i) / ( sum_j exp(s q_i.k_j) + sum_h exp(s q_i.h_h) + sum_{j != i} exp(s q_i.q_j) )
        ]

    where ``h`` are the optional hard negatives (every row's, from every process: extra columns) and the last sum is
    present only with ``query_negatives=True`` (SimCLR's NT-Xent uses the other anchors as negatives too).
    ``symmetric=True`` averages this with the same loss from the keys' side (each key against every query: CLIP's
    text-to-image term; hard negatives are not used in that direction), as CLIP's pseudo-code does:
    ``loss = (CE(logits_per_image) + CE(logits_per_text)) / 2``.

    Several positives per row (``positive_ids``): rows of the global batch that share an id (the same caption, the
    same class) are positives of each other, not negatives. Each row's target is then the uniform distribution over
    its positive columns ``P(i)`` (its own key and every key sharing its id; with ``query_negatives`` also the other
    queries sharing it), and the loss is the soft-target cross-entropy::

        l(q_i) = - 1 / |P(i)| * sum_{p in P(i)} log [ exp(s q_i.c_p) / sum_a exp(s q_i.c_a) ]

    over all columns ``c_a`` as above. This is Khosla et al. 2020's L_out (Eq. 2: the mean over the positives outside
    the log, which they found to train better than L_in, the mean inside, Table 2) with the other modality's
    embeddings as the contrasted set; with ``symmetric=True, query_negatives=True`` (two views of one modality) it is
    SupCon itself (tested against the formula). As a cross-entropy against a uniform soft target it is also the
    usual CLIP-style treatment of repeated captions: the one-hot diagonal target spread over the duplicates. Simply
    masking duplicates out of the denominator would stop them being pushed apart but would not pull an image towards
    the other captions (the other images) of its class. With all ids distinct every ``P(i)`` is the own key alone and
    the loss is the one-positive loss above, exactly (tested). Where the rows sharing an id have identical keys (one
    caption repeated, a deterministic text tower) their logits are equal and the loss and its gradient are those of the
    one-positive loss too (tested); the soft target matters where positives differ: other captions or images of a
    class, or repeats made different by dropout or augmentation.

    Cross-process: keys, hard negatives (and queries, when they are columns) are gathered from every process
    **with gradients** (:func:`hf_ssl.distributed.all_gather_with_grad`) and each process scores only its own n rows
    against the N gathered columns, so memory is ``O(n * N)``, linear in the global batch. The loss returned is the
    mean over the local rows; the mean over processes (what DDP does to the gradients) equals the one-process loss of
    the global batch, in value and in gradient. ``gather_with_grad=False`` gathers without gradients (cheaper; the
    local slice keeps its gradient, the other processes' columns act as constants), as open_clip's default. Every
    process must pass the same local batch size (``dataloader_drop_last=True``). ``positive_ids`` are gathered from
    every process too, so each process scores its rows against the global positive mask.

    Args:
        temperature: initial/fixed T; the logits are cosine similarities times ``1 / T`` (CLIP: 0.07 initial,
            learnable; sentence-transformers' MultipleNegativesRankingLoss: ``scale=20``, i.e. T = 0.05, fixed).
        learnable_temperature: hold ``logit_scale = log(1 / T)`` as a parameter (CLIP). A model that keeps the
            parameter itself (``VisionTextDualEncoderModel.logit_scale``) passes it to ``forward`` instead.
        max_logit_scale: the inverse temperature is clipped at this value (CLIP: 100, "to prevent scaling the logits
            by more than 100, which we found necessary to prevent training instability").
        symmetric: also the keys-to-queries term (CLIP, MultipleNegativesSymmetricRankingLoss).
        query_negatives: the other queries are negatives too (and, when symmetric, the other keys for the keys).
        gather_with_grad: see above.

    Inputs to ``forward``:
        queries, keys: ``(n, dim)``; need not be normalised.
        hard_negatives: optional ``(n, dim)`` or ``(n, num_negatives, dim)``: row i's hard negatives (e.g. an NLI
            contradiction); they serve as negatives for every query of the global batch, as in-batch negatives do.
        logit_scale: optional scalar tensor, ``log(1 / T)``, overriding the module's own.
        positive_ids: optional ``(n,)`` integer tensor: rows (of any process) with equal ids are positives of each
            other (e.g. a caption id or a class id). ``None``: each row's own key is its only positive.

    Returns:
        ``(loss, stats)``: the scalar loss and detached diagnostics over the local rows: ``positive_similarity``
        (mean cosine of queries to their positive keys), ``negative_similarity`` (mean cosine of queries to the other
        keys), ``retrieval_accuracy`` (share of queries whose highest-scoring key is a positive), ``logit_scale``
        (the inverse temperature used).

    Related: :class:`hf_ssl.losses.NTXentLoss` is this loss with ``symmetric=True, query_negatives=True`` (tested);
    sentence-transformers' ``MultipleNegativesRankingLoss`` and open_clip's ``ClipLoss`` (tested for parity).
    """

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        symmetric: bool = False,
        query_negatives: bool = False,
        gather_with_grad: bool = True,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (CLIP starts at 0.07, Sentence-BERT uses 0.05), got {temperature}")
        if max_logit_scale < 1 / temperature:
            raise ValueError(f"max_logit_scale ({max_logit_scale}) is below 1 / temperature ({1 / temperature:.4g})")
        initial = torch.tensor(math.log(1 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(initial)
        else:
            self.register_buffer("logit_scale", initial, persistent=False)
        self.max_logit_scale = max_logit_scale
        self.symmetric = symmetric
        self.query_negatives = query_negatives
        self.gather_with_grad = gather_with_grad

    def extra_repr(self) -> str:
        return (
            f"temperature={math.exp(-self.logit_scale.item()):.4g}, learnable={isinstance(self.logit_scale, nn.Parameter)}, "
            f"symmetric={self.symmetric}, query_negatives={self.query_negatives}, gather_with_grad={self.gather_with_grad}"
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        hard_negatives: torch.Tensor | None = None,
        logit_scale: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        local_batch = _check_pair(queries, keys)
        global_batch = local_batch * world_size()
        if hard_negatives is not None:
            hard_negatives = _check_hard_negatives(hard_negatives, queries)
        if global_batch < 2 and hard_negatives is None:
            raise ValueError(
                "InfoNCE needs at least 2 pairs in the global batch (the negatives are the other pairs) or hard "
                f"negatives; got {global_batch}. Increase per_device_train_batch_size."
            )
        scale = (self.logit_scale if logit_scale is None else logit_scale).exp().clamp(max=self.max_logit_scale)
        queries = normalize(queries, dim=-1)
        keys = normalize(keys, dim=-1)
        all_queries, all_keys = self._gather(queries), self._gather(keys)
        # Global column of local row i: the rows of the lower ranks come first.
        targets = torch.arange(local_batch, device=queries.device) + rank() * local_batch
        # (n, N): which of the global batch's pairs are positives of each local row (None: only its own).
        positives = None
        if positive_ids is not None:
            positive_ids = _check_positive_ids(positive_ids, local_batch).to(queries.device)
            positives = positive_ids[:, None] == all_gather_no_grad(positive_ids)[None, :]

        key_columns = [all_keys]
        if hard_negatives is not None:
            hard = normalize(hard_negatives, dim=-1)  # (n, h, dim) -> columns (N * h, dim), negative-major
            key_columns += [self._gather(hard[:, j]) for j in range(hard.shape[1])]
        loss = self._cross_entropy(queries, torch.cat(key_columns), all_queries, targets, positives, scale)
        if self.symmetric:
            loss = (loss + self._cross_entropy(keys, all_queries, all_keys, targets, positives, scale)) / 2

        with torch.no_grad():
            similarity = queries @ all_keys.T  # (n, N)
            if positives is None:
                positives = torch.zeros_like(similarity, dtype=torch.bool)
                positives[torch.arange(local_batch), targets] = True
            positive = similarity[positives].mean()
            negative = similarity[~positives].mean() if not positives.all() else torch.zeros_like(positive)
            accuracy = positives.gather(1, similarity.argmax(dim=1, keepdim=True)).float().mean()
        stats = {
            "positive_similarity": positive, "negative_similarity": negative, "retrieval_accuracy": accuracy,
            "logit_scale": scale.detach(),
        }
        return loss, stats

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(n, dim) -> (N, dim)`` in rank order; without gradients, the local slice still carries its own."""
        if self.gather_with_grad or world_size() == 1:
            return all_gather_with_grad(tensor)
        gathered = all_gather_no_grad(tensor)
        start = rank() * tensor.shape[0]
        return torch.cat([gathered[:start], tensor, gathered[start + tensor.shape[0]:]])

    def _cross_entropy(self, rows, columns, same_side, targets, positives, scale) -> torch.Tensor:
        """Mean cross-entropy of ``rows (n, dim)`` against ``columns (M, dim)`` (target column ``targets``); with
        ``query_negatives`` the rows' own side ``same_side (N, dim)`` is appended, each row's own entry masked.

        ``positives (n, N)`` (or ``None``): the first N columns that are positives of each row; the target is then
        uniform over them (and, with ``query_negatives``, over the same-side entries they mark, the row itself
        excepted), the hard-negative columns never."""
        own = (torch.arange(rows.shape[0], device=rows.device), targets)
        logits = rows @ columns.T
        if self.query_negatives:
            same = rows @ same_side.T
            same[own] = float("-inf")
            logits = torch.cat([logits, same], dim=1)
        logits = logits * scale
        if positives is None:
            return cross_entropy(logits, targets)
        hard_columns = columns.shape[0] - positives.shape[1]
        target = [positives, positives.new_zeros(rows.shape[0], hard_columns)]
        if self.query_negatives:
            same_positives = positives.clone()
            same_positives[own] = False
            target.append(same_positives)
        target = torch.cat(target, dim=1).to(logits.dtype)
        target = target / target.sum(dim=1, keepdim=True)  # (n, columns): uniform over each row's positives
        # -sum_p t_p log softmax(z)_p = logsumexp(z) - sum_p t_p z_p = CE(z, own) + (z_own - sum_p t_p z_p): the
        # one-positive loss plus a gap that is exactly 0 (its gradient too) when the own column is the only positive.
        positive_mean = (target * logits.masked_fill(target == 0, 0.0)).sum(dim=1)  # 0 * -inf would be nan
        return cross_entropy(logits, targets) + (logits[own] - positive_mean).mean()


def _check_pair(queries: torch.Tensor, keys: torch.Tensor) -> int:
    if queries.dim() != 2 or keys.dim() != 2:
        raise ValueError(
            f"queries and keys must be (batch, dim) embeddings; got shapes {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    if queries.shape[0] != keys.shape[0]:
        raise ValueError(
            f"queries and keys must have the same batch size (row i of each is a positive pair); got "
            f"{queries.shape[0]} queries and {keys.shape[0]} keys. Check that every example has both texts/images."
        )
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries and keys must have the same width to be compared; got {queries.shape[1]} and {keys.shape[1]} "
            "(project both into one space first)"
        )
    return queries.shape[0]


def _check_positive_ids(positive_ids: torch.Tensor, local_batch: int) -> torch.Tensor:
    is_tensor = isinstance(positive_ids, torch.Tensor)
    if not is_tensor or positive_ids.shape != (local_batch,) or positive_ids.is_floating_point():
        shape = tuple(positive_ids.shape) if is_tensor else type(positive_ids).__name__
        raise ValueError(
            f"positive_ids must be one integer id per row, shape ({local_batch},), equal ids marking positives (a "
            f"caption or class id); got {shape}"
        )
    return positive_ids.long()


def _check_hard_negatives(hard_negatives: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    if hard_negatives.dim() == 2:
        hard_negatives = hard_negatives[:, None]
    if hard_negatives.dim() != 3 or hard_negatives.shape[0] != queries.shape[0] or hard_negatives.shape[2] != queries.shape[1]:
        raise ValueError(
            f"hard_negatives must be (batch, dim) or (batch, num_negatives, dim) matching queries {tuple(queries.shape)}; "
            f"got {tuple(hard_negatives.shape)}"
        )
    return hard_negatives
