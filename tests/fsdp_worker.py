"""Worker launched by tests/test_fsdp.py (torchrun on CPU, accelerate launch on GPUs). Not a test module itself.

usage: torchrun --nproc_per_node 1 fsdp_worker.py OUT_DIR reference
       torchrun --nproc_per_node N fsdp_worker.py OUT_DIR sharded                          (CPU, gloo)
       accelerate launch --config_file recipes/accelerate_configs/fsdp2.yaml --mixed_precision no \
           --num_processes N fsdp_worker.py OUT_DIR sharded                                (GPU, nccl)

``reference``: one process trains the models unwrapped on the whole batch. ``sharded``: each model is sharded with
FSDP2 as ``accelerate launch --config_file recipes/accelerate_configs/fsdp2.yaml`` shards it (accelerate's
``fsdp2_prepare_model`` with the plugin that config describes) and each rank trains on its slice of the same batch.
``HF_SSL_TEST_DEVICE=cuda`` runs on the GPUs (one per process).

For DINO (EMA teacher, centre), MoCo v2 (queue) and MoCo v3 (gathered negatives, EMA teacher) the worker records
the loss, the full (gathered) gradients, the full state after one optimizer step and one momentum update, and saves
the model with ``save_pretrained`` from the gathered state dict (what ``Trainer.save_model`` does under FSDP).
Sharded runs also check that SSLTrainer's checkpoint loading restores that folder into a fresh sharded model, and
exact resume: a fresh sharded model loaded from the gathered model and optimizer state takes the next step bit for
bit like the run that never stopped.
"""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from conftest import tiny_dino, tiny_vit_config
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from hf_ssl import MoCoV2ForPreTraining, MoCoV3ForPreTraining
from hf_ssl.methods.base import TrainingProgress
from hf_ssl.training.trainer import SSLTrainer

DEVICE = torch.device(os.environ.get("HF_SSL_TEST_DEVICE", "cpu"))
FSDP_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs" / "fsdp2.yaml"
GLOBAL_BATCH = 8
HEAD = dict(projection_hidden_dim=32, projection_dim=16)
PROGRESS = (TrainingProgress(0, 10, 10, GLOBAL_BATCH), TrainingProgress(1, 10, 10, GLOBAL_BATCH))

# Each method at a tiny size and whether it runs in training mode. MoCo v3's heads have BatchNorm, whose statistics
# are per process: evaluation mode makes them the same function on every shard (as in distributed_worker.py).
MODELS = {
    "dino": (lambda: tiny_dino(momentum_teacher=0.9), True),
    "moco_v2": (lambda: MoCoV2ForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, queue_size=48), True),
    "moco_v3": (
        lambda: MoCoV3ForPreTraining.from_encoder_config(tiny_vit_config(), **HEAD, prediction_hidden_dim=32,
                                                         momentum_teacher=0.9),
        False,
    ),
}


def launch_environment(config: Path) -> dict[str, str]:
    """The ``ACCELERATE_*`` and ``FSDP_*`` variables that ``accelerate launch --config_file config`` gives its
    processes, computed by accelerate's own launcher code (the plugins read their settings from them)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mixed_precision_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        environment = prepare_deepspeed_cmd_env(args)[1]
    else:
        environment = prepare_multi_gpu_env(args)
    return {key: value for key, value in environment.items() if key.startswith(("ACCELERATE_", "FSDP_"))}


def fsdp_accelerator() -> Accelerator:
    """The Accelerator of a run launched with fsdp2.yaml. On CPU, accelerate picks FSDP only on accelerators (it falls
    back to DDP), so the state is set by hand; everything after that is accelerate's own FSDP2 code."""
    if DEVICE.type != "cpu":
        return Accelerator()
    accelerator = Accelerator(cpu=True)
    accelerator.state.distributed_type = DistributedType.FSDP
    # The FSDP settings of the shipped config; mixed precision stays off (bf16 on CPU would blur the comparison).
    os.environ.update({k: v for k, v in launch_environment(FSDP_CONFIG).items() if k.startswith("FSDP_")})
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    return accelerator


