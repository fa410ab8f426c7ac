"""Text corpora as documents, WordPiece tokenizers trained on them, and tokenization that keeps the word structure.

The unit is the *document*: one row of a ``datasets.Dataset`` with a ``text`` column. Sentence-pair tasks (SOP, NSP)
take both segments from the same document, and held-out evaluation splits by document, so no text is shared between
training and evaluation.

- :func:`load_text_documents`: one or several sources as documents: a Hub dataset id (a local copy is found through
  ``HF_SSL_DATA_DIR``, :mod:`hf_ssl.data.sources`), a ``.txt`` file, a folder of ``.txt`` files (the offline
  WikiText-2 and Tiny Shakespeare layouts included), or the text columns of a ``.tsv`` / ``.csv`` table such as
  SNLI's (:mod:`hf_ssl.data.tables`: one document per premise with its hypotheses, labels never read). Each source
  may carry its own split, config and text columns (:func:`text_sources`).
- :func:`load_text_stream`: one source as a stream of documents (``datasets.IterableDataset``, one shard per file or
  per data file of a Hub dataset), for ``--streaming`` (:mod:`hf_ssl.data.streaming`);
  :func:`tokenized_sequences_stream` turns it into training sequences as it is read.
- :func:`split_sentences`: a document -> its sentences (paragraph lines, then a punctuation rule).
- :func:`train_wordpiece_tokenizer`: a BERT-style uncased/cased WordPiece tokenizer trained with ``tokenizers``.
- :func:`tokenize_documents`: a batched, ``num_proc``-safe ``datasets.map`` function: documents -> tokenized
  sentences plus ``continues_word`` flags for whole-word masking.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from .sources import (
    DatasetNotAvailableError,
    hub_id_for,
    is_hub_mirror,
    load_hub_dataset,
    resolve_dataset,
    split_source_options,
)
from .tables import (
    comma_separated,
    is_table,
    parse_columns,
    read_table_columns,
    rows_to_documents,
)

#: WikiText article titles: " = Title = " (one "=" each side; sections use "= =" and deeper).
WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")
#: End of a sentence: ., ! or ? (optionally followed by closing quotes/brackets), then whitespace.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
DOCUMENT_BOUNDARIES = ("auto", "wikitext_title", "blank_line", "row", "file")
#: Files of a text folder that describe the data rather than hold it (SOURCE.txt, README, licences): never read.
_NOT_TEXT_STEMS = ("source", "readme", "license", "licence")


def load_text_documents(
    dataset: str | Sequence[str],
    split: str | None = "train",
    *,
    text_column: str | Sequence[str] = "text",
    dataset_config: str | None = None,
    document_boundary: str = "auto",
    max_documents: int | None = None,
) -> datasets.Dataset:
    """Documents of one corpus or several, one per row of a ``text`` column.

    dataset: a source, or several (a list, or one string with comma-separated sources), whose documents are
        concatenated in that order. A source is a Hub dataset id (with ``dataset_config`` and ``split``; a local
        copy is used when ``HF_SSL_DATA_DIR`` holds one, :func:`hf_ssl.data.sources.resolve_dataset`), a ``.txt``
        file, a folder (WikiText-2 ``raw/``/``tokens/`` layout, a folder of tables named by split such as
        ``snli_validation.tsv``, or any ``*.txt`` files), or a ``.tsv`` / ``.csv`` table with a header. ``split``
        selects a split of a Hub dataset, the table of a folder named ``*_<split>`` and the text files of a folder
        whose name contains it; a ``.txt`` or table file is read whole whatever the split.
        **Per-source options**: a source may end in ``?key=value&key=value`` with the keys ``split``, ``config`` and
        ``columns`` (several joined by ``+``, as commas separate sources); they replace ``split``,
        ``dataset_config`` and ``text_column`` for that source only, whatever the caller asks for. E.g. WikiText-2
        plus the premise/hypothesis text of SNLI's validation split, never its test split::

            Salesforce/wikitext?config=wikitext-2-raw-v1,stanfordnlp/snli?split=validation&columns=premise+hypothesis

        (:func:`text_sources` gives the split, config and columns each source is read with.)
        The offline copies of known Hub ids (see :mod:`hf_ssl.data.sources`) keep their local formats, and differ
        from the Hub where the copy holds less: ``Salesforce/wikitext`` (``wikitext2/``) has the raw *test* split
        only, which is read whatever split is asked for (the text job then holds documents out of it);
        ``karpathy/tiny_shakespeare`` (``tinyshakespeare/input.txt``) is the whole text, not the Hub's
        train/validation/test parts; ``stanfordnlp/snli`` (``snli_devtest/``) has the validation and test splits
        only. The Hub's columns are the local ones (``text``; ``premise``, ``hypothesis``).
    text_column: the column(s) holding text in tables and ``datasets`` datasets (a list or ``"premise,hypothesis"``);
        ``.txt`` sources ignore it. With several columns, rows become documents grouped by the first column
        (:func:`hf_ssl.data.tables.rows_to_documents`); other columns (labels) are never read.
    document_boundary: how text becomes documents: ``"wikitext_title"`` (a new document at each ``" = Title = "``
        line), ``"blank_line"`` (paragraphs separated by empty lines), ``"row"`` (each row / line is a document),
        ``"file"`` (each file is a document); ``"auto"``, per source: WikiText titles when the text has them, blank
        lines for plain text files, rows for one-column ``datasets`` datasets, the first column's groups for tables.
        Line-based boundaries split the rows of a Hub dataset at their newlines first (a row may hold a whole text).
    max_documents: keep the first ``max_documents`` of the concatenation.

    Raises:
        hf_ssl.data.sources.DatasetNotAvailableError: a Hub id found neither locally nor on the Hub (one line).
    """
    if document_boundary not in DOCUMENT_BOUNDARIES:
        raise ValueError(f"document_boundary must be one of {DOCUMENT_BOUNDARIES}, got {document_boundary!r}")
    documents = []
    for source in text_sources(dataset, split, text_column=text_column, dataset_config=dataset_config):
        found = [document for document in _source_documents(source, document_boundary) if document.strip()]
        if not found:
            raise ValueError(
                f"no document with any text in {source.name!r} (split {source.split!r}): check the path and the split"
            )
        documents.extend(found)
    if max_documents is not None:
        documents = documents[:max_documents]
    return datasets.Dataset.from_dict({"text": documents})


def load_text_stream(
    dataset: str | Sequence[str],
    split: str | None = "train",
    *,
    text_column: str | Sequence[str] = "text",
    dataset_config: str | None = None,
    document_boundary: str = "auto",
) -> datasets.IterableDataset:
    """One corpus (as :func:`load_text_documents` names it) as a stream of documents (column ``text``), read lazily:
    a Hub dataset or a local Parquet mirror streams its rows (one shard per data file; each row a document, its text
    columns joined by newlines), a text file or folder one file per shard (documents found per file as
    ``document_boundary`` says), a table one shard (its rows grouped as :func:`load_text_documents` groups them).
    Several corpora are refused: stream one, or load them without streaming."""
    if document_boundary not in DOCUMENT_BOUNDARIES:
        raise ValueError(f"document_boundary must be one of {DOCUMENT_BOUNDARIES}, got {document_boundary!r}")
    sources = text_sources(dataset, split, text_column=text_column, dataset_config=dataset_config)
    if len(sources) != 1:
        raise ValueError(f"--streaming reads one corpus, got {len(sources)}: stream one of them, or drop --streaming")
    source = sources[0]
    columns = list(source.columns)
    path = Path(resolve_dataset(source.name, source.config)).expanduser()
    if is_table(path) or (path.is_dir() and not is_hub_mirror(path) and _split_table(path, source.split)):
        table = path if is_table(path) else _split_table(path, source.split)
        return datasets.IterableDataset.from_generator(
            _table_documents, gen_kwargs={"tables": [str(table)], "columns": tuple(columns),
                                          "boundary": document_boundary})
    if path.exists() and not (path.is_dir() and is_hub_mirror(path)):
        files = _text_files(path, source.split, source.name)
        return datasets.IterableDataset.from_generator(
            _file_documents, gen_kwargs={"files": [str(file) for file in files], "boundary": document_boundary})
    try:
        rows = load_hub_dataset(str(path) if path.exists() else source.name, source.config, split=source.split,
                                streaming=True)
    except DatasetNotAvailableError:
        raise
    except Exception as error:
        raise ValueError(f"could not stream {source.name!r} ({type(error).__name__}: {error}); check its name, split "
                         "and config, or pass a .txt file or folder") from error
    missing = [name for name in columns if rows.column_names is not None and name not in rows.column_names]
    if missing:
        raise ValueError(f"{source.name!r} has no column(s) {missing} (columns: {rows.column_names}); name the text "
                         "column(s) with `--text_column`")
    return rows.map(_JoinColumns(tuple(columns)), remove_columns=rows.column_names)


@dataclass(frozen=True)
class _JoinColumns:
    columns: tuple[str, ...]

    def __call__(self, row: dict) -> dict:
        return {"text": "\n".join(str(row[name] or "") for name in self.columns)}


def _file_documents(files: list[str], boundary: str):
    for file in files:
        for document in _documents_from_files([Path(file)], boundary):
            if document.strip():
                yield {"text": document}


def _table_documents(tables: list[str], columns: tuple[str, ...], boundary: str):
    for table in tables:
        for document in rows_to_documents(read_table_columns(Path(table), list(columns)), boundary):
            if document.strip():
                yield {"text": document}


def tokenized_sequences_stream(documents: datasets.IterableDataset, tokenizer, builder) -> datasets.IterableDataset:
    """:func:`tokenize_documents` and a sequence ``builder`` (e.g. :class:`hf_ssl.data.sequences.SentencePairBuilder`,
    a batched ``map`` function with indices) applied to a stream as it is read. The builder's indices count the
    documents of each shard (a stream is read shard by shard), so its draws depend on the shard and the document's
    place in it, not on processes or workers."""
    tokenized = documents.map(DocumentTokenizer(tokenizer), batched=True, remove_columns=["text"])
    return tokenized.map(builder, batched=True, with_indices=True,
                         remove_columns=["sentence_input_ids", "sentence_continues_word"])


def parse_sources(dataset: str | Sequence[str]) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or ``["a,b"]`` -> ``["a", "b"]`` (the corpora of ``--dataset``, in order)."""
    sources = comma_separated(dataset)
    if not sources:
        raise ValueError("no corpus given: --dataset takes a file, a folder, a Hub dataset id, or several of them")
    return sources


