"""Worker launched by test_moco.py with torchrun (gloo, CPU). Not a test module itself.

usage: torchrun --nproc_per_node N moco_distributed_worker.py {moco_v2,moco_v3} OUT_FILE
"""

import os
import sys

import torch
import torch.distributed as dist
from conftest import tiny_vit_config

from hf_ssl.methods.moco_v2 import MoCoV2ForPreTraining, shuffled_forward
from hf_ssl.methods.moco_v3 import MoCoV3ForPreTraining

GLOBAL_BATCH = 8


def model_step(method: str, world: int, rank: int):
    """One forward/backward on this rank's shard of a fixed global batch (DDP when world > 1)."""
    torch.manual_seed(0)
    if method == "moco_v2":
        model = MoCoV2ForPreTraining.from_encoder_config(
            tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, queue_size=48
        )
        # No BatchNorm anywhere (ViT + MoCo v2's MLP head): training mode, so the forward enqueues.
        model.train()
    else:
        model = MoCoV3ForPreTraining.from_encoder_config(
            tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32
        )
        # Per-process BatchNorm statistics in training mode; evaluation mode isolates the loss's gathered keys.
        model.eval()
    crops = torch.randn(GLOBAL_BATCH, 2, 3, 16, 16, generator=torch.Generator().manual_seed(123))
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    output = wrapped(global_crops=crops[shard])
    output.loss.backward()
    loss = output.loss.detach().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    result = {"loss": loss, "grads": grads}
    if method == "moco_v2":
        result["queue"] = model.loss_fn.queue.clone()
        result["queue_ptr"] = model.loss_fn.queue_ptr.clone()
        # Both ranks' keys, to check the rank order of the gathered queue entries.
        keys = output.keys.detach()
        gathered = [torch.empty_like(keys) for _ in range(world)] if world > 1 else [keys]
        if world > 1:
            dist.all_gather(gathered, keys)
        result["keys_per_rank"] = gathered
    return result


def shuffle_check(world: int, rank: int):
    """Shuffled BN's gather-permute-scatter: row-wise functions are unchanged; rows are computed on other ranks."""
    torch.manual_seed(0)
    inputs = torch.arange(8.0).reshape(4, 2) + 100 * rank
    doubled = shuffled_forward(lambda x: 2 * x, inputs)
    computed_on = shuffled_forward(lambda x: torch.full((x.shape[0], 1), float(rank)), inputs)[:, 0]
    results = [torch.cat([inputs.flatten(), doubled.flatten(), computed_on])]
    if world > 1:
        results = [torch.empty_like(results[0]) for _ in range(world)]
        dist.all_gather(results, torch.cat([inputs.flatten(), doubled.flatten(), computed_on]))
    return {"per_rank": results}


def main():
    method, out_file = sys.argv[1], sys.argv[2]
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = model_step(method, world, rank)
    if method == "moco_v2":
        result["shuffle"] = shuffle_check(world, rank)
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
