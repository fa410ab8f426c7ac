"""The local image formats hf_ssl reads without ``datasets``' builders: the Fashion-MNIST subset shipped in the package
(``embedded``), Fashion-MNIST's IDX files and CIFAR-10 as JPEG zips (the offline copies of
``zalando-datasets/fashion_mnist`` and ``uoft-cs/cifar10``), and the command that builds the embedded subset::

    python -m hf_ssl.data.image_formats build-embedded <Fashion-MNIST IDX folder> [--out PATH]

Each reader gives the splits of its source with ``image`` and ``label`` columns in the standard form of
:mod:`hf_ssl.data.images`; subsets (``max_examples``) are class-balanced and deterministic given the seed.
"""

from __future__ import annotations

import abc
import argparse
import gzip
import logging
import os
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    DatasetInfo,
    Features,
)

from .image_decoding import PathReportingImage

logger = logging.getLogger(__name__)


ASSETS_DIR = Path(__file__).resolve().parent / "assets"


EMBEDDED_SUBSET_PATH = ASSETS_DIR / "fashion_mnist_subset.npz"


FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


FASHION_MNIST_CITATION = (
    "Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine "
    "Learning Algorithms. arXiv:1708.07747, 2017."
)


FASHION_MNIST_HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"


CIFAR10_CITATION = "Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report, 2009."


# Fashion-MNIST file stems per split name.
_IDX_SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def build_embedded_subset(
    fashion_mnist_dir: str,
    out_path: str,
    train_per_class: int = 1000,
    test_per_class: int = 200,
) -> None:
    """Write the Fashion-MNIST subset shipped as ``hf_ssl/data/assets/fashion_mnist_subset.npz``.

    Keeps the first ``train_per_class`` (``test_per_class``) images of each class of the train (test) IDX files, in
    file order. The file holds uint8 arrays ``train_images`` (N, 28, 28), ``train_labels`` (N,), ``test_images``,
    ``test_labels`` and the string array ``class_names``. It is the same zip-of-``.npy`` container that
    ``np.savez_compressed`` writes (``np.load`` reads it), but with fixed zip timestamps so that the file is
    byte-for-byte reproducible.
    """
    reader = FashionMnistIdxReader(Path(fashion_mnist_dir).expanduser())
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = reader.read_arrays(split)
        keep = _first_per_class_indices(labels, per_class, len(FASHION_MNIST_CLASS_NAMES), split)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[keep], dtype=np.uint8)
        arrays[f"{split}_labels"] = np.ascontiguousarray(labels[keep], dtype=np.uint8)
    arrays["class_names"] = np.array(FASHION_MNIST_CLASS_NAMES)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_npz_reproducibly(out, arrays)


class LocalReader(abc.ABC):
    """Interface of the built-in local formats (embedded subset, CIFAR-10 zips, Fashion-MNIST IDX)."""

    name: str

    @abc.abstractmethod
    def split_names(self) -> list[str]:
        """The splits this source has."""

    @abc.abstractmethod
    def labels(self, split: str) -> np.ndarray:
        """``(rows,)`` integer labels of ``split``."""

    @abc.abstractmethod
    def build(self, split: str, indices: np.ndarray) -> Dataset:
        """The standard-form Dataset of ``split`` restricted to ``indices``."""


