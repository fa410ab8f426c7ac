"""Two data streams in one loader, for semi-supervised training: a small labelled set, cycled many times, beside a
large unlabelled set, walked once per epoch.

Each device batch holds ``B`` labelled and ``mu x B`` unlabelled examples (FixMatch's notation, Sohn et al. 2020 §3).
Which examples go into device batch ``d`` is a pure function of ``(seed, d)``: the unlabelled stream walks a seeded
permutation of the unlabelled set per epoch, and the labelled stream walks its own seeded permutations, one per pass
over the labelled set ("cycle"), ``B`` positions per device batch, whatever the unlabelled epoch. Hence:

- resume is exact: the trainer skips the batches already seen (accelerate's ``SkipBatchSampler`` skips keys without
  loading data) and both streams go on where they stopped;
- ``N`` processes equal one process with ``N``-times the batches: accelerate deals device batches round-robin
  (``BatchSamplerShard``), so process ``r`` takes ``d = kN + r``, and ``N`` consecutive device batches hold exactly the
  examples of one device batch ``N`` times as large (both streams are contiguous in their orders);
- every occurrence of an example gets fresh views: they are seeded by ``(seed, stream, index, occurrence, view)``.

Written here because neither ``datasets`` nor accelerate combines two differently sized, independently shuffled
streams into one resumable, shardable loader (``datasets.interleave_datasets`` interleaves examples, not batches of
fixed composition).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LABELLED = 0
UNLABELLED = 1
#: The views a semi-supervised example can get (the methods of a ``WeakStrongViews``), besides ``plain``.
VIEW_NAMES = ("weak", "strong")


@dataclass(frozen=True)
class StreamKey:
    """Which example a batch slot holds: its ``stream`` (:data:`LABELLED` or :data:`UNLABELLED`), its ``index`` in
    that stream's dataset, and its ``occurrence`` (the labelled cycle or the unlabelled epoch it belongs to)."""

    stream: int
    index: int
    occurrence: int


def _permutation(size: int, seed: int, stream: int, occurrence: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, occurrence]).permutation(size)


class TwoStreamBatchSampler:
    """Yields device batches of :class:`StreamKey`: ``labelled_batch_size`` labelled keys, then
    ``unlabelled_batch_size`` unlabelled keys.

    One epoch is one pass over the unlabelled set: ``len(self)`` device batches, a multiple of ``num_processes`` so
    that every process gets the same number. ``set_epoch`` picks the epoch (the trainer calls it).
    """

    def __init__(
        self,
        num_labelled: int,
        num_unlabelled: int,
        labelled_batch_size: int,
        unlabelled_batch_size: int,
        *,
        num_processes: int = 1,
        seed: int = 0,
    ):
        if labelled_batch_size < 1 or unlabelled_batch_size < 1:
            raise ValueError("labelled and unlabelled batch sizes must be >= 1")
        if num_labelled < labelled_batch_size:
            raise ValueError(
                f"the labelled set has {num_labelled} examples, fewer than one labelled batch of "
                f"{labelled_batch_size}; lower per_device_train_batch_size or label more examples"
            )
        per_step = unlabelled_batch_size * num_processes
        if num_unlabelled < per_step:
            raise ValueError(
                f"the unlabelled set has {num_unlabelled} examples, fewer than one unlabelled batch of {per_step} "
                "(unlabelled_batch_ratio x per-device batch x processes); give more unlabelled data or lower the ratio"
            )
        self.num_labelled, self.num_unlabelled = num_labelled, num_unlabelled
        self.labelled_batch_size, self.unlabelled_batch_size = labelled_batch_size, unlabelled_batch_size
        self.num_processes = num_processes
        self.seed = seed
        self.epoch = 0
        self.batch_size = labelled_batch_size + unlabelled_batch_size
        self.drop_last = True
        # accelerate's DataLoaderShard.set_epoch reaches a sharded batch sampler's epoch through `.sampler`.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (self.num_unlabelled // (self.unlabelled_batch_size * self.num_processes)) * self.num_processes

    def labelled_keys(self, device_batch: int) -> list[StreamKey]:
        """The labelled keys of global device batch ``device_batch`` (counted from the start of training)."""
        keys, permutation, cycle = [], None, None
        start = device_batch * self.labelled_batch_size
        for position in range(start, start + self.labelled_batch_size):
            if position // self.num_labelled != cycle:
                cycle = position // self.num_labelled
                permutation = _permutation(self.num_labelled, self.seed, LABELLED, cycle)
            keys.append(StreamKey(LABELLED, int(permutation[position % self.num_labelled]), cycle))
        return keys

    def __iter__(self):
        batches = len(self)
        order = _permutation(self.num_unlabelled, self.seed, UNLABELLED, self.epoch)
        for batch in range(batches):
            start = batch * self.unlabelled_batch_size
            unlabelled = [
                StreamKey(UNLABELLED, int(index), self.epoch)
                for index in order[start:start + self.unlabelled_batch_size]
            ]
            yield self.labelled_keys(self.epoch * batches + batch) + unlabelled