@dataclass(frozen=True)
class TextSource:
    """One corpus of ``--dataset`` and how it is read: ``name`` (a path or a Hub id, options removed), ``split``,
    ``config`` and the text ``columns`` (its own ``?split=...&config=...&columns=a+b`` options, else the caller's)."""

    name: str
    split: str | None
    config: str | None
    columns: tuple[str, ...]

    @property
    def hub_id(self) -> str | None:
        """The Hub id of the corpus when hf_ssl knows it (a local copy maps back to it), else ``None``."""
        return hub_id_for(self.name)

    @property
    def read_split(self) -> str | None:
        """The split the corpus reads: the file's stem for a file (``snli_validation`` for ``.../snli_validation.tsv``),
        else ``split`` (``None``: every split of a Hub dataset)."""
        path = Path(self.name).expanduser()
        is_file = path.is_file() or (not path.exists() and path.suffix.lower() in (".txt", ".raw", ".tsv", ".csv"))
        return path.stem if is_file else self.split


def text_sources(
    dataset: str | Sequence[str],
    split: str | None = "train",
    *,
    text_column: str | Sequence[str] = "text",
    dataset_config: str | None = None,
) -> list[TextSource]:
    """The corpora of ``dataset`` (see :func:`load_text_documents`), each with the split, config and text columns it
    is read with: its own options (``stanfordnlp/snli?split=validation&columns=premise+hypothesis``) win over
    ``split``, ``dataset_config`` and ``text_column``."""
    columns = tuple(parse_columns(text_column))
    found = []
    for source in parse_sources(dataset):
        name, options = split_source_options(source)
        own_columns = tuple(parse_columns(options["columns"].split("+"))) if options.get("columns") else columns
        found.append(TextSource(name, options.get("split") or split, options.get("config") or dataset_config,
                                own_columns))
    return found


