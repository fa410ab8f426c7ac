"""Quality benchmark for MAE: pretrain on CIFAR-10, then linear probe / fine-tune / kNN against random init.

Three stages, each one process of at most ~10 minutes on a shared 2-core CPU, writing into one results file
``benchmarks/results/mae_<run name>.json`` (every number stored with the command that produced it):

    # 1. pretrain with the recipe (its own final evaluation: reconstruction figure + held-out masked-pixel loss, and
    #    the frozen probes unless --final_comparison false)
    python benchmarks/mae_quality.py pretrain recipes/configs/mae-vit-tiny-cifar10.yaml [--flag value ...]
    # 2. frozen-feature probes of the saved encoder (linear probe = MAE's protocol; kNN reported, not judged)
    python benchmarks/mae_quality.py probe outputs/mae-vit-tiny-cifar10 [--train_examples N --eval_examples M]
    # 3. short end-to-end fine-tune (plain Trainer + ViTForImageClassification.from_pretrained) vs random init
    python benchmarks/mae_quality.py finetune outputs/mae-vit-tiny-cifar10 [--finetune_steps N ...]

The data, crop size and normalisation of stages 2 and 3 are read from the run's ``hf_ssl_run.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results")


def _record_path(output_dir: Path) -> Path:
    return RESULTS / f"mae_{output_dir.name}.json"


def _update(output_dir: Path, stage: str, values: dict) -> dict:
    path = _record_path(output_dir)
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[stage] = {
        "command": "python benchmarks/mae_quality.py " + " ".join(sys.argv[1:]),
        **values,
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps(record[stage], indent=2))
    return record


def _option(argv: list[str], name: str, default, cast):
    if name in argv:
        position = argv.index(name)
        value = cast(argv[position + 1])
        del argv[position : position + 2]
        return value
    return default


def _run_settings(output_dir: Path) -> dict:
    record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    return {"data": record["data"], "views": record["views"], "seed": record["training"]["seed"]}


def _datasets(settings: dict, train_examples: int | None, eval_examples: int | None):
    from hf_ssl.data.images import load_image_dataset

    data = settings["data"]
    load = lambda split, count: load_image_dataset(  # noqa: E731
        data["dataset"], split, image_column=data["image_column"], label_column=data["label_column"],
        max_examples=count, seed=settings["seed"],
    )
    return load(data["train_split"], train_examples), load(data["eval_split"], eval_examples)


def pretrain(argv: list[str]) -> None:
    from hf_ssl.jobs.runner import parse_arguments, run

    started = time.time()
    output_dir = Path(parse_arguments(argv)[-1].output_dir)
    run(argv)
    saved = json.loads((output_dir / "eval_results.json").read_text())
    run_record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    _update(output_dir, "pretrain", {
        "output_dir": str(output_dir),
        "pretraining_steps": saved["pretraining_steps"],
        "training_wall_seconds": run_record["wall_time_seconds"],
        "total_minutes": round((time.time() - started) / 60, 2),
        "final_evaluation": saved["probes"],
    })


def probe(argv: list[str]) -> None:
    from hf_ssl import AutoSSLModel
    from hf_ssl.evaluation.comparison import compare_with_random_init, format_comparison
    from hf_ssl.evaluation.features import default_eval_transform

    output_dir = Path(argv.pop(0))
    train_examples = _option(argv, "--train_examples", 5000, int)
    eval_examples = _option(argv, "--eval_examples", 2000, int)
    settings = _run_settings(output_dir)
    started = time.time()
    train, test = _datasets(settings, train_examples, eval_examples)
    views = settings["views"]
    model = AutoSSLModel.from_pretrained(output_dir)
    transform = default_eval_transform(views["global_crop_size"], views["mean"], views["std"])
    knn_k = settings["data"]["knn_k"]
    probes = compare_with_random_init(model.encoder, train, test, k=knn_k, temperature=settings["data"]["knn_temperature"],
                                      transform=transform, seed=settings["seed"])
    print(format_comparison(probes))
    _update(output_dir, "probe", {
        "protocol": f"frozen CLS features of whole (unmasked) images; linear probe = standardised features + "
                    f"L-BFGS softmax regression (MAE's protocol); kNN k={knn_k} (reported, not MAE's protocol); "
                    f"{len(train)} train / {len(test)} test images",
        "results": probes, "minutes": round((time.time() - started) / 60, 2),
    })


def finetune(argv: list[str]) -> None:
    from transformers import HfArgumentParser

    from hf_ssl.evaluation.finetune import (
        FineTuneProbeArguments,
        compare_finetuning_with_random_init,
    )

    output_dir = Path(argv.pop(0))
    (arguments,) = HfArgumentParser(FineTuneProbeArguments).parse_args_into_dataclasses(args=argv)
    if arguments.finetune_steps < 1:
        raise SystemExit("pass --finetune_steps N (N >= 1)")
    settings = _run_settings(output_dir)
    started = time.time()
    train, test = _datasets(settings, None, None)
    views = settings["views"]
    results = compare_finetuning_with_random_init(
        str(output_dir), train, test, arguments, image_size=views["global_crop_size"], mean=views["mean"],
        std=views["std"], seed=settings["seed"],
    )
    _update(output_dir, "finetune", {
        "protocol": "ViTForImageClassification.from_pretrained(output_dir) (CLS -> linear) vs the same config at "
                    "random init, plain transformers Trainer, AdamW + cosine, RandomResizedCrop + flip",
        "settings": {key: value for key, value in vars(arguments).items()},
        "results": {name: {"finetune_top1": value} for name, value in results.items()},
        "minutes": round((time.time() - started) / 60, 2),
    })


if __name__ == "__main__":
    stage, *rest = sys.argv[1:] or ["--help"]
    stages = {"pretrain": pretrain, "probe": probe, "finetune": finetune}
    if stage not in stages:
        raise SystemExit(__doc__)
    stages[stage](rest)
