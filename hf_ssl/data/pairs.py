"""Paired data for contrastive text and image-text training, in one standard form, plus the collators that batch it.

Standard form (``datasets.Dataset`` columns):

- sentence pairs / triplets (Sentence-BERT): ``anchor``, ``positive`` (strings), optional ``negative`` (a hard
  negative string) and optional ``label`` (an NLI class id, or a similarity score in [0, 1]);
- image-caption pairs (CLIP-style): ``image`` (``datasets.Image``), ``text`` (a caption) and optional ``label``.

Loaders for the offline copies in ``../shared/data`` (see its INDEX.md): STS-B (:func:`load_sts_benchmark`), SNLI
(:func:`load_snli`, :func:`nli_triplets`), the emoji captions (:func:`load_emoji_captions`, split by code point) and
CIFAR-10 with captions from class names and prompt templates (:func:`caption_with_templates`).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Value

NLI_LABELS = ("entailment", "neutral", "contradiction")

# Prompt templates for CIFAR-10 captions (the style of Radford et al. 2021's CIFAR-10 prompt ensemble, written here).
# The first TRAIN_TEMPLATES caption training images; HELD_OUT_TEMPLATES are only used for zero-shot evaluation.
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a photo of the small {}.",
    "a good photo of a {}.",
)
HELD_OUT_TEMPLATES = (
    "a pixelated picture of a {}.",
    "an image showing a {}.",
    "a snapshot of the {}.",
    "a dark picture of a {}.",
)


# --------------------------------------------------------------------------------------------------------------------
# Sentence pairs
def load_sts_benchmark(folder: str | Path, split: str) -> Dataset:
    """STS-B ``split`` (``train``, ``dev``, ``test``) as ``anchor``, ``positive`` and ``label`` = gold score / 5.

    The files are tab-separated without quoting (``csv.QUOTE_NONE``); 503 rows carry 2 extra trailing fields (the
    sentences' sources), so only the first 7 columns are kept: genre, file, year, id, score, sentence 1, sentence 2.
    """
    path = Path(folder) / f"sts-{split}.csv"
    if not path.is_file():
        raise ValueError(f"no STS-B split {split!r} at {path}; expected sts-train.csv / sts-dev.csv / sts-test.csv")
    anchors, positives, scores = [], [], []
    with path.open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 7:
                raise ValueError(f"{path}: a row with {len(row)} fields, expected at least 7: {row}")
            scores.append(float(row[4]) / 5.0)
            anchors.append(row[5])
            positives.append(row[6])
    features = Features({"anchor": Value("string"), "positive": Value("string"), "label": Value("float32")})
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "label": scores}, features=features)


def load_snli(folder: str | Path, split: str) -> Dataset:
    """SNLI ``split`` (``validation`` or ``test``) as ``anchor`` (premise), ``positive`` (hypothesis) and ``label``
    (0 entailment, 1 neutral, 2 contradiction); rows without a gold label are dropped."""
    path = Path(folder) / f"snli_{split}.tsv"
    if not path.is_file():
        raise ValueError(f"no SNLI split {split!r} at {path}; expected snli_validation.tsv / snli_test.tsv")
    anchors, positives, labels = [], [], []
    with path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header[:3] != ["premise", "hypothesis", "label"]:
            raise ValueError(f"{path}: expected the header premise, hypothesis, label; got {header}")
        for premise, hypothesis, label, *_ in reader:
            if label.strip() in ("0", "1", "2"):
                anchors.append(premise)
                positives.append(hypothesis)
                labels.append(int(label))
    features = Features(
        {"anchor": Value("string"), "positive": Value("string"), "label": ClassLabel(names=list(NLI_LABELS))}
    )
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "label": labels}, features=features)


def nli_triplets(nli: Dataset) -> Dataset:
    """(premise, entailed hypothesis, contradicting hypothesis) triplets as ``anchor``, ``positive``, ``negative``.

    As Reimers & Gurevych's NLI recipe for multiple-negatives ranking: every entailment of a premise becomes a pair
    whose hard negative is one of the same premise's contradictions (cycled when there are fewer). Premises without
    both are skipped.
    """
    entailed, contradicted = defaultdict(list), defaultdict(list)
    for premise, hypothesis, label in zip(nli["anchor"], nli["positive"], nli["label"]):
        if label == 0:
            entailed[premise].append(hypothesis)
        elif label == 2:
            contradicted[premise].append(hypothesis)
    rows = {"anchor": [], "positive": [], "negative": []}
    for premise, positives in entailed.items():
        negatives = contradicted.get(premise)
        if not negatives:
            continue
        for position, positive in enumerate(positives):
            rows["anchor"].append(premise)
            rows["positive"].append(positive)
            rows["negative"].append(negatives[position % len(negatives)])
    return Dataset.from_dict(rows)


def load_pairs(source: str, split: str, text_columns: Sequence[str] | None = None, label_column: str | None = None):
    """Sentence pairs in the standard form from STS-B or SNLI folders (recognised by their files), a local
    ``.csv`` / ``.tsv`` / ``.json`` / ``.jsonl`` / ``.parquet`` file, or a Hub dataset.

    text_columns: the source's columns that become ``anchor``, ``positive`` (and ``negative``), in that order;
    label_column: the one that becomes ``label``. Without them the source must already use the standard names.
    """
    folder = Path(source)
    if (folder / f"sts-{split}.csv").is_file() or (folder / "sts-train.csv").is_file():
        return load_sts_benchmark(folder, split)
    if any(folder.glob("snli_*.tsv")):
        return load_snli(folder, split)
    from datasets import load_dataset

    kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if folder.is_file() and folder.suffix in kinds:
        extra = {"delimiter": "\t"} if folder.suffix == ".tsv" else {}
        dataset = load_dataset(kinds[folder.suffix], data_files={split: str(folder)}, split=split, **extra)
    else:
        try:
            dataset = load_dataset(source, split=split)
        except Exception as error:  # noqa: BLE001 (datasets raises many kinds)
            raise ValueError(
                f"cannot load sentence pairs from {source!r} (split {split!r}): pass the STS-B or SNLI folder, a "
                ".csv/.tsv/.json/.jsonl/.parquet file or a Hub dataset name"
            ) from error
    renames = dict(zip(text_columns or (), ("anchor", "positive", "negative")))
    if label_column:
        renames[label_column] = "label"
    missing = [name for name in renames if name not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing}; its columns are {dataset.column_names}")
    return dataset.rename_columns({old: new for old, new in renames.items() if old != new})


def pairs_for_objective(pairs: Dataset, objective: str, min_positive_score: float = 0.8) -> Dataset:
    """Shape standard-form pairs for a Sentence-BERT objective, or say what is missing.

    - ``multiple_negatives``: NLI data becomes (premise, entailment, contradiction) triplets (:func:`nli_triplets`);
      scored pairs keep those with ``label >= min_positive_score`` as positives; the label is dropped.
    - ``nli_softmax``: needs integer class labels.
    - ``cosine_similarity`` / ``cosent``: need scores in [0, 1].
    """
    for name in ("anchor", "positive"):
        if name not in pairs.column_names:
            raise ValueError(
                f"sentence pairs need an {name!r} column; got {pairs.column_names}. Name the text columns with "
                "--text_columns (anchor, positive[, negative]) and the label with --label_column"
            )
    label = pairs.features.get("label")
    is_class = isinstance(label, ClassLabel) or (isinstance(label, Value) and label.dtype.startswith("int"))
    is_score = isinstance(label, Value) and label.dtype.startswith("float")
    if objective == "multiple_negatives":
        if is_class:
            return nli_triplets(pairs)
        if is_score:
            return pairs.filter(lambda row: row["label"] >= min_positive_score).remove_columns("label")
        return pairs
    if objective == "nli_softmax" and not is_class:
        raise ValueError("objective nli_softmax needs integer class labels (`label`, e.g. SNLI's 0/1/2)")
    if objective in ("cosine_similarity", "cosent"):
        if not is_score:
            raise ValueError(f"objective {objective} needs similarity scores in [0, 1] as `label` (e.g. STS-B / 5)")
        scores = pairs["label"]
        if min(scores) < 0 or max(scores) > 1:
            raise ValueError(f"similarity scores must lie in [0, 1], got [{min(scores)}, {max(scores)}]; rescale them")
    if "negative" in pairs.column_names:
        pairs = pairs.remove_columns("negative")
    return pairs


def text_keys(dataset: Dataset) -> list[tuple[str, ...]]:
    """Per row, the texts that must not repeat in a batch of in-batch negatives (for
    :class:`hf_ssl.data.samplers.NoDuplicatesSampler`)."""
    columns = [name for name in ("anchor", "positive", "negative", "text") if name in dataset.column_names]
    return list(zip(*(dataset[name] for name in columns)))


# --------------------------------------------------------------------------------------------------------------------
# Image-caption pairs
def load_emoji_captions(folder: str | Path, split: str, held_out_fraction: float = 0.2) -> Dataset:
    """The emoji glyphs with their Unicode names, split by code point (``train`` / ``test``).

    A code point is held out when the first 8 hex digits of ``sha256(codepoint)``, read as a fraction of 2^32, fall
    below ``held_out_fraction``: a fixed split that does not depend on file order and never shares a glyph or a
    caption between train and test. Columns: ``image``, ``text``, ``codepoint``.
    """
    from datasets import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"emoji captions have the splits 'train' and 'test' (held out by code point), not {split!r}")
    if not (Path(folder) / "metadata.jsonl").is_file():
        raise ValueError(f"{folder} has no metadata.jsonl; expected the emoji_captions folder (images/ + metadata.jsonl)")
    dataset = load_dataset("imagefolder", data_dir=str(folder), split="train")
    held_out = [_hashed_fraction(codepoint) < held_out_fraction for codepoint in dataset["codepoint"]]
    keep = [index for index, test in enumerate(held_out) if test == (split == "test")]
    return dataset.select(keep)


def _hashed_fraction(value: str) -> float:
    return int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) / 2**32


def caption_with_templates(
    dataset: Dataset, templates: Sequence[str] = TRAIN_TEMPLATES, seed: int = 0, class_names: Sequence[str] | None = None
) -> Dataset:
    """Add a ``text`` column to a labelled image dataset: ``templates[t].format(class name)`` with ``t`` drawn per
    image from ``seed``. The class names come from the ``label`` ClassLabel (or ``class_names``)."""
    if "label" not in dataset.column_names:
        raise ValueError("captions from class names need a `label` column (a labelled image dataset)")
    names = list(class_names or dataset.features["label"].names)
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(templates), (len(dataset),), generator=generator).tolist()
    texts = [templates[t].format(names[label]) for t, label in zip(choice, dataset["label"])]
    return dataset.add_column("text", texts)


