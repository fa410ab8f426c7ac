"""CLIP-style contrastive image-text pretraining (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision", arXiv:2103.00020).

An image encoder and a text encoder, each followed by a linear projection (no bias) into a shared space, are trained
so that the N matching (image, caption) pairs of a batch score higher than the N^2 - N others: the symmetric
cross-entropy over the cosine-similarity matrix scaled by a learnable inverse temperature (Fig. 3), here with the
other processes' pairs as negatives too (:class:`hf_ssl.losses.InfoNCELoss`).

A batch may hold the same caption several times (CIFAR-10 captioned from 10 class names, a caption set with repeated
texts): such pairs are positives of each other, not negatives (``multi_positive``, on by default): each image's target
is spread uniformly over every caption of the global batch identical to its own, and each caption's over their images
(Khosla et al. 2020's multi-positive L_out, see :class:`~hf_ssl.losses.InfoNCELoss`). A batch may also say which rows
belong together (``positive_ids``, e.g. the class label: the image-text job passes it for captions built from class
names), so batches need no de-duplication and any batch size works. For a caption repeated word for word the soft
target changes the loss only where the repeats embed differently (text dropout in training), and the diagnostics (a
repeat retrieved counts as right); grouping by class changes it wherever a class has several captions or images.

Checkpoint layout: exactly transformers' ``VisionTextDualEncoderModel`` (config ``VisionTextDualEncoderConfig`` plus
``ssl_config``; weights ``vision_model.*``, ``text_model.*``, ``visual_projection.weight``, ``text_projection.weight``,
``logit_scale``), so ``VisionTextDualEncoderModel.from_pretrained(output_dir)`` (or ``AutoModel``) gives the trained
dual encoder for zero-shot classification and retrieval without hf_ssl. Features are computed by that class's own
``get_image_features`` / ``get_text_features`` (the encoders' pooled outputs, projected), so hf_ssl and vanilla
transformers agree by construction.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from transformers import (
    AutoConfig,
    PretrainedConfig,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)
from transformers.utils import ModelOutput

from ..losses.info_nce import InfoNCELoss
from .base import SSLMethodConfig, SSLPreTrainedModel
from .sentence_bert import load_encoder_weights


@dataclass
class CLIPStyleConfig(SSLMethodConfig):
    """CLIP-style hyperparameters. The projection width and the initial temperature are fields of the
    ``VisionTextDualEncoderConfig`` itself (``projection_dim``, ``logit_scale_init_value`` = log(1 / 0.07)).

    max_logit_scale: the learnable inverse temperature is clipped to at most this (CLIP: 100).
    freeze_text_model: keep the text encoder fixed (in eval mode, no gradients) and train the rest, as LiT (Zhai et
        al. 2022, arXiv:2111.07991) locks its pretrained tower; sensible with a pretrained text checkpoint and a small
        image-text set.
    gather_with_grad: negatives from the other processes carry gradients (see :class:`InfoNCELoss`).
    multi_positive: in-batch pairs that share a caption (identical token ids), or a ``positive_ids`` value when the
        batch carries one, are positives of each other (soft targets uniform over them, from every process). False:
        the original CLIP loss, each image's own caption is its only positive and a repeated caption is a negative
        (then only duplicate-free batches are right: ``--no_duplicates true``).
    """

    method = "clip"

    max_logit_scale: float = 100.0
    freeze_text_model: bool = False
    gather_with_grad: bool = True
    multi_positive: bool = True

    def __post_init__(self):
        self.check_ranges(positive=("max_logit_scale",))


@dataclass
class CLIPStyleOutput(ModelOutput):
    """Output of :class:`CLIPStyleForPreTraining`.

    loss: symmetric InfoNCE, mean over the local pairs of both directions (several positives per row where captions
        or ``positive_ids`` repeat).
    image_embeds / text_embeds: ``(batch, projection_dim)`` projected features (not normalised).
    logit_scale: the inverse temperature used (``exp(logit_scale)``, clipped).
    positive_similarity / negative_similarity: mean cosine of matching (positive) / non-matching pairs.
    retrieval_accuracy: share of images whose most similar caption of the global batch is a positive.
    """

    loss: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    retrieval_accuracy: torch.Tensor | None = None


class CLIPStyleForPreTraining(SSLPreTrainedModel):
    """A CLIP-style dual encoder from any transformers vision encoder and any text encoder.

    Modules (the ``VisionTextDualEncoderModel`` layout): ``vision_model``, ``text_model``, ``visual_projection``,
    ``text_projection`` and the parameter ``logit_scale``; ``encoder`` is the ``VisionTextDualEncoderModel`` that
    shares them (what vanilla loading restores). Inputs (from :class:`hf_ssl.data.collators.ImageCaptionCollator`):
    ``pixel_values (B, C, H, W)``, ``input_ids``, ``attention_mask`` (and ``token_type_ids``) of B captions, and
    optionally ``positive_ids (B,)``: integer ids, equal for pairs that are positives of each other (e.g. the class
    label); without them (and with ``multi_positive``) identical captions are the positives (:func:`caption_ids`).
    """

    method_config_class = CLIPStyleConfig
    pretraining_job = "image_text"
    paper = (
        "Radford et al. 2021. Learning Transferable Visual Models From Natural Language Supervision. arXiv:2103.00020"
    )

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        if not isinstance(config, VisionTextDualEncoderConfig):
            raise ValueError(
                f"CLIP-style models take a VisionTextDualEncoderConfig, got {type(config).__name__}; build one with "
                "CLIPStyleForPreTraining.from_vision_text(vision_config, text_name_or_path)"
            )
        settings: CLIPStyleConfig = self.method_config
        dual_config = VisionTextDualEncoderConfig.from_dict(
            {key: value for key, value in config.to_dict().items() if key != "ssl_config"}
        )
        dual = VisionTextDualEncoderModel(dual_config)
        for name, module in dual.named_children():  # vision_model, text_model, visual_projection, text_projection
            self.add_module(name, module)
        self.logit_scale = dual.logit_scale
        object.__setattr__(self, "_published_encoder", dual)
        self.loss_fn = InfoNCELoss(
            math.exp(-config.logit_scale_init_value), max_logit_scale=settings.max_logit_scale, symmetric=True,
            gather_with_grad=settings.gather_with_grad,
        )
        if settings.freeze_text_model:
            self.text_model.requires_grad_(False)
        self.post_init()

    @classmethod
    def from_vision_text(
        cls,
        vision: PretrainedConfig | str,
        text: PretrainedConfig | str,
        *,
        projection_dim: int = 512,
        load_vision_weights: bool = False,
        load_text_weights: bool = True,
        text_config_overrides: dict | None = None,
        **settings,
    ) -> CLIPStyleForPreTraining:
        """A new dual encoder from a vision and a text encoder, each a config (random init) or a folder / Hub id
        (its config; its weights too when ``load_*_weights``). Projections and ``logit_scale`` start anew."""
        vision_config = AutoConfig.from_pretrained(vision) if isinstance(vision, str) else vision
        text_config = AutoConfig.from_pretrained(text) if isinstance(text, str) else text
        for key, value in (text_config_overrides or {}).items():
            if not hasattr(text_config, key):
                raise ValueError(f"text config {type(text_config).__name__} has no field {key!r}")
            setattr(text_config, key, value)
        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            vision_config, text_config, projection_dim=projection_dim
        )
        model = cls.from_encoder_config(config, **settings)
        if isinstance(vision, str) and load_vision_weights:
            load_encoder_weights(model.vision_model, vision)
        if isinstance(text, str) and load_text_weights:
            if text_config_overrides:
                raise ValueError("text_config_overrides change the architecture: they cannot load the text weights")
            load_encoder_weights(model.text_model, text)
        return model

    @property
    def encoder(self) -> VisionTextDualEncoderModel:
        """The ``VisionTextDualEncoderModel`` sharing this model's modules (what vanilla loading restores)."""
        dual = self._published_encoder
        for name, _ in dual.named_children():
            setattr(dual, name, getattr(self, name))
        dual.logit_scale = self.logit_scale  # from_pretrained / to() may have replaced the parameter object
        return dual

    def train(self, mode: bool = True):
        super().train(mode)
        if self.method_config.freeze_text_model:
            self.text_model.eval()
        return self

    # ----------------------------------------------------------------------------------------------------------------
    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, projection_dim)``: ``VisionTextDualEncoderModel.get_image_features``."""
        return self.encoder.get_image_features(pixel_values=pixel_values).pooler_output

    def embed_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T) -> (B, projection_dim)``: ``VisionTextDualEncoderModel.get_text_features``."""
        return self.encoder.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).pooler_output

    # The two halves of ``forward``, also called separately by gradient caching (hf_ssl.training.grad_cache).
    def embed(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """The per-pair part of ``forward``: ``{"image", "text"}``, each ``(batch, projection_dim)``, the projected
        features of the images and their captions (the locked text tower's cached features when
        ``freeze_text_model``). Pairs are independent, so embedding a batch in chunks gives the same features."""
        if pixel_values is None or input_ids is None:
            raise ValueError(
                "CLIP-style training needs images and their captions in every batch: pixel_values and input_ids "
                "(hf_ssl.data.collators.ImageCaptionCollator over a dataset with `image` and `text` columns)"
            )
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"got {pixel_values.shape[0]} images and {input_ids.shape[0]} captions: each image needs exactly one "
                "caption in the batch"
            )
        image = self.embed_image(pixel_values)
        if self.method_config.freeze_text_model and self.training:
            text = self.text_projection(self._locked_text_features(input_ids, attention_mask, token_type_ids))
        else:
            text = self.embed_text(input_ids, attention_mask, token_type_ids)
        return {"image": image, "text": text}

    def loss_from_embeddings(
        self,
        embeddings: dict[str, torch.Tensor],
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> CLIPStyleOutput:
        """The batch-coupled part of ``forward``: the symmetric InfoNCE with the learnable temperature on
        :meth:`embed`'s features of the whole batch. ``input_ids`` / ``attention_mask`` give the caption ids of
        ``multi_positive`` when the batch has no ``positive_ids``."""
        image, text = embeddings["image"], embeddings["text"]
        if not return_loss:
            return CLIPStyleOutput(image_embeds=image, text_embeds=text)
        if positive_ids is not None and not self.method_config.multi_positive:
            raise ValueError(
                "positive_ids were given but this model has multi_positive=False (one positive per image); set "
                "multi_positive true or leave positive_ids out of the batch"
            )
        if positive_ids is None and self.method_config.multi_positive:
            positive_ids = caption_ids(input_ids, attention_mask)
        loss, stats = self.loss_fn(image, text, logit_scale=self.logit_scale, positive_ids=positive_ids)
        return CLIPStyleOutput(
            loss=loss, image_embeds=image, text_embeds=text, logit_scale=stats["logit_scale"],
            positive_similarity=stats["positive_similarity"], negative_similarity=stats["negative_similarity"],
            retrieval_accuracy=stats["retrieval_accuracy"],
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        positive_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> CLIPStyleOutput:
        embeddings = self.embed(pixel_values, input_ids, attention_mask, token_type_ids)
        return self.loss_from_embeddings(
            embeddings, input_ids, attention_mask, positive_ids=positive_ids, return_loss=return_loss
        )

    @torch.no_grad()
    def _locked_text_features(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """``(B, T) -> (B, text hidden)`` pooled outputs of the locked text encoder, computed once per distinct
        caption and cached (a locked tower in eval mode is a fixed function: LiT precomputes it the same way), so
        training with a locked text tower costs the vision side only. The cache is not saved."""
        cache: dict[tuple, torch.Tensor] = self.__dict__.setdefault("_text_cache", {})
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keys = [tuple(row[row_mask.bool()].tolist()) for row, row_mask in zip(input_ids, mask)]
        missing = [index for index, key in enumerate(keys) if key not in cache]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            pooled = self.text_model(
                input_ids=input_ids[rows], attention_mask=mask[rows],
                token_type_ids=None if token_type_ids is None else token_type_ids[rows],
            ).pooler_output
            for index, features in zip(missing, pooled):
                cache[keys[index]] = features
        return torch.stack([cache[key] for key in keys])

    def after_optimizer_step(self, progress) -> None:
        # Radford et al. 2021 §2.5: the temperature is "clipped to prevent scaling the logits by more than 100".
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.method_config.max_logit_scale))


def caption_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, T) -> (B,)`` int64 ids, equal exactly for captions with the same tokens (padding ignored), and the same
    on every process whatever its padding (a hash of the unpadded token ids, so gathered ids compare across
    processes). The hash is 64 bits: two different captions of one batch share an id with probability ~B^2 / 2^64."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    ids = []
    for row, row_mask in zip(input_ids.cpu(), mask.cpu()):
        tokens = row[row_mask.bool()].to(torch.int64).numpy().tobytes()
        ids.append(int.from_bytes(hashlib.blake2b(tokens, digest_size=8).digest(), "little", signed=True))
    return torch.tensor(ids, dtype=torch.int64, device=input_ids.device)
