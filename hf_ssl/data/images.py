"""Load image datasets into one standard form for pretraining, probing and fine-tuning.

The standard form
-----------------
Every loader here returns a ``datasets.Dataset`` (one split) or a ``datasets.DatasetDict`` (all splits, keyed
``train``, ``test``, ...) whose columns are exactly:

- ``image``: feature ``datasets.Image()`` (:class:`~hf_ssl.data.image_decoding.PathReportingImage`, whose decoding
  errors name the file); rows decode to ``PIL.Image.Image`` on access (nothing is decoded at load time, so loading
  stays fast and memory stays small), in the file's own mode: :func:`~hf_ssl.data.image_decoding.to_rgb` makes RGB;
- ``label``: feature ``datasets.ClassLabel`` with class names, present only when the source has labels. A dataset
  without labels keeps only ``image`` (SSL pretraining does not need labels; probes do).

Sources accepted by :func:`load_image_dataset`
----------------------------------------------
- ``"embedded"``: a 12,000-image Fashion-MNIST subset shipped inside the package (``hf_ssl/data/assets``), so examples
and
  tests run on a fresh machine without any download or data folder.
- a Hugging Face Hub dataset id (``uoft-cs/cifar10``, ``zalando-datasets/fashion_mnist``, or any other), looked up
  first as a local copy through ``HF_SSL_DATA_DIR`` (:func:`hf_ssl.data.sources.resolve_dataset`), else downloaded
  with ``load_dataset(name, split=split)``. Offline or unreachable, it fails with one line naming both fixes.
- a folder in the CIFAR-10 zip layout (hf_ssl's offline copy of ``uoft-cs/cifar10``): ``train.zip`` (plus
  ``test.zip``, ...), members ``<split>/<class>/<file>.jpg``. The encoded JPEG bytes are read with :mod:`zipfile` and
  stored as they are. Splits and class names are the Hub dataset's (``train`` / ``test``; airplane ... truck); the
  pixels are JPEG (quality about 75), not the Hub's lossless PNG.
- a folder in the Fashion-MNIST IDX layout (the offline copy of ``zalando-datasets/fashion_mnist``):
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``: the Hub's splits and pixels (its class names are written
  ``T-shirt/top`` here, ``T - shirt / top`` there).
- a folder holding a copy of a Hub dataset repository (Parquet / Arrow files): ``load_dataset(folder)``.
- any other local folder: ``load_dataset("imagefolder", data_dir=folder)``.

Column names of Hub datasets differ (CIFAR-10 on the Hub: ``img`` and ``label``): :func:`standardize_image_dataset`
brings every source to the standard form above.

How grayscale arrays are stored: Fashion-MNIST arrives as raw uint8 pixels. Each image is wrapped as a binary PGM
(netpbm ``P5``: a 13-byte header followed by the 784 raw pixels), which Pillow decodes losslessly to mode ``L``.
Building these bytes costs nothing, whereas PNG encoding (or passing numpy arrays to ``Image()``, which makes
``datasets`` encode PNGs) costs about 60 us per image: measured on this project's 2-core CPU, the full 70,000
images load in about 1 s as PGM, against about 5 s with PNG encoding.

Subsets: ``max_examples`` keeps at most that many rows per split, chosen deterministically from ``seed`` and
balanced over classes (round-robin over the classes of a seeded shuffle), then kept in the source's order.

Image files on disk (an image folder's) are checked before use: :func:`load_image_dataset` scans them in parallel
(:func:`hf_ssl.data.image_decoding.find_unreadable_images`) and refuses the data with the list of unreadable files, or
leaves them out with ``skip_bad_files=True``. The ``image`` feature names the file of any later decoding failure.

Streaming: :func:`load_image_stream` reads one split as a ``datasets.IterableDataset`` in the same standard form,
without loading it: a Hub dataset or a local Parquet mirror (``load_dataset(..., streaming=True)``), a folder of
webdataset ``.tar`` shards (``<split>-*.tar``, or every ``.tar`` for the train split), an image folder read lazily, or
the CIFAR-10 zip layout read member by member (:data:`STREAM_SHARDS` shards, the classes in turn in each). ``load_image_splits(..., streaming=True)`` gives the training stream beside in-memory probe sets
taken from the streams' first examples (:data:`~hf_ssl.data.streaming.STREAMED_EVAL_EXAMPLES` by default).

Held-out images: a source whose only split is the training split (your own folder of class subfolders) has no split
to measure probes on; :func:`load_image_splits` then holds out :data:`EVAL_FRACTION` of each class, chosen with
:data:`HOLD_OUT_SEED` whatever the training seed, so a pretraining run and ``hf-ssl evaluate`` measure on the same
images.
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    Value,
    load_dataset,
)
from PIL import Image as PILImage

from .image_decoding import (
    PathReportingImage,
    UnreadableImageError,
    find_unreadable_images,
)
from .image_formats import (
    EMBEDDED_SUBSET_PATH,
    EmbeddedSubsetReader,
    FashionMnistIdxReader,
    UnknownSplitError,
    ZipFolderReader,
    balanced_subset_indices,
    find_idx_file,
    load_local_splits,
)
from .sources import (
    DatasetNotAvailableError,
    is_hub_mirror,
    load_hub_dataset,
    resolve_dataset,
)
from .streaming import STREAMED_EVAL_EXAMPLES, materialize

logger = logging.getLogger(__name__)

EMBEDDED_SOURCE_NAME = "embedded"

#: Share of each class held out for the probes when a labelled source has no evaluation split (like the text job's
#: ``eval_fraction``); the default of every image job's ``--eval_fraction``.
EVAL_FRACTION = 0.1

#: Seed of the held-out choice: fixed, not the training seed, so that every run and ``hf-ssl evaluate`` hold out the
#: same images of a source.
HOLD_OUT_SEED = 0

#: Shards of a stream read from an in-memory or zip source (the CIFAR-10 zip layout, the embedded subset): enough
#: for 8 processes x 8 dataloader workers.
STREAM_SHARDS = 64

#: Unreadable files listed by name in the error of the file scan; the rest are counted.
_LISTED_BAD_FILES = 20


IMAGE_COLUMN_CANDIDATES = ("image", "img", "pixel_values", "jpg", "jpeg", "png", "webp")  # the last: webdataset's
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "coarse_label", "cls")

_ACCEPTED_SOURCES_HINT = (
    "Pass 'embedded', a Hugging Face Hub dataset id (a local copy is found through HF_SSL_DATA_DIR), or a folder "
    "(CIFAR-10 zips train.zip/test.zip, Fashion-MNIST IDX files, or an image folder)."
)


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def load_image_dataset(
    source: str,
    split: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    check_files: bool = True,
    skip_bad_files: bool = False,
) -> DatasetDict | Dataset:
    """Load an image dataset in the standard form (columns ``image`` and, when labelled, ``label``).

    Args:
        source: ``"embedded"``, a Hugging Face Hub dataset id (a local copy under ``HF_SSL_DATA_DIR`` is used when
            there is one), or a local folder (CIFAR-10 zip layout, Fashion-MNIST IDX layout, a copy of a Hub
            dataset repository, or any image folder). See the module docstring.
        split: a split name (``"train"``, ``"test"``, ...) to get that ``Dataset``; ``None`` gives a ``DatasetDict``
            of every split the source has.
        image_column: the column holding images, when automatic detection (first ``Image`` feature, then the names
            ``image``, ``img``, ``pixel_values``) does not find it. Ignored by the built-in local formats.
        label_column: the column holding class labels, when it is not ``label``, ``labels``, ``fine_label`` or
            ``coarse_label``. Ignored by the built-in local formats.
        max_examples: keep at most this many rows per split (class-balanced, deterministic given ``seed``).
        seed: seed of the subset choice; it changes nothing when ``max_examples`` is ``None``.
        check_files: scan the image files the dataset reads from disk (an image folder's) before returning it; each
            file is opened and checked (:func:`hf_ssl.data.image_decoding.check_image_file`), in parallel.
        skip_bad_files: leave unreadable files out (each one logged) instead of refusing the data.

    Raises:
        ValueError: with the fix in the message, for a missing path, an unknown split
            (:class:`~hf_ssl.data.image_formats.UnknownSplitError`), an empty split, a dataset without an image column,
            or a Hub dataset that cannot be loaded (:class:`hf_ssl.data.sources.DatasetNotAvailableError` when it is
            neither local nor reachable).
        UnreadableImageError: the file scan found files that do not decode (all named), and ``skip_bad_files`` is
            off.
    """
    loaded = _load(source, split, image_column, label_column, max_examples, seed)
    if not check_files:
        return loaded
    if isinstance(loaded, DatasetDict):
        return DatasetDict(zip(loaded, screen_image_files(list(loaded.values()), skip_bad_files)))
    return screen_image_files([loaded], skip_bad_files)[0]


@dataclass
class ImageSplits:
    """The training images and the labelled images the probes measure on (``eval``: ``None`` when there are none).

    ``eval_name`` says where ``eval`` comes from: the split's name, or ``"held-out 10% of train"``.
    """

    train: Dataset
    eval: Dataset | None
    eval_name: str | None
    #: With ``streaming``: the training split as a stream; ``train`` is then the in-memory sample the probes use.
    train_stream: IterableDataset | None = None


def load_image_splits(
    source: str,
    train_split: str = "train",
    eval_split: str | None = "test",
    *,
    eval_fraction: float = EVAL_FRACTION,
    image_column: str | None = None,
    label_column: str | None = None,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    seed: int = 0,
    check_files: bool = True,
    skip_bad_files: bool = False,
    streaming: bool = False,
    max_probe_train_examples: int | None = None,
) -> ImageSplits:
    """The training split and the evaluation images of ``source`` (arguments as :func:`load_image_dataset`'s).

    ``streaming``: the training split is read as a stream (:func:`load_image_stream`, ``train_stream``); the probes'
    images are taken into memory from the streams' first examples: ``train`` holds ``max_probe_train_examples``
    (the kNN memory bank) and ``eval`` ``max_eval_examples`` of ``eval_split`` (default
    :data:`~hf_ssl.data.streaming.STREAMED_EVAL_EXAMPLES` each); a source without ``eval_split`` is refused (nothing
    is held out of a stream). ``max_train_examples`` does not apply.

    - ``eval_split`` empty or ``None``: no evaluation images.
    - the source has ``eval_split``: that split.
    - the source's only split is ``train_split`` (an image folder without ``test/``): with labels of at least two
      classes, :func:`hold_out_images` sets ``eval_fraction`` of each class aside (deterministic, the same for every
      training seed) and the training images are the rest; without labels there is nothing to measure, and all of it
      trains.
    - any other missing split: :class:`~hf_ssl.data.image_formats.UnknownSplitError`.

    ``max_train_examples`` / ``max_eval_examples`` cap each part after the hold-out; the file scan checks the rows
    kept.
    """

    if streaming:
        return _stream_splits(source, train_split, eval_split, image_column, label_column, max_probe_train_examples,
                              max_eval_examples)

    def load(split: str, max_examples: int | None = None) -> Dataset:
        return load_image_dataset(source, split, image_column=image_column, label_column=label_column,
                                  max_examples=max_examples, seed=seed, check_files=False)

    held_out, eval_name = None, None
    if eval_split:
        try:
            held_out, eval_name = load(eval_split, max_eval_examples), eval_split
        except UnknownSplitError as error:
            if error.available != [train_split]:
                raise
    if held_out is not None or not eval_split:
        train = load(train_split, max_train_examples)
    else:
        everything = load(train_split)
        if _num_classes(everything) < 2:
            logger.info("%s has no %r split and no class labels: all of it trains, with no probe", source, eval_split)
            train = _subset(everything, max_train_examples, seed)
        else:
            train, held_out = hold_out_images(everything, eval_fraction)
            eval_name = f"held-out {eval_fraction:.0%} of {train_split}"
            logger.info("%s has no %r split: the probes measure on the %s, %d images (--eval_fraction)", source,
                        eval_split, eval_name, len(held_out))
            train, held_out = _subset(train, max_train_examples, seed), _subset(held_out, max_eval_examples, seed)
    if check_files:
        train, held_out = screen_image_files([train, held_out], skip_bad_files)
    return ImageSplits(train, held_out, eval_name)


def _stream_splits(source, train_split, eval_split, image_column, label_column, max_probe_train_examples,
                   max_eval_examples) -> ImageSplits:
    stream = load_image_stream(source, train_split, image_column=image_column, label_column=label_column)
    if not eval_split:
        return ImageSplits(materialize(stream, max_probe_train_examples or STREAMED_EVAL_EXAMPLES), None, None,
                           train_stream=stream)
    try:
        eval_stream = load_image_stream(source, eval_split, image_column=image_column, label_column=label_column)
    except UnknownSplitError as error:
        raise ValueError(
            f"{source!r} has no {eval_split!r} split to stream the probes' images from ({error}); name one with "
            "--eval_split, or pass --eval_split '' to train without probes (nothing is held out of a stream)"
        ) from error
    return ImageSplits(materialize(stream, max_probe_train_examples or STREAMED_EVAL_EXAMPLES),
                       materialize(eval_stream, max_eval_examples or STREAMED_EVAL_EXAMPLES), eval_split,
                       train_stream=stream)


def load_image_stream(source: str, split: str = "train", *, image_column: str | None = None,
                      label_column: str | None = None) -> IterableDataset:
    """One split of ``source`` as a ``datasets.IterableDataset`` in the standard form (``image``; ``label`` when the
    source has integer or ``ClassLabel`` labels), read lazily: see "Streaming" in the module docstring. Use it with
    :func:`hf_ssl.views.apply_views` and ``SSLTrainer`` (:mod:`hf_ssl.data.streaming`).

    Raises ``ValueError`` naming the fix for a missing path or split, and
    :class:`~hf_ssl.data.sources.DatasetNotAvailableError` for a dataset neither local nor reachable.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a non-empty string, got {source!r}. {_ACCEPTED_SOURCES_HINT}")
    source = source.strip()
    if source.lower() == EMBEDDED_SOURCE_NAME:
        return _in_memory_stream(_load(source, split, None, None, None, 0))
    path = Path(resolve_dataset(source)).expanduser()
    if not path.exists():
        if _looks_like_local_path(source):
            raise ValueError(f"Path {source!r} does not exist. {_ACCEPTED_SOURCES_HINT}")
        stream = _hub_stream(source, split)
    elif not path.is_dir():
        raise ValueError(f"{source!r} is a file; load_image_stream expects a folder. {_ACCEPTED_SOURCES_HINT}")
    elif (path / "train.zip").is_file():
        return _zip_stream(path, split)
    elif find_idx_file(path, "train", "images") is not None:
        return _in_memory_stream(_load(str(path), split, None, None, None, 0))
    elif list(path.glob("*.tar")):
        shards = sorted(path.glob(f"{split}*.tar")) or (sorted(path.glob("*.tar")) if split == "train" else [])
        if not shards:
            raise UnknownSplitError(split, source, sorted({tar.stem.split("-")[0] for tar in path.glob("*.tar")}))
        stream = load_dataset("webdataset", data_files={split: [str(tar) for tar in shards]}, split=split,
                              streaming=True)
    elif is_hub_mirror(path):
        stream = _hub_stream(str(path), split)
    else:
        stream = _folder_stream(path, split)
    return standardize_image_stream(stream, image_column, label_column, source=source)


def standardize_image_stream(stream: IterableDataset, image_column: str | None = None,
                             label_column: str | None = None, *, source: str | None = None) -> IterableDataset:
    """:func:`standardize_image_dataset` for a stream, without reading it: the image column (found as there, plus
    webdataset's ``jpg`` / ``png`` / ...) becomes ``image`` (:class:`PathReportingImage`); a ``ClassLabel`` or
    integer label column (``label``, ..., webdataset's ``cls``) becomes ``label`` (integers stay integers: a
    stream's classes are not counted); other columns are dropped."""
    name = source if source is not None else "the stream"
    if stream.features is None:
        raise ValueError(f"{name} streams without declared features; pass a datasets.IterableDataset with features "
                         "(e.g. IterableDataset.from_generator(..., features=...))")
    image_name = _resolve_image_column(stream, image_column, name)
    label_name = _resolve_label_column(stream, label_column, image_name, name)
    if label_name is not None and _label_kind(stream.features[label_name]) != "int":
        if label_column is not None:
            raise ValueError(f"column {label_column!r} of {name} is not an integer class label; a stream's string "
                             "labels cannot be counted without reading it: map them to class ids first")
        label_name = None
    stream = stream.select_columns([image_name] if label_name is None else [image_name, label_name])
    if not isinstance(stream.features[image_name], PathReportingImage):
        stream = stream.cast_column(image_name, PathReportingImage())
    renames = {old: new for old, new in ((image_name, "image"), (label_name, "label")) if old and old != new}
    return stream.rename_columns(renames) if renames else stream


def _hub_stream(name: str, split: str) -> IterableDataset:
    try:
        return load_hub_dataset(name, split=split, streaming=True)
    except DatasetNotAvailableError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised with the name
        if str(error).startswith(("Unknown split", "Bad split")):
            raise UnknownSplitError(split, name, list(load_hub_dataset(name, streaming=True))) from error
        raise ValueError(f"Could not stream {name!r} ({type(error).__name__}: {error}); check the name and split, "
                         "or pass a local folder") from error


def _folder_stream(folder: Path, split: str) -> IterableDataset:
    try:
        streams = load_dataset("imagefolder", data_dir=str(folder), streaming=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(f"Could not stream {str(folder)!r} as an image folder ({type(error).__name__}: {error}); "
                         "expected images in <folder>/[<split>/]<class>/<file>") from error
    if split not in streams:
        raise UnknownSplitError(split, str(folder), list(streams))
    return streams[split]


def _in_memory_stream(dataset: Dataset) -> IterableDataset:
    """A loaded (small) split as a stream of :data:`STREAM_SHARDS` shards."""
    return dataset.to_iterable_dataset(num_shards=min(STREAM_SHARDS, len(dataset)))


def _zip_stream(folder: Path, split: str) -> IterableDataset:
    """A split of the CIFAR-10 zip layout read member by member, in :data:`STREAM_SHARDS` shards: consecutive blocks
    of the archive's members taken round-robin over the classes (every class in every shard, in turn)."""
    archive = folder / f"{split}.zip"
    if not archive.is_file():
        raise UnknownSplitError(split, str(folder), sorted(path.stem for path in folder.glob("*.zip")))
    members, classes = _zip_members_in_turn(str(archive))
    if not members:
        raise ValueError(f"{archive} holds no images (members <split>/<class>/<file>)")
    count = min(STREAM_SHARDS, len(members))
    features = Features({"image": PathReportingImage(), "label": ClassLabel(names=list(classes))})
    return IterableDataset.from_generator(
        _zip_shards, features=features, gen_kwargs={"archive": str(archive), "shards": list(range(count)), "count": count}
    )


@functools.lru_cache(maxsize=8)
def _open_zip(archive: str, process: int) -> zipfile.ZipFile:
    """One open archive per process (its central directory read once; forked workers must not share a file offset)."""
    return zipfile.ZipFile(archive)


@functools.lru_cache(maxsize=8)
def _zip_members_in_turn(archive: str) -> tuple[list[str], tuple[str, ...]]:
    """The image members of ``archive`` taken round-robin over the class folders (the archive is sorted by class),
    and the sorted class names."""
    suffixes = tuple(suffix.lower() for suffix in PILImage.registered_extensions())
    names = sorted(name for name in _open_zip(archive, os.getpid()).namelist()
                   if name.count("/") >= 1 and name.lower().endswith(suffixes))
    rank_in_class: dict[str, int] = {}
    keys = {}
    for name in names:
        label = name.split("/")[-2]
        keys[name] = (rank_in_class.get(label, 0), label)
        rank_in_class[label] = rank_in_class.get(label, 0) + 1
    return sorted(names, key=keys.__getitem__), tuple(sorted(rank_in_class))


def _zip_shards(archive: str, shards: list[int], count: int):
    members, classes = _zip_members_in_turn(archive)
    index = {name: position for position, name in enumerate(classes)}
    opened = _open_zip(archive, os.getpid())
    for shard in shards:
        for name in members[len(members) * shard // count:len(members) * (shard + 1) // count]:
            yield {"image": {"bytes": opened.read(name), "path": None}, "label": index[name.split("/")[-2]]}


def hold_out_images(
    dataset: Dataset, fraction: float = EVAL_FRACTION, seed: int = HOLD_OUT_SEED
) -> tuple[Dataset, Dataset]:
    """``(rest, held_out)``: ``fraction`` of the rows of each class (rounded, at least one of every class with two
    or more rows; all rows alike without labels), drawn with ``seed``; both parts keep the source's order."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {fraction}; set --eval_fraction, e.g. 0.1")
    if len(dataset) < 2:
        raise ValueError(f"cannot hold out images from {len(dataset)} image(s); add images or a test split")
    order = np.random.default_rng(seed).permutation(len(dataset))
    labels = _labels(dataset)
    if labels is None:
        chosen = order[: max(1, round(fraction * len(dataset)))]
    else:
        chosen = []
        for label in np.unique(labels):
            members = order[labels[order] == label]
            if len(members) >= 2:
                chosen.extend(members[: max(1, round(fraction * len(members)))])
    held = np.zeros(len(dataset), dtype=bool)
    held[np.asarray(chosen, dtype=np.int64)] = True
    return dataset.select(np.flatnonzero(~held)), dataset.select(np.flatnonzero(held))


def screen_image_files(datasets: list[Dataset | None], skip_bad_files: bool = False) -> list[Dataset | None]:
    """``datasets`` after one scan of the image files they read from disk (rows whose ``image`` is the path of a local
    file; encoded bytes are not scanned): unchanged when every file decodes; without the rows of unreadable files
    (each file logged) when ``skip_bad_files``; otherwise :class:`~hf_ssl.data.image_decoding.UnreadableImageError`
    naming every unreadable file of all of them. ``None`` entries pass through."""
    local = {index: _local_image_files(dataset) for index, dataset in enumerate(datasets) if dataset is not None}
    bad = find_unreadable_images(list(dict.fromkeys(path for files in local.values() for _, path in files)))
    if not bad:
        return list(datasets)
    if not skip_bad_files:
        listed = [f"{path} ({reason})" for path, reason in list(bad.items())[:_LISTED_BAD_FILES]]
        more = f" and {len(bad) - len(listed)} more" if len(bad) > len(listed) else ""
        raise UnreadableImageError(
            f"{len(bad)} image file(s) cannot be decoded: {'; '.join(listed)}{more}. Replace or remove them, or pass "
            "--skip_bad_files to train without them (--check_image_files false turns this scan off)."
        )
    for path, reason in bad.items():
        logger.warning("skipping unreadable image file %s (%s)", path, reason)
    screened = list(datasets)
    for index, files in local.items():
        bad_rows = {row for row, path in files if path in bad}
        if bad_rows:
            kept = [row for row in range(len(datasets[index])) if row not in bad_rows]
            screened[index] = datasets[index].select(kept)
    return screened


def standardize_image_dataset(
    dataset_or_dict: Dataset | DatasetDict,
    image_column: str | None = None,
    label_column: str | None = None,
    *,
    source: str | None = None,
) -> Dataset | DatasetDict:
    """Bring a ``Dataset`` / ``DatasetDict`` to the standard form: ``image`` (``Image()``), ``label`` (``ClassLabel``).

    The image column is ``image_column`` when given, else the first column whose feature is ``datasets.Image``, else
    the first of ``image``, ``img``, ``pixel_values`` (cast to ``Image()``: file paths, encoded bytes and pixel
    arrays cast). The label column is ``label_column`` when given, else the first of ``label``, ``labels``,
    ``fine_label``, ``coarse_label``. Integer labels become ``ClassLabel`` named ``"0"``, ``"1"``, ...; string labels
    become ``ClassLabel`` with the sorted distinct strings as names (the same mapping in every split). Every other
    column is dropped. ``source`` only names the data in error messages.

    Raises:
        ValueError: no image column (the message lists the columns and says to pass ``image_column=``), a named
            column that does not exist, or an empty dataset / split.
    """
    name = source if source is not None else "the dataset"
    if isinstance(dataset_or_dict, DatasetDict):
        splits = dict(dataset_or_dict)
        if not splits:
            raise ValueError(f"{name} has no splits: there is no data to load.")
    elif isinstance(dataset_or_dict, Dataset):
        splits = {None: dataset_or_dict}
    else:
        raise ValueError(
            f"Expected a datasets.Dataset or datasets.DatasetDict, got {type(dataset_or_dict).__name__}."
        )

    first = next(iter(splits.values()))
    image_name = _resolve_image_column(first, image_column, name)
    label_name = _resolve_label_column(first, label_column, image_name, name)
    for split_name, dataset in splits.items():
        where = name if split_name is None else f"split {split_name!r} of {name}"
        for column in (image_name, label_name):
            if column is not None and column not in dataset.column_names:
                raise ValueError(
                    f"{where} has no column {column!r} (columns: {dataset.column_names}); the splits of a dataset "
                    "must share their image and label columns."
                )
        if dataset.num_rows == 0:
            raise ValueError(f"{where} is empty (0 rows): there are no images to load. Check the source and split.")

    label_feature = _label_class_feature(splits, label_name, explicit=label_column is not None, name=name)
    if label_feature is None:
        label_name = None

    standardized = {}
    for split_name, dataset in splits.items():
        keep = [image_name] if label_name is None else [image_name, label_name]
        dataset = dataset.select_columns(keep)
        image_feature = dataset.features[image_name]
        if not isinstance(image_feature, Image) or not image_feature.decode:
            try:
                dataset = dataset.cast_column(image_name, PathReportingImage())
                dataset[0]  # decode one row: a text column casts without error but fails here
            except Exception as error:  # noqa: BLE001 - any failure here means "this column holds no images"
                raise ValueError(
                    f"Column {image_name!r} of {name} ({image_feature}) cannot be read as images: {error}. Pass "
                    "image_column= (CLI: --image_column) naming a column of PIL images, file paths or encoded bytes."
                ) from error
        elif not isinstance(image_feature, PathReportingImage):  # decoding failures then name the file
            dataset = dataset.cast_column(image_name, PathReportingImage(mode=image_feature.mode))
        if label_name is not None and dataset.features[label_name] != label_feature:
            dataset = dataset.cast_column(label_name, label_feature)
        renames = {old: new for old, new in ((image_name, "image"), (label_name, "label")) if old and old != new}
        if renames:
            dataset = dataset.rename_columns(renames)
        standardized[split_name] = dataset

    if None in standardized:
        return standardized[None]
    return DatasetDict(standardized)


def dataset_fingerprint_info(dataset: Dataset | DatasetDict) -> dict:
    """Summarise a standard-form dataset for logs and model cards.

    Returns a small JSON-serialisable dict: ``name``, ``splits`` (rows per split), ``num_rows`` (total),
    ``num_classes`` and ``class_names`` (``None`` without labels), ``license``, ``citation`` and ``fingerprints``
    (the ``datasets`` fingerprint per split, which changes whenever the data or a transform changes).
    """
    if isinstance(dataset, DatasetDict):
        splits = dict(dataset)
    else:
        splits = {str(dataset.split) if dataset.split is not None else "data": dataset}
    if not splits:
        return {"name": None, "splits": {}, "num_rows": 0, "num_classes": None, "class_names": None}
    first = next(iter(splits.values()))
    info = first.info
    label_feature = first.features.get("label")
    class_names = list(label_feature.names) if isinstance(label_feature, ClassLabel) else None
    return {
        "name": info.dataset_name or info.builder_name or None,
        "splits": {name: split.num_rows for name, split in splits.items()},
        "num_rows": sum(split.num_rows for split in splits.values()),
        "num_classes": len(class_names) if class_names is not None else None,
        "class_names": class_names,
        "license": info.license or None,
        "citation": info.citation or None,
        "fingerprints": {name: split._fingerprint for name, split in splits.items()},
    }


# --------------------------------------------------------------------------------------------------------------------
# Local formats: each reader lists its splits and class names, gives the labels of a split without touching the
# images, and builds a standard-form Dataset from a chosen subset of rows.
# --------------------------------------------------------------------------------------------------------------------


def _local_image_files(dataset: Dataset) -> list[tuple[int, str]]:
    """``(row, path)`` of the rows whose image is a local file."""
    if pc.struct_field(dataset.data.column("image"), "path").null_count == len(dataset.data):
        return []  # encoded bytes only (the built-in formats, Hub data): no files to scan
    paths = pc.struct_field(dataset.select_columns(["image"]).with_format("arrow")[:]["image"], "path").to_pylist()
    return [(row, path) for row, path in enumerate(paths) if path is not None and os.path.isfile(path)]


def _labels(dataset: Dataset) -> np.ndarray | None:
    if "label" not in dataset.column_names:
        return None
    return np.asarray(dataset.select_columns(["label"]).with_format("numpy")[:]["label"])


def _num_classes(dataset: Dataset) -> int:
    feature = dataset.features.get("label")
    return len(feature.names) if isinstance(feature, ClassLabel) else 0


def _load(
    source: str,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
    max_examples: int | None,
    seed: int,
) -> DatasetDict | Dataset:
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a non-empty string, got {source!r}. {_ACCEPTED_SOURCES_HINT}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer or None, got {max_examples!r}.")

    source = source.strip()
    if source.lower() == EMBEDDED_SOURCE_NAME:
        return load_local_splits(EmbeddedSubsetReader(EMBEDDED_SUBSET_PATH), split, max_examples, seed)

    path = Path(resolve_dataset(source)).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(
                f"{source!r} is a file; load_image_dataset expects a folder. {_ACCEPTED_SOURCES_HINT}"
            )
        if (path / "train.zip").is_file():
            return load_local_splits(ZipFolderReader(path), split, max_examples, seed)
        if find_idx_file(path, "train", "images") is not None:
            return load_local_splits(FashionMnistIdxReader(path), split, max_examples, seed)
        if is_hub_mirror(path):
            return _load_hub_dataset(str(path), split, image_column, label_column, max_examples, seed)
        return _load_image_folder(path, split, image_column, label_column, max_examples, seed)

    if _looks_like_local_path(source):
        raise ValueError(f"Path {source!r} does not exist. {_ACCEPTED_SOURCES_HINT}")
    return _load_hub_dataset(source, split, image_column, label_column, max_examples, seed)



# --------------------------------------------------------------------------------------------------------------------
# Generic sources: image folders and Hub datasets go through load_dataset, then standardize_image_dataset.
# --------------------------------------------------------------------------------------------------------------------


def _load_image_folder(
    folder: Path,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
    max_examples: int | None,
    seed: int,
) -> Dataset | DatasetDict:
    if not any(path.is_file() for path in folder.rglob("*")):
        raise ValueError(f"Folder {str(folder)!r} is empty: there are no images to load. {_ACCEPTED_SOURCES_HINT}")
    image_suffixes = {suffix.lower() for suffix in PILImage.registered_extensions()}
    if not any(path.suffix.lower() in image_suffixes for path in folder.rglob("*")):
        raise ValueError(
            f"Folder {str(folder)!r} contains no image files (nothing Pillow can open), so it cannot be loaded as an "
            f"image dataset. {_ACCEPTED_SOURCES_HINT}"
        )
    try:
        loaded = load_dataset("imagefolder", data_dir=str(folder))
    except Exception as error:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(
            f"Could not load {str(folder)!r} as an image folder ({type(error).__name__}: {error}). Expected images in "
            "<folder>/[<split>/]<class>/<file> or with a metadata.jsonl; or use the CIFAR-10 zip or Fashion-MNIST "
            "IDX layout."
        ) from error
    loaded = _select_split(loaded, split, str(folder))
    for dataset in loaded.values() if isinstance(loaded, DatasetDict) else [loaded]:
        dataset.info.dataset_name = folder.name
    standardized = standardize_image_dataset(loaded, image_column, label_column, source=str(folder))
    return _subset(standardized, max_examples, seed)


def _load_hub_dataset(
    name: str,
    split: str | None,
    image_column: str | None,
    label_column: str | None,
    max_examples: int | None,
    seed: int,
) -> Dataset | DatasetDict:
    try:
        loaded = load_hub_dataset(name, split=split)
    except DatasetNotAvailableError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised with the name and the options
        if split is not None and str(error).startswith("Unknown split"):
            _select_split(load_hub_dataset(name), split, name)  # UnknownSplitError, with the splits it has
        raise ValueError(
            f"Could not load {name!r}: it is not a local path, and loading it as a Hugging Face Hub dataset "
            f"failed ({type(error).__name__}: {error}). Check the name (and network access or the local cache), "
            f"or pass an existing local folder or 'embedded'."
        ) from error
    standardized = standardize_image_dataset(loaded, image_column, label_column, source=name)
    return _subset(standardized, max_examples, seed)


def _select_split(loaded: Dataset | DatasetDict, split: str | None, source: str) -> Dataset | DatasetDict:
    if split is None or not isinstance(loaded, DatasetDict):
        return loaded
    if split not in loaded:
        raise UnknownSplitError(split, source, list(loaded))
    return loaded[split]


def _subset(dataset: Dataset | DatasetDict, max_examples: int | None, seed: int) -> Dataset | DatasetDict:
    if max_examples is None:
        return dataset
    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: _subset(split, max_examples, seed) for name, split in dataset.items()})
    if dataset.num_rows <= max_examples:
        return dataset
    labels = (
        dataset.select_columns(["label"]).with_format("numpy")[:]["label"]
        if "label" in dataset.column_names
        else None
    )
    indices = balanced_subset_indices(labels, max_examples, seed, num_rows=dataset.num_rows)
    return dataset.select(indices)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _resolve_image_column(dataset: Dataset, image_column: str | None, name: str) -> str:
    columns = dataset.column_names
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(
                f"image_column={image_column!r} is not a column of {name}; columns: {columns}. Pass image_column= "
                "(CLI: --image_column) naming one of them."
            )
        return image_column
    for column, feature in dataset.features.items():
        if isinstance(feature, Image):
            return column
    for column in IMAGE_COLUMN_CANDIDATES:
        if column in columns:
            return column
    feature_types = {column: _feature_summary(feature) for column, feature in dataset.features.items()}
    raise ValueError(
        f"{name} has no image column: its columns are {feature_types} and none is a datasets.Image feature or named "
        f"one of {list(IMAGE_COLUMN_CANDIDATES)}. If it is an image dataset, pass image_column='<column>' "
        "(CLI: --image_column <column>) naming the column of images, file paths or encoded bytes; a text-only "
        "dataset cannot be used here."
    )


def _resolve_label_column(dataset: Dataset, label_column: str | None, image_column: str, name: str) -> str | None:
    columns = dataset.column_names
    if label_column is not None:
        if label_column not in columns:
            raise ValueError(
                f"label_column={label_column!r} is not a column of {name}; columns: {columns}. Pass label_column= "
                "(CLI: --label_column) naming one of them, or leave it unset for an unlabelled dataset."
            )
        if label_column == image_column:
            raise ValueError(f"label_column and image_column are both {label_column!r}; they must differ.")
        return label_column
    for column in LABEL_COLUMN_CANDIDATES:
        if column in columns and column != image_column:
            return column
    return None


def _label_class_feature(
    splits: dict, label_name: str | None, *, explicit: bool, name: str
) -> ClassLabel | None:
    """The ``ClassLabel`` the label column becomes, shared by all splits; ``None`` when there is no usable label."""
    if label_name is None:
        return None
    features = [dataset.features[label_name] for dataset in splits.values()]
    if all(isinstance(feature, ClassLabel) for feature in features):
        return features[0]
    kinds = {_label_kind(feature) for feature in features}
    if kinds == {"int"}:
        largest = max(
            int(dataset.select_columns([label_name]).with_format("numpy")[:][label_name].max())
            for dataset in splits.values()
        )
        return ClassLabel(names=[str(index) for index in range(largest + 1)])
    if kinds == {"string"}:
        values = set()
        for dataset in splits.values():
            values.update(value for value in dataset.unique(label_name) if value is not None)
        return ClassLabel(names=sorted(values))
    message = (
        f"Column {label_name!r} of {name} ({_feature_summary(features[0])}) is not a class label (expected integer "
        "class ids, strings or a ClassLabel)."
    )
    if explicit:
        raise ValueError(message + " Pass label_column= naming a class label column, or leave it unset.")
    logger.warning("%s It is dropped; the dataset is treated as unlabelled.", message)
    return None


def _label_kind(feature) -> str | None:
    if isinstance(feature, ClassLabel):
        return "int"
    if isinstance(feature, Value):
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        if feature.dtype in ("string", "large_string"):
            return "string"
    return None


def _feature_summary(feature) -> str:
    if isinstance(feature, Value):
        return feature.dtype
    return type(feature).__name__


def _looks_like_local_path(source: str) -> bool:
    """Whether ``source`` is meant as a local path rather than a Hub name (``name`` or ``owner/name``)."""
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or source.endswith(("/", os.sep))
        or "\\" in source
        or source.count("/") > 1
    )
