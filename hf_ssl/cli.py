"""``hf-ssl``: the command-line entry point (``python -m hf_ssl.cli`` is the same).

    hf-ssl pretrain [CONFIG.yaml] [--flag value ...]      pretrain; the same arguments as recipes/pretrain.py.
                                                          No arguments: the embedded default (a short DINO run).
    hf-ssl finetune [CONFIG.yaml] [--flag value ...]      semi-supervised fine-tuning; the arguments of recipes/finetune.py
                                                          No arguments: FixMatch, CIFAR-10 with 40 labels.
    hf-ssl evaluate CHECKPOINT [--task probe] [...]       evaluate a checkpoint's encoder (kNN / linear probe, ...)
    hf-ssl card RUN_DIR [--output PATH]                   (re)generate the model card of a run directory
    hf-ssl push RUN_DIR --hub_model_id ORG/NAME           write the card and upload the run to the Hub
    hf-ssl list [METHOD]                                  methods, their jobs, papers, settings and recipe configs

Run ``hf-ssl COMMAND --help`` for the arguments of one command. An output folder holds one run: training into a folder
that holds one is refused unless the command resumes it (``--resume_from_checkpoint true``: its last checkpoint) or
replaces it (``--overwrite``). Examples:

    hf-ssl pretrain                                                       # 4 minutes on CPU, embedded data
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --max_steps 2000 --output_dir runs/dino
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --push_to_hub --hub_model_id me/dino-cifar10
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --output_dir runs/dino --resume_from_checkpoint true
    hf-ssl pretrain recipes/configs/dino-vit-tiny-cifar10.yaml --output_dir runs/dino --overwrite  # replace that run
    hf-ssl evaluate runs/dino --dataset uoft-cs/cifar10 --compare_random_init
    hf-ssl card runs/dino --output model_cards/dino-vit-tiny-cifar10/README.md
    hf-ssl push runs/dino --hub_model_id me/dino-cifar10 --private

Pushing needs a token with write access: ``HF_TOKEN`` or ``hf auth login`` (preferred to ``--token``/``--hub_token``:
command lines end up in shell histories; hf_ssl never writes a token into a file).

Errors: a mistake of the user prints one line, ``hf-ssl COMMAND: error: <problem and fix>``, on stderr, and exits
with 2 for a command line that cannot run as given (unknown or malformed flags, contradicting flags, an output folder
that already holds a run: hf_ssl.training.errors.UsageError) or 1 for any other user error: ValueError (bad
settings, data that does not fit the method, a dataset that is not available), OSError (missing files, the Hub,
permissions, disk) and ImportError (an optional extra that is not installed). Every other exception is a bug and
keeps its traceback. ``hf-ssl --debug COMMAND ...`` or ``HF_SSL_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .jobs import JOB_REGISTRY, evaluate
from .jobs.rounds import run_rounds
from .jobs.runner import run
from .methods import METHOD_REGISTRY
from .publishing.hub import push_run_directory
from .publishing.model_card import write_model_card
from .semi import SEMI_METHOD_REGISTRY
from .training.errors import ArgumentParser, UsageError

RECIPE_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
#: Set to 1 to see the traceback of user errors (as ``hf-ssl --debug COMMAND``).
DEBUG_VARIABLE = "HF_SSL_DEBUG"
#: Exceptions reported on one line: the user's to fix (see the module docstring). Anything else is a bug.
USER_ERRORS = (ValueError, OSError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-ssl COMMAND ...`` and return its exit status: 0, 2 (usage error), 1 (other user error), 130
    (interrupted). User errors print one line on stderr unless ``--debug`` (before the command) or ``HF_SSL_DEBUG=1``
    asks for the traceback; then, like every other exception (a bug), they propagate."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes")
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    commands: dict[str, Callable[[list[str]], int | None]] = {
        "pretrain": _pretrain, "finetune": _finetune, "evaluate": evaluate.main, "card": _card, "push": _push,
        "list": _list,
    }
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in commands:
        print(f"hf-ssl: error: unknown command {argv[0]!r}; choose one of {', '.join(commands)} (`hf-ssl --help` "
              "describes them)", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:]) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"hf-ssl {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"hf-ssl {argv[0]}: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1


def one_line(error: BaseException) -> str:
    """The message of a user error on one line; the exception's type leads where the message alone would not say what
    went wrong (``FileNotFoundError: [Errno 2] ...``), and a hint at ``--debug`` closes all but usage errors."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or repr(error)
    if isinstance(error, UsageError):
        return message
    if not isinstance(error, ValueError):
        message = f"{type(error).__name__}: {message}"
    return f"{message} (traceback: hf-ssl --debug ... or {DEBUG_VARIABLE}=1)"


