"""Worker launched by the 2-process audio tests with torchrun (gloo, CPU). Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker_audio.py MODE OUT_FILE

MODE ``cpc``: one forward/backward of CPC, for each negative sampling mode, on this rank's shard of a fixed global
batch of utterances of different lengths; ``wav2vec2``: the same for wav2vec 2.0 with per-utterance masks and
negatives. Each shard is padded to its own longest utterance, as a per-process collator pads it.
"""

import os
import sys

import torch
import torch.distributed as dist
from test_cpc import padded_batch, tiny_cpc
from test_wav2vec2 import tiny_wav2vec2

from hf_ssl.losses.cpc import NEGATIVE_SAMPLING_MODES

# Shards of 2 processes: [1200, 560] and [1000, 880] samples. Different frame counts, so different padding and
# different numbers of predictions / masked frames per process (the normalisation must use the global count).
GLOBAL_LENGTHS = [1200, 560, 1000, 880]
UTTERANCE_SEED = 1  # utterance i draws its wav2vec 2.0 masks and negatives from seed UTTERANCE_SEED + i


def shard(world: int, rank: int) -> tuple[slice, torch.Tensor, torch.Tensor]:
    """This rank's rows of the fixed global batch, trimmed to its own longest utterance."""
    values, mask = padded_batch(GLOBAL_LENGTHS, seed=5)
    size = len(GLOBAL_LENGTHS) // world
    rows = slice(rank * size, (rank + 1) * size)
    samples = max(GLOBAL_LENGTHS[rows])
    return rows, values[rows, :samples], mask[rows, :samples]


def backward_result(model, output, world: int) -> dict:
    """The loss averaged over processes and the (DDP-averaged) gradients."""
    output.loss.backward()
    loss = output.loss.detach().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss, "grads": grads}


def cpc_step(world: int, rank: int) -> dict:
    """Per negative sampling mode: CPC in training mode (it has no dropout) on this rank's shard, DDP when world > 1."""
    _, values, mask = shard(world, rank)
    result = {}
    for mode in NEGATIVE_SAMPLING_MODES:
        torch.manual_seed(0)
        model = tiny_cpc(negative_sampling=mode).train()
        # The processes' RNGs differ from here (as after dropout on shards of different sizes): the negatives must
        # follow rank 0's, which is one process's.
        torch.manual_seed(100 + rank)
        wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        output = wrapped(values, attention_mask=mask)
        result[mode] = backward_result(model, output, world)
        result[mode]["accuracy"] = output.prediction_accuracy.clone()
    return result


def wav2vec2_step(world: int, rank: int) -> dict:
    """wav2vec 2.0 on this rank's shard, its masks and negatives drawn per utterance from the utterance's own seed
    (as the audio collator's view seeds give them), so each utterance gets the same whichever process holds it.

    Evaluation mode: dropout and the Gumbel noise draw per batch, not per example, so training mode cannot give one
    process's numbers; evaluation mode (arg-max codes) isolates the masking, the normalisation and DDP's averaging.
    The diversity loss is off: it is computed from each process's own codebook use (as fairseq's), not the global one.
    """
    torch.manual_seed(0)
    model = tiny_wav2vec2(diversity_loss_weight=0.0).eval()
    rows, values, mask = shard(world, rank)
    seeds = [UTTERANCE_SEED + index for index in range(len(GLOBAL_LENGTHS))][rows]
    inputs = model.sample_pretraining_inputs(mask, *values.shape, seed=seeds)
    wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    output = wrapped(
        values,
        attention_mask=mask,
        mask_time_indices=inputs["mask_time_indices"],
        sampled_negative_indices=inputs["sampled_negative_indices"],
    )
    result = backward_result(model, output, world)
    result["masked_frames"] = output.num_masked_frames.clone()
    return result


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = {"cpc": cpc_step, "wav2vec2": wav2vec2_step}[mode](world, rank)
    if world > 1:
        masked = [None] * world
        dist.all_gather_object(masked, result.get("masked_frames"))
        result["masked_frames_per_rank"] = masked
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
