"""Worker of the 2-process InfoNCE / CLIP / sampler checks (gloo, CPU), launched by tests/test_info_nce.py through
test_distributed.run_worker. Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker_info_nce.py MODE OUT_FILE [OUTPUT_DIR]

MODE ``all``: (1) InfoNCE (symmetric, hard negatives, query negatives) on this rank's shard of fixed embeddings: the
loss averaged over ranks and the gradient of every embedding row (averaged over ranks, as DDP does); (2) one DDP
forward/backward of a tiny CLIP-style model and (3) of a tiny Sentence-BERT (symmetric MNRL with hard negatives) on
this rank's shard: loss and parameter gradients. ``sampler``: two SSLTrainer steps of Sentence-BERT on pairs with
repeated texts, recording the rows every rank received.
"""

import os
import sys

import torch
import torch.distributed as dist
from distributed_worker import gather_all as gather

from hf_ssl.losses import InfoNCELoss

GLOBAL_BATCH = 8


def fixed_embeddings() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
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
        "one_way_hard_learnable": InfoNCELoss(0.1, learnable_temperature=True),
        "query_negatives": InfoNCELoss(0.2, symmetric=True, query_negatives=True),
    }.items():
        loss_fn = loss_fn.double()
        hard = leaves["hard_negatives"] if "hard" in name else None
        loss, _ = loss_fn(leaves["queries"], leaves["keys"], hard)
        grads = torch.autograd.grad(loss, [leaves["queries"], leaves["keys"], leaves["hard_negatives"]],
                                    allow_unused=True)
        grads = [torch.zeros_like(leaves["hard_negatives"]) if g is None else g for g in grads]
        entry = {"loss": average(loss.detach(), world)}
        for key, grad in zip(("queries", "keys", "hard_negatives"), grads):
            entry[key] = torch.cat(gather(grad / world, world))  # DDP's average over ranks
        results[name] = entry
    return results


def model_step(kind: str, world: int, rank: int) -> dict:
    from test_clip import tiny_clip, tiny_text_batch
    from test_sentence_bert import tiny_sbert

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(11)
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    if kind == "clip":
        model = tiny_clip()
        inputs = {"pixel_values": torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=generator),
                  **tiny_text_batch(GLOBAL_BATCH, generator)}
    else:
        model = tiny_sbert(objective="multiple_negatives", symmetric=True)
        inputs = {f"{column}_{key}": value for column in ("anchor", "positive", "negative")
                  for key, value in tiny_text_batch(GLOBAL_BATCH, generator).items()}
    model.train()
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    output = wrapped(**{name: value[shard] for name, value in inputs.items()})
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {"loss": average(output.loss.detach(), world), "grads": grads}


def sampler_run(output_dir: str, world: int) -> dict:
    """Two SSLTrainer steps of Sentence-BERT through the job's sampler: which rows each rank saw."""
    from datasets import Dataset
    from test_sentence_bert import TinyTokenizer, tiny_sbert

    from hf_ssl.data.collators import SentenceTupleCollator
    from hf_ssl.data.pairs import text_keys
    from hf_ssl.data.samplers import NoDuplicatesSampler
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer

    anchors = [f"premise {i // 3}" for i in range(48)]  # every premise three times
    pairs = Dataset.from_dict({"anchor": anchors, "positive": [f"hypothesis {i}" for i in range(48)],
                               "row": list(range(48))})
    seen = []

    class Recording(SentenceTupleCollator):
        def __call__(self, examples):
            seen.append([example["row"] for example in examples])
            return super().__call__(examples)

    per_device = GLOBAL_BATCH // world
    args = SSLTrainingArguments(output_dir=output_dir, per_device_train_batch_size=per_device, max_steps=2,
                                learning_rate=1e-3, use_cpu=True, report_to="none", save_strategy="no", seed=5,
                                disable_tqdm=True)
    torch.manual_seed(0)
    trainer = SSLTrainer(model=tiny_sbert(objective="multiple_negatives"), args=args, train_dataset=pairs,
                         data_collator=Recording(TinyTokenizer()),
                         train_sampler=NoDuplicatesSampler(text_keys(pairs), GLOBAL_BATCH, seed=5))
    trainer.train()
    rows = torch.tensor(seen)  # (steps, per_device)
    return {"rows_per_rank": gather(rows, world), "anchors": anchors,
            "state": {k: v.clone() for k, v in trainer.model.state_dict().items()}}


def average(value: torch.Tensor, world: int) -> torch.Tensor:
    value = value.clone()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if mode != "sampler" and launched > 1:
        dist.init_process_group("gloo")
    if mode == "sampler":
        result = sampler_run(sys.argv[3], launched)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if mode == "all":  # one launch for every check: starting python + torch + hf_ssl dominates the cost
        result = {"loss": loss_step(world, rank), "clip": model_step("clip", world, rank),
                  "sbert": model_step("sbert", world, rank)}
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
