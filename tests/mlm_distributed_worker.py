"""Worker of the 2-process masked-LM, SOP and NSP checks (launched by tests/test_masked_lm.py and
tests/test_sentence_order.py with torchrun; not a test module).

usage: [torchrun --nproc_per_node N] mlm_distributed_worker.py OUT_FILE OUTPUT_DIR [PAIR_TASK ...]

One SGD step of SSLTrainer on a fixed global batch of 32 masked sequences (32 / N per process); rank 0 saves the
parameters after the step. Without PAIR_TASK the model is masked-LM (BERT); each PAIR_TASK (``sop``: ALBERT,
``nsp``: BERT) runs its own step with the pair head, on the same sequences plus segment ids and pair labels, into
``state_<task>``. :func:`sgd_step` is also what the in-process accumulation test runs. The masks differ in count per
sequence, so a per-process mean would not equal the global mean: only normalising by the global masked-token count
and the global pair count (and scaling for DDP's averaging) gives equal updates.
"""

import os
import sys

import torch
import torch.distributed as dist
from transformers import AlbertConfig, BertConfig

from hf_ssl import MaskedLMForPreTraining, SentenceOrderForPreTraining
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.trainer import SSLTrainer

GLOBAL_BATCH = 32


def rows(pair_task: str | None = None) -> list[dict]:
    """The global batch. With a pair task: a second segment from a per-sequence position on, and pair labels that
    differ between the halves (a quarter of rank 0's examples are positives, three quarters of rank 1's)."""
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(5, 60, (GLOBAL_BATCH, 16), generator=generator)
    chosen = torch.rand(GLOBAL_BATCH, 16, generator=generator) < torch.linspace(0.05, 0.6, GLOBAL_BATCH)[:, None]
    chosen[:, 1] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    examples = [{"input_ids": input_ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": labels[i]}
                for i in range(GLOBAL_BATCH)]
    if pair_task is not None:
        second_segment_starts = torch.randint(4, 13, (GLOBAL_BATCH,), generator=generator)
        for i, example in enumerate(examples):
            example["token_type_ids"] = (torch.arange(16) >= second_segment_starts[i]).long()
            example["pair_label"] = torch.tensor(int(i % 4 == 0) if i < GLOBAL_BATCH // 2 else int(i % 4 != 0))
    return examples


def collate(examples):
    return {key: torch.stack([example[key] for example in examples]) for key in examples[0]}


def tiny_model(pair_task: str | None):
    """Masked-LM on a tiny BERT; SOP on a tiny ALBERT, NSP on the BERT (the encoders the recipes pair them with)."""
    dropout_off = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    bert = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      max_position_embeddings=32, **dropout_off)
    if pair_task is None:
        return MaskedLMForPreTraining.from_encoder_config(bert)
    if pair_task == "sop":
        albert = AlbertConfig(vocab_size=60, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                              classifier_dropout_prob=0.0, **dropout_off)
        return SentenceOrderForPreTraining.from_encoder_config(albert, pair_task="sop")
    return SentenceOrderForPreTraining.from_encoder_config(bert, pair_task=pair_task)


def sgd_step(output_dir: str, per_device_batch: int, accumulation_steps: int = 1,
             pair_task: str | None = None) -> SSLTrainer:
    """One SGD step (lr 0.5, no clipping, no weight decay) of :func:`tiny_model` on :func:`rows`; returns the
    trainer."""
    torch.manual_seed(0)
    model = tiny_model(pair_task)
    args = SSLTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation_steps, max_steps=1, learning_rate=0.5,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=3,
    )
    trainer = SSLTrainer(model=model, args=args, train_dataset=rows(pair_task), data_collator=collate)
    trainer.train()
    return trainer


def main():
    out_file, output_dir, pair_tasks = sys.argv[1], sys.argv[2], sys.argv[3:]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    saved = {}
    for pair_task in pair_tasks or [None]:
        trainer = sgd_step(f"{output_dir}-{pair_task or 'mlm'}", GLOBAL_BATCH // world, pair_task=pair_task)
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        saved.update({"world_size": trainer.args.world_size, f"state_{pair_task}" if pair_task else "state": state})
    if trainer.is_world_process_zero():
        torch.save(saved, out_file)
    # Tear the gloo group down before exit, as tests/distributed_worker.py does: a rank that exits while its peer still
    # holds the group can abort in C++ teardown ("terminate called without an active exception", seen once in CI).
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
