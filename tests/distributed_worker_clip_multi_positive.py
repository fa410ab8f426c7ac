"""Worker of the 2-process multi-positive InfoNCE / CLIP checks (gloo, CPU), launched by tests/test_clip.py through
test_distributed.run_worker. Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker_clip_multi_positive.py all OUT_FILE [OUTPUT_DIR]

A fixed global batch of 8 whose positive ids / captions repeat across the ranks' shards (rank 0 holds rows 0-3, rank 1
rows 4-7): (1) InfoNCE with ``positive_ids`` (symmetric with hard negatives; SupCon-style with query negatives): the
loss averaged over ranks and every embedding row's gradient (averaged over ranks, as DDP does); (2) one DDP
forward/backward of a tiny CLIP-style model with repeated captions (ids from the captions) and (3) with class ids as
``positive_ids``: loss and parameter gradients.
"""

import os
import sys

import torch
import torch.distributed as dist
from distributed_worker import gather_all as gather
from distributed_worker_info_nce import average

from hf_ssl.losses import InfoNCELoss

GLOBAL_BATCH = 8
#: Groups that span both shards: 0 at rows 0, 2, 5; 1 at rows 1, 6; 2 at rows 3, 4, 7.
POSITIVE_IDS = torch.tensor([0, 1, 0, 2, 2, 0, 1, 2])


def fixed_embeddings() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(17)
    return {
        "queries": torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64),
        "keys": torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64),
        "hard_negatives": torch.randn(GLOBAL_BATCH, 2, 6, generator=generator, dtype=torch.float64),
    }


def loss_step(world: int, rank: int) -> dict:
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    leaves = {name: value[shard].clone().requires_grad_() for name, value in fixed_embeddings().items()}
    results = {}
    for name, loss_fn in {
        "symmetric_hard": InfoNCELoss(0.1, symmetric=True),
        "supcon": InfoNCELoss(0.2, symmetric=True, query_negatives=True),
    }.items():
        hard = leaves["hard_negatives"] if "hard" in name else None
        loss, stats = loss_fn.double()(leaves["queries"], leaves["keys"], hard, positive_ids=POSITIVE_IDS[shard])
        grads = torch.autograd.grad(loss, [leaves["queries"], leaves["keys"], leaves["hard_negatives"]],
                                    allow_unused=True)
        grads = [torch.zeros_like(leaves["hard_negatives"]) if g is None else g for g in grads]
        entry = {"loss": average(loss.detach(), world),
                 "retrieval_accuracy": average(stats["retrieval_accuracy"], world)}
        for key, grad in zip(("queries", "keys", "hard_negatives"), grads):
            entry[key] = torch.cat(gather(grad / world, world))  # DDP's average over ranks
        results[name] = entry
    return results


def clip_step(variant: str, world: int, rank: int) -> dict:
    from test_clip import clip_batch, tiny_clip

    torch.manual_seed(0)
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    inputs = clip_batch(GLOBAL_BATCH, seed=3)
    if variant == "repeated_captions":  # row i carries caption POSITIVE_IDS[i]: repeats on both ranks
        for key in ("input_ids", "attention_mask"):
            inputs[key] = inputs[key][POSITIVE_IDS]
    else:  # distinct captions, rows grouped by a class id
        inputs["positive_ids"] = POSITIVE_IDS
    model = tiny_clip().train()
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    output = wrapped(**{name: value[shard] for name, value in inputs.items()})
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {"loss": average(output.loss.detach(), world), "grads": grads}


def main():
    out_file = sys.argv[2]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = {"loss": loss_step(world, rank), "repeated_captions": clip_step("repeated_captions", world, rank),
              "class_ids": clip_step("class_ids", world, rank)}
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
