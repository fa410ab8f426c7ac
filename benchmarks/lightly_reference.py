#!/usr/bin/env python
"""lightly's SimCLR and DINO on the same encoder, data and budget as ours: the quality reference of the
vision table in benchmarks/README.md.

    python benchmarks/lightly_reference.py --method simclr --minutes 12 --steps 60 \
        --output_dir outputs/vision_budget/lightly-simclr

A plain PyTorch loop built from lightly's own pieces (lightly is a test extra of hf_ssl; it is used here as the
library under comparison, never by hf_ssl itself):

- SimCLR: ``SimCLRTransform`` (lightly's CIFAR-10 benchmark settings: 32 px, colour-jitter strength 0.5, no blur),
  ``SimCLRProjectionHead(192, 512, 128)``, ``NTXentLoss(temperature=0.5)``.
- DINO: ``DINOTransform`` (2 global 32 px + 4 local 16 px crops, lightly's defaults otherwise),
  ``DINOProjectionHead(192, 512, 64, 2048)``, ``DINOLoss`` (teacher temperature 0.04), teacher EMA 0.996 -> 1 with
  lightly's ``cosine_schedule`` and ``update_momentum``; the published encoder is the teacher.

The encoder is exactly the one our recipe builds (``hf_ssl.modules.backbones.encoder_config``: transformers ``ViTModel``, width
192, 6 layers, patch 4, 32 px) and its CLS token is the feature, as in our methods. Optimiser and schedule are ours:
AdamW (lr and weight decay of our recipe config for the method), linear warm-up over 10 % of ``--steps`` then cosine,
gradient clipping at 3.0, batch 128. Training stops after ``--steps`` or ``--minutes`` of training time, whichever
comes first; a step's time includes loading and augmenting its batch, as our ``--max_train_minutes`` counts it. The
encoder is saved with ``save_pretrained`` and probed with the protocol of ``benchmarks/vision_quality.py``
(``probe_encoder``); the record goes under ``"lightly"`` in ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_quality import ROOT, probe_encoder, update_results  # noqa: E402


def build_lightly_method(method: str, encoder):
    """(transform, modules to train, loss of (list of view batches, step, steps) -> scalar, published encoder)."""
    import copy

    from lightly.loss import DINOLoss, NTXentLoss
    from lightly.models.modules import DINOProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import DINOTransform, SimCLRTransform

    width = encoder.config.hidden_size

    def cls(pixel_values):
        return encoder(pixel_values=pixel_values, interpolate_pos_encoding=True).last_hidden_state[:, 0]

    if method == "simclr":
        transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
        head = SimCLRProjectionHead(width, 512, 128)
        criterion = NTXentLoss(temperature=0.5)

        def loss(views, step, steps):
            return criterion(head(cls(views[0])), head(cls(views[1])))

        return transform, torch.nn.ModuleList([encoder, head]), loss, encoder

    transform = DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=4)
    head = DINOProjectionHead(width, 512, 64, 2048)
    teacher_encoder, teacher_head = copy.deepcopy(encoder), DINOProjectionHead(width, 512, 64, 2048)
    teacher_head.load_state_dict(head.state_dict())  # weight_norm's parametrisation cannot be deep-copied
    deactivate_requires_grad(teacher_encoder)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=0)

    def teacher(pixel_values):
        return teacher_head(teacher_encoder(pixel_values=pixel_values).last_hidden_state[:, 0])

    def loss(views, step, steps):
        from lightly.utils.scheduler import cosine_schedule

        momentum = cosine_schedule(step, steps, 0.996, 1.0)
        update_momentum(encoder, teacher_encoder, m=momentum)
        update_momentum(head, teacher_head, m=momentum)
        with torch.no_grad():
            teacher_out = [teacher(view) for view in views[:2]]
        student_out = [head(cls(view)) for view in views]
        return criterion(teacher_out, student_out, epoch=0)

    return transform, torch.nn.ModuleList([encoder, head]), loss, teacher_encoder


def train(args) -> dict:
    from transformers import ViTModel, get_cosine_schedule_with_warmup

    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.modules.backbones import encoder_config

    config_file = ROOT / "recipes" / "configs" / f"{args.method}-vit-tiny-cifar10.yaml"
    recipe = yaml.safe_load(config_file.read_text())
    torch.manual_seed(args.seed)
    encoder = ViTModel(encoder_config("vit-tiny", 32, 4, {"num_hidden_layers": 6}), add_pooling_layer=False)
    transform, trained, loss_fn, published = build_lightly_method(args.method, encoder)
    images = load_image_dataset(args.dataset, "train")

    def collate(rows):
        views = [transform(row["image"].convert("RGB")) for row in rows]
        return [torch.stack(crops) for crops in zip(*views)]

    loader = torch.utils.data.DataLoader(images, batch_size=128, shuffle=True, drop_last=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    decay = [p for n, p in trained.named_parameters() if p.ndim > 1 and "position" not in n]
    no_decay = [p for n, p in trained.named_parameters() if not (p.ndim > 1 and "position" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe["learning_rate"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, args.steps // 10), args.steps)
    losses, step, elapsed = [], 0, 0.0
    trained.train()
    while step < args.steps and elapsed < 60 * args.minutes:
        started = time.perf_counter()  # a step's time includes loading and augmenting its batch, as in our budget
        for views in loader:
            loss = loss_fn(views, step, args.steps)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 3.0)
            optimizer.step()
            scheduler.step()
            step += 1
            elapsed += time.perf_counter() - started
            started = time.perf_counter()
            losses.append(loss.item())
            if step % 10 == 0:
                print(f"step {step} loss {sum(losses[-10:]) / 10:.4f} {elapsed / step:.2f} s/step", flush=True)
            if step >= args.steps or elapsed >= 60 * args.minutes or not math.isfinite(losses[-1]):
                break
    output_dir = ROOT / args.output_dir
    published.save_pretrained(output_dir)
    import lightly

    return {"library": f"lightly {lightly.__version__}", "steps": step, "training_seconds": round(elapsed, 1),
            "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
            "command": "python benchmarks/lightly_reference.py " + " ".join(sys.argv[1:]),
            "settings": {"recipe_optimiser_from": str(config_file.relative_to(ROOT)), "lr": recipe["learning_rate"],
                         "weight_decay": recipe["weight_decay"], "batch": 128, "planned_steps": args.steps}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("simclr", "dino"), required=True)
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget (step time)")
    parser.add_argument("--steps", type=int, required=True, help="length of the lr schedule (and at most as many steps)")
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--dataset", default="uoft-cs/cifar10", help="Hub id (a local copy through HF_SSL_DATA_DIR)")
    parser.add_argument("--output_dir", required=True, help="relative to the project root")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "vision_budget.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import AutoModel
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.evaluation.features import default_eval_transform

    entry = train(args)
    encoder = AutoModel.from_pretrained(ROOT / args.output_dir)
    transform = default_eval_transform(32, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)  # lightly's normalisation
    train_images = load_image_dataset(args.dataset, "train")
    test_images = load_image_dataset(args.dataset, "test")
    entry.update(probe_encoder(encoder, transform, train_images, test_images, args.bank, with_baselines=False)["pretrained"])
    update_results(Path(args.output), "lightly", args.method, entry)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
