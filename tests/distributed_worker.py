"""Worker launched by test_distributed.py with torchrun (gloo, CPU). Not a test module itself.

usage: torchrun --nproc_per_node N distributed_worker.py {model|trainer} OUT_FILE [OUTPUT_DIR]
"""

import sys

import torch
import torch.distributed as dist

from conftest import tiny_dino

GLOBAL_BATCH = 8


def fixed_crops():
    generator = torch.Generator().manual_seed(123)
    return (
        torch.randn(GLOBAL_BATCH, 2, 3, 16, 16, generator=generator),
        torch.randn(GLOBAL_BATCH, 3, 3, 8, 8, generator=generator),
    )


def model_step(world: int, rank: int):
    """One forward/backward of DINO on this rank's shard of a fixed global batch (DDP when world > 1)."""
    torch.manual_seed(0)
    model = tiny_dino()
    global_crops, local_crops = fixed_crops()
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    output = wrapped(global_crops=global_crops[shard], local_crops=local_crops[shard])
    output.loss.backward()
    loss = output.loss.detach().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss, "grads": grads, "center": model.loss_fn.center.clone()}


def trainer_run(output_dir: str, per_device_batch: int):
    """Two optimizer steps of SSLTrainer on real images; returns the final state dict."""
    from hf_ssl.data import load_image_dataset
    from hf_ssl.trainer import SSLTrainer, SSLTrainingArguments
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


def main():
    mode, out_file = sys.argv[1], sys.argv[2]
    distributed = "WORLD_SIZE" in __import__("os").environ
    if distributed and mode == "model":
        dist.init_process_group("gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if mode == "model":
        result = model_step(world, rank)
    else:
        result = trainer_run(sys.argv[3], GLOBAL_BATCH // int(__import__("os").environ.get("WORLD_SIZE", 1)))
        world = dist.get_world_size() if dist.is_initialized() else 1
    result_world = {"world_size": world}
    if rank == 0:
        torch.save({"result": result, **result_world}, out_file)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