def _source_documents(source: TextSource, boundary: str) -> list[str]:
    columns = list(source.columns)
    path = Path(resolve_dataset(source.name, source.config)).expanduser()
    if is_table(path):
        return rows_to_documents(read_table_columns(path, columns), boundary)
    if path.is_dir() and is_hub_mirror(path):
        return _documents_from_hub(str(path), source.config, source.split, columns, boundary)
    if path.is_dir() and (table := _split_table(path, source.split)) is not None:
        return rows_to_documents(read_table_columns(table, columns), boundary)
    if path.exists():
        return _documents_from_files(_text_files(path, source.split, source.name), boundary)
    if path.suffix.lower() in (".txt", ".raw", ".tsv", ".csv"):
        raise ValueError(f"no file {source.name!r}: pass an existing .txt / .tsv / .csv file, or a Hub dataset id")
    return _documents_from_hub(source.name, source.config, source.split, columns, boundary)


def _split_table(folder: Path, split: str | None) -> Path | None:
    """The one table of ``folder`` named for ``split`` (``snli_validation.tsv``, ``validation.csv``), if any."""
    if not split:
        return None
    named = re.compile(rf"(^|[_\-.]){re.escape(split)}$")
    tables = [p for p in sorted(folder.glob("*")) if is_table(p) and named.search(p.stem)]
    return tables[0] if len(tables) == 1 else None


