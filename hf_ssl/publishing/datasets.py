"""What model cards say about known datasets: name, licence, citation, split sizes, keyed by Hub id.

A run names its data as the user did (``--dataset uoft-cs/cifar10``, or a local copy's path): :func:`facts_for`
finds the facts either way (a local copy maps back to its Hub id through :func:`hf_ssl.data.sources.hub_id_for`), and
:func:`model_index_dataset` gives the ``dataset.type`` / ``dataset.name`` of a card's ``model-index``: the Hub id and a
readable name, never a local path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.sources import (
    CIFAR10,
    EMBEDDED,
    EMOJI_CAPTIONS,
    FASHION_MNIST,
    FSDD,
    SNLI,
    STSB,
    TINY_SHAKESPEARE,
    WIKITEXT,
    bare_name,
    hub_id_for,
    local_only_name,
    looks_like_path,
    readable_name,
    split_source_options,
)


@dataclass(frozen=True)
class DatasetFacts:
    """What a card says about a known data set (from each dataset's card and licence, and ``hf_ssl/data/assets/
    SOURCE.md`` for the embedded subset). ``note``: what a reader of the numbers should know about the copy hf_ssl's
    benchmarks read (appended to the name on the card). ``hub_licence``: the licence as a Hub licence identifier
    (``mit``, ``cc-by-sa-4.0``; https://huggingface.co/docs/hub/repositories-licenses), :data:`PUBLIC_DOMAIN` for data
    that imposes no terms, ``None`` where no single identifier states it (none stated, or the parts' own licences).
    ``subset``: set when the data is only part of the Hub dataset ``hub_id``; the card's ``model-index`` names it."""

    name: str
    licence: str
    citation: str
    split_sizes: dict[str, int] = field(default_factory=dict)
    hub_id: str | None = None
    note: str | None = None
    hub_licence: str | None = None
    subset: str | None = None

    @property
    def title(self) -> str:
        return f"{self.name} ({self.note})" if self.note else self.name


#: ``DatasetFacts.hub_licence`` of public-domain data: no terms to inherit (not a Hub licence identifier).
PUBLIC_DOMAIN = "public-domain"


_FASHION_CITATION = ("Xiao, Rasul & Vollgraf 2017. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine "
                     "Learning Algorithms. arXiv:1708.07747")

#: Keyed by Hub id, plus ``embedded`` (the Fashion-MNIST subset shipped in hf_ssl) and ``emoji_captions`` (no Hub
#: copy).
KNOWN_DATASETS: dict[str, DatasetFacts] = {
    EMBEDDED: DatasetFacts(
        "Fashion-MNIST subset embedded in hf_ssl (hf_ssl/data/assets/fashion_mnist_subset.npz: the first 1,000 / 200 "
        "images per class of the official train / test files)", "MIT (Copyright 2017 Zalando SE)",
        _FASHION_CITATION, {"train": 10_000, "test": 2_000}, FASHION_MNIST, hub_licence="mit",
        subset="subset embedded in hf_ssl: 1,000 train / 200 test images per class"),
    FASHION_MNIST: DatasetFacts(
        "Fashion-MNIST", "MIT (Copyright 2017 Zalando SE)", _FASHION_CITATION, {"train": 60_000, "test": 10_000},
        FASHION_MNIST, hub_licence="mit"),
    CIFAR10: DatasetFacts(
        "CIFAR-10", "none stated by the authors",
        "Krizhevsky 2009. Learning Multiple Layers of Features from Tiny Images",
        {"train": 50_000, "test": 10_000}, CIFAR10,
        note="hf_ssl's offline copy, read through HF_SSL_DATA_DIR, is 32x32 JPEG at quality about 75: accuracies on it "
             "run slightly below those on the Hub's lossless images"),
    FSDD: DatasetFacts(
        "Free Spoken Digit Dataset (8 kHz WAV)", "CC BY-SA 4.0",
        "Jackson et al. Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset",
        {"train": 2_700, "test": 300}, FSDD, hub_licence="cc-by-sa-4.0"),
    EMOJI_CAPTIONS: DatasetFacts(
        "Emoji glyphs (64x64) with their Unicode names as captions", "font: SIL OFL 1.1",
        "Unicode emoji names; glyphs rendered from an OFL-licensed font", {"all": 1_373}),
    STSB: DatasetFacts(
        "STS Benchmark", "scores CC BY-SA 4.0; texts keep their sources' licences",
        "Cer et al. 2017. SemEval-2017 Task 1: Semantic Textual Similarity. arXiv:1708.00055",
        {"train": 5_749, "validation": 1_500, "dev": 1_500, "test": 1_379}, STSB),
    SNLI: DatasetFacts(
        "SNLI", "CC BY-SA 4.0",
        "Bowman et al. 2015. A large annotated corpus for learning natural language inference. arXiv:1508.05326",
        {"validation": 9_842, "test": 9_824}, SNLI, note="pairs with a gold label", hub_licence="cc-by-sa-4.0"),
    TINY_SHAKESPEARE: DatasetFacts(
        "Tiny Shakespeare", "public domain", "Karpathy 2015. char-rnn, tinyshakespeare/input.txt",
        hub_id=TINY_SHAKESPEARE, hub_licence=PUBLIC_DOMAIN),
    WIKITEXT: DatasetFacts(
        "WikiText-2", "CC BY-SA 3.0 / GFDL",
        "Merity et al. 2016. Pointer Sentinel Mixture Models. arXiv:1609.07843", hub_id=WIKITEXT,
        hub_licence="cc-by-sa-3.0"),  # dual CC BY-SA 3.0 / GFDL: either may be chosen
}


def facts_for(source) -> DatasetFacts | None:
    """The facts of a ``--dataset`` value: a Hub id, ``embedded``, ``emoji_captions``, or a local copy of a known
    dataset (its folder, or a file in it); ``None`` when hf_ssl does not know it."""
    if source is None:
        return None
    name = bare_name(source)
    if name in KNOWN_DATASETS:
        return KNOWN_DATASETS[name]
    local = local_only_name(name)
    if local is not None:
        return KNOWN_DATASETS.get(local)
    return KNOWN_DATASETS.get(hub_id_for(name) or "")


def public_name(source) -> str:
    """How a card names one ``--dataset`` value: its Hub id where known (a local copy maps back to it, keeping the
    split a file inside the copy holds: ``stanfordnlp/snli?split=validation``), ``emoji_captions``, ``embedded``, a
    Hub id hf_ssl does not know as it is, and for any other local path only its last component (never a path of the
    machine that trained)."""
    text = str(source)
    try:
        name, options = split_source_options(text)
    except ValueError:  # not options hf_ssl reads: the value as recorded
        name, options = bare_name(text), {}
    if name == EMBEDDED or name == EMOJI_CAPTIONS:
        return text
    hub_id = hub_id_for(name)
    if hub_id is not None:
        if name == hub_id:
            return text
        split = options.get("split") or _file_split(name)
        rest = "&".join(f"{key}={value}" for key, value in (("split", split), *[
            (key, value) for key, value in options.items() if key != "split"]) if value)
        return f"{hub_id}?{rest}" if rest else hub_id
    local = local_only_name(name)
    if local is not None:
        return local
    if looks_like_path(name) or Path(name).expanduser().exists():
        return Path(name).name or name
    return text


def model_index_dataset(sources) -> dict[str, str]:
    """``{"dataset_type": ..., "dataset_name": ...}`` for ``huggingface_hub.EvalResult`` / a card's ``model-index``:
    the Hub id(s) (comma-joined for several corpora) and readable name(s) (``" + "``-joined), from ``--dataset``
    value(s) as recorded (Hub ids, local copies, or a comma-separated string)."""
    if isinstance(sources, str):
        sources = [part for part in sources.split(",") if part.strip()]
    sources = [str(source).strip() for source in sources or []]
    types = [hub_id_for(source) or public_name(source).split("?")[0] for source in sources]
    names = [_index_name(source) or kind for source, kind in zip(sources, types)]
    return {"dataset_type": ",".join(types), "dataset_name": " + ".join(names)}


def _index_name(source: str) -> str | None:
    """The readable name of a known dataset in ``model-index``, with the part of it that was read when that is only a
    subset (``Fashion-MNIST (subset embedded in hf_ssl: ...)``)."""
    facts = facts_for(source)
    name = readable_name(source)
    return f"{name} ({facts.subset})" if name and facts is not None and facts.subset else name


def _file_split(name: str) -> str | None:
    """``.../snli_validation.tsv`` -> ``validation``; ``.../sts-dev.csv`` -> ``dev``; a folder -> ``None``."""
    path = Path(name)
    if not path.suffix:
        return None
    for separator in ("_", "-"):
        if separator in path.stem:
            return path.stem.rsplit(separator, 1)[1]
    return None
