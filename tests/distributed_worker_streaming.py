"""Worker of the 2-process streaming check (gloo, CPU), launched by tests/test_streaming.py through
test_distributed.run_worker. Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker_streaming.py split OUT_FILE OUTPUT_DIR

``split``: SSLTrainer's streamed loader (batch 1, 2 dataloader workers) on the 8-shard number stream of
test_streaming; each rank reads until both of its workers have started their second epoch, and rank 0 saves every
example read in a first epoch, over all ranks.
"""

import sys

import torch
import torch.distributed as dist
from conftest import tiny_vit_config
from test_streaming import number_stream

from hf_ssl import SimCLRForPreTraining
from hf_ssl.data.streaming import StreamedDataset
from hf_ssl.training import SSLTrainer, SSLTrainingArguments


def number_and_epoch(row, position, epoch, seed):
    return {"x": row["x"], "epoch": epoch}


def as_tensors(examples):
    return {name: torch.tensor([example[name] for example in examples]) for name in examples[0]}


def split_run(output_dir: str) -> tuple[dict, int, int]:
    args = SSLTrainingArguments(output_dir=output_dir, per_device_train_batch_size=1, max_steps=100, use_cpu=True,
                                report_to="none", dataloader_num_workers=2, disable_tqdm=True, seed=3)
    stream = StreamedDataset(number_stream(), example_transform=number_and_epoch, shuffle_buffer_size=2)
    model = SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), projection_hidden_dim=8, projection_dim=4)
    trainer = SSLTrainer(model=model, args=args, train_dataset=stream, data_collator=as_tensors)
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    first_epoch, done = [], set()
    for index, batch in enumerate(trainer.get_train_dataloader()):
        slot = rank * 2 + index % 2  # the loader takes its two workers' batches in turn
        if int(batch["epoch"]) > 0:
            done.add(slot)
            if len(done) == 2:
                break
        elif slot not in done:
            first_epoch.append(int(batch["x"]))
    gathered = [None] * world
    if world > 1:
        dist.all_gather_object(gathered, (first_epoch, sorted(done)))
    else:
        gathered = [(first_epoch, sorted(done))]
    result = {"first_epoch": [x for xs, _ in gathered for x in xs], "slots": sorted(s for _, ss in gathered for s in ss)}
    return result, world, rank


def main():
    mode, out_file, output_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    assert mode == "split", mode
    result, world, rank = split_run(output_dir)
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main()
