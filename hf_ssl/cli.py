"""``hf-ssl``: the command-line entry point (``python -m hf_ssl.cli`` is the same).

    hf-ssl pretrain [CONFIG.yaml] [--flag value ...]      pretrain; the same arguments as recipes/pretrain.py.
                                                          No arguments: the embedded default (a short DINO run).
    hf-ssl evaluate CHECKPOINT [--task probe] [...]       evaluate a checkpoint's encoder (kNN / linear probe, ...)
    hf-ssl card RUN_DIR [--output PATH]                   (re)generate the model card of a run directory
    hf-ssl push RUN_DIR --hub_model_id ORG/NAME           write the card and upload the run to the Hub
    hf-ssl list [METHOD]                                  methods, their jobs, papers, settings and recipe configs

Run ``hf-ssl COMMAND --help`` for the arguments of one command. Examples:

    hf-ssl pretrain                                                       # 4 minutes on CPU, embedded data
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --max_steps 2000 --output_dir runs/dino
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --push_to_hub --hub_model_id me/dino-cifar10
    hf-ssl evaluate runs/dino --dataset ../shared/data/cifar10_jpg --compare_random_init
    hf-ssl card runs/dino --output model_cards/dino-vit-tiny-cifar10/README.md
    hf-ssl push runs/dino --hub_model_id me/dino-cifar10 --private

Pushing needs a token with write access: ``HF_TOKEN`` or ``hf auth login`` (preferred to ``--token``/``--hub_token``:
command lines end up in shell histories; hf_ssl never writes a token into a file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data.images import load_image_dataset
from .data.pairs import HELD_OUT_TEMPLATES, load_sts_benchmark
from .evaluation.comparison import (
    compare_with_random_init,
    evaluate_checkpoint,
    format_comparison,
)
from .evaluation.features import default_eval_transform
from .evaluation.sts import sts_spearman
from .evaluation.zero_shot import zero_shot_accuracy
from .jobs.runner import run
from .jobs.sentence_pairs import resolve_text_checkpoint
from .methods import METHOD_REGISTRY, AutoSSLModel, SentenceBertForPreTraining
from .publishing.hub import push_run_directory
from .publishing.model_card import write_model_card

RECIPE_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands: dict[str, Callable[[list[str]], int | None]] = {
        "pretrain": _pretrain, "evaluate": _evaluate, "card": _card, "push": _push, "list": _list,
    }
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in commands:
        print(__doc__)
        print(f"unknown command {argv[0]!r}; choose one of {', '.join(commands)}", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:]) or 0


# --------------------------------------------------------------------------------------------------------------------
def _pretrain(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: hf-ssl pretrain [CONFIG.yaml] [--flag value ...]\n\n"
              "Pretrain with a recipe config (recipes/configs/<method>-<backbone>-<dataset>.yaml); flags after the file\n"
              "override it; without a file, flags override the embedded default (a short DINO run). The method picks\n"
              "the job and its flags: `hf-ssl pretrain --method simclr --help` lists SimCLR's. Every flag follows:\n")
    run(argv)  # `--help` is answered by HfArgumentParser with every flag of the job, the method and the trainer
    return 0


# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationTask:
    """One ``hf-ssl evaluate --task NAME``: its help line, its arguments (added to an argument group) and the function
    that runs it (``args -> dict`` of results, printed as JSON, or a string printed as is)."""

    help: str
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    run: Callable[[argparse.Namespace], dict | str]


#: Evaluation tasks by name; other modules add theirs with :func:`register_evaluation_task`.
EVALUATION_TASKS: dict[str, EvaluationTask] = {}


def register_evaluation_task(name: str, help: str, add_arguments: Callable, run: Callable) -> None:
    """Make ``hf-ssl evaluate --task NAME`` available (e.g. STS, zero-shot classification)."""
    EVALUATION_TASKS[name] = EvaluationTask(help, add_arguments, run)


def _probe_arguments(group) -> None:
    group.add_argument("--dataset", default="embedded",
                       help="'embedded', a data folder (CIFAR-10 zips, Fashion-MNIST IDX, imagefolder) or a Hub dataset "
                       "(default: embedded)")
    group.add_argument("--train_split", default="train", help="kNN memory / probe training split (default: train)")
    group.add_argument("--test_split", default="test", help="split the accuracy is measured on (default: test)")
    group.add_argument("--probes", nargs="+", default=["knn", "linear"], choices=["knn", "linear"])
    group.add_argument("--k", type=int, default=200, help="kNN neighbours (Wu et al. 2018: 200)")
    group.add_argument("--temperature", type=float, default=0.1, help="kNN vote temperature (default 0.1)")
    group.add_argument("--image_size", type=int, default=None, help="default: the encoder config's image_size")
    group.add_argument("--max_train_examples", type=int, default=None, help="cap the train split (default: all)")
    group.add_argument("--compare_random_init", action="store_true",
                       help="also probe the same encoder at random init, and raw pixels")


def _run_probes(args: argparse.Namespace) -> dict | str:
    from transformers import AutoModel

    train = load_image_dataset(args.dataset, args.train_split)
    test = load_image_dataset(args.dataset, args.test_split)
    encoder = AutoModel.from_pretrained(args.checkpoint)
    size = args.image_size or getattr(encoder.config, "image_size", 224)
    transform = default_eval_transform(size, *_normalisation(args.checkpoint))
    common = dict(probes=tuple(args.probes), k=args.k, temperature=args.temperature, transform=transform,
                  max_train_examples=args.max_train_examples)
    if args.compare_random_init:
        return format_comparison(compare_with_random_init(encoder, train, test, **common))
    return evaluate_checkpoint(encoder, train, test, **common)


register_evaluation_task(
    "probe", "frozen-feature kNN and linear-probe accuracy on a labelled image dataset", _probe_arguments, _run_probes
)


def _text_embedding_model(checkpoint: str, pooling: str):
    """An hf_ssl checkpoint with ``embed_text`` (Sentence-BERT, CLIP-style) as is; any other text encoder (a folder,
    a Hub id, or 'minilm') as a Sentence-BERT bi-encoder over it with ``pooling``. Returns (model, tokenizer)."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_text_checkpoint(checkpoint)
    if (getattr(AutoConfig.from_pretrained(path), "ssl_config", None) or {}).get("method") in ("sbert", "clip"):
        model = AutoSSLModel.from_pretrained(path)
    else:
        model = SentenceBertForPreTraining.from_text_encoder(path, pooling=pooling)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def _sts_arguments(group) -> None:
    group.add_argument("--sts_folder", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "stsbenchmark"),
                       help="STS-benchmark folder with sts-{train,dev,test}.csv (default: ../shared/data/stsbenchmark)")
    group.add_argument("--sts_splits", nargs="+", default=["dev", "test"], help="splits to score (default: dev test)")
    group.add_argument("--sts_max_pairs", type=int, default=None, help="score the first N pairs of each split only")
    group.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"],
                       help="pooling for a plain text encoder (hf_ssl Sentence-BERT runs keep their own)")


