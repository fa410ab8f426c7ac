"""Does masked-LM pretraining help downstream? Fine-tune on SNLI from our pretrained encoder and from random init.

    python benchmarks/mlm_downstream_snli.py --stage pretrain   # a few minutes of MLM on WikiText-2
    python benchmarks/mlm_downstream_snli.py --stage finetune   # both fine-tunings, writes the result

1. Pretraining: ``recipes/configs/mlm-bert-mini-wikitext.yaml`` through ``hf_ssl.pretraining.run`` (BERT-mini, a
   WordPiece tokenizer trained on the WikiText-2 training articles), stopped at ``--pretrain_minutes`` of wall time
   or ``--pretrain_steps``, whichever comes first.
2. Fine-tuning, twice with the same code, data, tokenizer and seed: a plain ``transformers.Trainer`` with
   ``AutoModelForSequenceClassification.from_pretrained(<pretraining output>)`` (vanilla loading, no hf_ssl), and the
   same architecture at random init (``from_config``). SNLI (Bowman et al. 2015) from ``../shared/data/snli_devtest``:
   the validation split (9,842 pairs) trains, a fixed subsample of the test split evaluates (3-way accuracy).

Writes benchmarks/results/mlm_downstream_snli.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SNLI = ROOT.parent / "shared" / "data" / "snli_devtest"
RESULT = ROOT / "benchmarks" / "results" / "mlm_downstream_snli.json"
PRETRAINED = ROOT / "outputs" / "benchmark-mlm-bert-mini-wikitext"


def pretrain(args) -> None:
    from transformers import TrainerCallback

    from hf_ssl.pretraining import run

    class WallClockBudget(TrainerCallback):
        """Stops training ``--pretrain_minutes`` after its first step (data preparation not counted)."""

        deadline = float("inf")

        def on_train_begin(self, training_args, state, control, **kwargs):
            self.deadline = time.time() + 60 * args.pretrain_minutes

        def on_step_end(self, training_args, state, control, **kwargs):
            if time.time() > self.deadline:
                control.should_training_stop = True

    probes = run([
        str(ROOT / "recipes" / "configs" / "mlm-bert-mini-wikitext.yaml"), "--output_dir", args.pretrained_dir,
        "--max_steps", str(args.pretrain_steps), "--warmup_steps", "30", "--max_seq_length", str(args.seq_length),
        "--per_device_train_batch_size", str(args.pretrain_batch_size), "--eval_strategy", "no", "--save_strategy", "no",
        "--logging_steps", "20", "--learning_rate", "1e-3", "--encoder", args.encoder,
        *(["--init_from", args.init_from] if args.init_from else []),
    ], callbacks=[WallClockBudget()])
    print(json.dumps(probes, indent=2))


def read_snli(split: str) -> dict[str, list]:
    with open(SNLI / f"snli_{split}.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {"premise": [r["premise"] for r in rows], "hypothesis": [r["hypothesis"] for r in rows],
            "label": [int(r["label"]) for r in rows]}


def finetune(args) -> dict:
    import datasets
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    pretrained = args.pretrained_dir
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    train = datasets.Dataset.from_dict(read_snli("validation"))
    test = datasets.Dataset.from_dict(read_snli("test")).shuffle(seed=0).select(range(args.test_examples))
    if args.train_examples:
        train = train.shuffle(seed=0).select(range(args.train_examples))

    def encode(batch):
        return tokenizer(batch["premise"], batch["hypothesis"], truncation=True, max_length=args.seq_length)

    train = train.map(encode, batched=True, remove_columns=["premise", "hypothesis"]).rename_column("label", "labels")
    test = test.map(encode, batched=True, remove_columns=["premise", "hypothesis"]).rename_column("label", "labels")

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    results = {}
    for start in ("pretrained", "random_init"):
        set_seed(0)
        if start == "pretrained":
            model = AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=3)
        else:
            model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(pretrained, num_labels=3))
        training_args = TrainingArguments(
            output_dir=f"/tmp/snli_{start}", per_device_train_batch_size=32, per_device_eval_batch_size=128,
            num_train_epochs=args.epochs, learning_rate=args.learning_rate, warmup_steps=0.1, weight_decay=0.01,
            lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_steps=50, report_to="none",
            seed=0, use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=DataCollatorWithPadding(
            tokenizer), compute_metrics=accuracy)
        started = time.time()
        trainer.train()
        metrics = trainer.evaluate(test)
        results[start] = {"test_accuracy": metrics["eval_accuracy"], "fine_tune_seconds": round(time.time() - started)}
        print(start, results[start], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["pretrain", "finetune", "all"], default="all")
    parser.add_argument("--pretrain_minutes", type=float, default=6.0)
    parser.add_argument("--pretrain_steps", type=int, default=600)
    parser.add_argument("--pretrain_batch_size", type=int, default=32)
    parser.add_argument("--encoder", default="bert-mini", help="text encoder preset (bert-tiny on a busy CPU)")
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--train_examples", type=int, default=None, help="subsample SNLI validation (default: all)")
    parser.add_argument("--test_examples", type=int, default=3000)
    parser.add_argument("--pretrained_dir", default=str(PRETRAINED), help="pretraining output (stage 1) / input (2)")
    parser.add_argument("--init_from", default=None, help="continue pretraining from this hf_ssl output folder")
    parser.add_argument("--result", default=str(RESULT))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids oversubscription on a CPU shared with other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage in ("pretrain", "all"):
        pretrain(args)
    if args.stage in ("finetune", "all"):
        results = finetune(args)
        pretraining = json.loads((Path(args.pretrained_dir) / "eval_results.json").read_text())
        run_record = json.loads((Path(args.pretrained_dir) / "hf_ssl_run.json").read_text())
        summary = {
            "command": "python " + " ".join(sys.argv),
            "pretraining": {
                "recipe": "recipes/configs/mlm-bert-mini-wikitext.yaml",
                "encoder": run_record["encoder"]["encoder"],
                "steps": pretraining["pretraining_steps"],
                "wall_time_seconds": run_record["wall_time_seconds"],
                "hardware": run_record["hardware"],
                "held_out_masked_lm": pretraining["probes"],
            },
            "finetuning": {
                "protocol": f"plain Trainer + AutoModelForSequenceClassification, SNLI validation (train, "
                            f"{args.train_examples or 9842} pairs) -> test subsample ({args.test_examples} pairs), "
                            f"{args.epochs} epochs, lr {args.learning_rate}, batch 32, max length {args.seq_length}",
                **results,
            },
            "pretraining_helps": results["pretrained"]["test_accuracy"] > results["random_init"]["test_accuracy"],
        }
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