# --------------------------------------------------------------------------------------------------------------------
def _pretrain(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: hf-ssl pretrain [CONFIG.yaml] [--flag value ...]\n\n"
              "Pretrain with a recipe config (recipes/configs/<method>-<backbone>-<dataset>.yaml); flags after the file\n"
              "override it; without a file, flags override the embedded default (a short DINO run). The method picks\n"
              "the job and its flags: `hf-ssl pretrain --method simclr --help` lists SimCLR's. Every flag follows:\n")
    run(argv, prog="hf-ssl pretrain")  # `--help`: HfArgumentParser lists every flag of the job, method and trainer
    return 0


#: The method of ``hf-ssl finetune`` without a config file or ``--method``.
DEFAULT_FINETUNE_METHOD = "fixmatch"


def _finetune(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: hf-ssl finetune [CONFIG.yaml] [--flag value ...]\n\n"
              "Semi-supervised fine-tuning of a classifier with a recipe config (recipes/configs/<method>-<backbone>-\n"
              "<dataset>-<labels>.yaml); flags after the file override it; without a file, flags override\n"
              "the method's defaults (FixMatch unless --method says otherwise). `hf-ssl finetune --method\n"
              "fixmatch --help` lists the flags of a method and its job. Every flag follows:\n")
    if not (argv and argv[0].endswith((".yaml", ".yml"))) and "--method" not in argv \
            and not any(item.startswith("--method=") for item in argv):
        argv = ["--method", DEFAULT_FINETUNE_METHOD, *argv]  # without a config: a semi-supervised default
    run_rounds(argv, prog="hf-ssl finetune")  # one run, or Noisy Student's rounds when the method has them
    return 0


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
    parser = ArgumentParser(
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
    parser = ArgumentParser(
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
    parser = ArgumentParser(
        prog="hf-ssl list",
        description="Every method, self-supervised and semi-supervised: its class, job (the kind of data), paper, "
        "default settings (the flags of `hf-ssl pretrain|finetune --method NAME`), and its recipe configs.",
    )
    parser.add_argument("method", nargs="?", default=None, help="show one method only")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    known = sorted(METHOD_REGISTRY) + sorted(SEMI_METHOD_REGISTRY)
    if args.method is not None and args.method not in known:
        print(f"unknown method {args.method!r}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    configs = sorted(RECIPE_CONFIGS.glob("*.yaml")) if RECIPE_CONFIGS.is_dir() else []
    listing = {}
    methods = {**{name: (cls, cls.method_config_class, cls.pretraining_job) for name, cls in METHOD_REGISTRY.items()},
               **{name: (cls, cls.config_class, "semi_<modality>") for name, cls in SEMI_METHOD_REGISTRY.items()}}
    for name, (model_class, config_class, job) in sorted(methods.items()):
        if args.method is not None and name != args.method:
            continue
        defaults = config_class()
        listing[name] = {
            "class": f"{model_class.__module__}.{model_class.__name__}",
            "job": job,
            "default_encoder": JOB_REGISTRY[job].default_encoder if job in JOB_REGISTRY else JOB_REGISTRY[
                "semi_image"].default_encoder,
            "paper": model_class.paper,
            "defaults": {field.name: getattr(defaults, field.name) for field in dataclasses.fields(defaults)},
            "configs": [path.name for path in configs if path.name.split("-")[0] == name],
        }
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
        return 0
    for name, entry in listing.items():
        print(f"{name}: {entry['class']}  (job: {entry['job']}, default encoder: {entry['default_encoder']})")
        if entry["paper"]:
            print(f"    paper: {entry['paper']}")
        for key, value in entry["defaults"].items():
            print(f"    --{key} {value}")
        if entry["configs"]:
            print("    recipe configs: " + ", ".join(f"recipes/configs/{config}" for config in entry["configs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