def _run_sts(args: argparse.Namespace) -> dict:
    model, tokenizer = _text_embedding_model(args.checkpoint, args.pooling)
    results = {}
    for split in args.sts_splits:
        pairs = load_sts_benchmark(args.sts_folder, split)
        if args.sts_max_pairs:
            pairs = pairs.select(range(min(args.sts_max_pairs, len(pairs))))
        results[f"sts_{split}_spearman"] = sts_spearman(model, tokenizer, pairs)
    return results


def _zero_shot_arguments(group) -> None:
    group.add_argument("--zero_shot_templates", nargs="+", default=None,
                       help="prompt templates with one {} for the class name (default: the templates hf_ssl's CLIP "
                       "recipes hold out from training)")


def _run_zero_shot(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    model = AutoSSLModel.from_pretrained(args.checkpoint).eval()
    if not hasattr(model, "embed_image"):
        raise ValueError(f"{args.checkpoint} is not an image-text (CLIP-style) checkpoint; zero-shot needs one")
    test = load_image_dataset(args.dataset, args.test_split)
    size = args.image_size or model.config.vision_config.image_size
    transform = default_eval_transform(size, *_normalisation(args.checkpoint))
    templates = args.zero_shot_templates or list(HELD_OUT_TEMPLATES)
    names = test.features["label"].names
    accuracy = zero_shot_accuracy(model, AutoTokenizer.from_pretrained(args.checkpoint), test, names, templates,
                                  transform)
    return {"zero_shot_top1": accuracy, "templates": templates}


register_evaluation_task(
    "sts", "Spearman of cosine similarity on STS-benchmark (sentence embeddings)", _sts_arguments, _run_sts
)
register_evaluation_task(
    "zero-shot", "zero-shot top-1 of an image-text checkpoint on a labelled image dataset (--dataset, --test_split)",
    _zero_shot_arguments, _run_zero_shot,
)


def _evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ssl evaluate",
        description="Evaluate the encoder of a checkpoint (loaded with plain transformers.AutoModel) on one task. "
        "Tasks: " + "; ".join(f"{name}: {task.help}" for name, task in EVALUATION_TASKS.items()) + ".",
    )
    parser.add_argument("checkpoint", help="folder or Hub id of a checkpoint (an hf_ssl run's output_dir)")
    parser.add_argument("--task", default="probe", choices=sorted(EVALUATION_TASKS),
                        help="what to measure (default: probe)")
    for name, task in EVALUATION_TASKS.items():
        task.add_arguments(parser.add_argument_group(f"--task {name}", task.help))
    args = parser.parse_args(argv)
    result = EVALUATION_TASKS[args.task].run(args)
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


