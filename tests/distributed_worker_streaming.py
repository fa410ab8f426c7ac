"""Worker of the 2-process streaming check (gloo, CPU), launched by tests/test_streaming.py through
test_distributed.run_worker. Not a test module itself. It loads hf_ssl/data/streaming.py alone (it imports only
datasets, numpy and torch): importing the hf_ssl package would pull in transformers, and starting the processes is
most of the test's cost.

usage: torchrun --nproc_per_node N distributed_worker_streaming.py split OUT_FILE [OUTPUT_DIR]

``split``: the streamed loader SSLTrainer builds (StreamBatches of batch 1 in 2 dataloader workers, positions taken
out by TrackedStreamLoader) on an 8-shard stream of unequal shards; each rank reads until both of its workers have
started their second epoch, and rank 0 saves every example read in a first epoch, over all ranks.
"""

import importlib.util
import os
import sys
from pathlib import Path

import datasets
import torch
import torch.distributed as dist


def _streaming_module():
    if "hf_ssl.data.streaming" in sys.modules:  # imported by the test module (which imports this one)
        return sys.modules["hf_ssl.data.streaming"]
    path = Path(__file__).resolve().parents[1] / "hf_ssl" / "data" / "streaming.py"
    spec = importlib.util.spec_from_file_location("hf_ssl_data_streaming", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


streaming = _streaming_module()
StreamBatches, StreamedDataset, TrackedStreamLoader = (
    streaming.StreamBatches, streaming.StreamedDataset, streaming.TrackedStreamLoader)
collate_examples, stream_loader = streaming.collate_examples, streaming.stream_loader

#: Examples per shard of the synthetic number stream (unequal on purpose); example ``100 shard + offset``.
SHARD_SIZES = (5, 3, 7, 4, 6, 2, 5, 4)


def numbers(shards):
    for shard in shards:
        for offset in range(SHARD_SIZES[shard]):
            yield {"x": shard * 100 + offset}


def number_stream() -> datasets.IterableDataset:
    return datasets.IterableDataset.from_generator(numbers, gen_kwargs={"shards": list(range(len(SHARD_SIZES)))})


def number_and_epoch(row, position, epoch, seed):
    return {"x": row["x"], "epoch": epoch}


def as_tensors(examples):
    return {name: torch.tensor([example[name] for example in examples]) for name in examples[0]}


def split_run(world: int, rank: int) -> dict:
    stream = StreamedDataset(number_stream(), example_transform=number_and_epoch, shuffle_buffer_size=2, seed=3)
    batches = StreamBatches(stream, 1, collate_examples(stream, as_tensors), process_index=rank, num_processes=world)
    loader = TrackedStreamLoader(stream_loader(batches, num_workers=2), process_index=rank, num_processes=world,
                                 num_workers=2)
    first_epoch, done = [], set()
    for index, batch in enumerate(loader):
        slot = rank * 2 + index % 2  # the loader takes its two workers' batches in turn
        if int(batch["epoch"]) > 0:
            done.add(slot)
            if len(done) == 2:
                break
        elif slot not in done:
            first_epoch.append(int(batch["x"]))
    assert set(loader.state_dict()["slots"]) == {"0", "1"}
    gathered = [(first_epoch, sorted(done))]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (first_epoch, sorted(done)))
    return {"first_epoch": [x for xs, _ in gathered for x in xs], "slots": sorted(s for _, ss in gathered for s in ss)}


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    assert mode == "split", mode
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = split_run(world, rank)
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