class TwoStreamDataset(torch.utils.data.Dataset):
    """Examples of the two streams, with their views, addressed by :class:`StreamKey`.

    Args:
        labelled, unlabelled: ``datasets.Dataset`` (any indexable of dict rows) with the columns ``views.input_columns``;
            the labelled one also has ``label_column``.
        views: the modality's weak and strong views (e.g. :class:`hf_ssl.views.ImageWeakStrongViews`): callables
            ``views.weak(value, rng)`` / ``views.strong(value, rng)`` and ``views.input_columns``.
        unlabelled_views: the views each unlabelled example gets, in order (FixMatch ``("weak", "strong")``;
            Pi-model and Mean Teacher ``("weak", "weak")``: two independent draws).
        audit_label_column: a label column of the unlabelled set, carried as ``audit_label`` for diagnostics only
            (pseudo-label accuracy): semi-supervised methods never train on it.

    Each view is computed with a ``numpy`` generator and torch's global RNG (restored afterwards) both seeded by
    ``(seed, stream, index, occurrence, view position)``.
    """

    def __init__(
        self,
        labelled,
        unlabelled,
        views,
        *,
        label_column: str = "label",
        unlabelled_views: Sequence[str] = ("weak", "strong"),
        audit_label_column: str | None = None,
        seed: int = 0,
    ):
        self.streams = {LABELLED: labelled, UNLABELLED: unlabelled}
        self.views = views
        self.label_column = label_column
        self.unlabelled_views = tuple(unlabelled_views)
        self.audit_label_column = audit_label_column
        self.seed = seed

    def __len__(self) -> int:
        return len(self.streams[LABELLED]) + len(self.streams[UNLABELLED])

    def __getitem__(self, key: StreamKey) -> dict[str, Any]:
        row = self.streams[key.stream][key.index]
        value = input_value(row, self.views.input_columns)
        if key.stream == LABELLED:
            return {"stream": LABELLED, "views": [self._view(value, "weak", key, 0)], "label": row[self.label_column]}
        example = {
            "stream": UNLABELLED,
            "index": key.index,
            "views": [self._view(value, kind, key, position) for position, kind in enumerate(self.unlabelled_views)],
        }
        if self.audit_label_column is not None:
            example["audit_label"] = row[self.audit_label_column]
        return example

    def _view(self, value, kind: str, key: StreamKey, position: int):
        seed = int(np.random.SeedSequence([self.seed, key.stream, key.index, key.occurrence, position])
                   .generate_state(1, np.uint64)[0] % (2**63))
        return draw_view(self.views, kind, value, seed)


def draw_view(views, view: str, value: Any, seed: int) -> Any:
    """``views.weak(value, rng)`` or ``views.strong(value, rng)`` with every random stream seeded by ``seed`` alone:
    ``rng = numpy.random.default_rng(seed)``, and torch's global generator (which torchvision v2 transforms draw
    from) seeded, inside a ``fork_rng`` that restores the caller's state, with a number drawn first from that
    ``rng``. Each (example, view) gets its own ``seed`` (:class:`TwoStreamDataset` mixes seed, stream, index,
    occurrence and view position)."""
    if view not in VIEW_NAMES:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    rng = np.random.default_rng(seed)
    torch_seed = int(rng.integers(2**63 - 1))
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only, as hf_ssl.views.seeding.seed_cpu_generator explains (torch.manual_seed costs ~85x).
        torch.default_generator.manual_seed(torch_seed)
        return getattr(views, view)(value, rng)


def input_value(row: dict[str, Any], columns: Sequence[str]):
    """The content of an example that views augment: the column's value, or a tuple of values for several columns."""
    missing = [column for column in columns if column not in row]
    if missing:
        raise ValueError(f"the dataset has no column(s) {missing} (columns: {sorted(row)}); name the input columns of "
                         "the views (e.g. input_columns=('premise', 'hypothesis')) or rename the dataset's columns")
    return row[columns[0]] if len(columns) == 1 else tuple(row[column] for column in columns)


def _labels(values: Sequence) -> torch.Tensor:
    floating = any(isinstance(value, float) for value in values)
    return torch.tensor(list(values), dtype=torch.float32 if floating else torch.long)


@dataclass
class TwoStreamCollator:
    """Device batch of :class:`TwoStreamDataset` examples -> ``{"labelled": {**model inputs, "labels"},
    "unlabelled": {"views": [model inputs per view], "indices", ("audit_labels")}}``, with ``collate`` (the views'
    ``collate``: a list of augmented values -> the classifier's inputs, e.g. ``{"pixel_values": (B, C, H, W)}``)."""

    collate: Callable[[list], dict[str, torch.Tensor]]

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        labelled = [example for example in examples if example["stream"] == LABELLED]
        unlabelled = [example for example in examples if example["stream"] == UNLABELLED]
        if not labelled or not unlabelled:
            raise ValueError("a semi-supervised batch needs labelled and unlabelled examples (use TwoStreamBatchSampler)")
        batch = {
            "labelled": {**self.collate([example["views"][0] for example in labelled]),
                         "labels": _labels([example["label"] for example in labelled])},
            "unlabelled": {
                "views": [self.collate([example["views"][position] for example in unlabelled])
                          for position in range(len(unlabelled[0]["views"]))],
                "indices": torch.tensor([example["index"] for example in unlabelled], dtype=torch.long),
            },
        }
        if "audit_label" in unlabelled[0]:
            batch["unlabelled"]["audit_labels"] = _labels([example["audit_label"] for example in unlabelled])
        return batch


@dataclass
class PlainViewCollator:
    """Rows of a labelled evaluation set -> the classifier's inputs and ``labels``, without augmentation:
    ``views.plain(value)`` per example (the deterministic evaluation view), then ``views.collate``."""

    views: Any
    label_column: str = "label"

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        values = [self.views.plain(input_value(row, self.views.input_columns)) for row in rows]
        return {**self.views.collate(values), "labels": _labels([row[self.label_column] for row in rows])}
