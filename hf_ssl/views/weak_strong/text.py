"""Weak and strong views of a text or a sentence pair.

- weak: EDA's random swap (Wei & Zou 2019: swap two random words, ``num_swaps`` times; 1 swap by default, light) or
  word dropout (drop each word with a probability, keep at least one);
- strong: UDA's TF-IDF word replacement (Xie et al. 2020, Appendix A; :mod:`.tfidf`), whose IDF table is fitted
  offline on the unlabelled corpus (:meth:`TextWeakStrongViews.fit`).

UDA's other text augmentation, back-translation (English -> French -> English with sampling), needs a pair of
translation models and is not built in: translate the unlabelled set offline and give the paraphrase as a column.

Words are :data:`~hf_ssl.views.weak_strong.tfidf.WORD_PATTERN` tokens (word-character runs and single punctuation
marks); each augmented text keeps the original spacing around untouched words. ``collate`` tokenises (padding to the
batch's longest, truncating to ``max_length``), as a pair when there are two columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .protocol import check_columns, split_value
from .tfidf import TfIdfTable, fit_idf, join_words, split_words

WEAK_AUGMENTATIONS = ("swap", "dropout")


@dataclass
class TextWeakStrongConfig:
    """Weak and strong text views.

    weak: ``"swap"`` (EDA's random swap, ``num_swaps`` times) or ``"dropout"`` (each word dropped with
        ``word_dropout_probability``, at least one word kept).
    strength: UDA's ``p`` for TF-IDF replacement, in [0, 1]: the expected fraction of words replaced (UDA: 0.7 on
        DBPedia); 0 replaces nothing.
    """

    weak: str = "swap"
    num_swaps: int = 1
    word_dropout_probability: float = 0.1
    strength: float = 0.7

    def __post_init__(self):
        if self.weak not in WEAK_AUGMENTATIONS:
            raise ValueError(f"weak must be one of {WEAK_AUGMENTATIONS}, got {self.weak!r}")
        if self.num_swaps < 0:
            raise ValueError(f"num_swaps must be >= 0 (EDA's light setting: 1), got {self.num_swaps}")
        if not 0 <= self.word_dropout_probability < 1:
            raise ValueError(f"word_dropout_probability must be in [0, 1), got {self.word_dropout_probability}")
        if not 0 <= self.strength <= 1:
            raise ValueError(
                f"strength (UDA's p, the expected fraction of words replaced) must be in [0, 1], got {self.strength}: "
                "UDA used 0.7; 0 turns replacement off"
            )


class TextWeakStrongViews:
    """Weak and strong views of a text or sentence pair (a :class:`~hf_ssl.views.weak_strong.WeakStrongViews`).

    ``weak(value, rng)`` / ``strong(value, rng)``: a str (one column) or a tuple of two str (a pair, in
    ``input_columns`` order) -> the augmented str / tuple of str; each text of a pair is augmented on its own (UDA's
    TF-IDF scores count the pair's words together, as its code does). ``collate(values)`` -> the tokenizer's
    ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when it makes them), ``(B, L)`` with ``L <= max_length``.

    Args:
        tokenizer: the classifier's tokenizer (``PreTrainedTokenizer(Fast)``).
        max_length: truncation length of ``collate`` (pairs: the longer text is truncated first).
        idf: the :class:`~hf_ssl.views.weak_strong.tfidf.TfIdfTable` of the unlabelled corpus; required unless
            ``config.strength`` is 0. :meth:`fit` builds it and the views in one call.
        config: :class:`TextWeakStrongConfig` (default: swap 1 word; TF-IDF strength 0.7).
        input_columns: ``("text",)``, or two columns for sentence pairs (``("premise", "hypothesis")``).

    All random draws come from ``rng``.
    """

    config_class = TextWeakStrongConfig

    def __init__(
        self,
        tokenizer,
        max_length: int = 128,
        *,
        idf: TfIdfTable | None = None,
        config: TextWeakStrongConfig | None = None,
        input_columns: Sequence[str] = ("text",),
    ):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.idf = idf
        self.config = config if config is not None else TextWeakStrongConfig()
        self.input_columns = tuple(input_columns)
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if len(self.input_columns) not in (1, 2):
            raise ValueError(
                f"text views read one column or a sentence pair (two), got {self.input_columns}: name one text column "
                "or two, e.g. input_columns=('premise', 'hypothesis')"
            )
        if idf is None and self.config.strength > 0:
            raise ValueError(
                "the strong view (UDA's TF-IDF replacement) needs the IDF table of the unlabelled corpus: build the "
                "views with TextWeakStrongViews.fit(unlabelled_texts, tokenizer), pass idf=fit_idf(unlabelled_texts), "
                "or set strength=0 in the config"
            )

    @classmethod
    def fit(
        cls,
        texts: Iterable[str | Sequence[str]],
        tokenizer,
        max_length: int = 128,
        *,
        config: TextWeakStrongConfig | None = None,
        input_columns: Sequence[str] = ("text",),
    ) -> TextWeakStrongViews:
        """The views with the IDF table of ``texts``, the unlabelled corpus (str, or pairs of str: one document
        each), computed once here (:func:`~hf_ssl.views.weak_strong.tfidf.fit_idf`)."""
        return cls(tokenizer, max_length, idf=fit_idf(texts), config=config, input_columns=input_columns)

    # -- the interface -------------------------------------------------------------------------------------------------

    def plain(self, value):
        """The evaluation view: the text(s) as they are."""
        return self._pack(self._texts(value))

    def weak(self, value, rng: np.random.Generator):
        """Random swap or word dropout of each text."""
        texts = self._texts(value)
        if self.config.weak == "swap":
            augmented = [random_swap(text, self.config.num_swaps, rng) for text in texts]
        else:
            augmented = [word_dropout(text, self.config.word_dropout_probability, rng) for text in texts]
        return self._pack(augmented)

    def strong(self, value, rng: np.random.Generator):
        """UDA's TF-IDF word replacement with strength ``config.strength``."""
        texts = self._texts(value)
        if self.config.strength == 0:
            return self._pack(texts)
        return self._pack(self.idf.replace(texts, self.config.strength, rng))

    def collate(self, values: list) -> dict[str, torch.Tensor]:
        """Tokenise a batch: ``{"input_ids", "attention_mask"(, "token_type_ids")}``, each ``(B, L)`` int64."""
        if not values:
            raise ValueError("collate got an empty batch: drop empty batches before collating")
        columns = list(zip(*(self._texts(value) for value in values)))
        encoded = self.tokenizer(
            *[list(column) for column in columns],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return dict(encoded)

    # -- checks --------------------------------------------------------------------------------------------------------

    def check_columns(self, column_names) -> None:
        """Refuse a dataset without the text column(s) (call it once on ``dataset.column_names``)."""
        check_columns(self.input_columns, column_names, "name the text column(s) with `input_columns=`")

    def _texts(self, value) -> tuple[str, ...]:
        texts = split_value(value, self.input_columns)
        for column, text in zip(self.input_columns, texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"the {column!r} column holds {type(text).__name__}, not str: drop or fill missing texts "
                    "(dataset.filter(lambda row: row[column] is not None))"
                )
        return texts

    def _pack(self, texts):
        return texts[0] if len(self.input_columns) == 1 else tuple(texts)


def random_swap(text: str, num_swaps: int, rng: np.random.Generator) -> str:
    """EDA's random swap (Wei & Zou 2019): ``num_swaps`` times, exchange two words at distinct random positions
    (the spacing stays where it was). Texts of fewer than 2 words come back unchanged."""
    words, gaps = split_words(text)
    if len(words) < 2:
        return text
    for _ in range(num_swaps):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return join_words(words, gaps)


def word_dropout(text: str, probability: float, rng: np.random.Generator) -> str:
    """Drop each word with ``probability`` (with the space before it, or after it for a leading word), keeping at
    least one word (a random one when all were drawn for dropping). Texts without words come back unchanged."""
    words, gaps = split_words(text)
    if not words:
        return text
    keep = rng.random(len(words)) >= probability
    if not keep.any():
        keep[int(rng.integers(len(words)))] = True
    kept_words, kept_gaps = [], []
    for i, word in enumerate(words):
        if keep[i]:
            # The first kept word keeps the text's leading gap; the others keep the gap before them.
            kept_gaps.append(gaps[0] if not kept_words else gaps[i])
            kept_words.append(word)
    kept_gaps.append(gaps[-1])
    return join_words(kept_words, kept_gaps)
