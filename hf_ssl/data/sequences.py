"""Training sequences from tokenized documents: packed single segments (masked-LM) or segment pairs (SOP, NSP).

transformers 5 has no pair builder (``TextDatasetForNextSentencePrediction`` is gone), so this follows the original
recipes, written for ``datasets.map(batched=True, num_proc=...)``:

- BERT ``create_instances_from_document`` (Devlin et al. 2019, §3.1 and Appendix A.1, Google's
  ``create_pretraining_data.py``): consecutive sentences of a document are gathered until a target length (the
  maximum, or with ``short_seq_probability`` a shorter random one, to reduce the pretrain/finetune length mismatch),
  then cut at a random sentence boundary into segments A and B. NSP: B is replaced by text from another document for
  half of the examples, and the unused sentences go back to the pool.
- ALBERT sentence-order prediction (Lan et al. 2019, §3.1): A and B are always consecutive in the document; for half
  of the examples they are swapped. A gathered chunk of a single long sentence is cut inside the sentence, at a word
  boundary, so that both segments are real consecutive text.
- Pairs longer than the maximum are truncated one token at a time from the longer segment, at its front or back at
  random (as BERT's ``truncate_seq_pair``).

Randomness is per document (seeded from ``seed`` and the document's index), so the output does not depend on
``num_proc`` or ``batch_size`` -- except NSP's random segments, which come from another document *of the same map
batch* (the whole corpus is not visible to a batched map); keep ``batch_size`` large (the default 1000 documents).
A batch with a single document has no other document to draw from: its NSP examples all keep the true continuation.

Sequences are ``[CLS] A [SEP]`` (single) or ``[CLS] A [SEP] B [SEP]`` with ``token_type_ids`` 0 for ``[CLS] A [SEP]``
and 1 for ``B [SEP]``. ``pair_label``: 0 = B follows A in the document, 1 = swapped (SOP) / random (NSP).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PAIR_TASKS = (None, "sop", "nsp")


@dataclass
class Segment:
    """Tokens of consecutive text and their ``continues_word`` flags (the first token always starts a word)."""

    ids: list[int]
    continues: list[int]

    @classmethod
    def join(cls, sentences: list[tuple[list[int], list[int]]]) -> Segment:
        ids = [token for sentence_ids, _ in sentences for token in sentence_ids]
        continues = [flag for _, sentence_continues in sentences for flag in sentence_continues]
        return cls(ids, continues)

    def __len__(self) -> int:
        return len(self.ids)


class SentencePairBuilder:
    """``datasets.map(batched=True, with_indices=True)`` function: tokenized documents -> training sequences.

    Args:
        cls_token_id / sep_token_id: the special tokens around segments (``tokenizer.cls_token_id`` ...).
        max_seq_length: length of the packed sequences, special tokens included.
        pair_task: ``None`` (one segment per sequence, for masked-LM only), ``"sop"`` or ``"nsp"``.
        short_seq_probability: share of sequences with a random shorter target length (BERT: 0.1).
        seed: base seed; each document draws from ``Random(seed, document index)``.

    Input columns (from :func:`hf_ssl.data.text.tokenize_documents`): ``sentence_input_ids``,
    ``sentence_continues_word``. Output columns: ``input_ids``, ``token_type_ids``, ``continues_word`` and, for a
    pair task, ``pair_label``. Use with ``remove_columns=dataset.column_names`` (one document gives many sequences).
    """

    def __init__(
        self,
        cls_token_id: int,
        sep_token_id: int,
        max_seq_length: int = 128,
        pair_task: str | None = None,
        short_seq_probability: float = 0.1,
        seed: int = 0,
    ):
        if pair_task not in PAIR_TASKS:
            raise ValueError(f"pair_task must be one of {PAIR_TASKS}, got {pair_task!r}")
        specials = 3 if pair_task else 2
        if max_seq_length < specials + 2:
            raise ValueError(f"max_seq_length must be at least {specials + 2} for pair_task={pair_task!r}")
        if not 0 <= short_seq_probability <= 1:
            raise ValueError(f"short_seq_probability must be in [0, 1], got {short_seq_probability}")
        if cls_token_id is None or sep_token_id is None:
            raise ValueError("the tokenizer needs [CLS]- and [SEP]-like tokens (cls_token, sep_token) to build sequences")
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.max_seq_length = max_seq_length
        self.pair_task = pair_task
        self.short_seq_probability = short_seq_probability
        self.seed = seed
        self.max_tokens = max_seq_length - specials

    @classmethod
    def for_tokenizer(cls, tokenizer, **kwargs) -> SentencePairBuilder:
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, **kwargs)

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        missing = {"sentence_input_ids", "sentence_continues_word"} - set(batch)
        if missing:
            raise ValueError(
                f"missing columns {sorted(missing)} (columns: {sorted(batch)}); tokenize the documents first with "
                "hf_ssl.data.text.tokenize_documents"
            )
        documents = [
            list(zip(ids, continues))
            for ids, continues in zip(batch["sentence_input_ids"], batch["sentence_continues_word"])
        ]
        output: dict[str, list] = {"input_ids": [], "token_type_ids": [], "continues_word": []}
        if self.pair_task:
            output["pair_label"] = []
        for position, (document, index) in enumerate(zip(documents, indices)):
            rng = random.Random(self.seed * 1_000_003 + index)
            others = [other for other_position, other in enumerate(documents) if other_position != position and other]
            for example in self._document_examples(document, others, rng):
                for key, value in example.items():
                    output[key].append(value)
        return output

    # ----------------------------------------------------------------------------------------------------------------
    def _target_length(self, rng: random.Random) -> int:
        if rng.random() < self.short_seq_probability:
            return rng.randint(2, self.max_tokens)
        return self.max_tokens

    def _document_examples(self, document, others, rng: random.Random):
        target = self._target_length(rng)
        chunk: list[tuple[list[int], list[int]]] = []
        length = 0
        position = 0
        while position < len(document):
            chunk.append(document[position])
            length += len(document[position][0])
            if position == len(document) - 1 or length >= target:
                if self.pair_task is None:
                    yield self._single(Segment.join(chunk))
                else:
                    example, unused = self._pair(chunk, target, others, rng)
                    position -= unused
                    if example is not None:
                        yield example
                chunk, length = [], 0
                target = self._target_length(rng)
            position += 1

    def _single(self, segment: Segment) -> dict[str, list[int]]:
        ids, continues = segment.ids[: self.max_tokens], segment.continues[: self.max_tokens]
        return {
            "input_ids": [self.cls_token_id, *ids, self.sep_token_id],
            "token_type_ids": [0] * (len(ids) + 2),
            "continues_word": [0, *continues, 0],
        }

    def _pair(self, chunk, target, others, rng: random.Random):
        """One pair from a chunk of sentences; returns ``(example or None, sentences to put back)``."""
        unused = 0
        if len(chunk) >= 2:
            a_end = rng.randint(1, len(chunk) - 1)
            first, second = Segment.join(chunk[:a_end]), Segment.join(chunk[a_end:])
        else:
            first, second = _split_inside(Segment.join(chunk), rng)
            if first is None:
                return None, 0
        label = 0
        if self.pair_task == "nsp" and others and rng.random() < 0.5:
            # BERT: B from a random other document, starting at a random sentence, as long as the rest of the target.
            other = others[rng.randrange(len(others))]
            start = rng.randrange(len(other))
            wanted = max(1, target - len(first))
            taken = []
            for sentence in other[start:]:
                taken.append(sentence)
                if sum(len(ids) for ids, _ in taken) >= wanted:
                    break
            unused = len(chunk) - a_end if len(chunk) >= 2 else 0
            second, label = Segment.join(taken), 1
        elif self.pair_task == "sop" and rng.random() < 0.5:
            first, second, label = second, first, 1
        first, second = _truncate_pair(first, second, self.max_tokens, rng)
        return self._pair_example(first, second, label), unused

    def _pair_example(self, first: Segment, second: Segment, label: int) -> dict[str, list[int]]:
        return {
            "input_ids": [self.cls_token_id, *first.ids, self.sep_token_id, *second.ids, self.sep_token_id],
            "token_type_ids": [0] * (len(first) + 2) + [1] * (len(second) + 1),
            "continues_word": [0, *first.continues, 0, *second.continues, 0],
            "pair_label": label,
        }


def _split_inside(segment: Segment, rng: random.Random):
    """Cut one long sentence at a random word boundary into two consecutive segments (``(None, None)``: one word)."""
    boundaries = [position for position in range(1, len(segment)) if segment.continues[position] == 0]
    if not boundaries:
        return None, None
    cut = boundaries[rng.randrange(len(boundaries))]
    return (
        Segment(segment.ids[:cut], segment.continues[:cut]),
        Segment(segment.ids[cut:], segment.continues[cut:]),
    )


def _truncate_pair(first: Segment, second: Segment, max_tokens: int, rng: random.Random):
    """BERT's ``truncate_seq_pair``: drop tokens from the longer segment, at its front or back at random."""
    first = Segment(list(first.ids), list(first.continues))
    second = Segment(list(second.ids), list(second.continues))
    while len(first) + len(second) > max_tokens:
        longer = first if len(first) > len(second) else second
        if rng.random() < 0.5:
            del longer.ids[0], longer.continues[0]
        else:
            longer.ids.pop(), longer.continues.pop()
    for segment in (first, second):
        if segment.continues:
            segment.continues[0] = 0  # a cut word's remainder counts as a word of its own
    return first, second
