#!/usr/bin/env python
"""Quality of every vision method at one fixed budget and backbone: CIFAR-10, frozen-feature kNN and linear probe.

    python benchmarks/vision_quality.py --steps 150 [--methods dino simclr ...] [--backbone vit-tiny]

For each method, the recipe ``recipes/configs/<method>-<backbone>-cifar10.yaml`` trains in its own subprocess for
``--steps`` optimizer steps of the config's batch (recorded per run as ``batch_size``), each method with its own
schedule compressed to that budget (warm-up = 10 % of the steps). The process CPU seconds and wall seconds of each
run are recorded too, since a step costs different amounts across methods (DINO: 2 global + 4 local crops).

Then every encoder is loaded with plain ``transformers.AutoModel`` from the run's output folder (the published one:
DINO/BYOL/MoCo teacher or momentum encoder, SimCLR/SimSiam the online encoder) and probed on the same data:

- kNN top-1: k=200, T=0.1, cosine similarity, weighted votes (Wu et al. 2018; lightly's protocol), on L2-normalised
  CLS features (pooled for convolutional encoders);
- linear probe top-1 (L-BFGS logistic regression on frozen features, hf_ssl.evaluation.linear_probe.linear_probe_accuracy);

with ``--bank`` training images (fixed random subset, seed 0) as the kNN memory bank / probe training set and the
whole 10,000-image test split. Baselines in the same run: the same encoder at random init, and raw pixels.

``--seeds 0 1 2`` trains every method once per seed (the recipe's ``--seed``: initial weights, views and data
order; folders ``<method>-<backbone>-seed<S>``) and records each seed's probes under ``seeds`` with their mean and
spread (min, max, sample standard deviation) as the method's ``knn_top1`` / ``linear_probe_top1``. The baselines
come from the first seed's run.

Results are written after every method to ``benchmarks/results/vision_quality.json`` (``--output``), so a partial run
keeps what it measured; the README table is copied from there with this command. Each run folder also gets the
probes as its ``eval_results.json`` (model-index entries with the protocol above), and ``--cards`` writes the model
card of every run to ``model_cards/<method>-<backbone>-cifar10/`` with ``hf-ssl card`` (``--cards_only`` does just
that from an earlier run's folders and results). Few-shot and OOD results that ``hf-ssl evaluate --probes few_shot
ood --update_card`` recorded in a run folder are kept there, so its card shows them too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("dino", "simclr", "byol", "simsiam", "moco_v2", "moco_v3")
#: The pretext, clustering and memory-bank methods: run on request (``--methods rotation jigsaw ...``).
PRETEXT_METHODS = ("rotation", "jigsaw", "relative_patch", "colourisation", "context_encoder", "deepcluster",
                   "instance_discrimination")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "vision_quality.json"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pretrain(method: str, config: Path, steps: int, output_dir: Path, extra: list[str]) -> dict:
    """Run the recipe in a subprocess; return its step count, wall and CPU seconds."""
    command = [
        sys.executable, str(ROOT / "recipes" / "pretrain.py"), str(config),
        "--max_steps", str(steps), "--warmup_steps", str(max(1, steps // 10)),
        "--eval_strategy", "no", "--save_steps", str(steps), "--save_total_limit", "1",
        "--logging_steps", "10", "--disable_tqdm", "true", "--final_comparison", "false",
        "--output_dir", str(output_dir.relative_to(ROOT)), *extra,
    ]
    cpu_before, started = children_cpu_seconds(), time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)  # configs name data relative to the project root
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {
        "command": " ".join(["python", *command[1:]]).replace(str(ROOT) + "/", ""),
        "steps": state["global_step"],  # fewer than --steps when --minutes stopped the run
        "batch_size": state["train_batch_size"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(children_cpu_seconds() - cpu_before, 1),
    }


def probe_encoder(encoder, transform, train, test, bank: int, with_baselines: bool) -> dict:
    """kNN (k=200, T=0.1) and linear probe of a loaded encoder; with the random-init and raw-pixel baselines."""
    from hf_ssl.evaluation.comparison import (
        compare_with_random_init,
        evaluate_checkpoint,
    )

    common = dict(probes=("knn", "linear"), k=200, temperature=0.1, transform=transform, max_train_examples=bank)
    if with_baselines:
        return compare_with_random_init(encoder, train, test, **common)
    return {"pretrained": evaluate_checkpoint(encoder, train, test, **common)}


def probe(output_dir: Path, train, test, bank: int, with_baselines: bool, student: bool = False) -> dict:
    """:func:`probe_encoder` of a recipe run's published encoder, at the encoder's native resolution.

    ``student``: also probe the trained online encoder of a method whose published encoder is an EMA teacher
    (DINO, BYOL, MoCo: ``student_encoder`` of the full model in the run folder), under ``"student"``.
    """
    from transformers import AutoModel

    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.methods.base import AutoSSLModel

    record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    views = record["views"]
    image_size = record["encoder"].get("image_size") or views["global_crop_size"]
    transform = default_eval_transform(image_size, views["mean"], views["std"])
    probes = probe_encoder(AutoModel.from_pretrained(output_dir), transform, train, test, bank, with_baselines)
    if student:
        online = getattr(AutoSSLModel.from_pretrained(output_dir), "student_encoder", None)
        if online is not None:
            probes["student"] = probe_encoder(online, transform, train, test, bank, False)["pretrained"]
    return probes


PROBE_METRICS = ("knn_top1", "linear_probe_top1")


def summarise_seeds(runs: dict[int, dict]) -> dict:
    """One method's entry from its per-seed entries: the first seed's run fields, each probe's mean over the seeds,
    and ``<probe>_spread`` = ``{"min", "max", "std"}`` (sample standard deviation), with every seed's entry under
    ``seeds``."""
    first = next(iter(runs.values()))
    summary = {key: value for key, value in first.items() if key not in PROBE_METRICS}
    for metric in PROBE_METRICS:
        values = [entry[metric] for entry in runs.values()]
        summary[metric] = round(statistics.fmean(values), 4)
        summary[f"{metric}_spread"] = {"min": min(values), "max": max(values),
                                       "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    summary["seeds"] = {str(seed): entry for seed, entry in runs.items()}
    return summary


def update_results(output: Path, group: str, method: str, entry: dict) -> dict:
    """Merge one run into the results file (``results[group][method] = entry``), keeping what other runs wrote."""
    return merge_results(output, {group: {method: entry}})


def merge_results(output: Path, groups: dict[str, dict], fields: dict | None = None) -> dict:
    """Merge ``groups`` (``{group: {name: entry}}``) and top-level ``fields`` into the results file as it is now, not
    as it was when this run started: runs on the other core may share ``output``. Returns the merged results."""
    results = json.loads(output.read_text()) if output.is_file() else {}
    results.update(fields or {})
    for group, entries in groups.items():
        results.setdefault(group, {}).update(entries)
    write_atomically(output, results)
    return results


def write_atomically(output: Path, results: dict) -> None:
    """Write the JSON to a temporary file, then rename it: a run on the other core never reads a half-written file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}")
    partial.write_text(json.dumps(results, indent=2))
    os.replace(partial, output)


