"""Streamed training data: a ``datasets.IterableDataset`` read shard by shard, split over processes and dataloader
workers, each example at a global position that seeds its views, and a position in the stream that a checkpoint
saves and a resumed run continues from.

Sources: anything ``datasets`` streams (``load_dataset(..., streaming=True)`` from the Hub or a local mirror,
webdataset tar shards ``load_dataset("webdataset", data_files=..., streaming=True)``, a folder read lazily,
``IterableDataset.from_generator(..., gen_kwargs={"shards": [...]})``). A *shard* is one of its ``n_shards`` data
sources (a file, a tar, a ``gen_kwargs`` list item): ``source.shard(num_shards=n_shards, index=s)`` reads shard ``s``.

Global position
    An example's position is ``shard << OFFSET_BITS | offset`` (:func:`global_position`): its shard index and its
    offset in that shard's own order. It belongs to the example, not to the reader: it depends neither on the number of
    processes or workers, nor on the shuffling, nor on a resume. Views are seeded by ``(seed, epoch, position)``
    (:mod:`hf_ssl.views.seeding`), as map-style views by ``(seed, epoch, row index)``.

Splitting (no duplicates, no gaps)
    ``P`` processes x ``W`` dataloader workers make ``P W`` *slots*; process ``r``'s worker ``w`` is slot
    ``r W + w``. In each epoch the shards are taken in a seeded order (``seed``, ``epoch``), and slot ``g`` reads
    shards ``g, g + PW, g + 2PW, ...`` of it. With fewer shards than slots, every slot reads every shard and keeps
    every ``PW``-th example instead (``datasets.distributed.split_dataset_by_node``'s fallback; correct, but each
    slot reads the whole stream: give the data at least ``P W`` shards). Either way each example is read by exactly
    one slot per epoch. Within a shard, a buffer of ``shuffle_buffer_size`` examples shuffles the order, seeded by
    ``(seed, epoch, shard)``.

Epochs and unequal slots
    Each slot loops over its shards without end, counting its own epochs: when one slot has read its share it starts
    its next epoch at once, whatever the others do. The loader never runs dry, so processes never wait for one
    another at an epoch's end (no DDP hang) and ``max_steps`` ends the run; a batch may hold the end of one epoch and
    the start of the next. Every example is still seen exactly once per epoch of the slot that reads it.

Resume
    Each batch carries, under :data:`POSITION_KEY`, where its slot stands after it (:class:`SlotPosition`): epoch,
    shard, offset within the shard, batches made. :class:`TrackedStreamLoader` takes it out before the model sees the
    batch and keeps the latest per slot; the trainer saves that in the checkpoint. A resumed
    :class:`StreamBatches` starts each slot there, re-reading (not augmenting) the part of the current shard already
    seen, and deals the slots to the workers in the order the interrupted run would have used next, so the batches
    after a resume are the batches of the uninterrupted run. ``datasets``' own ``IterableDataset.state_dict()`` is not
    used: with dataloader workers it counts the examples of the main process's copy, which never iterates.

The trainer builds the loader itself and lets accelerate only place batches on the device: accelerate's
``dispatch_batches`` (process 0 reads everything) and its per-process split of a ``datasets.IterableDataset`` do not
apply; gradient accumulation, ``max_steps`` and the per-process batch size work as with map-style data.

Written here because neither ``datasets`` nor accelerate gives a worker-independent example position, nor a stream
state that survives dataloader workers (``accelerate.prepare_data_loader`` splits a ``datasets.IterableDataset`` over
processes only, or has every process read everything and keep its batches).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import datasets
import numpy as np
import torch

#: Bits of the offset within a shard in a global position (shards of up to 2**40 examples, 2**23 shards).
OFFSET_BITS = 40
#: The key of a batch's stream position (a tensor of :class:`SlotPosition` fields), taken out before the model.
POSITION_KEY = "stream_position"
#: Default number of examples of the in-shard shuffle buffer.
SHUFFLE_BUFFER_SIZE = 1000
#: Default number of examples a streamed evaluation split (or kNN memory bank) keeps in memory.
STREAMED_EVAL_EXAMPLES = 10_000


def global_position(shard: int, offset: int) -> int:
    """The global position of the ``offset``-th example of shard ``shard`` (see the module docstring)."""
    if not 0 <= offset < 2**OFFSET_BITS:
        raise ValueError(f"a shard holds at most 2**{OFFSET_BITS} examples; split the data into more files")
    return (int(shard) << OFFSET_BITS) | int(offset)


def shard_and_offset(position: int) -> tuple[int, int]:
    """``global_position``'s inverse: ``(shard, offset)``."""
    return int(position) >> OFFSET_BITS, int(position) & (2**OFFSET_BITS - 1)


