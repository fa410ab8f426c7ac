"""Every augmentation: the views of one example, each seeded by ``(seed, epoch, index)`` (:mod:`.seeding`).

``multicrop`` (DINO's global and local crops; two views for SimCLR, BYOL, SimSiam, MoCo), ``single_view`` (MAE's one
crop), ``audio`` (random crops of a waveform), ``text`` (a tokenized sequence and the seed of its masked-LM masks).
"""

from __future__ import annotations

import datasets

from .audio import AudioCropTransform
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
    "MaskingSeeds",
    "MultiCropConfig",
    "MultiCropTransform",
    "SingleViewConfig",
    "SingleViewTransform",
    "AudioWeakStrongViews", "ImageWeakStrongViews", "TextWeakStrongViews", "WeakStrongViews",
    "apply_views",
]


def apply_views(dataset: datasets.Dataset, transform) -> datasets.Dataset:
    """Attach ``transform`` to ``dataset`` on the fly (``datasets.Dataset.set_transform``), after adding the
    ``ssl_index`` column that makes each example's views reproducible (see :mod:`hf_ssl.views.multicrop`).

    Returns a new dataset; the input is left untouched. Raises ``ValueError`` for an empty dataset.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: check the split name and any `max_train_examples` filter")
    if INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
    image_column = getattr(transform, "image_column", None)
    if image_column is not None and image_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no {image_column!r} column (columns: {dataset.column_names}); this looks like a "
            "non-image dataset. Pass the image column with `--image_column`, or choose an image dataset."
        )
    label_column = getattr(transform, "label_column", None)
    if label_column is not None and label_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no label column {label_column!r} (columns: {dataset.column_names}); name it with "
            "`label_column=`, or pass label_column=None for label-free views"
        )
    check = getattr(transform, "check_image", None)
    if check is not None:
        check(dataset[0][image_column])
    dataset = dataset.with_transform(transform)
    return dataset
