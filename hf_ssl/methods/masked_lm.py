"""Masked language modelling (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", arXiv:1810.04805, §3.1 "Task #1: Masked LM"), optionally with a sentence-pair task: sentence-order
prediction (ALBERT, Lan et al. 2019, arXiv:1909.11942, §3.1) or next-sentence prediction (BERT §3.1 "Task #2"); the
pair task lives in :mod:`hf_ssl.methods.sentence_order`, which subclasses this model.

About 15 % of the tokens are chosen for prediction; 80 % of those are replaced by ``[MASK]``, 10 % by a random token,
10 % are kept (BERT §3.1, Appendix C.2). The masking is done by :class:`hf_ssl.data.collators.MaskedLMCollator`,
freshly at each batch ("dynamic masking", Liu et al. 2019, RoBERTa §4.1); this model only sees ``labels``
(``-100`` everywhere except the chosen positions, which carry the original token id).

Checkpoint layout (see :mod:`hf_ssl.methods.base`): the config is the encoder's own ``BertConfig`` / ``AlbertConfig``
plus ``ssl_config``, and the weights use transformers' own pretraining layout, so that every vanilla class finds its
weights:

- BERT: ``bert.*`` (``BertModel`` with its pooler), ``cls.predictions.*`` (``BertLMPredictionHead``) and, with a pair
  task, ``cls.seq_relationship.*``: the keys of ``BertForPreTraining`` / ``BertForMaskedLM``.
- ALBERT: ``albert.*``, ``predictions.*`` (``AlbertMLMHead``) and, with a pair task, ``sop_classifier.*``: the keys
  of ``AlbertForPreTraining`` / ``AlbertForMaskedLM``.

The output embedding is tied to the input word embeddings, as in both papers (transformers' ``_tied_weights_keys``).

Two departures from transformers' ``BertForPreTraining`` forward, both for speed or correctness, not for results:

- The vocabulary projection runs on the masked positions only, ``(N_masked, H) -> (N_masked, V)``, instead of on
  every position, ``(B, L, H) -> (B, L, V)``: about 15 % of the work and memory of the largest matrix product
  (benchmarks/mlm_throughput.py measures the whole step).
- The masked-LM loss is a sum over masked tokens divided by ``num_items_in_batch``, the number of masked tokens in
  the whole accumulated, global batch (``accepts_loss_kwargs = True``; ``Trainer`` counts it and then skips its own
  division by the accumulation steps), so that 4 micro-batches of 8 give the loss and gradients of 1 batch of 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

from ..data.collators import (
    MASK_REPLACE_PROB,
    MLM_PROBABILITY,
    RANDOM_REPLACE_PROB,
    check_masking,
)
from .base import SSLMethodConfig, SSLPreTrainedModel, TrainingProgress

logger = logging.get_logger(__name__)

#: The model types whose pretraining heads we reuse, and the stock pretraining class whose key layout we copy.
SUPPORTED_MODEL_TYPES = ("bert", "albert")


@dataclass
class MaskedLMConfig(SSLMethodConfig):
    """Masked-LM hyperparameters (defaults: BERT's, Devlin et al. 2019 §3.1 and Appendix A.1).

    mlm_probability: share of (non-special) tokens chosen for prediction (0.15).
    mask_replace_prob / random_replace_prob: of the chosen tokens, the share replaced by ``[MASK]`` (0.8) and by a
        random token (0.1); the rest (0.1) is kept unchanged. They are settings of the collator, stored here so that
        a checkpoint records how it was trained.
    whole_word_mask: choose whole words rather than WordPiece tokens (all the tokens of a chosen word are predicted;
        the 80/10/10 rule still applies per token, as in Google's ``create_pretraining_data.py``).
    """

    method = "mlm"

    mlm_probability: float = MLM_PROBABILITY
    mask_replace_prob: float = MASK_REPLACE_PROB
    random_replace_prob: float = RANDOM_REPLACE_PROB
    whole_word_mask: bool = False

    def __post_init__(self):
        check_masking(self.mlm_probability, self.mask_replace_prob, self.random_replace_prob)

    @property
    def sentence_pair_task(self) -> str | None:
        """``"sop"``, ``"nsp"`` or ``None`` (masked-LM only)."""
        return None


@dataclass
class MaskedLMOutput(ModelOutput):
    """Output of :class:`MaskedLMForPreTraining`.

    loss: scalar, masked-LM loss (+ ``pair_loss_weight`` x pair loss); normalised by ``num_items_in_batch`` when the
        trainer passes it (sum over this batch's masked tokens / masked tokens of the global batch), else the mean.
    mlm_loss: scalar, mean cross-entropy over this batch's masked tokens (a diagnostic, whatever the normalisation).
    masked_accuracy: scalar, share of this batch's masked tokens predicted exactly.
    pair_loss / pair_accuracy: scalars, the sentence-pair task's mean cross-entropy and accuracy (pair task only).
    mlm_logits: ``(N_masked, vocab_size)``, the logits at the masked positions only, in row-major order of ``labels``.
    pair_logits: ``(batch, 2)`` (pair task only); class 0: B follows A in the document, 1: swapped (SOP) / random (NSP).
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    masked_accuracy: torch.Tensor | None = None
    pair_loss: torch.Tensor | None = None
    pair_accuracy: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    pair_logits: torch.Tensor | None = None


class MaskedLMForPreTraining(SSLPreTrainedModel):
    """Masked-LM pretraining of a BERT or ALBERT encoder, in transformers' own checkpoint layout.

    Inputs (from :class:`hf_ssl.data.collators.MaskedLMCollator`): ``input_ids``, ``attention_mask``,
    ``token_type_ids`` ``(batch, length)``, ``labels`` ``(batch, length)`` (``-100`` = not predicted) and, for a pair
    task, ``pair_label`` ``(batch,)``.

    Without a pair task the encoder's pooler gets no gradient; it is kept (so that checkpoints that have one, such as
    MiniLM, keep it for ``AutoModelForSequenceClassification``) and frozen (so that DDP sees no unused parameter).
    """

    method_config_class = MaskedLMConfig
    pretraining_job = "text"
    paper = (
        "Devlin et al. 2019. BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding. "
        "arXiv:1810.04805"
    )
    main_input_name = "input_ids"
    # The loss is a sum over masked tokens / num_items_in_batch (masked tokens of the global accumulated batch).
    accepts_loss_kwargs = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"masked-LM pretraining supports the model types {SUPPORTED_MODEL_TYPES} (their pretraining heads and "
                f"key layout come from transformers); got {config.model_type!r}. Use a BertConfig or AlbertConfig."
            )
        self.pair_task = self.method_config.sentence_pair_task
        self.register_published_encoder(self._build_encoder_with_pooler())
        self._build_heads(config)
        # Global number of pairs per optimizer step (per-device batch x accumulation x processes), set by the text
        # job: the pair loss is normalised by it under Trainer, like the masked-LM loss by num_items_in_batch.
        self.pairs_per_optimizer_step: int | None = None
        self.post_init()
        if self.pair_task is None:
            self.encoder.pooler.requires_grad_(False)

    # ----------------------------------------------------------------------------------------------------------------
    def _build_encoder_with_pooler(self) -> PreTrainedModel:
        encoder_config = self.config.__class__.from_dict(
            {k: v for k, v in self.config.to_dict().items() if k != "ssl_config"}
        )
        # The pooler feeds the pair head and AutoModelForSequenceClassification (hf_ssl.modules.backbones.build_encoder
        # drops it, which suits vision encoders only).
        return AutoModel.from_config(encoder_config, add_pooling_layer=True)

    def _build_heads(self, config: PretrainedConfig) -> None:
        """Heads and tied-key map of transformers' ``BertForPreTraining`` / ``AlbertForPreTraining``."""
        if config.model_type == "bert":
            from transformers.models.bert.modeling_bert import (
                BertForPreTraining,
                BertOnlyMLMHead,
                BertPreTrainingHeads,
            )

            self.cls = BertPreTrainingHeads(config) if self.pair_task else BertOnlyMLMHead(config)
            self._tied_weights_keys = dict(BertForPreTraining._tied_weights_keys)
        else:
            from transformers.models.albert.modeling_albert import (
                AlbertForPreTraining,
                AlbertMLMHead,
                AlbertSOPHead,
            )

            self.predictions = AlbertMLMHead(config)
            if self.pair_task:
                pair_config = config.__class__.from_dict({**config.to_dict(), "num_labels": 2})
                self.sop_classifier = AlbertSOPHead(pair_config)
            self._tied_weights_keys = dict(AlbertForPreTraining._tied_weights_keys)

    @property
    def mlm_head(self) -> torch.nn.Module:
        """``(..., hidden) -> (..., vocab_size)``: transform, LayerNorm and the (tied) decoder."""
        return self.cls.predictions if self.config.model_type == "bert" else self.predictions

    @property
    def pair_head(self) -> torch.nn.Module | None:
        """``(batch, hidden) -> (batch, 2)`` on the pooled ``[CLS]`` output; ``None`` without a pair task."""
        if self.pair_task is None:
            return None
        return self.cls.seq_relationship if self.config.model_type == "bert" else self.sop_classifier

    def published_prefixes(self) -> tuple[str, ...]:
        # pipeline("fill-mask") loads the masked-LM head with the encoder; the pair head stays in the method's state.
        head = "cls.predictions" if self.config.model_type == "bert" else "predictions"
        return (*super().published_prefixes(), head)

    def _init_weights(self, module):
        # The heads are transformers' own modules: initialise them as the encoder's PreTrainedModel class does
        # (normal(0, initializer_range), zero decoder bias), not with hf_ssl's generic head init.
        self.encoder._init_weights(module)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    # ----------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pair_label: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        return_loss: bool = True,
        **kwargs: Any,
    ) -> MaskedLMOutput:
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        output = MaskedLMOutput()
        if labels is not None:
            masked = labels != -100
            # Vocabulary projection at the masked positions only: (N_masked, H) -> (N_masked, V).
            logits = self.mlm_head(encoded.last_hidden_state[masked])
            targets = labels[masked]
            # L_MLM = - sum_{masked i} log p(x_i | x_masked) / N, N = masked tokens of the global accumulated batch
            summed = F.cross_entropy(logits.float(), targets, reduction="sum")
            local_count = masked.sum()
            denominator = num_items_in_batch if num_items_in_batch is not None else local_count.clamp(min=1)
            output.loss = summed / denominator
            with torch.no_grad():
                output.mlm_loss = summed.detach() / local_count.clamp(min=1)
                correct = (logits.argmax(dim=-1) == targets).sum()
                output.masked_accuracy = correct.float() / local_count.clamp(min=1)
            output.mlm_logits = logits
        if self.pair_task is not None:
            pair_logits = self.pair_head(encoded.pooler_output)
            output.pair_logits = pair_logits
            if pair_label is not None:
                summed = F.cross_entropy(pair_logits.float(), pair_label, reduction="sum")
                pair_loss = summed / self._pair_denominator(pair_label, num_items_in_batch)
                weighted = self.method_config.pair_loss_weight * pair_loss
                output.loss = weighted if output.loss is None else output.loss + weighted
                with torch.no_grad():
                    output.pair_loss = summed.detach() / pair_label.numel()
                    output.pair_accuracy = (pair_logits.argmax(dim=-1) == pair_label).float().mean()
        if not return_loss:
            output.loss = None
        return output

    def set_progress(self, progress: TrainingProgress) -> None:
        # One pair per sequence: the pairs of an optimizer step are its examples.
        if progress.global_batch_size is not None:
            self.pairs_per_optimizer_step = progress.global_batch_size

    def _pair_denominator(self, pair_label: torch.Tensor, num_items_in_batch) -> int:
        """Pairs of the global accumulated batch when training under Trainer (which then skips its division by the
        accumulation steps, because this model accepts loss kwargs); this batch's pairs otherwise (evaluation)."""
        if num_items_in_batch is None or not self.training:
            return pair_label.numel()
        if self.pairs_per_optimizer_step is None:
            raise ValueError(
                "the trainer passed num_items_in_batch, so it will not divide the loss by the accumulation steps; the "
                "pair loss then needs `model.pairs_per_optimizer_step = per_device_batch * accumulation_steps * "
                "world_size` (SSLTrainer sets it at every step through set_progress)"
            )
        return self.pairs_per_optimizer_step

    def vocabulary_logits(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Full ``(batch, length, vocab_size)`` logits (for inspection, e.g. fill-mask); training never needs them."""
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.mlm_head(encoded.last_hidden_state)