def is_streamed(dataset) -> bool:
    """Whether ``dataset`` is a stream (a ``datasets.IterableDataset`` or a :class:`StreamedDataset`)."""
    return isinstance(dataset, (datasets.IterableDataset, StreamedDataset))


@dataclass
class SlotPosition:
    """Where one slot (a process's dataloader worker) stands in its stream: its ``epoch``, the ``cursor``-th shard of
    its share of that epoch, ``offset`` examples of that shard read, ``seen`` examples of the epoch read (the
    every-``PW``-th rule with fewer shards than slots), ``batches`` batches made since the start."""

    epoch: int = 0
    cursor: int = 0
    offset: int = 0
    seen: int = 0
    batches: int = 0


@dataclass(frozen=True)
class StreamedExample:
    """One example read from a stream: its ``row`` as the source yields it, its global ``position`` and ``epoch``."""

    row: dict[str, Any]
    position: int
    epoch: int


class StreamedDataset(torch.utils.data.IterableDataset):
    """A ``datasets.IterableDataset`` read by slots (see the module docstring), with an optional per-example
    transform (the views, :func:`hf_ssl.views.apply_views`).

    Args:
        source: a ``datasets.IterableDataset`` (``n_shards`` data sources).
        example_transform: ``transform(row, position, epoch, seed) -> example`` applied to each example before
            collation; ``None``: the rows as they are.
        shuffle_buffer_size: the in-shard shuffle buffer (0: each shard in its own order); shard order is shuffled
            per epoch whenever this is positive.
        seed: seeds the shard order, the buffer and the transform (``SSLTrainer`` sets it to ``args.seed``).

    Iterating it directly reads one epoch as one slot (all shards), for a look at the data.
    """

    def __init__(self, source: datasets.IterableDataset, *, example_transform: Callable | None = None,
                 shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE, seed: int = 0):
        if isinstance(source, StreamedDataset):
            source = source.source
        if not isinstance(source, datasets.IterableDataset):
            raise TypeError(f"a stream is a datasets.IterableDataset (load_dataset(..., streaming=True)); got "
                            f"{type(source).__name__}")
        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size must be >= 0, got {shuffle_buffer_size}")
        self.source = source
        self.example_transform = example_transform
        self.shuffle_buffer_size = int(shuffle_buffer_size)
        self.seed = int(seed)

    @property
    def n_shards(self) -> int:
        return self.source.n_shards

    @property
    def features(self) -> datasets.Features | None:
        return self.source.features

    @property
    def column_names(self) -> list[str] | None:
        return self.source.column_names

    def with_transform(self, example_transform: Callable | None) -> StreamedDataset:
        """A copy with ``example_transform`` (the source is shared, not copied)."""
        stream = copy.copy(self)
        stream.example_transform = example_transform
        return stream

    def transformed(self, example: StreamedExample) -> dict[str, Any]:
        """``example`` through the transform (its row when there is none)."""
        if self.example_transform is None:
            return example.row
        return self.example_transform(example.row, example.position, example.epoch, self.seed)

    def transformed_batch(self, examples: list[StreamedExample]) -> list[dict[str, Any]]:
        """:meth:`transformed` of each example; a transform with a ``batch(rows, positions, epoch, seed)`` method
        (:class:`hf_ssl.views.StreamedViews`) gets the examples of one epoch in one call (a view transform seeds a
        batch in one ``fork_rng``, not one per example)."""
        batch = getattr(self.example_transform, "batch", None)
        if batch is None:
            return [self.transformed(example) for example in examples]
        results, start = [], 0
        while start < len(examples):
            epoch = examples[start].epoch
            end = start
            while end < len(examples) and examples[end].epoch == epoch:
                end += 1
            group = examples[start:end]
            results += batch([example.row for example in group], [example.position for example in group], epoch,
                             self.seed)
            start = end
        return results

    # ----------------------------------------------------------------------------------------------------------------
    def shard_order(self, epoch: int) -> list[int]:
        """The order of the shards in ``epoch``: seeded by ``(seed, epoch)`` when shuffling, else the source's."""
        if self.shuffle_buffer_size == 0:
            return list(range(self.n_shards))
        return [int(shard) for shard in np.random.default_rng([self.seed, epoch]).permutation(self.n_shards)]

    def shard_rows(self, shard: int, epoch: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(offset, row)`` of shard ``shard``, in the shuffle buffer's order of ``epoch`` (a pure function of
        ``(seed, epoch, shard)``)."""
        rows = enumerate(_rows(self.source.shard(num_shards=self.n_shards, index=shard, contiguous=True)))
        if self.shuffle_buffer_size == 0:
            yield from rows
            return
        rng = np.random.default_rng([self.seed, epoch, shard, 1])
        buffer = list(islice(rows, self.shuffle_buffer_size))
        for item in rows:
            slot = int(rng.integers(len(buffer)))
            yield buffer[slot]
            buffer[slot] = item
        for slot in rng.permutation(len(buffer)):
            yield buffer[int(slot)]

    def slot_examples(self, slot: int, num_slots: int, start: SlotPosition | None = None
                      ) -> Iterator[tuple[StreamedExample, SlotPosition]]:
        """The examples of slot ``slot`` of ``num_slots``, epoch after epoch without end, from ``start`` (default:
        the beginning); each with the slot's position after it."""
        state = dataclasses.replace(start) if start is not None else SlotPosition()
        striding = self.n_shards < num_slots
        while True:
            order = self.shard_order(state.epoch)
            share = order if striding else order[slot::num_slots]
            kept = 0
            while state.cursor < len(share):
                shard = share[state.cursor]
                for emitted, (offset, row) in enumerate(self.shard_rows(shard, state.epoch)):
                    if emitted < state.offset:  # read before the resume
                        continue
                    state.offset = emitted + 1
                    state.seen += 1
                    if striding and (state.seen - 1) % num_slots != slot:
                        continue
                    kept += 1
                    yield StreamedExample(row, global_position(shard, offset), state.epoch), dataclasses.replace(state)
                state.cursor, state.offset = state.cursor + 1, 0
            if kept == 0 and start is None:
                raise ValueError(
                    f"slot {slot} of {num_slots} (processes x dataloader workers) read no example in epoch "
                    f"{state.epoch}: its shards are empty; check the data files, or use fewer dataloader workers"
                )
            start = None
            state = SlotPosition(epoch=state.epoch + 1, batches=state.batches)

    def __iter__(self):
        examples = self.slot_examples(0, 1)
        for example, state in examples:
            if state.epoch > 0:
                return
            yield self.transformed(example)

    def take(self, count: int) -> datasets.Dataset:
        """The first ``count`` examples of the source (in its own order, untransformed) as an in-memory, map-style
        ``datasets.Dataset``: for probes and kNN memory banks, which need random access."""
        return materialize(self.source, count)