def _text_files(path: Path, split: str | None, name: str | None = None) -> list[Path]:
    if path.is_file():
        return [path]
    wikitext_raw = path / "raw" / "wiki.test.raw"
    if wikitext_raw.is_file():
        # The offline WikiText-2 copy has the raw *test* split only (no training split: see its SOURCE.txt); the
        # text job holds out documents from it for evaluation.
        return [wikitext_raw]
    files = sorted(
        p for p in path.rglob("*")
        if p.suffix in (".txt", ".raw") and p.is_file() and not p.stem.lower().startswith(_NOT_TEXT_STEMS)
    )
    if split:
        matching = [p for p in files if split in p.stem]
        files = matching or files
    if not files:
        tables = sorted(p.name for p in path.glob("*") if is_table(p))
        example = f"{name or path}?split=<split>"
        hint = (f" and no table for split {split!r} (its tables: {tables}; name a split it has, e.g. {example}, or "
                "pass the file itself)" if tables else "")
        raise ValueError(
            f"{path} has no .txt or .raw files{hint}; pass a text file, a folder of them, a .tsv/.csv table or a "
            "Hub dataset id"
        )
    return files


def _documents_from_files(files: list[Path], boundary: str) -> list[str]:
    documents: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8").replace("\r\n", "\n")
        if boundary == "file":
            documents.append(text)
        else:
            documents.extend(group_lines(text.split("\n"), boundary))
    return documents


def _documents_from_hub(dataset, config, split, columns, boundary) -> list[str]:
    try:
        loaded = load_hub_dataset(dataset, config, split=split)
    except DatasetNotAvailableError:
        raise
    except Exception as error:
        raise ValueError(
            f"could not load {dataset!r} as a file, folder or datasets dataset ({type(error).__name__}: {error}); "
            "pass a .txt file, a folder of .txt files, a .tsv/.csv table, or a Hub dataset id (with its split and "
            "config)"
        ) from error
    missing = [name for name in columns if name not in loaded.column_names]
    if missing:
        raise ValueError(
            f"{dataset!r} has no column(s) {missing} (columns: {loaded.column_names}); name the text column(s) with "
            "`--text_column`, e.g. --text_column premise,hypothesis"
        )
    if len(columns) > 1:
        return rows_to_documents(zip(*(loaded[name] for name in columns)), boundary)
    rows = loaded[columns[0]]
    if boundary in ("auto", "row") and not (boundary == "auto" and any(WIKITEXT_TITLE.match(r or "") for r in rows)):
        return [row for row in rows if row]
    lines = [line for row in rows for line in (row or "").split("\n")]  # a row may hold a whole text
    return group_lines(lines, "wikitext_title" if boundary == "auto" else boundary)


def group_lines(lines: list[str], boundary: str) -> list[str]:
    """Join lines into documents (newline-separated) according to ``boundary`` (see :func:`load_text_documents`)."""
    if boundary == "auto":
        boundary = "wikitext_title" if any(WIKITEXT_TITLE.match(line) for line in lines) else "blank_line"
    if boundary == "row":
        return [line for line in lines if line.strip()]
    documents: list[list[str]] = [[]]
    for line in lines:
        starts_document = (boundary == "wikitext_title" and WIKITEXT_TITLE.match(line)) or (
            boundary == "blank_line" and not line.strip()
        )
        if starts_document and documents[-1]:
            documents.append([])
        if line.strip():
            documents[-1].append(line.strip())
    return ["\n".join(document) for document in documents if document]


