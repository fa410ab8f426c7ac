"""Every batch builder of hf_ssl, one per kind of example. Each keeps the labels of labelled examples as ``labels``.

- :func:`stack_views`: image views (multi-crop, single view) stacked into ``(batch, views, C, H, W)`` tensors;
- :class:`MaskedLMCollator`: padding plus dynamic masking for masked-LM (+ SOP/NSP) pretraining;
- :class:`SentenceTupleCollator`: tokenised anchor / positive / negative sentences for Sentence-BERT;
- :class:`ImageCaptionCollator`: images and tokenised captions for CLIP-style training;
- :class:`AudioCollator`: raw waveforms padded with attention masks (plus a method's pretraining inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .image_decoding import to_rgb

#: Per-example seed that an augmentation (:class:`hf_ssl.views.audio.AudioCropTransform`) emits next to its view,
#: from which :class:`AudioCollator` seeds a method's random choices for the batch (wav2vec 2.0's masks).
VIEW_SEED = "view_seed"


def batch_seed(examples: Sequence[dict[str, Any]]) -> int | None:
    """One seed for a batch's random choices, mixed from its examples' ``view_seed`` (``numpy.random.SeedSequence``):
    it depends on which examples form the batch and on nothing else. ``None`` when an example has no view seed."""
    seeds = [example.get(VIEW_SEED) for example in examples]
    return None if None in seeds else int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])


def batch_generator(examples: Sequence[dict[str, Any]]) -> torch.Generator | None:
    """A CPU generator seeded by :func:`batch_seed`; ``None`` (torch's global RNG) without view seeds."""
    seed = batch_seed(examples)
    return None if seed is None else torch.Generator().manual_seed(seed)


def stack_views(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack every tensor field of the examples along a new batch dimension, and keep their labels.

    ``[{"global_crops": (G, C, H, W), "local_crops": (L, C, h, w), "labels": 3}, ...]`` -> ``{"global_crops":
    (B, G, C, H, W), "local_crops": (B, L, C, h, w), "labels": (B,)}`` (int64 class ids, or float32 for soft or
    regression targets; ``-1`` conventionally marks an unlabelled example). Other non-tensor fields are dropped.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    keys = [key for key, value in examples[0].items() if isinstance(value, torch.Tensor)]
    if not keys:
        raise ValueError(
            f"examples carry no tensors (fields: {sorted(examples[0])}); attach a view transform with "
            "hf_ssl.views.apply_views before training"
        )
    batch = {key: torch.stack([example[key] for example in examples]) for key in keys}
    if "labels" in examples[0] and not isinstance(examples[0]["labels"], torch.Tensor):
        labels = [example["labels"] for example in examples]
        floating = any(isinstance(label, float) for label in labels)
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if floating else torch.long)
    return batch


@dataclass
class AudioCollator:
    """Pads a list of ``{"input_values": waveform}`` examples into ``input_values`` ``(batch, samples)`` float32 and
    ``attention_mask`` ``(batch, samples)`` with ``feature_extractor`` (a ``Wav2Vec2FeatureExtractor``: zero-mean,
    unit-variance per utterance over its real samples, zeros as padding).

    ``pretraining_inputs``: optional ``(attention_mask, batch, samples, seed=...) -> dict`` adding method inputs
    (wav2vec 2.0's masks, negatives and ``labels``, so that the Trainer can count masked frames across the global
    batch). Its ``seed`` is the examples' ``view_seed`` list (each from ``(seed, epoch, index)``): an utterance's
    masks are then the same whatever batch or process holds it, whatever the dataloader workers, the prefetching of the next batch, or a
    resume from a checkpoint (a global RNG would not be: accelerate collates batch k + 1 before step k's checkpoint
    saves the RNG state). Without view seeds it is ``None`` (the method's global RNG).
    """

    feature_extractor: object
    pretraining_inputs: object = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        if "input_values" not in examples[0]:
            raise ValueError(
                f"examples carry no 'input_values' (fields: {sorted(examples[0])}); attach "
                "hf_ssl.views.audio.AudioCropTransform with hf_ssl.views.apply_views before training"
            )
        waveforms = [np.asarray(example["input_values"], dtype=np.float32) for example in examples]
        batch = self.feature_extractor(
            waveforms,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch = {"input_values": batch["input_values"].float(), "attention_mask": batch["attention_mask"].long()}
        if self.pretraining_inputs is not None:
            seeds = [example.get(VIEW_SEED) for example in examples]  # per utterance: the same draws on any process
            seed = None if None in seeds else [int(value) for value in seeds]
            batch.update(self.pretraining_inputs(batch["attention_mask"], *batch["input_values"].shape, seed=seed))
        return batch


class SentenceTupleCollator:
    """Tokenises ``anchor`` / ``positive`` / optional ``negative`` texts into ``{column}_input_ids``,
    ``{column}_attention_mask`` (and ``{column}_token_type_ids`` when the tokenizer makes them), plus ``labels``
    from ``label`` when present (int64 for class ids, float32 for scores). Every row of a batch must have the same
    columns."""

    def __init__(self, tokenizer, max_length: int = 128):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        first = examples[0]
        for name in ("anchor", "positive"):
            if name not in first or any(example.get(name) is None for example in examples):
                raise ValueError(
                    f"sentence pairs need an {name!r} text in every row; got columns {sorted(first)}. Rename the "
                    "columns to anchor / positive (/ negative, label), or set --text_columns"
                )
        batch: dict[str, torch.Tensor] = {}
        columns = ["anchor", "positive"] + (["negative"] if first.get("negative") is not None else [])
        for name in columns:
            texts = [example.get(name) for example in examples]
            if any(not isinstance(text, str) for text in texts):
                raise ValueError(f"column {name!r} must hold a string in every row of the batch")
            tokens = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            batch.update({f"{name}_{key}": value for key, value in tokens.items()})
        if "label" in first and first["label"] is not None:
            labels = [example["label"] for example in examples]
            dtype = torch.long if all(isinstance(label, int) for label in labels) else torch.float32
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch


class ImageCaptionCollator:
    """Batches ``image`` + ``text`` rows into ``pixel_values (B, C, H, W)`` and the tokenised captions
    (``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer makes them).

    image_transform: ``PIL image -> (C, H, W) tensor`` (e.g. :func:`hf_ssl.evaluation.features.default_eval_transform`),
        for rows with an ``image``; rows with ``pixel_values`` (views made by the dataset's transform,
        :class:`hf_ssl.views.CaptionedImageView`) are stacked as they are.
    positive_column: optional integer column (e.g. ``label``) passed on as ``positive_ids (B,)``: rows with equal
        values are positives of each other in the contrastive loss (:class:`hf_ssl.CLIPStyleForPreTraining`).
    """

    def __init__(self, tokenizer, image_transform: Callable, max_length: int = 64, positive_column: str | None = None):
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length
        self.positive_column = positive_column

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        missing = [position for position, example in enumerate(examples) if not isinstance(example.get("text"), str)]
        if missing:
            raise ValueError(
                f"{len(missing)} image(s) of the batch have no caption (`text` column); image-text training needs one "
                "caption per image: add a `text` column (imagefolder: metadata.jsonl with file_name and text; labelled "
                "images: hf_ssl.data.pairs.caption_with_templates)"
            )
        if any(example.get("image") is None and example.get("pixel_values") is None for example in examples):
            raise ValueError("every row needs an `image`; got a row without one")
        # Rows that already hold their view (hf_ssl.views.CaptionedImageView, seeded per example) are only stacked.
        pixels = torch.stack([example["pixel_values"] if example.get("pixel_values") is not None
                              else self.image_transform(to_rgb(example["image"])) for example in examples])
        tokens = self.tokenizer(
            [example["text"] for example in examples], padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {"pixel_values": pixels, **tokens}
        if self.positive_column is not None:
            values = [example.get(self.positive_column) for example in examples]
            if not all(isinstance(value, int) for value in values):
                raise ValueError(f"every row needs an integer `{self.positive_column}` (the positive_column: rows "
                                 f"with equal values are positives); got {values[:4]}")
            batch["positive_ids"] = torch.tensor(values)
        return batch


#: BERT's masking (Devlin et al. 2019, §3.1): 15 % of the tokens are chosen; of those, 80 % become the mask token,
#: 10 % a random token and 10 % stay. The defaults of both the collator and ``hf_ssl.MaskedLMConfig``.
MLM_PROBABILITY = 0.15
MASK_REPLACE_PROB = 0.8
RANDOM_REPLACE_PROB = 0.1


def check_masking(mlm_probability: float, mask_replace_prob: float, random_replace_prob: float) -> None:
    """Refuse masking settings that cannot work, naming the setting and its range."""
    if not 0 < mlm_probability <= 1:
        raise ValueError(f"mlm_probability must be in (0, 1] (with 0 no token is ever predicted), got {mlm_probability}")
    for name, value in (("mask_replace_prob", mask_replace_prob), ("random_replace_prob", random_replace_prob)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if mask_replace_prob + random_replace_prob > 1:
        raise ValueError(
            f"mask_replace_prob + random_replace_prob must be <= 1 (the rest is kept unchanged); got "
            f"{mask_replace_prob} + {random_replace_prob}"
        )


#: Columns the collator pads (other columns are dropped, except ``pair_label``).
SEQUENCE_COLUMNS = ("input_ids", "token_type_ids", "continues_word")


class MaskedLMCollator:
    """Pad a list of tokenized examples and mask them for masked-LM (Devlin et al. 2019, §3.1, Appendix C.2).

    Args:
        tokenizer: needs ``mask_token``, ``pad_token_id`` and ``all_special_ids`` (special tokens are never chosen).
        mlm_probability: share of the non-special tokens (or words) chosen for prediction.
        mask_replace_prob / random_replace_prob: of the chosen tokens, the share replaced by the mask token / a random
            ordinary token; the rest keeps its token.
        whole_word_mask: choose words; every token of a chosen word is predicted. Needs ``continues_word``.
        pad_to_multiple_of: pad lengths up to a multiple of this (8 for tensor cores).
        seed: seed of a private generator (evaluation: the same masks every time); ``None``: each batch's masks are
            seeded by its examples' ``view_seed`` when they carry one (:class:`hf_ssl.views.text.MaskingSeeds`, from
            ``(seed, epoch, index)``), else drawn from torch's global RNG. Training uses the view seeds: the masks
            are then the same whatever the dataloader workers or a resume from a checkpoint (the global RNG is not:
            accelerate collates batch k + 1 before step k's checkpoint saves the RNG state).

    Examples: dicts with ``input_ids`` (list of ints, special tokens included), optional ``token_type_ids``,
    ``continues_word`` and ``pair_label``.

    Returns: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (all ``(batch, length)``; ``labels`` is
    ``-100`` except at chosen positions, which hold the original token) and ``pair_label`` ``(batch,)`` when given.

    Why not ``transformers.DataCollatorForLanguageModeling`` (5.24)? Its token-level masking is what we do, but three
    things it does differently matter here:

    1. With ``whole_word_mask=True`` it turns the 80/10/10 rule off (it forces ``mask_replace_prob=1`` with a warning);
       BERT's whole-word masking keeps it (Google's ``create_pretraining_data.py`` applies 80/10/10 to every token of a
       chosen word).
    2. It finds words from ``offset_mapping`` (a token starts a word when its start offset differs from the previous
       token's end). Our examples are packed from several tokenized sentences and, for SOP/NSP, two segments, so offsets
       restart inside a sequence; we carry the word structure itself instead: ``continues_word`` (1 when a token
       continues the previous token's word), taken from the fast tokenizer's ``word_ids()`` at tokenization time.
    3. Its random replacements are drawn from the whole vocabulary, special tokens (``[CLS]``, ``[PAD]``, ...) included;
       ours are drawn from the ordinary tokens only.

    The benchmark (benchmarks/mlm_throughput.py) uses the stock collator for the stock side of the comparison.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = MLM_PROBABILITY,
        mask_replace_prob: float = MASK_REPLACE_PROB,
        random_replace_prob: float = RANDOM_REPLACE_PROB,
        whole_word_mask: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
    ):
        check_masking_tokenizer(tokenizer)
        check_masking(mlm_probability, mask_replace_prob, random_replace_prob)
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        vocabulary = torch.arange(len(tokenizer))
        self.ordinary_ids = vocabulary[~torch.isin(vocabulary, self.special_ids)]
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        if "input_ids" not in examples[0]:
            raise ValueError(
                f"examples have no `input_ids` (fields: {sorted(examples[0])}); tokenize the text first, e.g. with "
                "hf_ssl.data.text.tokenize_documents and hf_ssl.data.sequences.SentencePairBuilder"
            )
        if self.whole_word_mask and "continues_word" not in examples[0]:
            raise ValueError(
                "whole_word_mask needs a `continues_word` column (1 where a token continues the previous word); "
                "hf_ssl.data.text.tokenize_documents writes it"
            )
        batch = self.pad(examples)
        batch["input_ids"], batch["labels"] = self.mask(
            batch["input_ids"], batch["attention_mask"], batch.pop("continues_word", None),
            generator=self.generator or batch_generator(examples),
        )
        if "pair_label" in examples[0]:
            batch["pair_label"] = torch.tensor([example["pair_label"] for example in examples], dtype=torch.long)
        return batch

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad the sequence columns to the longest example (rounded up to ``pad_to_multiple_of``)."""
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": self.pad_token_id, "token_type_ids": 0, "continues_word": 0}
        batch: dict[str, torch.Tensor] = {}
        for column in SEQUENCE_COLUMNS:
            if column not in examples[0]:
                continue
            padded = torch.full((len(examples), length), pad_values[column], dtype=torch.long)
            for row, example in enumerate(examples):
                values = torch.as_tensor(example[column], dtype=torch.long)
                padded[row, : len(values)] = values
            batch[column] = padded
        lengths = torch.tensor([len(example["input_ids"]) for example in examples])
        batch["attention_mask"] = (torch.arange(length)[None, :] < lengths[:, None]).long()
        batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
        return batch

    def choose(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continues_word: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Which positions are predicted: ``(batch, length)`` bool. Never a special token or padding.

        Token level: each ordinary token with probability ``mlm_probability``. Word level: each word (a token with
        ``continues_word == 0`` and the tokens that continue it) with that probability, all its tokens together.
        """
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        draw = torch.rand(input_ids.shape, generator=generator or self.generator) < self.mlm_probability
        if not self.whole_word_mask:
            return draw & maskable
        word_start = maskable & (continues_word == 0)
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        # Each token reads the draw of its word's first token: the position of the latest word start at or before it.
        start_of_word = torch.where(word_start, positions, torch.zeros_like(positions)).cummax(dim=1).values
        return torch.gather(draw & word_start, 1, start_of_word) & maskable

    def mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continues_word: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked input_ids, labels)``: the 80/10/10 rule applied to the chosen positions. ``generator``: the
        random stream (default: the collator's own, else torch's global RNG)."""
        generator = generator or self.generator
        chosen = self.choose(input_ids, attention_mask, continues_word, generator)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        rule = torch.rand(input_ids.shape, generator=generator)
        to_mask = chosen & (rule < self.mask_replace_prob)
        to_random = chosen & (rule >= self.mask_replace_prob) & (rule < self.mask_replace_prob + self.random_replace_prob)
        masked_ids = input_ids.clone()
        masked_ids[to_mask] = self.mask_token_id
        picks = torch.randint(len(self.ordinary_ids), (int(to_random.sum()),), generator=generator)
        masked_ids[to_random] = self.ordinary_ids[picks]
        return masked_ids, labels


def check_masking_tokenizer(tokenizer) -> None:
    """Refuse tokenizers that cannot make masked-LM batches, naming the fix."""
    if getattr(tokenizer, "mask_token", None) is None or tokenizer.mask_token_id is None:
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} has no mask token, which masked-LM needs; use a BERT-style "
            "tokenizer, train one on the corpus with `--tokenizer train`, or add one with "
            "`tokenizer.add_special_tokens({'mask_token': '[MASK]'})` (and resize the model's embeddings)"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} has no padding token; add one with "
            "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`"
        )