def _normalisation(checkpoint: str) -> tuple[list[float], list[float]]:
    """The mean/std the run trained with (from hf_ssl_run.json), else ImageNet's."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    record = Path(checkpoint) / "hf_ssl_run.json"
    if record.is_file():
        views = json.loads(record.read_text()).get("views", {})
        return views.get("mean", IMAGENET_DEFAULT_MEAN), views.get("std", IMAGENET_DEFAULT_STD)
    return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)


# --------------------------------------------------------------------------------------------------------------------
def _card_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--license", default=None,
                        help="licence of the weights for the card's metadata (e.g. apache-2.0, mit); none by default: "
                        "pick one compatible with the training data's licence, which the card states")
    parser.add_argument("--tags", nargs="*", default=None, help="extra Hub tags")
    parser.add_argument("--template", default=None, help="a Jinja markdown template (default: "
                        "hf_ssl/publishing/templates/model_card.md)")


def _card_overrides(args: argparse.Namespace) -> dict:
    return {key: value for key, value in (("license", args.license), ("tags", args.tags)) if value}


def _card(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ssl card",
        description="Write the model card of a run directory (config.json with ssl_config, hf_ssl_run.json, "
        "eval_results.json, trainer_state.json) with its figures (training curves, the job's PNGs) beside it.",
    )
    parser.add_argument("run_dir", help="an hf_ssl output_dir")
    parser.add_argument("--output", default=None,
                        help="where to write the card (default RUN_DIR/README.md); figures go next to it, e.g. "
                        "model_cards/<run-name>/README.md")
    parser.add_argument("--repo_id", default=None,
                        help="the Hub id the card's loading code names (default: the run's output_dir)")
    _card_metadata_arguments(parser)
    args = parser.parse_args(argv)

    path = write_model_card(args.run_dir, output=args.output, repo_id=args.repo_id, template_path=args.template,
                            **_card_overrides(args))
    print(f"wrote {path}")
    return 0


def _push(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ssl push",
        description="Regenerate the model card of a run directory and upload the run (model, record, evaluation, "
        "card, figures; not the checkpoint-* folders nor training_args.bin) to a Hub model repository, creating it "
        "if needed. Authenticates with HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("run_dir", help="an hf_ssl output_dir")
    parser.add_argument("--hub_model_id", required=True, help="the repository, ORG/NAME (or NAME in your namespace)")
    parser.add_argument("--private", action="store_true", help="create the repository private (if it is new)")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit_message", default="Upload hf_ssl pretraining run")
    parser.add_argument("--keep_card", action="store_true", help="upload RUN_DIR/README.md as it is")
    parser.add_argument("--token", default=None, help="a write token; prefer HF_TOKEN or `hf auth login`")
    _card_metadata_arguments(parser)
    args = parser.parse_args(argv)

    if args.template is not None and not args.keep_card:

        write_model_card(args.run_dir, repo_id=args.hub_model_id, template_path=args.template,
                         **_card_overrides(args))
        args.keep_card = True
    commit = push_run_directory(
        args.run_dir, args.hub_model_id, private=args.private or None, token=args.token, revision=args.revision,
        commit_message=args.commit_message, create_pr=args.create_pr, refresh_card=not args.keep_card,
        card_data=_card_overrides(args),
    )
    print(f"pushed {args.run_dir} to {commit.repo_url} ({commit.commit_url})")
    return 0


# --------------------------------------------------------------------------------------------------------------------
def _list(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ssl list",
        description="Every pretraining method: its model class, job (the kind of data), paper, default settings "
        "(the flags of `hf-ssl pretrain --method NAME`), and its recipe configs.",
    )
    parser.add_argument("method", nargs="?", default=None, help="show one method only")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    if args.method is not None and args.method not in METHOD_REGISTRY:
        print(f"unknown method {args.method!r}; available: {', '.join(sorted(METHOD_REGISTRY))}", file=sys.stderr)
        return 2
    configs = sorted(RECIPE_CONFIGS.glob("*.yaml")) if RECIPE_CONFIGS.is_dir() else []
    listing = {}
    for name, model_class in sorted(METHOD_REGISTRY.items()):
        if args.method is not None and name != args.method:
            continue
        defaults = model_class.method_config_class()
        listing[name] = {
            "class": f"{model_class.__module__}.{model_class.__name__}",
            "job": model_class.pretraining_job,
            "paper": model_class.paper,
            "defaults": {field.name: getattr(defaults, field.name) for field in dataclasses.fields(defaults)},
            "configs": [path.name for path in configs if path.name.split("-")[0] == name],
        }
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
        return 0
    for name, entry in listing.items():
        print(f"{name}: {entry['class']}  (job: {entry['job']})")
        if entry["paper"]:
            print(f"    paper: {entry['paper']}")
        for key, value in entry["defaults"].items():
            print(f"    --{key} {value}")
        if entry["configs"]:
            print("    recipe configs: " + ", ".join(f"recipes/configs/{config}" for config in entry["configs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
