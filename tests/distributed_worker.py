"""Worker launched by the 2-process tests with torchrun (gloo, CPU). Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker.py MODE OUT_FILE [OUTPUT_DIR]

MODE is a method (``dino``, ``simclr``, ``byol``, ``byol_direct``, ``moco_v2``, ``moco_v3``): one forward/backward of
that method on this rank's shard of a fixed global batch; ``trainer``: two SSLTrainer steps of DINO on real images;
or ``semi``: two SemiSupervisedTrainer steps of FixMatch (distribution alignment and class-wise thresholds on) and of
Mean Teacher on real images, both streams sharded; ``exit``: the ``trainer`` run in a script that never leaves the
process group itself, recording at exit whether the group was still up (``OUT_FILE.rank<R>``).
"""

import atexit
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import TinyImageViews, tiny_classifier, tiny_dino, tiny_vit_config

from hf_ssl import (
    BYOLForPreTraining,
    MoCoV2ForPreTraining,
    MoCoV3ForPreTraining,
    SimCLRForPreTraining,
)
from hf_ssl.methods.moco_v2 import shuffled_forward

GLOBAL_BATCH = 8
HEAD = dict(projection_hidden_dim=32, projection_dim=16)

# Each method at a tiny size, and the mode it is checked in. Heads with BatchNorm are checked in evaluation mode:
# BatchNorm statistics are per process on CPU (SyncBatchNorm has no CPU kernel), so evaluation mode makes the heads
# the same function on every shard and the check isolates the loss's cross-process parts and DDP's averaging.
MODELS = {
    "dino": (lambda: tiny_dino(), True),
    "simclr": (lambda: SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, temperature=0.5), False),
    "byol": (lambda: BYOLForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, prediction_hidden_dim=32), False),
    # Heads in evaluation mode as above, the DirectPred predictor in training mode (model_step), so it updates.
    "byol_direct": (
        lambda: BYOLForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, predictor_type="direct"), False,
    ),
    # No BatchNorm anywhere (ViT + MoCo v2's MLP head): training mode, so the forward enqueues.
    "moco_v2": (lambda: MoCoV2ForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, queue_size=48), True),
    "moco_v3": (
        lambda: MoCoV3ForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, prediction_hidden_dim=32),
        False,
    ),
}


def fixed_crops(method: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    crops = {"global_crops": torch.randn(GLOBAL_BATCH, 2, 3, 16, 16, generator=generator)}
    if method == "dino":
        crops["local_crops"] = torch.randn(GLOBAL_BATCH, 3, 3, 8, 8, generator=generator)
    return crops


def model_step(method: str, world: int, rank: int) -> dict:
    """One forward/backward on this rank's shard of a fixed global batch (DDP when world > 1)."""
    torch.manual_seed(0)
    build, training = MODELS[method]
    model = build().train(training)
    if method == "byol_direct":
        model.predictor.train()
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    output = wrapped(**{name: crops[shard] for name, crops in fixed_crops(method).items()})
    output.loss.backward()
    loss = output.loss.detach().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    result = {"loss": loss, "grads": grads}
    if method == "byol_direct":
        result["predictor_weight"] = model.predictor.weight.clone()
    if method == "dino":
        result["center"] = model.loss_fn.center.clone()
    if method == "moco_v2":
        result["queue"] = model.loss_fn.queue.clone()
        result["queue_ptr"] = model.loss_fn.queue_ptr.clone()
        result["keys_per_rank"] = gather_all(output.keys.detach(), world)  # to check the queue's rank order
        result["shuffle"] = shuffle_check(world, rank)
    return result


def gather_all(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    if world == 1:
        return [tensor]
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor)
    return gathered


def shuffle_check(world: int, rank: int) -> dict:
    """Shuffled BN's gather-permute-scatter: row-wise functions are unchanged; rows are computed on other ranks."""
    torch.manual_seed(0)
    inputs = torch.arange(8.0).reshape(4, 2) + 100 * rank
    doubled = shuffled_forward(lambda x: 2 * x, inputs)
    computed_on = shuffled_forward(lambda x: torch.full((x.shape[0], 1), float(rank)), inputs)[:, 0]
    return {"per_rank": gather_all(torch.cat([inputs.flatten(), doubled.flatten(), computed_on]), world)}


def trainer_run(output_dir: str, per_device_batch: int) -> dict:
    """Two optimizer steps of SSLTrainer on real images; returns the final state dict."""
    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

    images = load_image_dataset("embedded", "train").select(range(32))
    views = MultiCropConfig(global_crop_size=16, local_crop_size=8, num_local_crops=2)
    dataset = apply_views(images, MultiCropTransform(views))
    torch.manual_seed(0)
    args = SSLTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch, max_steps=2, learning_rate=1e-3,
        use_cpu=True, report_to="none", save_strategy="no", seed=3, disable_tqdm=True, logging_steps=1,
    )
    trainer = SSLTrainer(model=tiny_dino(momentum_teacher=0.9), args=args, train_dataset=dataset)
    trainer.train()
    return {key: value.clone() for key, value in trainer.model.state_dict().items()}


def semi_run(output_dir: str, per_device_batch: int) -> dict:
    """Two optimizer steps of FixMatch and of Mean Teacher; returns each run's classifier and method state."""
    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.semi import FixMatch, MeanTeacher
    from hf_ssl.training import SemiSupervisedTrainer, SSLTrainingArguments

    train = load_image_dataset("embedded", "train")
    labelled, unlabelled = train.select(range(40)), train.select(range(1000, 1064))
    methods = {
        "fixmatch": lambda: FixMatch(unlabelled_batch_ratio=2, threshold=0.2, distribution_alignment=True,
                                     classwise_thresholds=True),
        "mean_teacher": lambda: MeanTeacher(unlabelled_batch_ratio=2, ema_decay=0.9, rampup_fraction=0.0),
    }
    result = {}
    for name, method in methods.items():
        args = SSLTrainingArguments(
            output_dir=f"{output_dir}/{name}", per_device_train_batch_size=per_device_batch, max_steps=2,
            learning_rate=1e-2, use_cpu=True, report_to="none", save_strategy="no", seed=3, disable_tqdm=True,
            logging_steps=1,
        )
        trainer = SemiSupervisedTrainer(model=tiny_classifier(), args=args, method=method(), train_dataset=labelled,
                                        unlabelled_dataset=unlabelled, views=TinyImageViews())
        trainer.train()
        states = {**trainer.model.state_dict(), **{f"method.{k}": v for k, v in trainer.method.state_dict().items()}}
        result.update({f"{name}.{key}": value.clone() for key, value in states.items()})
    return result


def record_group_at_exit(out_file: str) -> None:
    """Registered before any trainer exists: ``atexit`` runs its handlers last in, first out, so this one runs after
    the trainer's and writes whether the process group was still initialised then."""
    rank = os.environ.get("RANK", "0")
    atexit.register(lambda: Path(f"{out_file}.rank{rank}").write_text(str(dist.is_initialized())))


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    launched = int(os.environ.get("WORLD_SIZE", 1))
    trainer_modes = {"trainer": trainer_run, "semi": semi_run, "exit": trainer_run}
    if mode == "exit":
        record_group_at_exit(out_file)
    if mode in trainer_modes:  # the Trainer (accelerate) sets up the process group itself
        result = trainer_modes[mode](sys.argv[3], GLOBAL_BATCH // launched)
    elif launched > 1:
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if mode not in trainer_modes:
        result = model_step(mode, world, rank)
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized() and mode != "exit":  # "exit" leaves it to the trainer's exit handler
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