def batch(method: str, step: int, world: int, rank: int) -> dict[str, torch.Tensor]:
    """This rank's slice of the fixed global batch of ``step``."""
    generator = torch.Generator().manual_seed(123 + step)
    crops = {"global_crops": torch.randn(GLOBAL_BATCH, 2, 3, 16, 16, generator=generator)}
    if method == "dino":
        crops["local_crops"] = torch.randn(GLOBAL_BATCH, 3, 3, 8, 8, generator=generator)
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    return {name: tensor[shard].to(DEVICE) for name, tensor in crops.items()}


def full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu().clone()


def build(method: str, seed: int, accelerator: Accelerator | None):
    torch.manual_seed(seed)
    make, training = MODELS[method]
    model = make().train(training).to(DEVICE)
    if accelerator is not None:
        model = fsdp2_prepare_model(accelerator, model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    return model, optimizer


def train_step(model, optimizer, method: str, step: int, world: int, rank: int) -> torch.Tensor:
    """One optimizer step and the method's momentum update; returns the loss averaged over the ranks."""
    model.set_progress(PROGRESS[step])
    optimizer.zero_grad()
    output = model(**batch(method, step, world, rank))
    output.loss.backward()
    optimizer.step()
    model.after_optimizer_step(PROGRESS[step])
    loss = output.loss.detach().cpu().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    return loss


def full_state(model) -> dict[str, torch.Tensor]:
    """The whole model's state, gathered on every rank."""
    return {key: value.cpu().clone() for key, value in get_model_state_dict(model, options=FULL).items()}


FULL = StateDictOptions(full_state_dict=True)


def run_method(method: str, world: int, rank: int, accelerator: Accelerator | None, folder: Path) -> dict:
    model, optimizer = build(method, 0, accelerator)
    parameter_types = sorted({type(p).__name__ for p in model.parameters()})
    loss = train_step(model, optimizer, method, 0, world, rank)
    grads = {name: full(p.grad) for name, p in model.named_parameters() if p.grad is not None}
    after_step = full_state(model)
    # What Trainer.save_model does under FSDP with FULL_STATE_DICT: gather, then save_pretrained on the main process.
    saved_state = accelerator.get_state_dict(model) if accelerator is not None else None
    if rank == 0:
        model.save_pretrained(folder, state_dict=saved_state)
    dist.barrier()
    result = {"loss": loss, "grads": grads, "state": after_step, "parameter_types": parameter_types}
    if accelerator is not None:
        # Trainer(resume_from_checkpoint=...) under FSDP: SSLTrainer's loading into the prepared (sharded) model.
        from_checkpoint, _ = build(method, 1, accelerator)
        SSLTrainer._load_from_checkpoint(SimpleNamespace(accelerator=accelerator, model=from_checkpoint), str(folder))
        result["from_checkpoint"] = full_state(from_checkpoint)
    if accelerator is not None:
        optimizer_state = get_optimizer_state_dict(model, optimizer, options=FULL)
        train_step(model, optimizer, method, 1, world, rank)
        resumed, resumed_optimizer = build(method, 1, accelerator)  # other initial weights: all must come from the load
        set_model_state_dict(resumed, dict(after_step), options=FULL)  # (it shards the dict's tensors in place)
        set_optimizer_state_dict(resumed, resumed_optimizer, optimizer_state, options=FULL)
        train_step(resumed, resumed_optimizer, method, 1, world, rank)
        result["continued"], result["resumed"] = full_state(model), full_state(resumed)
    return result


def main():
    out_dir, mode = Path(sys.argv[1]), sys.argv[2]
    if DEVICE.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 both ways
    accelerator = fsdp_accelerator() if mode == "sharded" else None
    if not dist.is_initialized():  # the reference; and torchrun's sharded runs on CPU before the Accelerator
        dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    if DEVICE.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    results = {method: run_method(method, world, rank, accelerator, out_dir / f"{method}-{mode}") for method in MODELS}
    if rank == 0:
        torch.save({"results": results, "world_size": world}, out_dir / f"{mode}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
