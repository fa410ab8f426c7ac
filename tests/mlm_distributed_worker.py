"""Worker of the 2-process masked-LM check (launched by tests/test_masked_lm.py with torchrun; not a test module).

usage: [torchrun --nproc_per_node N] mlm_distributed_worker.py OUT_FILE OUTPUT_DIR

One SGD step of SSLTrainer on a fixed global batch of 32 masked sequences (32 / N per process); rank 0 saves the
parameters after the step. :func:`sgd_step` is also what the in-process accumulation test runs. The masks differ in
count per sequence, so a per-process mean would not equal the global
mean: only normalising by the global masked-token count (and scaling for DDP's averaging) gives equal updates.
"""

import os
import sys

import torch
import torch.distributed as dist
from transformers import BertConfig

from hf_ssl import MaskedLMForPreTraining
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.trainer import SSLTrainer

GLOBAL_BATCH = 32


def rows() -> list[dict]:
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(5, 60, (GLOBAL_BATCH, 16), generator=generator)
    chosen = torch.rand(GLOBAL_BATCH, 16, generator=generator) < torch.linspace(0.05, 0.6, GLOBAL_BATCH)[:, None]
    chosen[:, 1] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return [{"input_ids": input_ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": labels[i]}
            for i in range(GLOBAL_BATCH)]


def collate(examples):
    return {key: torch.stack([example[key] for example in examples]) for key in examples[0]}


def sgd_step(output_dir: str, per_device_batch: int, accumulation_steps: int = 1) -> SSLTrainer:
    """One SGD step (lr 0.5, no clipping, no weight decay) of a tiny BERT on :func:`rows`; returns the trainer."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MaskedLMForPreTraining.from_encoder_config(config)
    args = SSLTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation_steps, max_steps=1, learning_rate=0.5,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=3,
    )
    trainer = SSLTrainer(model=model, args=args, train_dataset=rows(), data_collator=collate)
    trainer.train()
    return trainer


def main():
    out_file, output_dir = sys.argv[1], sys.argv[2]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = sgd_step(output_dir, GLOBAL_BATCH // world)
    if trainer.is_world_process_zero():
        torch.save({"world_size": trainer.args.world_size,
                    "state": {k: v.clone() for k, v in trainer.model.state_dict().items()}}, out_file)
    # Tear the gloo group down before exit, as tests/distributed_worker.py does: a rank that exits while its peer still
    # holds the group can abort in C++ teardown ("terminate called without an active exception", seen once in CI).
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