def _rows(source: datasets.IterableDataset) -> Iterator[dict[str, Any]]:
    """The rows of ``source``, decoded as iterating it gives them. Through ``iter(batch_size=1)``: iterating the
    dataset itself inside a dataloader worker would split it over the workers once more (slots already are)."""
    for batch in source.iter(batch_size=1):
        yield {name: values[0] for name, values in batch.items()}


def materialize(source: datasets.IterableDataset, count: int) -> datasets.Dataset:
    """``source.take(count)`` as a map-style ``datasets.Dataset`` (same features), e.g. a streamed evaluation split."""
    if isinstance(source, StreamedDataset):
        source = source.source
    if count < 1:
        raise ValueError(f"take at least one example, got {count}")
    rows = list(source.take(count))
    if not rows:
        raise ValueError("the streamed split is empty: check the split name")
    return datasets.Dataset.from_list(rows, features=source.features)


# --------------------------------------------------------------------------------------------------------------------
class StreamBatches(torch.utils.data.IterableDataset):
    """Batches of a :class:`StreamedDataset` for one process, made in its dataloader workers (use it with
    ``DataLoader(batch_size=None)``): each worker reads its slot's examples and yields
    ``{**make_batch(examples, device_batch), POSITION_KEY: position}``.

    Args:
        stream: the :class:`StreamedDataset`.
        batch_size: examples of the stream per batch.
        make_batch: ``(list[StreamedExample], device_batch) -> dict``; ``device_batch`` numbers the batches of all
            processes without gaps (batch ``j`` of process ``r`` is ``j P + r``; with one worker and one process, 0, 1,
            2, ...), as device batches of a map-style sampler are numbered.
        process_index, num_processes: this process and how many read the stream.
        resume: a :meth:`TrackedStreamLoader.state_dict` of this process to continue from (``None``: the start).
    """

    def __init__(self, stream: StreamedDataset, batch_size: int, make_batch: Callable, *, process_index: int = 0,
                 num_processes: int = 1, resume: dict | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.stream = stream
        self.batch_size = int(batch_size)
        self.make_batch = make_batch
        self.process_index, self.num_processes = int(process_index), int(num_processes)
        self.resume = resume

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start, rotation = None, 0
        if self.resume is not None:
            check_resumable(self.resume, self.num_processes, workers)
            rotation = int(self.resume["batches"]) % workers
        local = (worker + rotation) % workers  # the slot the interrupted run would have read next comes first
        if self.resume is not None and str(local) in self.resume["slots"]:
            start = SlotPosition(**self.resume["slots"][str(local)])
        slot = self.process_index * workers + local
        examples = self.stream.slot_examples(slot, self.num_processes * workers, start)
        made = start.batches if start is not None else 0
        while True:
            chunk = list(islice(examples, self.batch_size))
            state = dataclasses.replace(chunk[-1][1], batches=made + 1)
            device_batch = (made * workers + local) * self.num_processes + self.process_index
            batch = dict(self.make_batch([example for example, _ in chunk], device_batch))
            batch[POSITION_KEY] = torch.tensor([local, *dataclasses.astuple(state)], dtype=torch.long)
            yield batch
            made += 1


def check_resumable(state: dict, num_processes: int, num_workers: int) -> None:
    """Refuse to continue a stream saved with other processes / dataloader workers (its slots would not match)."""
    saved = (int(state["num_processes"]), int(state["num_workers"]))
    if saved != (num_processes, num_workers):
        raise ValueError(
            f"the checkpoint's stream was read by {saved[0]} process(es) x {saved[1]} dataloader worker(s), this run "
            f"has {num_processes} x {num_workers}: resume with the same --dataloader_num_workers and process count"
        )


def collate_examples(stream: StreamedDataset, collate: Callable) -> Callable:
    """A ``make_batch`` for :class:`StreamBatches`: the stream's transform on each example, then ``collate``."""
    return _CollateTransformed(stream, collate)


@dataclass
class _CollateTransformed:
    stream: StreamedDataset
    collate: Callable

    def __call__(self, examples: list[StreamedExample], device_batch: int) -> dict:
        return self.collate(self.stream.transformed_batch(examples))


def _as_is(batch):
    return batch


def stream_loader(batches: StreamBatches, *, num_workers: int = 0, pin_memory: bool = False,
                  persistent_workers: bool = False, prefetch_factor: int | None = None,
                  multiprocessing_context=None) -> torch.utils.data.DataLoader:
    """The ``DataLoader`` of :class:`StreamBatches` (batches are made in the workers: ``batch_size=None``)."""
    return torch.utils.data.DataLoader(
        batches, batch_size=None, collate_fn=_as_is, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )


class TrackedStreamLoader:
    """A loader of :class:`StreamBatches` batches that takes :data:`POSITION_KEY` out of each batch and keeps the
    latest position of each slot (:meth:`state_dict`, saved in checkpoints). It has no length (a stream has no end);
    other attributes are the wrapped loader's."""

    def __init__(self, loader, *, process_index: int, num_processes: int, num_workers: int, resume: dict | None = None):
        self.loader = loader
        self.process_index, self.num_processes = int(process_index), int(num_processes)
        self.num_workers = max(1, int(num_workers))
        self.batches = int(resume["batches"]) if resume else 0
        self.slots: dict[str, dict[str, int]] = dict(resume["slots"]) if resume else {}

    def __iter__(self):
        for batch in self.loader:
            position = batch.pop(POSITION_KEY).tolist()
            self.slots[str(position[0])] = dataclasses.asdict(SlotPosition(*position[1:]))
            self.batches += 1
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: each slot counts its own epochs (see the module docstring)."""

    def state_dict(self) -> dict:
        return {"process_index": self.process_index, "num_processes": self.num_processes,
                "num_workers": self.num_workers, "batches": self.batches, "slots": dict(self.slots)}

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)
