"""Sampling orders for training with in-batch negatives.

With in-batch negatives (InfoNCE, multiple-negatives ranking, CLIP) every other pair of the *global* batch is a
negative: two rows that share a text (the same SNLI premise, the same CIFAR-10 class caption) make a false negative,
the loss pushes apart what is the same. :class:`NoDuplicatesSampler` orders the examples so that no two rows of one
global batch share a key (sentence-transformers' ``BatchSamplers.NO_DUPLICATES`` does this per batch for one
process; this sampler does it for the global batch, whose negatives are gathered from every process).

A loss that knows which rows belong together does not need it: CLIP-style training treats repeated captions (or
classes) as positives of each other (``multi_positive``, :class:`hf_ssl.losses.InfoNCELoss` with ``positive_ids``), so
the image-text job uses this sampler only where a global batch fits the distinct captions / classes (more distinct
classes per batch: more negatives), and otherwise lets repeats be positives. With a one-positive loss
(Sentence-BERT's multiple-negatives ranking) it is what keeps repeats from becoming false negatives.

Why a ``Sampler`` of indices rather than a batch sampler: ``Trainer`` builds ``DataLoader(sampler=..., batch_size=
per_device_batch)`` and ``accelerate`` hands local batch k to process ``k % world_size``; an index order whose every
consecutive chunk of ``per_device_batch * world_size`` is duplicate-free therefore gives each process a distinct
slice of a duplicate-free global batch, and ``Trainer``'s resume (skip the first batches of the epoch) works
unchanged, because the order depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class NoDuplicatesSampler(Sampler[int]):
    """A seeded random order of the examples in which no global batch holds two examples sharing a key.

    Args:
        keys: per example, the values that must not repeat within a batch (e.g. ``(anchor, positive, negative)``
            texts; a caption; a class id). Rows are compared on each value: examples ``a`` and ``b`` conflict when
            ``set(keys[a]) & set(keys[b])`` is non-empty. A single hashable per example is taken as a 1-tuple.
        global_batch_size: ``per_device_train_batch_size * world_size`` (times nothing for accumulation: each
            accumulated micro-batch is its own set of negatives).
        seed: the order depends on ``(seed, epoch)`` only; call :meth:`set_epoch` at each epoch (``SSLTrainer``
            does).

    Every epoch yields exactly ``len(self)`` indices, a whole number of global batches. Examples are placed greedily
    in shuffled order (each goes to the first open batch it does not conflict with); when the last batches cannot be
    filled from the examples left, they are completed with random examples already used this epoch that do not
    conflict (as ``DistributedSampler`` pads by repetition). Raises if a batch cannot be filled at all (fewer
    distinct keys than the batch size).
    """

    def __init__(self, keys: Sequence, global_batch_size: int, seed: int = 0):
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        if len(keys) < global_batch_size:
            raise ValueError(
                f"{len(keys)} examples cannot fill one batch of {global_batch_size}; lower per_device_train_batch_size"
            )
        self.keys = [_as_key_set(key) for key in keys]
        distinct = distinct_key_count(self.keys)
        if distinct < global_batch_size:  # each row of a batch needs a value no other row has
            raise ValueError(
                f"the data has too few distinct texts/keys ({distinct}) for batches of {global_batch_size} without "
                "repeats; lower per_device_train_batch_size or set --no_duplicates false"
            )
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.keys) // self.global_batch_size) * self.global_batch_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def order(self) -> list[int]:
        """The index order of the current epoch (``len(self)`` indices, batch after batch)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        shuffled = torch.randperm(len(self.keys), generator=generator).tolist()
        size, wanted = self.global_batch_size, len(self) // self.global_batch_size
        batches: list[list[int]] = []
        open_batches: list[tuple[list[int], set]] = []  # batches being filled, with the keys they hold
        for index in shuffled:
            keys = self.keys[index]
            for members, taken in open_batches:
                if not keys & taken:
                    members.append(index)
                    taken |= keys
                    break
            else:
                if len(batches) + len(open_batches) >= wanted:
                    continue  # no room for a new batch: this example sits out the epoch
                open_batches.append(([index], set(keys)))
            full = [entry for entry in open_batches if len(entry[0]) == size]
            for entry in full:
                batches.append(entry[0])
                open_batches.remove(entry)
        for members, taken in open_batches:  # complete the stragglers with conflict-free repeats
            for index in torch.randperm(len(self.keys), generator=generator).tolist():
                if len(members) == size:
                    break
                if not self.keys[index] & taken:
                    members.append(index)
                    taken |= self.keys[index]
            if len(members) < size:
                raise ValueError(
                    f"cannot build a batch of {size} examples without repeating a key: the data has too few "
                    "distinct texts/keys for this batch size; lower per_device_train_batch_size or set "
                    "--no_duplicates false"
                )
            batches.append(members)
        return [index for batch in batches for index in batch]


def distinct_key_count(keys: Sequence) -> int:
    """How many distinct values ``keys`` hold (as :class:`NoDuplicatesSampler` compares them): a global batch without
    repeats can hold at most this many rows."""
    return len(set().union(*(_as_key_set(key) for key in keys)))


def _as_key_set(key) -> frozenset:
    if isinstance(key, (tuple, list, set, frozenset)):
        return frozenset(value for value in key if value is not None)
    if not isinstance(key, Hashable):
        raise TypeError(f"sampler keys must be hashable (texts, ids) or tuples of them, got {type(key).__name__}")
    return frozenset([key])
