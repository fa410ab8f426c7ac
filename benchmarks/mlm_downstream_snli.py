"""Does masked-LM pretraining help downstream? Fine-tune on SNLI from our pretrained encoder and from random init.

    python benchmarks/mlm_downstream_snli.py --stage pretrain   # MLM with --recipe (default: task-adaptive, below)
    python benchmarks/mlm_downstream_snli.py --stage finetune   # both starts x --seeds, writes --result

1. Pretraining: ``--recipe`` through ``hf_ssl.jobs.runner.run``, stopped at ``--pretrain_minutes`` of training time
   (``--max_train_minutes``) or ``--pretrain_steps``, whichever comes first. The default, ``recipes/configs/mlm-bert-tiny-snli.yaml``, is
   task-adaptive pretraining (Gururangan et al. 2020, arXiv:2004.10964): BERT-tiny on WikiText-2 plus the *unlabelled*
   premises and hypotheses of SNLI's validation split (one document per premise with its hypotheses), with a
   WordPiece tokenizer trained on both. The SNLI test split is never pretrained on: the script refuses a recipe that
   names it and records, in the result, how many test sentences also occur verbatim in the pretraining corpus.
   ``--recipe recipes/configs/mlm-bert-mini-wikitext.yaml --encoder bert-tiny`` is the WikiText-2-only run of the
   older results (``mlm_downstream_snli*.json``; those ran with 30 warm-up steps: ``--pretrain_warmup_steps 30``).
2. Fine-tuning, with the same code, data, tokenizer and hyper-parameters for both starts and for every seed of
   ``--seeds``: a plain ``transformers.Trainer`` with ``AutoModelForSequenceClassification.from_pretrained(<pretraining
   output>)`` (vanilla loading, no hf_ssl), and the same architecture at random init (``from_config``). SNLI (Bowman
   et al. 2015; ``stanfordnlp/snli``, its local copy through ``HF_SSL_DATA_DIR``): the validation split (9,842 pairs
   with a gold label) trains, the test split
   (9,824 pairs; ``--test_examples`` for a fixed subsample) evaluates, 3-way accuracy. The seed sets the classifier's
   (and the random start's) initialisation, the batch order and dropout. Reported: each seed, mean and standard
   deviation over seeds, and the binomial standard error of one accuracy on the test pairs.

Writes ``--result`` (default benchmarks/results/mlm_downstream_snli_tapt.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SNLI = "stanfordnlp/snli"
RESULT = ROOT / "benchmarks" / "results" / "mlm_downstream_snli_tapt.json"
RECIPE = ROOT / "recipes" / "configs" / "mlm-bert-tiny-snli.yaml"


def recipe_sources(recipe: str | Path):
    """The pretraining corpora a recipe names (``hf_ssl.data.text.TextSource``: name, split, config, columns), after
    refusing a recipe that would read SNLI's test split: an SNLI source (Hub id, local copy or a file of it) whose
    split, for the training split and for the recipe's eval split, is ``test`` or unnamed (all splits)."""
    import yaml

    from hf_ssl.data.text import text_sources

    settings = yaml.safe_load(Path(recipe).read_text())
    splits = [settings.get("train_split", "train")] + ([settings["eval_split"]] if settings.get("eval_split") else [])
    read = [text_sources(settings.get("dataset", "Salesforce/wikitext"), split,
                         text_column=settings.get("text_column", "text"), dataset_config=settings.get("dataset_config"))
            for split in splits]
    leaks = [source.name for sources in read for source in sources
             if source.hub_id == SNLI and (source.read_split is None or "test" in source.read_split)]
    sources = read[0]
    if leaks:
        raise SystemExit(
            f"{recipe} pretrains on {leaks}: SNLI's test split evaluates here and must not be pretrained on"
        )
    return sources


