"""Masked-LM plus a sentence-pair task: sentence-order prediction (SOP; Lan et al. 2019, "ALBERT: A Lite BERT for
Self-supervised Learning of Language Representations", arXiv:1909.11942, §3.1 "Inter-sentence coherence loss") or
next-sentence prediction (NSP; Devlin et al. 2019, arXiv:1810.04805, §3.1 "Task #2").

SOP: the two segments of an example are consecutive in one document; for half of the examples they are swapped, and
the model predicts whether the order is the original one. NSP: the second segment is the true continuation for half
of the examples and a segment from another document for the other half. ALBERT replaced NSP by SOP because NSP can be
solved by topic alone (§3.1, Table 5). The pairs are built by :class:`hf_ssl.data.sequences.SentencePairBuilder`;
the classifier reads the pooled ``[CLS]`` output (BERT: ``cls.seq_relationship``, ALBERT: ``sop_classifier``, the
keys of ``BertForPreTraining`` / ``AlbertForPreTraining``). Label 0: original order / true continuation; 1: swapped
(SOP) or random (NSP), the convention of both stock classes.

One model class serves masked-LM with and without a pair task
(:class:`~hf_ssl.methods.masked_lm.MaskedLMForPreTraining`);
this file only registers the method ``sop`` with its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from .masked_lm import MaskedLMConfig, MaskedLMForPreTraining

SENTENCE_PAIR_TASKS = ("sop", "nsp")


@dataclass
class SentenceOrderConfig(MaskedLMConfig):
    """Masked-LM settings (:class:`MaskedLMConfig`) plus the pair task.

    pair_task: ``"sop"`` (ALBERT, default) or ``"nsp"`` (BERT).
    pair_loss_weight: weight of the pair loss in ``loss = L_MLM + w * L_pair`` (1 in both papers).
    """

    method = "sop"

    pair_task: str = "sop"
    pair_loss_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.pair_task not in SENTENCE_PAIR_TASKS:
            raise ValueError(
                f"pair_task must be one of {SENTENCE_PAIR_TASKS}, got {self.pair_task!r}; for masked-LM without a "
                "pair task use the method 'mlm'"
            )
        if self.pair_loss_weight < 0:
            raise ValueError(f"pair_loss_weight must be >= 0, got {self.pair_loss_weight}")

    @property
    def sentence_pair_task(self) -> str | None:
        return self.pair_task


class SentenceOrderForPreTraining(MaskedLMForPreTraining):
    """:class:`MaskedLMForPreTraining` with the pair head (``cls.seq_relationship`` / ``sop_classifier``)."""

    method_config_class = SentenceOrderConfig
    paper = (
        "Lan et al. 2019. ALBERT: A Lite BERT for Self-supervised Learning of Language Representations. "
        "arXiv:1909.11942"
    )