def write_eval_results(output_dir: Path, entry: dict, baselines: dict, bank: int, dataset: str) -> None:
    """The benchmark's probes as the run's ``eval_results.json`` (the format of the recipe's final evaluation),
    keeping what ``hf-ssl evaluate --update_card`` recorded there: the protocol sections (few-shot, OOD) and their
    model-index entries (the ones with a ``task_name``; this benchmark's probes have none)."""
    from huggingface_hub import EvalResult

    from hf_ssl.jobs import FinalEvaluation
    from hf_ssl.publishing.datasets import model_index_dataset
    from hf_ssl.publishing.model_card import PROTOCOL_SECTIONS

    protocols = {
        "knn_top1": f"kNN top-1 (k=200, T=0.1, frozen CLS features, {bank}-image train bank, 10,000 test images)",
        "linear_probe_top1": f"linear probe top-1 (L-BFGS on frozen CLS features of {bank} train images)",
    }
    pretrained = {name: entry[name] for name in protocols}
    evaluation = FinalEvaluation(
        probes={"pretrained": pretrained, **baselines},
        eval_results=[
            EvalResult(task_type="image-classification", **model_index_dataset([dataset]),
                       dataset_split="test", metric_type="accuracy", metric_value=float(value),
                       metric_name=protocols[name])
            for name, value in pretrained.items()
        ],
    )
    written = evaluation.to_json(entry["steps"])
    path = output_dir / "eval_results.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    written.update({section: recorded[section] for section in PROTOCOL_SECTIONS if section in recorded})
    written["eval_results"] += [result for result in recorded.get("eval_results", []) if result.get("task_name")]
    path.write_text(json.dumps(written, indent=2))


