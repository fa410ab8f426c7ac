"""``hf-ssl``: the command-line entry point.

    hf-ssl pretrain [CONFIG.yaml] [--flag value ...]   pretrain (same arguments as recipes/pretrain.py);
                                                       no arguments: the embedded default DINO run
    hf-ssl evaluate CHECKPOINT --dataset SOURCE        kNN / linear probe of a checkpoint's encoder
    hf-ssl list                                        methods, their defaults, and the recipe configs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"pretrain": _pretrain, "evaluate": _evaluate, "list": _list}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}; choose one of {', '.join(commands)}", file=sys.stderr)
            return 2
        return 0
    return commands[argv[0]](argv[1:]) or 0


def _pretrain(argv: list[str]) -> int:
    from .pretraining import run

    run(argv)  # `--help` is answered by HfArgumentParser with every flag
    return 0


def _evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ssl evaluate", description="Probe the encoder of a checkpoint (loaded with transformers.AutoModel)."
    )
    parser.add_argument("checkpoint", help="folder or Hub id of a checkpoint (an hf_ssl run's output_dir)")
    parser.add_argument("--dataset", default="embedded", help="'embedded', a data folder, or a Hub dataset")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--probes", nargs="+", default=["knn", "linear"], choices=["knn", "linear"])
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--image_size", type=int, default=None, help="default: the encoder config's image_size")
    parser.add_argument("--max_train_examples", type=int, default=None)
    parser.add_argument("--compare_random_init", action="store_true", help="also probe random init and raw pixels")
    args = parser.parse_args(argv)

    from transformers import AutoModel

    from .data import load_image_dataset
    from .evaluation import compare_with_random_init, default_eval_transform, evaluate_checkpoint, format_comparison

    train = load_image_dataset(args.dataset, args.train_split)
    test = load_image_dataset(args.dataset, args.test_split)
    encoder = AutoModel.from_pretrained(args.checkpoint)
    size = args.image_size or getattr(encoder.config, "image_size", 224)
    transform = default_eval_transform(size, *_normalisation(args.checkpoint))
    common = dict(probes=tuple(args.probes), k=args.k, temperature=args.temperature, transform=transform,
                  max_train_examples=args.max_train_examples)
    if args.compare_random_init:
        print(format_comparison(compare_with_random_init(encoder, train, test, **common)))
    else:
        print(json.dumps(evaluate_checkpoint(encoder, train, test, **common), indent=2))
    return 0


def _normalisation(checkpoint: str) -> tuple[list[float], list[float]]:
    """The mean/std the run trained with (from hf_ssl_run.json), else ImageNet's."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    record = Path(checkpoint) / "hf_ssl_run.json"
    if record.is_file():
        views = json.loads(record.read_text()).get("views", {})
        return views.get("mean", IMAGENET_DEFAULT_MEAN), views.get("std", IMAGENET_DEFAULT_STD)
    return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)


def _list(argv: list[str]) -> int:
    from .methods import METHOD_REGISTRY

    for name, model_class in sorted(METHOD_REGISTRY.items()):
        config = model_class.method_config_class()
        print(f"{name}: {model_class.__name__}  ({model_class.__module__})")
        for field in dataclasses.fields(config):
            print(f"    --{field.name} {getattr(config, field.name)}")
    configs = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))
    if configs:
        print("recipe configs:")
        for path in configs:
            print(f"    {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
