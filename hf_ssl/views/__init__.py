"""Every augmentation: the views of one example, each seeded by ``(seed, epoch, index)`` (:mod:`.seeding`).

``multicrop`` (DINO's global and local crops; two views for SimCLR, BYOL, SimSiam, MoCo), ``single_view`` (MAE's one
crop), ``audio`` (random crops of a waveform), ``text`` (a tokenized sequence and the seed of its masked-LM masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from ..data.streaming import StreamedDataset, is_streamed
from .audio import AudioCropTransform
from .captioned import CaptionedImageView
from .multicrop import MultiCropConfig, MultiCropTransform
from .seeding import INDEX_COLUMN
from .single_view import SingleViewConfig, SingleViewTransform
from .text import MaskingSeeds
from .weak_strong import (
    AudioWeakStrongViews,
    ImageWeakStrongViews,
    TextWeakStrongViews,
    WeakStrongViews,
)

__all__ = [
    "INDEX_COLUMN",
    "AudioCropTransform",
    "CaptionedImageView",
    "MaskingSeeds",
    "MultiCropConfig",
    "MultiCropTransform",
    "SingleViewConfig",
    "SingleViewTransform",
    "AudioWeakStrongViews", "ImageWeakStrongViews", "TextWeakStrongViews", "WeakStrongViews",
    "StreamedViews",
    "apply_views",
]


def apply_views(dataset: datasets.Dataset | datasets.IterableDataset, transform):
    """Attach ``transform`` to ``dataset`` on the fly (``datasets.Dataset.set_transform``), after adding the
    ``ssl_index`` column that makes each example's views reproducible (see :mod:`hf_ssl.views.multicrop`).

    Returns a new dataset; the input is left untouched. Raises ``ValueError`` for an empty dataset.

    A stream (``datasets.IterableDataset``, e.g. ``load_dataset(..., streaming=True)``, or a
    :class:`hf_ssl.data.streaming.StreamedDataset`) gives a :class:`~hf_ssl.data.streaming.StreamedDataset` whose
    examples get their views as they are read, seeded by ``(seed, epoch, global position)``
    (:mod:`hf_ssl.data.streaming`): ``SSLTrainer`` splits it over processes and workers and resumes it.
    """
    if is_streamed(dataset):
        stream = dataset if isinstance(dataset, StreamedDataset) else StreamedDataset(dataset)
        _check_columns(stream.column_names, transform)
        return stream.with_transform(StreamedViews(transform))
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: check the split name and any `max_train_examples` filter")
    if INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
    _check_columns(dataset.column_names, transform)
    check = getattr(transform, "check_image", None)
    if check is not None:
        check(dataset[0][transform.image_column])
    dataset = dataset.with_transform(transform)
    return dataset


def _check_columns(column_names: list[str] | None, transform) -> None:
    """The image and label columns the transform reads must exist (unknown columns of a stream: not checked)."""
    if column_names is None:
        return
    image_column = getattr(transform, "image_column", None)
    if image_column is not None and image_column not in column_names:
        raise ValueError(
            f"the dataset has no {image_column!r} column (columns: {column_names}); this looks like a "
            "non-image dataset. Pass the image column with `--image_column`, or choose an image dataset."
        )
    label_column = getattr(transform, "label_column", None)
    if label_column is not None and label_column not in column_names:
        raise ValueError(
            f"the dataset has no label column {label_column!r} (columns: {column_names}); name it with "
            "`label_column=`, or pass label_column=None for label-free views"
        )


@dataclass
class StreamedViews:
    """The views of one streamed example: ``transform`` (a batch transform such as
    :class:`~hf_ssl.views.MultiCropTransform`) on a batch of rows, whose ``ssl_index`` is each example's global
    position and whose epoch and seed are the stream's (an example transform of
    :class:`~hf_ssl.data.streaming.StreamedDataset`)."""

    transform: object

    def __call__(self, row: dict, position: int, epoch: int, seed: int) -> dict:
        return self.batch([row], [position], epoch, seed)[0]

    def batch(self, rows: list[dict], positions: list[int], epoch: int, seed: int) -> list[dict]:
        """The views of several examples of one epoch, in one call of the transform."""
        self.transform.seed = seed
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)
        batch = {name: [row[name] for row in rows] for name in rows[0]}
        batch[INDEX_COLUMN] = list(positions)
        output = self.transform(batch)
        return [{name: values[index] for name, values in output.items()} for index in range(len(rows))]
