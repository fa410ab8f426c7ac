"""Held-out evaluation of masked-LM (+ SOP/NSP) models: masked-token accuracy, perplexity, pair-task accuracy.

The held-out sequences are masked once, with a seeded collator, and kept: every evaluation during training, and the
final comparison of the trained model with the same architecture at random init, score exactly the same masks.

Metrics (token-weighted over the whole held-out set, not averaged per batch):
- ``masked_accuracy``: share of masked positions whose arg-max prediction is the original token;
- ``mlm_loss``: mean cross-entropy over masked positions (nats); ``perplexity = exp(mlm_loss)`` (the "masked-LM
  perplexity" RoBERTa reports, Liu et al. 2019, Figure 2; not comparable with a causal LM's perplexity);
- ``pair_accuracy`` / ``pair_loss``: the SOP/NSP classifier on held-out pairs (pair task only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class MaskedLMEvaluator:
    """A callable ``model -> {"masked_accuracy", "perplexity", "mlm_loss"[, "pair_accuracy", "pair_loss"]}``.

    Args:
        sequences: held-out examples (``input_ids``, ``token_type_ids``, ``continues_word``[, ``pair_label``]), e.g.
            the output of :class:`hf_ssl.data.sequences.SentencePairBuilder`.
        collator: a :class:`hf_ssl.data.collators.MaskedLMCollator`; it is called once here, so give it a ``seed``.
        batch_size: sequences per forward pass.
    """

    def __init__(self, sequences: Sequence[dict], collator, batch_size: int = 64):
        if len(sequences) == 0:
            raise ValueError("no held-out sequences to evaluate on: the eval documents are empty or too few")
        self.batches = [
            collator([sequences[i] for i in range(start, min(start + batch_size, len(sequences)))])
            for start in range(0, len(sequences), batch_size)
        ]

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        totals = {"loss": 0.0, "correct": 0, "tokens": 0, "pair_loss": 0.0, "pair_correct": 0, "pairs": 0}
        try:
            for batch in self.batches:
                batch = {key: value.to(device) for key, value in batch.items()}
                output = model(**batch)
                masked = int((batch["labels"] != -100).sum())
                totals["tokens"] += masked
                totals["loss"] += float(output.mlm_loss) * masked
                totals["correct"] += round(float(output.masked_accuracy) * masked)
                if output.pair_accuracy is not None:
                    pairs = batch["pair_label"].numel()
                    totals["pairs"] += pairs
                    totals["pair_loss"] += float(output.pair_loss) * pairs
                    totals["pair_correct"] += round(float(output.pair_accuracy) * pairs)
        finally:
            model.train(was_training)
        tokens = max(totals["tokens"], 1)
        mlm_loss = totals["loss"] / tokens
        metrics = {
            "masked_accuracy": totals["correct"] / tokens,
            "mlm_loss": mlm_loss,
            "perplexity": math.exp(min(mlm_loss, 50.0)),
        }
        if totals["pairs"]:
            metrics["pair_accuracy"] = totals["pair_correct"] / totals["pairs"]
            metrics["pair_loss"] = totals["pair_loss"] / totals["pairs"]
        return metrics