def pretrain(args) -> None:
    from hf_ssl.jobs.runner import run

    recipe_sources(args.recipe)
    overrides = {"--max_steps": args.pretrain_steps, "--warmup_steps": args.pretrain_warmup_steps,
                 "--max_seq_length": args.seq_length, "--per_device_train_batch_size": args.pretrain_batch_size,
                 "--learning_rate": args.pretrain_learning_rate, "--encoder": args.encoder,
                 "--init_from": args.init_from}
    probes = run([
        str(args.recipe), "--output_dir", args.pretrained_dir, "--eval_strategy", "no", "--save_strategy", "no",
        "--logging_steps", "20", "--max_train_minutes", str(args.pretrain_minutes),
        *(item for flag, value in overrides.items() if value is not None for item in (flag, str(value))),
    ])
    print(json.dumps(probes, indent=2))


def read_snli(split: str) -> dict[str, list]:
    """SNLI ``split``, pairs with a gold label (0 entailment, 1 neutral, 2 contradiction)."""
    from hf_ssl.data.pairs import load_snli

    pairs = load_snli(SNLI, split)
    return {"premise": pairs["anchor"], "hypothesis": pairs["positive"], "label": pairs["label"]}


def test_text_in_corpus(sources: list[str], text_column: str, split: str = "train",
                        dataset_config: str | None = None) -> dict:
    """How many SNLI test sentences also occur verbatim (after stripping) in the pretraining corpus.

    The test *split* is never pretrained on; short hypotheses ("A man is sleeping.") recur across SNLI's splits, and
    this counts them so the result says how much of the test text the encoder could have seen.
    """
    from hf_ssl.data.text import load_text_documents

    corpus = load_text_documents(sources, split, text_column=text_column, dataset_config=dataset_config)
    lines = {line.strip() for document in corpus["text"]
             for line in document.split("\n")}
    test = read_snli("test")
    premises, hypotheses = set(test["premise"]), set(test["hypothesis"])
    return {"distinct_test_premises": len(premises), "also_in_corpus": len(premises & lines),
            "distinct_test_hypotheses": len(hypotheses), "hypotheses_also_in_corpus": len(hypotheses & lines)}


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
    test = datasets.Dataset.from_dict(read_snli("test"))
    if args.test_examples:
        test = test.shuffle(seed=0).select(range(args.test_examples))
    if args.train_examples:
        train = train.shuffle(seed=0).select(range(args.train_examples))

    def encode(batch):
        return tokenizer(batch["premise"], batch["hypothesis"], truncation=True, max_length=args.seq_length or 64)

    train = train.map(encode, batched=True, remove_columns=["premise", "hypothesis"]).rename_column("label", "labels")
    test = test.map(encode, batched=True, remove_columns=["premise", "hypothesis"]).rename_column("label", "labels")

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    results: dict = {"pretrained": {"per_seed": {}}, "random_init": {"per_seed": {}}}
    for seed in args.seeds:
        for start in ("pretrained", "random_init"):
            set_seed(seed)
            if start == "pretrained":
                model = AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=3)
            else:
                config = AutoConfig.from_pretrained(pretrained, num_labels=3)
                model = AutoModelForSequenceClassification.from_config(config)
            training_args = TrainingArguments(
                output_dir=str(Path(tempfile.gettempdir()) / f"snli_{start}"), per_device_train_batch_size=32, per_device_eval_batch_size=128,
                num_train_epochs=args.epochs, learning_rate=args.learning_rate, warmup_steps=0.1, weight_decay=0.01,
                lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_steps=50, report_to="none",
                seed=seed, use_cpu=not torch.cuda.is_available(),
            )
            trainer = Trainer(model=model, args=training_args, train_dataset=train,
                              data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
            started = time.time()
            trainer.train()
            metrics = trainer.evaluate(test)
            results[start]["per_seed"][str(seed)] = {
                "test_accuracy": metrics["eval_accuracy"], "fine_tune_seconds": round(time.time() - started)}
            print(start, seed, results[start]["per_seed"][str(seed)], flush=True)
    for start in ("pretrained", "random_init"):
        accuracies = np.array([run["test_accuracy"] for run in results[start]["per_seed"].values()])
        results[start]["mean_test_accuracy"] = float(accuracies.mean())
        results[start]["std_over_seeds"] = float(accuracies.std(ddof=1)) if len(accuracies) > 1 else None
    mean = results["pretrained"]["mean_test_accuracy"]
    results["test_pairs"] = len(test)
    results["standard_error_of_one_accuracy"] = float(np.sqrt(mean * (1 - mean) / len(test)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["pretrain", "finetune", "all"], default="all")
    parser.add_argument("--recipe", default=str(RECIPE), help="text recipe config to pretrain with")
    parser.add_argument("--pretrain_minutes", type=float, default=25.0)
    parser.add_argument("--pretrain_steps", type=int, default=None, help="default: the recipe's max_steps")
    parser.add_argument("--pretrain_batch_size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--pretrain_learning_rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--pretrain_warmup_steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--encoder", default=None, help="text encoder preset (default: the recipe's)")
    parser.add_argument("--seq_length", type=int, default=None,
                        help="pretraining and fine-tuning sequence length (default: the recipe's; fine-tuning 64)")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning_rate", type=float, default=2e-4, help="fine-tuning learning rate, both starts")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--train_examples", type=int, default=None, help="subsample SNLI validation (default: all)")
    parser.add_argument("--test_examples", type=int, default=None, help="subsample SNLI test (default: all 9,824)")
    parser.add_argument("--pretrained_dir", default=None,
                        help="pretraining output (stage 1) / input (2); default outputs/benchmark-<recipe name>")
    parser.add_argument("--init_from", default=None, help="continue pretraining from this hf_ssl output folder")
    parser.add_argument("--result", default=str(RESULT))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids oversubscription on a loaded CPU)")
    args = parser.parse_args()
    args.pretrained_dir = args.pretrained_dir or str(ROOT / "outputs" / f"benchmark-{Path(args.recipe).stem}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage in ("pretrain", "all"):
        pretrain(args)
    if args.stage in ("finetune", "all"):
        results = finetune(args)
        pretraining = json.loads((Path(args.pretrained_dir) / "eval_results.json").read_text())
        run_record = json.loads((Path(args.pretrained_dir) / "hf_ssl_run.json").read_text())
        data = run_record["data"]
        sources = data["dataset"] if isinstance(data["dataset"], list) else [data["dataset"]]
        gain = results["pretrained"]["mean_test_accuracy"] - results["random_init"]["mean_test_accuracy"]
        noise = np.hypot(*(results[start]["std_over_seeds"] or 0.0 for start in ("pretrained", "random_init")))
        summary = {
            "command": "python " + " ".join(sys.argv),
            "pretraining_run_argv": run_record.get("argv"),
            "pretraining": {
                "recipe": os.path.relpath(Path(args.recipe).resolve(), ROOT),
                "corpus": sources,
                "text_column": data.get("text_column"),
                "snli_test_split_in_corpus": False,
                "snli_test_sentences_also_in_corpus": test_text_in_corpus(
                    sources, data.get("text_column", "text"), data.get("train_split", "train"),
                    data.get("dataset_config")),
                "encoder": run_record["encoder"]["encoder"],
                "vocab_size": run_record["encoder"].get("vocab_size"),
                "max_seq_length": data.get("max_seq_length"),
                "steps": pretraining["pretraining_steps"],
                "wall_time_seconds": run_record["wall_time_seconds"],
                "hardware": run_record["hardware"],
                "held_out_masked_lm": pretraining["probes"],
            },
            "finetuning": {
                "protocol": f"plain Trainer + AutoModelForSequenceClassification, same for both starts: SNLI "
                            f"validation (train, {args.train_examples or 9842} pairs) -> SNLI test "
                            f"({results['test_pairs']} pairs), {args.epochs} epochs, lr {args.learning_rate} (linear, "
                            f"10% warm-up), batch 32, max length {args.seq_length or 64}, seeds {args.seeds}",
                **results,
            },
            "gain_points": round(100 * gain, 2),
            "gain_over_seed_noise": round(gain / noise, 1) if noise else None,
            "pretraining_helps": bool(gain > 0),
        }
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
