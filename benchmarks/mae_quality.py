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
    # 4. the budget curve: the same fine-tune of every checkpoint-N folder of the run (pretrain with --save_steps and
    #    --save_total_limit large enough to keep them), its held-out masked-pixel loss and training loss, and random
    #    init once
    python benchmarks/mae_quality.py curve outputs/mae-vit-tiny-cifar10 --finetune_steps N [...]

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


def _checkpoint_step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def _mean_training_loss(log_history: list[dict], step: int, window: int) -> float | None:
    """Mean logged training loss over the ``window`` steps up to ``step`` (the logging steps in ``(step - window,
    step]``)."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry and step - window < entry["step"] <= step]
    return round(sum(losses) / len(losses), 4) if losses else None


def curve(argv: list[str]) -> None:
    """Fine-tune accuracy, held-out masked-pixel loss and training loss at every saved checkpoint of one run.

    The checkpoints are points of one run's schedule (warm-up, then cosine to ``max_steps``), not runs whose schedule
    ends at that step: an early checkpoint has not been annealed. Every fine-tune uses the same labelled subset,
    batch order, augmentations and new-classifier init (:func:`hf_ssl.evaluation.finetune.finetune_checkpoints`)."""
    from transformers import HfArgumentParser

    from hf_ssl import AutoSSLModel
    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.evaluation.finetune import FineTuneProbeArguments, finetune_checkpoints
    from hf_ssl.evaluation.reconstruction import DEFAULT_FIGURE_NAME, ReconstructionFigure

    output_dir = Path(argv.pop(0))
    loss_window = _option(argv, "--loss_window", 100, int)
    (arguments,) = HfArgumentParser(FineTuneProbeArguments).parse_args_into_dataclasses(args=argv)
    if arguments.finetune_steps < 1:
        raise SystemExit("pass --finetune_steps N (N >= 1)")
    folders = sorted(output_dir.glob("checkpoint-*"), key=_checkpoint_step)
    if not folders:
        raise SystemExit(f"{output_dir} has no checkpoint-N folders: pretrain with --save_steps S and a "
                         f"--save_total_limit that keeps them all")
    settings = _run_settings(output_dir)
    views = settings["views"]
    started = time.time()
    train, test = _datasets(settings, None, None)
    log_history = json.loads((folders[-1] / "trainer_state.json").read_text())["log_history"]
    figure = ReconstructionFigure(test, output_dir / DEFAULT_FIGURE_NAME,
                                  default_eval_transform(views["global_crop_size"], views["mean"], views["std"]),
                                  num_images=8, num_loss_images=256, seed=settings["seed"], mean=views["mean"],
                                  std=views["std"])
    points = {}
    for folder in folders:
        figure.output_path = folder / DEFAULT_FIGURE_NAME
        held_out = figure(AutoSSLModel.from_pretrained(folder).eval())["masked_pixel_loss"]
        step = _checkpoint_step(folder)
        points[str(step)] = {"pretraining_steps": step, "heldout_masked_pixel_loss": round(held_out, 4),
                             f"training_loss_last_{loss_window}_steps": _mean_training_loss(log_history, step,
                                                                                           loss_window)}
        print(json.dumps(points[str(step)]), flush=True)
    accuracies = finetune_checkpoints(
        {str(_checkpoint_step(folder)): str(folder) for folder in folders}, train, test, arguments,
        image_size=views["global_crop_size"], mean=views["mean"], std=views["std"], seed=settings["seed"],
    )
    for name, point in points.items():
        point["finetune_top1"] = accuracies[name]
    _update(output_dir, "curve", {
        "protocol": "every checkpoint-N of one run (one schedule, not one run per budget); fine-tune = "
                    "ViTForImageClassification.from_pretrained(checkpoint-N) (CLS -> linear), plain transformers "
                    "Trainer, AdamW + cosine, RandomResizedCrop + flip, the same seed for every model; held-out "
                    "masked-pixel loss = norm-pix loss on 256 evenly spaced test images with fixed masks",
        "settings": {key: value for key, value in vars(arguments).items()},
        "points": list(points.values()),
        "random_init": {"pretraining_steps": 0, "finetune_top1": accuracies["random_init"]},
        "minutes": round((time.time() - started) / 60, 2),
    })


if __name__ == "__main__":
    stage, *rest = sys.argv[1:] or ["--help"]
    stages = {"pretrain": pretrain, "probe": probe, "finetune": finetune, "curve": curve}
    if stage not in stages:
        raise SystemExit(__doc__)
    stages[stage](rest)
