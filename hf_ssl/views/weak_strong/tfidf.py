"""UDA's TF-IDF word replacement (Xie et al. 2020, Appendix A, "TF-IDF based word replacing"): replace
uninformative words (low TF-IDF in their sentence) with other uninformative words of the corpus, keep keywords.

The statistics are computed once, offline, on the unlabelled corpus (:func:`fit_idf`); :class:`TfIdfTable` is plain
data (dicts, lists, floats) and pickles, so it can be saved with a run and shipped to dataloader workers.

Words are the tokens of :data:`WORD_PATTERN`: runs of letters/digits/underscore, and each other non-space character
alone (``"Don't stop!"`` -> ``Don ' t stop !``). UDA uses BERT's basic tokenizer, which splits the same way (and
lowercases for uncased BERT); here the lookup is lowercased and the text keeps its casing except for replaced words.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Words: runs of word characters, and each punctuation mark or other non-space symbol on its own.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> tuple[list[str], list[str]]:
    """``text`` -> ``(words, gaps)`` with ``len(gaps) == len(words) + 1``: ``gaps[i]`` is the text before
    ``words[i]`` (the last gap follows the last word), so :func:`join_words` gives ``text`` back exactly."""
    words, gaps, end = [], [], 0
    for match in WORD_PATTERN.finditer(text):
        gaps.append(text[end : match.start()])
        words.append(match.group())
        end = match.end()
    gaps.append(text[end:])
    return words, gaps


def join_words(words: Sequence[str], gaps: Sequence[str]) -> str:
    """The inverse of :func:`split_words`."""
    return "".join(gap + word for gap, word in zip(gaps, words)) + gaps[len(words)]


@dataclass
class TfIdfTable:
    """Corpus statistics for TF-IDF word replacement (picklable; :func:`fit_idf` builds it).

    num_documents: N, the documents of the corpus (a sentence pair is one document, as in UDA).
    idf: ``IDF(w) = log(N / df(w))`` per lowercased word, ``df`` the number of documents holding ``w``.
    counts: ``freq(w)``, the occurrences of ``w`` in the whole corpus.
    """

    num_documents: int
    idf: dict[str, float]
    counts: dict[str, int]

    def __post_init__(self):
        self._vocabulary: list[str] | None = None
        self._sampling: np.ndarray | None = None

    def __getstate__(self):
        return {"num_documents": self.num_documents, "idf": self.idf, "counts": self.counts}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def unknown_idf(self) -> float:
        """IDF of a word absent from the corpus: that of the rarest word, ``log(N)`` (so it counts as a keyword)."""
        return math.log(self.num_documents)

    def replacement_distribution(self) -> tuple[list[str], np.ndarray]:
        """The words that replace others and their probabilities (UDA): ``S(w) = freq(w) IDF(w)`` scores how much
        of a keyword ``w`` is in the whole corpus, and ``P(w) = (max S - S(w)) / Z'``, so frequent, spread-out
        words are drawn most and the top keyword never. (UDA's released code sums ``TF(w, d) IDF(w)`` over
        documents instead of ``freq(w) IDF(w)``: the same ranking up to document lengths; this follows the paper.)
        A corpus whose words all score the same gets a uniform distribution."""
        if self._vocabulary is None:
            vocabulary = sorted(self.idf)
            scores = np.array([self.counts[word] * self.idf[word] for word in vocabulary])
            weights = scores.max() - scores
            total = weights.sum()
            self._vocabulary = vocabulary
            self._sampling = weights / total if total > 0 else np.full(len(vocabulary), 1 / len(vocabulary))
        return self._vocabulary, self._sampling

    def replacement_probabilities(self, words: Sequence[str], strength: float) -> np.ndarray:
        """Per word of one sentence (or sentence pair), the probability that it is replaced (UDA):
        ``min(p (C - TFIDF(x_i)) / Z, 1)`` with ``TFIDF(w) = TF(w) IDF(w)``, ``TF`` the word's share of the
        sentence, ``C`` the sentence's largest TF-IDF, ``Z`` the mean of ``C - TFIDF`` and ``p = strength``. The
        expected number of replacements is ``p * len(words)`` (before the cap at 1). A sentence whose words all score
        the same (one word, or only unknown words) is left as it is: nothing there is less informative than the
        rest, and UDA's formula is 0/0."""
        if not words:
            return np.zeros(0)
        lowered = [word.lower() for word in words]
        term_counts = Counter(lowered)
        scores = np.array(
            [term_counts[word] / len(lowered) * self.idf.get(word, self.unknown_idf) for word in lowered]
        )
        margins = scores.max() - scores
        mean = margins.mean()
        if mean <= 0:
            return np.zeros(len(words))
        return np.minimum(strength * margins / mean, 1.0)

    def replace(self, texts: Sequence[str], strength: float, rng: np.random.Generator) -> list[str]:
        """TF-IDF word replacement of one example, ``texts`` its one text or its sentence pair. The pair's words are
        scored together (UDA scores ``word_list_a + word_list_b``); each text keeps its spacing and punctuation
        except where a word is replaced by a (lowercase) draw from :meth:`replacement_distribution`."""
        split = [split_words(text) for text in texts]
        all_words = [word for words, _ in split for word in words]
        probabilities = self.replacement_probabilities(all_words, strength)
        replaced = rng.random(len(all_words)) < probabilities
        vocabulary, sampling = self.replacement_distribution()
        draws = iter(rng.choice(len(vocabulary), size=int(replaced.sum()), p=sampling))
        outputs, position = [], 0
        for words, gaps in split:
            new_words = [
                vocabulary[next(draws)] if replaced[position + i] else word for i, word in enumerate(words)
            ]
            position += len(words)
            outputs.append(join_words(new_words, gaps))
        return outputs


def fit_idf(texts: Iterable[str | Sequence[str]]) -> TfIdfTable:
    """The :class:`TfIdfTable` of an unlabelled corpus: one document per item, a str or a sentence pair (whose two
    texts count as one document, as in UDA). Words are :data:`WORD_PATTERN` tokens, lowercased.

    Raises ``ValueError`` for fewer than 2 documents or no words (IDF is then 0 everywhere): fit on the unlabelled
    training texts.
    """
    document_frequency: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    num_documents = 0
    for item in texts:
        parts = [item] if isinstance(item, str) else list(item)
        if not all(isinstance(part, str) for part in parts):
            raise ValueError(
                f"fit_idf takes texts (str) or sentence pairs (tuples of str), got {item!r}: drop empty rows first"
            )
        words = [word.lower() for part in parts for word in WORD_PATTERN.findall(part)]
        num_documents += 1
        counts.update(words)
        document_frequency.update(set(words))
    if num_documents < 2 or not counts:
        raise ValueError(
            f"fit_idf needs at least 2 documents with words, got {num_documents} documents and {len(counts)} distinct "
            "words: fit it on the unlabelled training texts"
        )
    idf = {word: math.log(num_documents / frequency) for word, frequency in document_frequency.items()}
    return TfIdfTable(num_documents=num_documents, idf=idf, counts=dict(counts))