class EmbeddedSubsetReader(LocalReader):
    """The Fashion-MNIST subset in ``hf_ssl/data/assets`` (see :func:`build_embedded_subset`)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise ValueError(
                f"The embedded dataset file {path} is missing from this installation. Reinstall hf_ssl, or rebuild "
                "it with: python -m hf_ssl.data.images build-embedded <fashion_mnist_dir>"
            )
        self.name = "fashion_mnist_subset (embedded)"
        with np.load(path, allow_pickle=False) as archive:
            self._arrays = {key: archive[key] for key in archive.files}
        self._class_names = (
            [str(name) for name in self._arrays["class_names"]]
            if "class_names" in self._arrays
            else list(FASHION_MNIST_CLASS_NAMES)
        )

    def split_names(self) -> list[str]:
        return [split for split in ("train", "test") if f"{split}_images" in self._arrays]

    def labels(self, split: str) -> np.ndarray:
        return self._arrays[f"{split}_labels"].astype(np.int64)

    def build(self, split: str, indices: np.ndarray) -> Dataset:
        images = self._arrays[f"{split}_images"][indices]
        labels = self._arrays[f"{split}_labels"][indices]
        return _grayscale_dataset(images, labels, self._class_names, split, _fashion_mnist_info(self.name))


class FashionMnistIdxReader(LocalReader):
    """A folder of Fashion-MNIST IDX files (gzipped or not). Class names are the official Fashion-MNIST ones."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = "fashion_mnist"
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def split_names(self) -> list[str]:
        return [
            split
            for split in _IDX_SPLIT_PREFIXES
            if find_idx_file(self.folder, split, "images") and find_idx_file(self.folder, split, "labels")
        ]

    def read_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, rows, cols) and labels (N,) of ``split``, both uint8."""
        if split not in self._cache:
            image_file = find_idx_file(self.folder, split, "images")
            label_file = find_idx_file(self.folder, split, "labels")
            if image_file is None or label_file is None:
                raise ValueError(
                    f"{self.folder} lacks the IDX image or label file of split {split!r}; "
                    f"available splits: {self.split_names()}."
                )
            images = _read_idx(image_file)
            labels = _read_idx(label_file)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(
                    f"IDX files of split {split!r} in {self.folder} do not match: images {images.shape}, "
                    f"labels {labels.shape}."
                )
            self._cache[split] = (images, labels)
        return self._cache[split]

    def labels(self, split: str) -> np.ndarray:
        return self.read_arrays(split)[1].astype(np.int64)

    def build(self, split: str, indices: np.ndarray) -> Dataset:
        images, labels = self.read_arrays(split)
        return _grayscale_dataset(
            images[indices], labels[indices], FASHION_MNIST_CLASS_NAMES, split, _fashion_mnist_info(self.name)
        )


class ZipFolderReader(LocalReader):
    """A folder of ``<split>.zip`` archives whose members are ``<split>/<class>/<file>`` images (CIFAR-10 layout).

    The class names are the sorted class folder names over all archives, so every split shares one mapping (for
    CIFAR-10 the alphabetical order is also the standard label order). Image bytes are stored undecoded.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        # Per split: (class name, ZipInfo) sorted by member name.
        self._members: dict[str, list[tuple[str, zipfile.ZipInfo]]] = {}
        for archive_path in sorted(folder.glob("*.zip")):
            with zipfile.ZipFile(archive_path) as archive:
                members = []
                for member in archive.infolist():
                    if member.is_dir() or not member.filename.lower().endswith(_IMAGE_FILE_SUFFIXES):
                        continue
                    parts = member.filename.split("/")
                    if len(parts) < 2:
                        raise ValueError(
                            f"{archive_path} holds {member.filename!r} outside a class folder; expected members "
                            f"named <split>/<class>/<file> (e.g. {archive_path.stem}/cat/0001.jpg)."
                        )
                    members.append((parts[-2], member))
            self._members[archive_path.stem] = sorted(members, key=lambda item: item[1].filename)
        self._class_names = sorted({class_name for members in self._members.values() for class_name, _ in members})
        self._class_index = {class_name: index for index, class_name in enumerate(self._class_names)}
        self._info = DatasetInfo(
            dataset_name=self.name,
            description=f"Images read from the zip archives in {folder}.",
            citation=CIFAR10_CITATION if "cifar" in self.name.lower() else "",
        )

    def split_names(self) -> list[str]:
        usual_order = {"train": 0, "validation": 1, "val": 1, "valid": 1, "test": 2}
        return sorted(self._members, key=lambda split: (usual_order.get(split, 3), split))

    def labels(self, split: str) -> np.ndarray:
        return np.array([self._class_index[class_name] for class_name, _ in self._members[split]], dtype=np.int64)

    def build(self, split: str, indices: np.ndarray) -> Dataset:
        chosen = [self._members[split][index] for index in indices]
        archive_path = self.folder / f"{split}.zip"
        if all(member.compress_type == zipfile.ZIP_STORED for _, member in chosen):
            contents = archive_path.read_bytes()
            images = [{"bytes": _stored_member_bytes(contents, member), "path": None} for _, member in chosen]
        else:
            with zipfile.ZipFile(archive_path) as archive:
                images = [{"bytes": archive.read(member), "path": None} for _, member in chosen]
        labels = [self._class_index[class_name] for class_name, _ in chosen]
        info = self._info.copy()
        info.features = Features({"image": PathReportingImage(), "label": ClassLabel(names=self._class_names)})
        return Dataset.from_dict({"image": images, "label": labels}, info=info, split=split)


def _stored_member_bytes(contents: bytes, member: zipfile.ZipInfo) -> bytes:
    """The data of an uncompressed (``ZIP_STORED``) member, sliced from the archive's bytes.

    Reading 50,000 members through ``ZipFile.read`` costs about 1 s (a seek, a header parse and a CRC each); slicing
    one in-memory copy of the archive costs a tenth of that. The local header (30 bytes + name + extra field) sits
    at ``member.header_offset``; its own name and extra lengths decide where the data starts.
    """
    offset = member.header_offset
    if contents[offset : offset + 4] != b"PK\x03\x04":
        raise ValueError(f"Corrupt zip archive: no local file header for {member.filename!r}.")
    name_length, extra_length = struct.unpack_from("<HH", contents, offset + 26)
    start = offset + 30 + name_length + extra_length
    return contents[start : start + member.compress_size]


class UnknownSplitError(ValueError):
    """A split the dataset does not have; ``available`` lists the splits it has."""

    def __init__(self, split: str, source: str, available: Sequence[str]):
        self.split, self.available = split, list(available)
        super().__init__(f"Unknown split {split!r} for {source}; available splits: {self.available}.")