def split_sentences(document: str) -> list[str]:
    """Sentences of a document: its lines, each split after ``.``, ``!`` or ``?`` followed by whitespace.

    A rule, not a model: abbreviations ("Dr. Smith") split too, which only makes some segments shorter. WikiText
    section headings (" = = History = = ") are dropped.
    """
    sentences: list[str] = []
    for line in document.split("\n"):
        line = line.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        sentences.extend(part.strip() for part in SENTENCE_END.split(line) if part.strip())
    return sentences


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True, min_frequency: int = 2
):
    """A BERT-style WordPiece tokenizer (Wu et al. 2016; BERT §A.2) trained on ``texts`` with ``tokenizers``.

    Normalisation, pre-tokenisation, special tokens (``[PAD] [UNK] [CLS] [SEP] [MASK]``) and the
    ``[CLS] A [SEP] B [SEP]`` template are BERT's. Returns a ``transformers.PreTrainedTokenizerFast`` that
    ``save_pretrained`` writes and ``AutoTokenizer`` loads.

    Training is not repeatable: two trainings on the same texts can order the vocabulary differently (a known
    behaviour of the ``tokenizers`` trainer; 2 of 3 trainings here differed, by up to 122 ids). So the text job trains it once, on process 0, and
    broadcasts it, and a resumed run loads the checkpoint's tokenizer instead of training a new one.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", do_lower_case=lowercase, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


class DocumentTokenizer:
    """``datasets.map(batched=True)`` function: documents -> tokenized sentences with their word structure.

    Picklable, stateless between calls, so it works with ``num_proc``. Input column ``text`` (one document per row);
    output columns ``sentence_input_ids`` and ``sentence_continues_word`` (per document: one list per sentence, no
    special tokens; ``continues_word[i] == 1`` when token ``i`` continues the previous token's word, from the fast
    tokenizer's ``word_ids()``). Documents without any sentence are dropped.
    """

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; word boundaries for whole-word masking come from "
                "a fast tokenizer's word_ids(). Load it with AutoTokenizer (which gives fast ones) or train one with "
                "`--tokenizer train`"
            )
        self.tokenizer = tokenizer

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "text" not in batch:
            raise ValueError(f"documents need a `text` column (columns: {sorted(batch)}); name it with --text_column")
        sentence_ids: list[list[list[int]]] = []
        sentence_continues: list[list[list[int]]] = []
        for document in batch["text"]:
            sentences = split_sentences(document or "")
            if not sentences:
                continue
            encoded = self.tokenizer(sentences, add_special_tokens=False)
            ids, continues = [], []
            for index, tokens in enumerate(encoded["input_ids"]):
                if not tokens:
                    continue
                word_ids = encoded.word_ids(index)
                ids.append(tokens)
                continues.append([int(p > 0 and w is not None and w == word_ids[p - 1]) for p, w in enumerate(word_ids)])
            if ids:
                sentence_ids.append(ids)
                sentence_continues.append(continues)
        return {"sentence_input_ids": sentence_ids, "sentence_continues_word": sentence_continues}


def tokenize_documents(documents: datasets.Dataset, tokenizer, num_proc: int | None = None) -> datasets.Dataset:
    """Apply :class:`DocumentTokenizer` to a dataset of documents (rows without text are dropped)."""
    if "text" not in documents.column_names:
        raise ValueError(
            f"the dataset has no `text` column (columns: {documents.column_names}); this does not look like a text "
            "dataset. Name the text column with `--text_column`"
        )
    if len(documents) == 0:
        raise ValueError("there are no documents to tokenize: check the dataset, split and max_*_documents")
    tokenized = documents.map(
        DocumentTokenizer(tokenizer), batched=True, remove_columns=documents.column_names, num_proc=num_proc,
        desc="Tokenizing documents",
    )
    if len(tokenized) == 0:
        raise ValueError("every document is empty after sentence splitting: the corpus has no text")
    return tokenized


def iterate_texts(documents: datasets.Dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of document texts (for :func:`train_wordpiece_tokenizer`)."""
    for start in range(0, len(documents), batch_size):
        yield documents[start : start + batch_size]["text"]


def split_documents(documents: datasets.Dataset, eval_fraction: float, seed: int):
    """``(train, held_out)`` by document, ``eval_fraction`` of them (at least one) held out."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if len(documents) < 2:
        raise ValueError(
            f"cannot hold out documents from a corpus of {len(documents)} document(s); give an eval split or more text"
        )
    held_out = max(1, round(eval_fraction * len(documents)))
    parts = documents.train_test_split(test_size=held_out, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def default_num_proc() -> int | None:
    """Processes for ``datasets.map``: ``None`` (in-process) on small machines."""
    count = os.cpu_count() or 1
    return None if count <= 2 else min(8, count // 2)
