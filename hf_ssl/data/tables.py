"""The unlabelled text of a table (a ``.tsv`` / ``.csv`` file, or rows of a ``datasets`` dataset) as documents.

Task-adaptive pretraining (TAPT; Gururangan et al. 2020, "Don't Stop Pretraining", arXiv:2004.10964, §4) runs the
masked-LM on the unlabelled text of the task's own training data. For a sentence-pair task such as SNLI (columns
``premise``, ``hypothesis``, ``label``) the useful document is one premise followed by its hypotheses, one per line:
the masked-LM then sees premise and hypotheses in one sequence, as the fine-tuning input ``[CLS] P [SEP] H [SEP]``
does. Only the named text columns are read, so a label column never reaches the text.

- :func:`read_table_columns`: the named columns of a ``.tsv`` (tab-separated, no quoting, as the GLUE / SNLI files)
  or ``.csv`` (comma-separated, standard quoting) file with a header row.
- :func:`rows_to_documents`: rows of texts -> documents, grouped by the first column (``"auto"``) or one per row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

#: File suffixes read as tables, with the ``csv`` reader settings for each.
TABLE_FORMATS = {".tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE}, ".csv": {"delimiter": ","}}
TABLE_BOUNDARIES = ("auto", "row")


def comma_separated(value: str | Sequence[str]) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or ``["a,b"]`` -> ``["a", "b"]`` (blank parts dropped)."""
    names = [value] if isinstance(value, str) else list(value)
    return [part.strip() for name in names for part in str(name).split(",") if part.strip()]


def parse_columns(text_column: str | Sequence[str]) -> list[str]:
    """``"premise,hypothesis"`` or ``["premise", "hypothesis"]`` -> ``["premise", "hypothesis"]``."""
    columns = comma_separated(text_column)
    if not columns:
        raise ValueError(f"no text column named in {text_column!r}; e.g. --text_column text or premise,hypothesis")
    return columns


def is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_FORMATS


def read_table_columns(path: str | Path, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """Rows of ``path`` restricted to ``columns``, in that order: a list of ``len(columns)``-tuples of strings.

    The first row is the header. A column the header lacks raises an error that lists the columns there are; a row
    with fewer fields than the header raises one that names its line (a ``.tsv`` with quoted fields, or a ``.csv``
    with another delimiter, reads that way).
    """
    path = Path(path)
    settings = TABLE_FORMATS.get(path.suffix.lower())
    if settings is None:
        raise ValueError(f"{path} is not a table: expected a {' or '.join(TABLE_FORMATS)} file with a header row")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, **settings)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path} is empty: a table needs a header row naming its columns")
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(
                f"{path} has no column(s) {missing} (its columns: {header}); name the text columns with "
                f"--text_column, e.g. --text_column {','.join(header[:2])}"
            )
        positions = [header.index(name) for name in columns]
        rows = []
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) <= max(positions):
                raise ValueError(
                    f"{path}, line {line}: {len(fields)} field(s) but the header has {len(header)}; check the "
                    f"delimiter ({settings['delimiter']!r} for {path.suffix}) and the quoting"
                )
            rows.append(tuple(fields[position] for position in positions))
    return rows


def rows_to_documents(rows: Iterable[Sequence[str | None]], boundary: str = "auto") -> list[str]:
    """Rows of texts (one per text column) -> documents, each a newline-separated string.

    boundary ``"auto"``: rows are grouped by their first text (an SNLI premise), in order of first appearance; a
    document is that text, then the distinct other texts of its rows (the hypotheses), one per line. With a single
    column every distinct text is its own document. ``"row"``: every row is a document (its texts one per line).
    Empty texts are skipped.
    """
    if boundary not in TABLE_BOUNDARIES:
        raise ValueError(
            f"a table's rows become documents with document_boundary 'auto' (grouped by the first text column) or "
            f"'row' (one per row), not {boundary!r}"
        )
    if boundary == "row":
        documents = ["\n".join(text.strip() for text in row if text and text.strip()) for row in rows]
        return [document for document in documents if document]
    groups: dict[str, dict[str, None]] = {}  # first text -> the other texts, ordered and distinct (dict as ordered set)
    for first, *others in rows:
        first = (first or "").strip()
        if not first:
            continue
        following = groups.setdefault(first, {})
        for text in others:
            text = (text or "").strip()
            if text and text != first:
                following[text] = None
    return ["\n".join([first, *following]) for first, following in groups.items()]
