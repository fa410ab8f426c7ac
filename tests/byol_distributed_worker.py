"""Worker launched by test_byol_simsiam.py with torchrun (gloo, CPU). Not a test module itself.

usage: torchrun --nproc_per_node N byol_distributed_worker.py OUT_FILE
"""

import os
import sys

import torch
import torch.distributed as dist
from conftest import tiny_vit_config

from hf_ssl.methods.byol import BYOLForPreTraining

GLOBAL_BATCH = 8


def model_step(world: int, rank: int):
    """One forward/backward of BYOL on this rank's shard of a fixed global batch (DDP when world > 1)."""
    torch.manual_seed(0)
    model = BYOLForPreTraining.from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32
    )
    # BatchNorm statistics are per process on CPU (no SyncBatchNorm kernel); evaluation mode makes the heads the same
    # function on every shard, so the check isolates the loss's per-example mean and DDP's gradient averaging.
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
    return {"loss": loss, "grads": grads}


def main():
    out_file = sys.argv[1]
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = model_step(world, rank)
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