def write_card(output_dir: Path, name: str, benchmark_command: str) -> None:
    """``hf-ssl card`` for one run, with paths relative to the checkout and the command that produced the numbers."""
    card = ROOT / "model_cards" / name / "README.md"
    subprocess.run([sys.executable, "-m", "hf_ssl.cli", "card", str(output_dir), "--output", str(card),
                    "--repo_id", f"hf-ssl/{name}"], check=True, cwd=ROOT)
    text = card.read_text().replace(str(ROOT) + "/", "")
    anchor = "## Intended use and limits"
    note = (f"The evaluation numbers above come from `{benchmark_command}`, which trains with exactly this command "
            "and then probes the saved encoder, random init and raw pixels (protocol in the metric names).\n\n")
    card.write_text(text.replace(anchor, note + anchor, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + PRETEXT_METHODS)
    parser.add_argument("--backbone", default="vit-tiny", help="config infix: vit-tiny or resnet18")
    parser.add_argument("--steps", type=int, default=150, help="schedule length (and most steps) of every run")
    parser.add_argument("--minutes", type=float, default=None,
                        help="also stop each run after this many minutes of training steps (--max_train_minutes)")
    parser.add_argument("--bank", type=int, default=10000, help="train images for the kNN bank / linear probe")
    parser.add_argument("--dataset", default="uoft-cs/cifar10", help="Hub id (a local copy through HF_SSL_DATA_DIR)")
    parser.add_argument("--work_dir", default="outputs/vision_quality", help="relative to the project root")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--probe_student", action="store_true",
                        help="also probe the online (student) encoder of DINO / BYOL / MoCo runs: entry['student']")
    parser.add_argument("--cards", action="store_true", help="write model_cards/<method>-<backbone>-cifar10/")
    parser.add_argument("--cards_only", action="store_true", help="only eval_results.json + cards of earlier runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train every method once per seed and report mean and spread (default: the recipe's seed)")
    args, extra = parser.parse_known_args(argv)
    if args.minutes is not None:
        extra += ["--max_train_minutes", str(args.minutes)]
    dataset_name = "uoft-cs/cifar10"  # as the recipe configs name it (the card looks its licence up)

    if args.cards_only:
        results = json.loads(Path(args.output).read_text())
        for method in args.methods:
            if method not in results["methods"]:
                continue
            output_dir = ROOT / args.work_dir / f"{method}-{args.backbone}"
            write_eval_results(output_dir, results["methods"][method], results["baselines"], args.bank, dataset_name)
            entry = results["methods"][method]
            write_card(output_dir, f"{method}-{args.backbone}-cifar10", entry.get("benchmark_command", results["command"]))
        return 0

    from hf_ssl.data.images import load_image_dataset

    train = load_image_dataset(args.dataset, "train")
    test = load_image_dataset(args.dataset, "test")
    output = Path(args.output)
    results = merge_results(output, {"methods": {}}, fields={
        "command": "python benchmarks/vision_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "protocol": f"CIFAR-10 JPEG, {args.steps} steps x the config's batch per method"
                    + (f" or {args.minutes} minutes of training, whichever first" if args.minutes else "")
                    + f"; kNN k=200 T=0.1 and L-BFGS linear "
                    f"probe on frozen features, {args.bank} train images (seed 0) as bank/probe set, 10,000 test",
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "note": "2-core machine under load: wall and CPU "
                    "seconds are indicative only"},
        "date": time.strftime("%Y-%m-%d"),
    })
    for method in args.methods:
        config = ROOT / "recipes" / "configs" / f"{method}-{args.backbone}-cifar10.yaml"
        runs, first_output_dir = {}, None
        for seed in args.seeds or [None]:
            suffix = "" if seed is None else f"-seed{seed}"
            output_dir = ROOT / args.work_dir / f"{method}-{args.backbone}{suffix}"
            first_output_dir = first_output_dir or output_dir
            print(f"=== {method}{suffix}: {config.name}", flush=True)
            seed_flags = [] if seed is None else ["--seed", str(seed)]
            entry = pretrain(method, config, args.steps, output_dir, extra + seed_flags)
            probes = probe(output_dir, train, test, args.bank, with_baselines="baselines" not in results,
                           student=args.probe_student)
            if "random_init" in probes:
                results["baselines"] = {name: probes[name] for name in ("random_init", "raw_pixels")}
            entry.update(probes["pretrained"], benchmark_command=results["command"])
            if "student" in probes:
                entry["student"] = probes["student"]
            write_eval_results(output_dir, entry, results["baselines"], args.bank, dataset_name)
            runs[seed] = entry
        entry = summarise_seeds(runs) if args.seeds else runs[None]
        results["methods"][method] = entry
        if args.cards:  # the card of the first seed's run, with that run's own numbers
            write_card(first_output_dir, f"{method}-{args.backbone}-cifar10", results["command"])
        merge_results(output, {"baselines": results["baselines"], "methods": {method: entry}})
        print(json.dumps({method: entry, "baselines": results["baselines"]}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
