"""Paired data for contrastive text and image-text training, in one standard form, plus the collators that batch it.

Standard form (``datasets.Dataset`` columns):

- sentence pairs / triplets (Sentence-BERT): ``anchor``, ``positive`` (strings), optional ``negative`` (a hard
  negative string) and optional ``label`` (an NLI class id, or a similarity score in [0, 1]);
- image-caption pairs (CLIP-style): ``image`` (``datasets.Image``), ``text`` (a caption) and optional ``label``.

Datasets are named by their Hub ids (``sentence-transformers/stsb``, ``stanfordnlp/snli``); a local copy is found
through ``HF_SSL_DATA_DIR`` (:mod:`hf_ssl.data.sources`) and read in its own format, else the Hub copy is downloaded;
both give the same standard form. Loaders: STS-B (:func:`load_sts_benchmark`), SNLI (:func:`load_snli`,
:func:`nli_triplets`), the emoji captions (:func:`load_emoji_captions`, a local folder only, split by code point) and
CIFAR-10 with captions from class names and prompt templates (:func:`caption_with_templates`).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, IterableDataset, Value

from .sources import (
    EMOJI_CAPTIONS,
    LOCAL_ONLY_DATASETS,
    SNLI,
    STSB,
    DatasetNotAvailableError,
    dataset_not_available,
    hub_id_for,
    is_hub_mirror,
    load_hub_dataset,
    resolve_dataset,
)

NLI_LABELS = ("entailment", "neutral", "contradiction")
#: STS-B split names: the Hub's ``validation`` is the local copy's ``dev`` (both names are accepted).
STS_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}

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
def load_sts_benchmark(source: str | Path = STSB, split: str = "validation", *, flag: str = "--dataset") -> Dataset:
    """STS-B ``split`` (``train``, ``validation``, ``test``; ``dev`` is another name for ``validation``) as
    ``anchor``, ``positive`` and ``label`` = gold score / 5, in [0, 1].

    ``source``: the Hub id ``sentence-transformers/stsb`` (its local copy is used when ``HF_SSL_DATA_DIR`` holds one),
    a folder with ``sts-{train,dev,test}.csv`` (the original files), or another Hub id / mirror folder with the
    columns ``sentence1``, ``sentence2`` and ``score`` (in [0, 1] as on ``sentence-transformers/stsb``, or 0-5 as on
    ``mteb/stsbenchmark-sts``, then divided by 5).

    The original files are tab-separated without quoting (``csv.QUOTE_NONE``); 503 rows carry 2 extra trailing fields
    (the sentences' sources), so only the first 7 columns are kept: genre, file, year, id, score, sentence 1,
    sentence 2. Both copies hold the same 5,749 / 1,500 / 1,379 pairs. ``flag``: the option that names the source,
    for the error when neither copy is there (``--sts_dataset`` for the evaluation set).
    """
    if split not in STS_SPLITS:
        raise ValueError(f"STS-B has the splits 'train', 'validation' (alias 'dev') and 'test', not {split!r}")
    folder = Path(resolve_dataset(str(source))).expanduser()
    if not (folder / "sts-train.csv").is_file() and not (folder / f"sts-{STS_SPLITS[split]}.csv").is_file():
        if folder.is_dir() and not is_hub_mirror(folder):
            raise ValueError(
                f"no STS-B split {split!r} in {folder}; expected sts-train.csv / sts-dev.csv / sts-test.csv"
            )
        return _hub_sts_pairs(str(folder) if folder.is_dir() else str(source), split, flag)
    path = folder / f"sts-{STS_SPLITS[split]}.csv"
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
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "label": scores}, features=STS_FEATURES)


STS_FEATURES = Features({"anchor": Value("string"), "positive": Value("string"), "label": Value("float32")})


def _hub_sts_pairs(name: str, split: str, flag: str) -> Dataset:
    """STS-B from the Hub layout: ``sentence1``, ``sentence2``, ``score`` -> the standard form (score in [0, 1])."""
    hub_split = "validation" if split in ("dev", "validation") else split
    dataset = load_hub_dataset(name, split=hub_split, flag=flag)
    missing = [column for column in ("sentence1", "sentence2", "score") if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {missing} of STS-B's Hub layout; its columns are "
                         f"{dataset.column_names}")
    scores = [float(score) for score in dataset["score"]]
    scale = 5.0 if scores and max(scores) > 1.0 else 1.0  # mteb/stsbenchmark-sts scores 0-5
    return Dataset.from_dict({"anchor": dataset["sentence1"], "positive": dataset["sentence2"],
                              "label": [score / scale for score in scores]}, features=STS_FEATURES)


def load_snli(source: str | Path = SNLI, split: str = "validation") -> Dataset:
    """SNLI ``split`` as ``anchor`` (premise), ``positive`` (hypothesis) and ``label`` (0 entailment, 1 neutral,
    2 contradiction); rows without a gold label are dropped (the Hub marks them ``-1``, the original files ``-``).

    ``source``: the Hub id ``stanfordnlp/snli`` (splits train / validation / test, columns premise, hypothesis,
    label), whose local copy (used when ``HF_SSL_DATA_DIR`` holds one) is a folder of ``snli_validation.tsv`` /
    ``snli_test.tsv``: it has no train split.
    """
    folder = Path(resolve_dataset(str(source))).expanduser()
    if not any(folder.glob("snli_*.tsv")):
        if folder.is_dir() and not is_hub_mirror(folder):
            raise ValueError(f"no SNLI split {split!r} in {folder}; expected snli_validation.tsv / snli_test.tsv")
        return _hub_snli_pairs(str(folder) if folder.is_dir() else str(source), split)
    path = folder / f"snli_{split}.tsv"
    if not path.is_file():
        raise ValueError(f"no SNLI split {split!r} at {path}; expected snli_validation.tsv / snli_test.tsv (this "
                         "copy has no other split)")
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
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "label": labels}, features=NLI_FEATURES)


NLI_FEATURES = Features(
    {"anchor": Value("string"), "positive": Value("string"), "label": ClassLabel(names=list(NLI_LABELS))}
)


def _hub_snli_pairs(name: str, split: str) -> Dataset:
    """SNLI from the Hub layout: ``premise``, ``hypothesis``, ``label`` (-1: no gold label) -> the standard form."""
    dataset = load_hub_dataset(name, split=split)
    missing = [column for column in ("premise", "hypothesis", "label") if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {missing} of SNLI's Hub layout; its columns are "
                         f"{dataset.column_names}")
    rows = [(premise, hypothesis, int(label))
            for premise, hypothesis, label in zip(dataset["premise"], dataset["hypothesis"], dataset["label"])
            if label is not None and 0 <= int(label) < len(NLI_LABELS)]
    return Dataset.from_dict({"anchor": [row[0] for row in rows], "positive": [row[1] for row in rows],
                              "label": [row[2] for row in rows]}, features=NLI_FEATURES)


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


#: Shards of a stream made from pairs loaded in memory (the STS-B and SNLI copies).
STREAM_SHARDS = 64


def load_pairs(source: str, split: str, text_columns: Sequence[str] | None = None, label_column: str | None = None,
               *, streaming: bool = False):
    """Sentence pairs in the standard form from STS-B or SNLI (the Hub ids ``sentence-transformers/stsb`` and
    ``stanfordnlp/snli``, or their local copies, recognised by their files), a local ``.csv`` / ``.tsv`` / ``.json``
    / ``.jsonl`` / ``.parquet`` file, or another Hub dataset. Hub ids are looked up through ``HF_SSL_DATA_DIR`` first
    (:func:`hf_ssl.data.sources.resolve_dataset`).

    text_columns: the source's columns that become ``anchor``, ``positive`` (and ``negative``), in that order;
    label_column: the one that becomes ``label``. Without them the source must already use the standard names (STS-B
    and SNLI are brought to them whichever copy is read).
    streaming: a file or Hub dataset is read as a ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``;
    :mod:`hf_ssl.data.streaming`); the STS-B and SNLI copies, benchmark-sized, are loaded as they are (shape them
    with :func:`pairs_for_objective`, then stream them with :func:`as_stream`).
    """
    folder = Path(resolve_dataset(source)).expanduser()
    if (folder / f"sts-{STS_SPLITS.get(split, split)}.csv").is_file() or (folder / "sts-train.csv").is_file():
        return load_sts_benchmark(folder, split)
    if any(folder.glob("snli_*.tsv")):
        return load_snli(folder, split)
    known = hub_id_for(source) if not text_columns and not label_column else None
    if known == STSB:
        return load_sts_benchmark(source, split)
    if known == SNLI:
        return load_snli(source, split)
    kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if folder.is_file() and folder.suffix in kinds:
        from datasets import load_dataset

        extra = {"delimiter": "\t"} if folder.suffix == ".tsv" else {}
        dataset = load_dataset(kinds[folder.suffix], data_files={split: str(folder)}, split=split, streaming=streaming,
                               **extra)
    else:
        try:
            dataset = load_hub_dataset(str(folder) if folder.exists() else source, split=split, streaming=streaming)
        except DatasetNotAvailableError:
            raise
        except Exception as error:  # noqa: BLE001 (datasets raises many kinds)
            raise ValueError(
                f"cannot load sentence pairs from {source!r} (split {split!r}): pass the STS-B or SNLI folder, a "
                ".csv/.tsv/.json/.jsonl/.parquet file or a Hub dataset name"
            ) from error
    renames = dict(zip(text_columns or (), ("anchor", "positive", "negative")))
    if label_column:
        renames[label_column] = "label"
    missing = [name for name in renames if dataset.column_names is not None and name not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing}; its columns are {dataset.column_names}")
    renames = {old: new for old, new in renames.items() if old != new}
    return dataset.rename_columns(renames) if renames else dataset


def as_stream(pairs: Dataset | IterableDataset) -> IterableDataset:
    """``pairs`` as a stream: unchanged when it is one, else its rows in :data:`STREAM_SHARDS` shards."""
    if isinstance(pairs, IterableDataset):
        return pairs
    return pairs.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(pairs))))


def pairs_for_objective(pairs: Dataset, objective: str, min_positive_score: float = 0.8) -> Dataset:
    """Shape standard-form pairs for a Sentence-BERT objective, or say what is missing.

    - ``multiple_negatives``: NLI data becomes (premise, entailment, contradiction) triplets (:func:`nli_triplets`);
      scored pairs keep those with ``label >= min_positive_score`` as positives; the label is dropped.
    - ``nli_softmax``: needs integer class labels.
    - ``cosine_similarity`` / ``cosent``: need scores in [0, 1].

    A stream (``datasets.IterableDataset``) is shaped as it is read: scored pairs are filtered, but NLI triplets
    (which group each premise's hypotheses) cannot be built from one, and score ranges are not checked.
    """
    if isinstance(pairs, IterableDataset):
        return _stream_for_objective(pairs, objective, min_positive_score)
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


def _stream_for_objective(pairs: IterableDataset, objective: str, min_positive_score: float) -> IterableDataset:
    columns = pairs.column_names
    if columns is not None and not {"anchor", "positive"} <= set(columns):
        raise ValueError(f"sentence pairs need 'anchor' and 'positive' columns; got {columns}. Name the text columns "
                         "with --text_columns (anchor, positive[, negative]) and the label with --label_column")
    label = (pairs.features or {}).get("label")
    is_class = isinstance(label, ClassLabel) or (isinstance(label, Value) and label.dtype.startswith("int"))
    is_score = isinstance(label, Value) and label.dtype.startswith("float")
    if objective == "multiple_negatives":
        if is_class:
            raise ValueError("NLI triplets group each premise's hypotheses, which a stream cannot do: stream rows that "
                             "are already (anchor, positive, negative) triplets, or drop --streaming")
        if is_score:
            return pairs.filter(lambda row: row["label"] >= min_positive_score).remove_columns("label")
        return pairs
    if objective == "nli_softmax" and label is not None and not is_class:
        raise ValueError("objective nli_softmax needs integer class labels (`label`, e.g. SNLI's 0/1/2)")
    if objective in ("cosine_similarity", "cosent") and label is not None and not is_score:
        raise ValueError(f"objective {objective} needs similarity scores in [0, 1] as `label` (e.g. STS-B / 5)")
    return pairs.remove_columns("negative") if columns is not None and "negative" in columns else pairs


def text_keys(dataset: Dataset) -> list[tuple[str, ...]]:
    """Per row, the texts that must not repeat in a batch of in-batch negatives (for
    :class:`hf_ssl.data.samplers.NoDuplicatesSampler`)."""
    columns = [name for name in ("anchor", "positive", "negative", "text") if name in dataset.column_names]
    return list(zip(*(dataset[name] for name in columns)))


# --------------------------------------------------------------------------------------------------------------------
# Image-caption pairs
def load_emoji_captions(folder: str | Path = EMOJI_CAPTIONS, split: str = "train",
                        held_out_fraction: float = 0.2) -> Dataset:
    """An image-caption folder (``metadata.jsonl`` with ``file_name`` and ``text``, loaded by ``imagefolder``) split
    into ``train`` / ``test``: the emoji glyphs with their Unicode names by default, or a user's own captions.

    ``folder``: the ``emoji_captions`` folder (``images/`` + ``metadata.jsonl``), as a path or by its name under
    ``HF_SSL_DATA_DIR`` (it has no Hub copy), or any other caption folder. A pair is held out when the first 8 hex
    digits of ``sha256(key)``, read as a fraction of 2^32, fall below ``held_out_fraction``, where the key is the
    ``codepoint`` column when there is one (the emoji folder) and the caption ``text`` otherwise: a fixed split that
    does not depend on file order and never shares a glyph or a caption between train and test. Columns: ``image``,
    ``text`` and the folder's other metadata.
    """
    from datasets import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"caption folders have the splits 'train' and 'test' (held out by a hash), not {split!r}")
    name, folder = str(folder), Path(resolve_dataset(str(folder))).expanduser()
    if not folder.exists():
        if name in LOCAL_ONLY_DATASETS or "/" not in name:
            raise dataset_not_available(name)
        raise ValueError(f"{folder} does not exist; expected the emoji_captions folder (images/ + metadata.jsonl)")
    if not (folder / "metadata.jsonl").is_file():
        raise ValueError(f"{folder} has no metadata.jsonl; expected the emoji_captions folder (images/ + metadata.jsonl)")
    dataset = load_dataset("imagefolder", data_dir=str(folder), split="train")
    keys = dataset["codepoint"] if "codepoint" in dataset.column_names else dataset["text"]
    held_out = [_hashed_fraction(key) < held_out_fraction for key in keys]
    keep = [index for index, test in enumerate(held_out) if test == (split == "test")]
    return dataset.select(keep)


def _hashed_fraction(value: str) -> float:
    return int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) / 2**32


def caption_stream_with_templates(stream: IterableDataset, templates: Sequence[str] = TRAIN_TEMPLATES, seed: int = 0,
                                  class_names: Sequence[str] | None = None) -> IterableDataset:
    """:func:`caption_with_templates` for a stream, as it is read: the template of an image is drawn from ``(seed,
    its place in its shard)`` (a stream is read shard by shard), so captions do not depend on processes or workers."""
    label = (stream.features or {}).get("label")
    names = list(class_names or getattr(label, "names", None) or [])
    if not names:
        raise ValueError("captions from class names need a `label` ClassLabel column (a labelled image dataset)")
    return stream.map(_TemplateCaption(tuple(templates), tuple(names), seed), with_indices=True)


class _TemplateCaption:
    def __init__(self, templates: tuple[str, ...], names: tuple[str, ...], seed: int):
        self.templates, self.names, self.seed = templates, names, seed

    def __call__(self, row: dict, index: int) -> dict:
        choice = int(torch.randint(len(self.templates), (), generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + index)))
        return {"text": self.templates[choice].format(self.names[row["label"]])}


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


