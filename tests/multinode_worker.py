"""Worker of the two-machine checks (tests/test_multinode.py); not a test module itself.

usage: [accelerate launch --multi_gpu --num_machines 2 --machine_rank R ...] multinode_worker.py OUT_FILE METHOD...

For every METHOD (``dino``, ``simclr``, ``mae``, ``mlm``, ``sbert``, ``clip``): one forward/backward of a tiny model on this
process's shard of a fixed global batch of 8, the model wrapped by ``Accelerator().prepare`` (DistributedDataParallel
over gloo when launched on several processes), as the Trainer does it. Rank 0 saves, per method, the loss averaged
over the processes and the parameter gradients after DDP's averaging, with the world size and each process's
machine rank and process id, so the test can check that the two launches really formed one group of two.
"""

import os
import sys

import torch
from accelerate import Accelerator
from conftest import tiny_dino, tiny_vit_config
from test_clip import clip_batch, tiny_clip
from test_mae import tiny_mae
from test_sentence_bert import pair_batch, tiny_bert_config, tiny_sbert

from hf_ssl import MaskedLMForPreTraining, SimCLRForPreTraining

GLOBAL_BATCH = 8


def crops(local: bool) -> dict[str, torch.Tensor]:
    """Two 16 px global crops per image (and three 8 px local crops for DINO): ``(8, views, 3, H, W)``."""
    generator = torch.Generator().manual_seed(123)
    batch = {"global_crops": torch.randn(GLOBAL_BATCH, 2, 3, 16, 16, generator=generator)}
    if local:
        batch["local_crops"] = torch.randn(GLOBAL_BATCH, 3, 3, 8, 8, generator=generator)
    return batch


def masked_images() -> dict[str, torch.Tensor]:
    """16 px images, each with its own mask seed: an image's mask is the same whichever process holds it."""
    generator = torch.Generator().manual_seed(7)
    return {"pixel_values": torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=generator),
            "mask_seed": torch.arange(100, 100 + GLOBAL_BATCH)}


def masked_sequences() -> dict[str, torch.Tensor]:
    """16-token sequences whose masked-token count differs from row to row (5 % to 60 %), so a per-process mean
    would differ from the global mean: the global count must be the denominator."""
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(1000, 2000, (GLOBAL_BATCH, 16), generator=generator)
    chosen = torch.rand(GLOBAL_BATCH, 16, generator=generator) < torch.linspace(0.05, 0.6, GLOBAL_BATCH)[:, None]
    chosen[:, 1] = True
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": torch.where(chosen, input_ids, torch.full_like(input_ids, -100))}


#: method -> (tiny model, training mode, fixed global batch). SimCLR's BatchNorm head runs in evaluation mode: its
#: statistics are per process on CPU (SyncBatchNorm needs CUDA), so the check isolates the cross-process loss parts.
METHODS = {
    "dino": (tiny_dino, True, lambda: crops(local=True)),
    "simclr": (lambda: SimCLRForPreTraining.from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, temperature=0.5), False,
        lambda: crops(local=False)),
    "mae": (tiny_mae, True, masked_images),
    "mlm": (lambda: MaskedLMForPreTraining.from_encoder_config(tiny_bert_config()), True, masked_sequences),
    "sbert": (tiny_sbert, True, lambda: pair_batch(GLOBAL_BATCH, seed=5)),
    "clip": (lambda: tiny_clip(initializer_range=0.5), True, lambda: clip_batch(GLOBAL_BATCH, seed=5)),
}


def step(accelerator: Accelerator, method: str) -> dict:
    """One forward/backward on this process's shard; returns the mean loss and the DDP-averaged gradients."""
    build, training, batch = METHODS[method]
    torch.manual_seed(0)
    model = build().train(training)
    wrapped = accelerator.prepare(model)
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    inputs = {name: value[shard] for name, value in batch().items()}
    scale = 1.0
    if method == "mlm":
        # The Trainer's convention for token-level losses: divide by the global masked-token count and undo DDP's
        # averaging over processes, so the gradient is that of the global mean.
        inputs["num_items_in_batch"] = accelerator.reduce((inputs["labels"] != -100).sum(), "sum")
        scale = float(world)
    output = wrapped(**inputs)
    accelerator.backward(output.loss * scale)
    loss = accelerator.reduce(output.loss.detach() * scale, "mean")
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    result = {"loss": loss, "grads": grads}
    if method == "dino":
        result["center"] = model.loss_fn.center.clone()
    return result


def main():
    out_file, methods = sys.argv[1], sys.argv[2:]
    accelerator = Accelerator(cpu=True)
    # Who is in the group: (global rank, machine rank as the launcher set it, process id) of every process.
    me = torch.tensor([accelerator.process_index, int(os.environ.get("GROUP_RANK", "0")), os.getpid()])
    processes = accelerator.gather(me[None]).tolist()
    print(f"world size: {accelerator.num_processes}, processes (rank, machine, pid): {processes}", flush=True)
    results = {method: step(accelerator, method) for method in methods}
    if accelerator.is_main_process:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
        torch.save({"world_size": accelerator.num_processes, "processes": processes, "backend": backend,
                    "results": results}, out_file)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # tears the gloo group down on every process before exit


if __name__ == "__main__":
    main()