def load_local_splits(
    reader: LocalReader, split: str | None, max_examples: int | None, seed: int
) -> Dataset | DatasetDict:
    available = reader.split_names()
    if not available:
        raise ValueError(f"{reader.name} has no splits: there is no data to load.")
    if split is not None and split not in available:
        raise UnknownSplitError(split, reader.name, available)
    loaded = {}
    for split_name in [split] if split is not None else available:
        labels = reader.labels(split_name)
        if len(labels) == 0:
            raise ValueError(f"Split {split_name!r} of {reader.name} is empty (0 images).")
        indices = balanced_subset_indices(labels, max_examples, seed)
        loaded[split_name] = reader.build(split_name, indices)
    return loaded[split] if split is not None else DatasetDict(loaded)


def balanced_subset_indices(
    labels: np.ndarray | None, max_examples: int | None, seed: int, num_rows: int | None = None
) -> np.ndarray:
    """Sorted row indices of a deterministic subset of at most ``max_examples`` rows.

    Rows are shuffled with ``seed``; with labels, the subset then takes the classes round-robin in that shuffled
    order, so classes are represented equally as far as their sizes allow.
    """
    total = len(labels) if labels is not None else int(num_rows)
    if max_examples is None or max_examples >= total:
        return np.arange(total)
    order = np.random.default_rng(seed).permutation(total)
    if labels is None:
        return np.sort(order[:max_examples])
    shuffled_labels = np.asarray(labels)[order]
    rank_in_class = np.empty(total, dtype=np.int64)
    for label in np.unique(shuffled_labels):
        positions = np.flatnonzero(shuffled_labels == label)
        rank_in_class[positions] = np.arange(len(positions))
    # Primary key: rank within class (round-robin); ties broken by the shuffled position.
    chosen = np.lexsort((np.arange(total), rank_in_class))[:max_examples]
    return np.sort(order[chosen])


def _first_per_class_indices(labels: np.ndarray, per_class: int, num_classes: int, split: str) -> np.ndarray:
    keep = []
    for label in range(num_classes):
        positions = np.flatnonzero(labels == label)
        if len(positions) < per_class:
            raise ValueError(
                f"Split {split!r} has only {len(positions)} images of class {label}, fewer than {per_class}."
            )
        keep.append(positions[:per_class])
    return np.sort(np.concatenate(keep))


def _grayscale_dataset(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], split: str, info: DatasetInfo
) -> Dataset:
    """A standard-form Dataset from uint8 arrays (N, H, W), each image stored as binary PGM bytes (lossless)."""
    height, width = images.shape[1:]
    header = f"P5\n{width} {height}\n255\n".encode("ascii")
    encoded = [{"bytes": header + image.tobytes(), "path": None} for image in np.ascontiguousarray(images, np.uint8)]
    info.features = Features({"image": PathReportingImage(), "label": ClassLabel(names=list(class_names))})
    return Dataset.from_dict({"image": encoded, "label": labels.astype(np.int64).tolist()}, info=info, split=split)


def _fashion_mnist_info(name: str) -> DatasetInfo:
    return DatasetInfo(
        dataset_name=name,
        description="Fashion-MNIST: 28x28 grayscale images of 10 clothing classes (Zalando Research).",
        citation=FASHION_MNIST_CITATION,
        homepage=FASHION_MNIST_HOMEPAGE,
        license="MIT",
    )


def find_idx_file(folder: Path, split: str, kind: str) -> Path | None:
    """The IDX file of ``split`` (``train`` / ``test``) and ``kind`` (``images`` / ``labels``), gzipped or not."""
    prefix = _IDX_SPLIT_PREFIXES.get(split)
    if prefix is None:
        return None
    stem = f"{prefix}-images-idx3-ubyte" if kind == "images" else f"{prefix}-labels-idx1-ubyte"
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0000_08_NN, big-endian sizes) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()}).")
    num_dims = raw[3]
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=num_dims, offset=4))
    offset = 4 + 4 * num_dims
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise ValueError(f"{path} is truncated or padded: header says {shape}, found {len(raw) - offset} bytes.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _save_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` like ``np.savez_compressed`` does, with fixed member timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w") as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m hf_ssl.data.image_formats build-embedded <fashion_mnist_dir> [--out PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m hf_ssl.data.image_formats", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-embedded", help="rebuild hf_ssl/data/assets/fashion_mnist_subset.npz")
    build.add_argument("fashion_mnist_dir", help="folder with the Fashion-MNIST IDX (.gz) files")
    build.add_argument("--out", default=str(EMBEDDED_SUBSET_PATH), help="output .npz (default: the package asset)")
    build.add_argument("--train-per-class", type=int, default=1000)
    build.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "build-embedded":
        build_embedded_subset(args.fashion_mnist_dir, args.out, args.train_per_class, args.test_per_class)
        with np.load(args.out) as archive:
            sizes = {key: archive[key].shape for key in archive.files}
        print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes): {sizes}")


_IMAGE_FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


if __name__ == "__main__":
    main()
