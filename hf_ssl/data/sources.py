"""Naming datasets: the public Hub ids hf_ssl knows, where their local copies live, and what to say when neither is
there.

Recipes, defaults, model cards and run records name a dataset the way a user anywhere names it: by its Hugging Face
Hub id (``uoft-cs/cifar10``), which ``datasets.load_dataset`` downloads. One setting maps an id to a local copy, for
offline machines, tests and CI:

``HF_SSL_DATA_DIR``
    a folder holding local copies. A name is looked up there as it is (``$HF_SSL_DATA_DIR/uoft-cs/cifar10``: a mirror
    laid out by Hub id, e.g. ``huggingface-cli download uoft-cs/cifar10 --repo-type dataset --local-dir ...``; or a bare
    folder name such as ``emoji_captions``), then, for the Hub ids of :data:`KNOWN_DATASETS`, under the folder name of
    their copy in hf_ssl's offline layout (``$HF_SSL_DATA_DIR/cifar10_jpg``: CIFAR-10 as JPEG zips, Fashion-MNIST as
    IDX files, ...; the loaders read those formats and give the Hub dataset's splits and columns).

:func:`resolve_dataset` applies that order; :func:`hub_id_for` goes back from a local path to its Hub id (for model
cards and run records); :func:`load_hub_dataset` calls ``datasets.load_dataset`` and turns "not there" into the one-line
error of :func:`dataset_not_available`, which names the dataset and both ways to supply it.

Text sources may carry their own options after ``?`` (``stanfordnlp/snli?split=validation&columns=premise+hypothesis``;
see :func:`split_source_options` and :func:`hf_ssl.data.text.load_text_documents`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

#: The local-data setting: a folder holding local copies of datasets (see the module docstring).
DATA_DIR_VARIABLE = "HF_SSL_DATA_DIR"
#: The Fashion-MNIST subset shipped inside hf_ssl (``hf_ssl/data/assets``); its Hub dataset is Fashion-MNIST's.
EMBEDDED = "embedded"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class KnownDataset:
    """A public Hub dataset hf_ssl knows, and the folder name of its local copy in hf_ssl's offline layout.

    ``config``: the Hub config the local copy holds (used when none is named); a source naming another config is not
    mapped to the local folder.
    """

    hub_id: str
    folder: str
    name: str
    config: str | None = None


CIFAR10 = "uoft-cs/cifar10"
FASHION_MNIST = "zalando-datasets/fashion_mnist"
STSB = "sentence-transformers/stsb"
SNLI = "stanfordnlp/snli"
WIKITEXT = "Salesforce/wikitext"
TINY_SHAKESPEARE = "karpathy/tiny_shakespeare"
FSDD = "silky1708/Free-Spoken-Digit-Dataset"
EMOJI_CAPTIONS = "emoji_captions"

#: Hub id -> its local copy. The local formats are the ones the loaders read (see each loader's docstring).
KNOWN_DATASETS: dict[str, KnownDataset] = {
    known.hub_id: known
    for known in (
        KnownDataset(CIFAR10, "cifar10_jpg", "CIFAR-10"),
        KnownDataset(FASHION_MNIST, "fashion_mnist", "Fashion-MNIST"),
        KnownDataset(STSB, "stsbenchmark", "STS Benchmark"),
        KnownDataset(SNLI, "snli_devtest", "SNLI"),
        KnownDataset(WIKITEXT, "wikitext2", "WikiText-2", config="wikitext-2-raw-v1"),
        KnownDataset(TINY_SHAKESPEARE, "tinyshakespeare", "Tiny Shakespeare"),
        KnownDataset(FSDD, "fsdd", "Free Spoken Digit Dataset"),
    )
}
#: Datasets with no Hub copy: a folder, given as a path or found under ``HF_SSL_DATA_DIR`` by this name.
LOCAL_ONLY_DATASETS: dict[str, str] = {EMOJI_CAPTIONS: "Emoji captions"}


class DatasetNotAvailableError(ValueError):
    """A dataset found neither locally nor on the Hub; the message is one line naming both fixes."""


# --------------------------------------------------------------------------------------------------------------------
def data_dir() -> Path | None:
    """The folder ``HF_SSL_DATA_DIR`` names (read at each call), or ``None`` when it is unset or empty."""
    value = os.environ.get(DATA_DIR_VARIABLE, "").strip()
    return Path(value).expanduser() if value else None


def resolve_dataset(name: str, config: str | None = None) -> str:
    """Where to load ``name`` from: a local path, or the name unchanged (a Hub id for ``datasets.load_dataset``).

    In order: an existing local path is returned as it is; else, when ``HF_SSL_DATA_DIR`` is set,
    ``$HF_SSL_DATA_DIR/<name>`` if it exists, else ``$HF_SSL_DATA_DIR/<folder of the known copy>`` if ``name`` is a
    Hub id of :data:`KNOWN_DATASETS` (and ``config`` is ``None`` or the config that copy holds) and it exists; else
    ``name`` unchanged.
    """
    name = str(name)
    if not name or Path(name).expanduser().exists():
        return name
    root = data_dir()
    if root is None or looks_like_path(name):
        return name
    mirrored = root / name
    if mirrored.exists():
        return str(mirrored)
    known = KNOWN_DATASETS.get(name)
    if known is not None and config in (None, known.config) and (root / known.folder).exists():
        return str(root / known.folder)
    return name


def local_copy(name: str, config: str | None = None) -> Path | None:
    """The local path :func:`resolve_dataset` finds for ``name``, or ``None`` when only the Hub could supply it."""
    resolved = resolve_dataset(name, config)
    path = Path(resolved).expanduser()
    return path if path.exists() else None


def hub_id_for(source) -> str | None:
    """The Hub id of a dataset named by a Hub id, a local copy (folder, or a file inside it such as
    ``.../snli_devtest/snli_validation.tsv``) or a mirror laid out by Hub id; ``None`` when it is not known.

    Text-source options (``?split=...``) are ignored; ``embedded`` (the packaged Fashion-MNIST subset) gives
    Fashion-MNIST's id; the emoji captions have no Hub copy (``None``).
    """
    if source is None:
        return None
    name = bare_name(source)
    if name in KNOWN_DATASETS:
        return name
    if name == EMBEDDED:
        return FASHION_MNIST
    parts = _local_parts(name)
    for position in range(len(parts) - 1, -1, -1):
        if position >= 1 and f"{parts[position - 1]}/{parts[position]}" in KNOWN_DATASETS:
            return f"{parts[position - 1]}/{parts[position]}"
        folder = next((known for known in KNOWN_DATASETS.values() if known.folder == parts[position]), None)
        if folder is not None:
            return folder.hub_id
    return None


def local_only_name(source) -> str | None:
    """``emoji_captions`` when ``source`` names that folder (as the bare name or a path ending in it); else ``None``."""
    if source is None:
        return None
    parts = _local_parts(bare_name(source))
    return next((part for part in reversed(parts) if part in LOCAL_ONLY_DATASETS), None)


def _local_parts(name: str) -> tuple[str, ...]:
    """The path components of ``name`` read as a local path; none for an ``owner/name`` Hub id (an unknown Hub id such
    as ``someone/fsdd`` is not a local copy of FSDD), unless it exists here or is written as a path."""
    parts = Path(name).parts
    if len(parts) == 2 and not looks_like_path(name) and not Path(name).expanduser().exists():
        return ()
    return parts


def readable_name(source) -> str | None:
    """A readable name of a known dataset (``CIFAR-10``, ``SNLI``, ...), or ``None`` when it is not known."""
    hub_id = hub_id_for(source)
    if hub_id is not None:
        return KNOWN_DATASETS[hub_id].name
    local = local_only_name(source)
    return LOCAL_ONLY_DATASETS[local] if local else None


def bare_name(source) -> str:
    """``source`` without its text-source options (``stanfordnlp/snli?split=validation`` -> ``stanfordnlp/snli``);
    never raises, unlike :func:`split_source_options`."""
    source = str(source).strip()
    if "?" not in source or Path(source).expanduser().exists():
        return source
    return source.split("?", 1)[0].strip()


def split_source_options(source: str) -> tuple[str, dict[str, str]]:
    """``"stanfordnlp/snli?split=validation&columns=premise+hypothesis"`` -> ``("stanfordnlp/snli", {"split":
    "validation", "columns": "premise+hypothesis"})``; a source without ``?`` (or an existing path) has no options.

    Keys: ``split``, ``config``, ``columns`` (``+``-separated, since commas separate sources); others are refused.
    """
    source = str(source).strip()
    if "?" not in source or Path(source).expanduser().exists():
        return source, {}
    name, query = source.split("?", 1)
    options = dict(parse_qsl(query, keep_blank_values=True))
    # parse_qsl reads "+" as a space (form encoding): restore it as the column separator
    options = {key: value.replace(" ", "+") for key, value in options.items()}
    unknown = sorted(set(options) - {"split", "config", "columns"})
    if unknown or not query.strip():
        raise ValueError(
            f"{source!r}: a source's options are split=, config= and columns= after '?', joined by '&' (e.g. "
            f"stanfordnlp/snli?split=validation&columns=premise+hypothesis); got {unknown or 'none'}"
        )
    return name.strip(), options


# --------------------------------------------------------------------------------------------------------------------
def is_offline() -> bool:
    """Whether ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` (or ``datasets.config.HF_HUB_OFFLINE``) forbid the Hub."""
    if any(os.environ.get(name, "").strip().upper() in _TRUE_VALUES
           for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return True
    try:
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001 - no datasets: nothing else says offline
        return False


def dataset_not_available(name: str, *, flag: str = "--dataset", reason: str | None = None,
                          config: str | None = None) -> DatasetNotAvailableError:
    """The one-line error for a dataset found neither locally nor on the Hub: it names the dataset and both fixes
    (a local folder with ``flag``, or a copy under ``HF_SSL_DATA_DIR``)."""
    name = bare_name(name)
    known = KNOWN_DATASETS.get(name)
    places = [f"{DATA_DIR_VARIABLE}/{name}"]
    if known is not None and config in (None, known.config):
        places.append(f"{DATA_DIR_VARIABLE}/{known.folder}")
    root = data_dir()
    if root is None:
        setting = f"set {DATA_DIR_VARIABLE} to a folder holding a copy ({' or '.join(places)})"
    else:
        setting = f"put a copy in {DATA_DIR_VARIABLE}={root} ({' or '.join(places)})"
    hub = ("it has no Hub copy" if name in LOCAL_ONLY_DATASETS
           else "online, the Hub id is downloaded with datasets.load_dataset")
    because = f" ({' '.join(reason.split())})" if reason else ""
    return DatasetNotAvailableError(
        f"dataset {name!r} is not available{because}: pass a local folder with {flag}, or {setting}; {hub}"
    )


def load_hub_dataset(name: str, config: str | None = None, *, split: str | None = None, flag: str = "--dataset",
                     **kwargs):
    """``datasets.load_dataset(name, config, split=split, **kwargs)``, where a dataset that is not there (offline, no
    network, no such repository) raises :func:`dataset_not_available`'s one-line error; other errors (a wrong split,
    a broken file) pass through. ``name`` may also be a local mirror folder. A known Hub id without ``config`` gets
    the config its local copy holds (``Salesforce/wikitext`` -> ``wikitext-2-raw-v1``)."""
    import datasets

    known = KNOWN_DATASETS.get(name)
    if config is None and known is not None:
        config = known.config
    if Path(name).expanduser().exists():
        return datasets.load_dataset(str(Path(name).expanduser()), config, split=split, **kwargs)
    if looks_like_path(name):
        raise ValueError(f"path {name!r} does not exist; pass an existing folder or file, or a Hub dataset id")
    try:
        return datasets.load_dataset(name, config, split=split, **kwargs)
    except (ConnectionError, FileNotFoundError) as error:
        reason = "offline mode: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE" if is_offline() else _short(error)
        raise dataset_not_available(name, flag=flag, reason=reason, config=config) from error


def is_hub_mirror(folder: Path) -> bool:
    """Whether ``folder`` holds a copy of a Hub dataset repository (Parquet or Arrow files), which
    ``datasets.load_dataset(folder)`` reads with the Hub's splits and columns."""
    folder = Path(folder)
    return folder.is_dir() and any(
        path.suffix in (".parquet", ".arrow") for path in folder.rglob("*") if path.is_file()
    )


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def looks_like_path(name: str) -> bool:
    """A name written as a path (absolute, ``./``, ``~``, a trailing slash): never looked up under the data folder."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.endswith(("/", os.sep)) or "\\" in name
