"""Worker of the SimSiam / MAE multi-process checks, launched by tests/test_distributed_simsiam_mae.py (torchrun, gloo,
CPU); not a test module itself.

usage: [torchrun --nproc_per_node N] distributed_worker_simsiam_mae.py MODE OUT_FILE [OUTPUT_DIR]

MODE ``trainer``: two SSLTrainer steps of MAE on real images (single views and mask seeds per example, batches sharded
by accelerate); rank 0 saves the final state dict. MODE ``all``:

One forward/backward of SimSiam and of MAE (masks from per-example noise, and from per-example seeds) on this rank's
shard (1 / N) of a fixed global batch of 8 images, under DDP when N > 1. Rank 0 saves, per variant: ``loss`` (the
mean over processes of the per-process losses), ``grads`` (after DDP's averaging), ``rank0_loss`` / ``rank0_grads``
(rank 0's shard alone, no averaging across processes: what a run that forgot the cross-process mean would use) and,
for MAE, ``masks``, ``masked_counts`` (masked patches per process) and ``global_rng_loss``: the loss when each
process draws its masks from its own (identically seeded) global RNG instead of taking every example's own noise.
"""

import os
import sys

import torch
import torch.distributed as dist
from conftest import tiny_vit_config
from distributed_worker import GLOBAL_BATCH, gather_all

from hf_ssl import MAEForPreTraining, SimSiamForPreTraining

IMAGE_SIZE, PATCH_SIZE = 16, 4
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2


def tiny_simsiam() -> SimSiamForPreTraining:
    # BatchNorm in the projector and predictor: evaluation mode (set in model_step). BatchNorm statistics are per
    # process on CPU (SyncBatchNorm has no CPU kernel), so evaluation mode makes the heads the same function on every
    # shard; the check then isolates the loss's batch mean and DDP's gradient averaging, as in distributed_worker.py.
    return SimSiamForPreTraining.from_encoder_config(
        tiny_vit_config(IMAGE_SIZE, PATCH_SIZE), projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=8,
    )


def tiny_mae() -> MAEForPreTraining:
    # No BatchNorm anywhere (ViT encoder, ViTMAE decoder) and no dropout in the tiny config: training mode.
    return MAEForPreTraining.from_encoder_config(
        tiny_vit_config(IMAGE_SIZE, PATCH_SIZE), decoder_hidden_size=32, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=64,
    )


def global_batch() -> dict[str, torch.Tensor]:
    """The fixed global batch: two views per image for SimSiam, one image and its own masking noise (``mae``) or its
    own mask seed (``mae_seeded``, what SingleViewTransform emits in training) for MAE. Either belongs to the example,
    so an example gets the same mask whether it sits on rank 0, rank 1 or in the single process."""
    generator = torch.Generator().manual_seed(123)
    return {
        "global_crops": torch.randn(GLOBAL_BATCH, 2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "pixel_values": torch.randn(GLOBAL_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "noise": torch.rand(GLOBAL_BATCH, NUM_PATCHES, generator=generator),
        "mask_seed": torch.randint(2**62, (GLOBAL_BATCH,), generator=generator),
    }


#: The inputs of each checked variant.
INPUTS = {"simsiam": ("global_crops",), "mae": ("pixel_values", "noise"), "mae_seeded": ("pixel_values", "mask_seed")}


def mean_over_processes(value: torch.Tensor, world: int) -> torch.Tensor:
    value = value.detach().clone()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value


def step(method: str, inputs: dict[str, torch.Tensor], world: int, distributed: bool):
    """One forward/backward from the same initial weights; returns (output, model)."""
    torch.manual_seed(0)
    model = tiny_simsiam().eval() if method == "simsiam" else tiny_mae().train()
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if distributed and world > 1 else model
    output = wrapped(**inputs)
    output.loss.backward()
    return output, model


def grads_of(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def method_step(method: str, world: int, rank: int) -> dict:
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    batch = {name: value[shard] for name, value in global_batch().items()}
    inputs = {name: batch[name] for name in INPUTS[method]}
    output, model = step(method, inputs, world, distributed=True)
    result = {"loss": mean_over_processes(output.loss, world), "grads": grads_of(model)}
    local_output, local_model = step(method, inputs, world, distributed=False)
    result.update(rank0_loss=local_output.loss.detach().clone(), rank0_grads=grads_of(local_model))
    if method.startswith("mae"):
        result["masked_counts"] = torch.stack(gather_all(output.mask.sum().detach(), world))
        result["masks"] = torch.cat(gather_all(output.mask.detach(), world))
        # Without per-example noise every process draws its masks from its own global RNG, which the Trainer seeds
        # identically on every process: rank 1's examples get the masks rank 0's got, not those of one process.
        torch.manual_seed(1)
        with torch.no_grad():
            drawn = model(pixel_values=batch["pixel_values"])
        result["global_rng_loss"] = mean_over_processes(drawn.loss, world)
    return result


def mae_trainer_run(output_dir: str, per_device_batch: int) -> tuple[dict, int, int]:
    """Two optimizer steps of SSLTrainer on MAE; returns the final state dict, the world size and this rank."""
    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import SingleViewConfig, SingleViewTransform, apply_views

    images = load_image_dataset("embedded", "train").select(range(32))
    dataset = apply_views(images, SingleViewTransform(SingleViewConfig(global_crop_size=IMAGE_SIZE)))
    torch.manual_seed(0)
    args = SSLTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch, max_steps=2, learning_rate=1e-3,
        use_cpu=True, report_to="none", save_strategy="no", seed=3, disable_tqdm=True, logging_steps=1,
    )
    trainer = SSLTrainer(model=tiny_mae(), args=args, train_dataset=dataset)
    trainer.train()
    state = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    world, rank = trainer.args.world_size, trainer.args.process_index
    if world > 1:
        trainer.leave_process_group()  # no collective follows (rank 0 saves alone)
    return state, world, rank


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    if mode not in ("all", "trainer"):
        raise SystemExit(f"unknown mode {mode!r}; this worker runs 'all' or 'trainer'")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if mode == "trainer":  # the Trainer (accelerate) sets up the process group itself, and leaves it
        result, world, rank = mae_trainer_run(sys.argv[3], GLOBAL_BATCH // launched)
    else:
        if launched > 1:
            dist.init_process_group("gloo")
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        result = {method: method_step(method, world, rank) for method in INPUTS}
    if rank == 0:
        torch.save({"result": result, "world_size": world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
