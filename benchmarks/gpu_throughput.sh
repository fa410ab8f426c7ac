#!/usr/bin/env bash
# Training throughput and MFU on one GPU, one method per job, through SSLTrainer with bf16 and torch.compile:
#   image         DINO   (recipes/configs/dino-vit-tiny-cifar10.yaml: 2 x 16 px global crops)      -> images/s
#   masked_image  MAE    (recipes/configs/mae-vit-tiny-cifar10.yaml: 32 px, mask ratio 0.75)       -> images/s
#   text          MLM    (recipes/configs/mlm-bert-mini-wikitext.yaml's BERT-mini, 128 tokens)     -> tokens/s
#   audio         wav2vec 2.0 (recipes/configs/wav2vec2-tiny-fsdd.yaml, 0.5 s crops at 16 kHz)    -> samples/s
#
#   bash benchmarks/gpu_throughput.sh                        # about 5 minutes on one H100, compile included
#   BATCH_SCALE=4 STEPS=40 bash benchmarks/gpu_throughput.sh # 4x the recipes' batch sizes
#   DEVICE=cpu COMPILE=false BF16=false STEPS=2 WARMUP=1 bash benchmarks/gpu_throughput.sh   # smoke test, no GPU
#
# Each job: the recipe's model (its own settings, built by the recipe's code), the recipe's per-device batch times
# BATCH_SCALE, inputs of the recipe's shapes pre-built on the device (the data pipeline is measured apart, by
# benchmarks/loader_throughput.py), SSLTrainer with `--bf16 --torch_compile` (TrainingArguments), WARMUP steps dropped
# (compilation), then STEPS timed (median step). FLOPs per step: torch.utils.flop_counter on one eager forward +
# backward (matmuls, convolutions, attention; the optimizer is left out). MFU = FLOPs per step / step time / the
# device's dense bf16 peak (H100 / H200 SXM: 989 TFLOP/s, A100: 312; set PEAK_TFLOPS for another device).
# Prints one line per job and writes benchmarks/results/gpu_throughput.json (override with OUTPUT).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEVICE="${DEVICE:-cuda}" COMPILE="${COMPILE:-true}" BF16="${BF16:-true}" STEPS="${STEPS:-20}"
export WARMUP="${WARMUP:-5}" BATCH_SCALE="${BATCH_SCALE:-1}" PEAK_TFLOPS="${PEAK_TFLOPS:-}"
export OUTPUT="${OUTPUT:-benchmarks/results/gpu_throughput.json}" JOBS="${JOBS:-image masked_image text audio}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
python - <<'PY'
import datetime, json, os, statistics, tempfile, time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import TrainerCallback

from hf_ssl.methods import METHOD_REGISTRY
from hf_ssl.modules.audio_encoder import audio_encoder_config, seconds_to_samples
from hf_ssl.modules.backbones import encoder_config
from hf_ssl.modules.text_encoder import text_preset_config
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.trainer import SSLTrainer

env = os.environ
device, steps, warmup, scale = env["DEVICE"], int(env["STEPS"]), int(env["WARMUP"]), int(env["BATCH_SCALE"])
compile_, bf16 = env["COMPILE"] == "true", env["BF16"] == "true"
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def peak_flops():
    if env["PEAK_TFLOPS"]:
        return float(env["PEAK_TFLOPS"]) * 1e12
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((value for key, value in PEAKS.items() if key in name), None)


def image_job(generator):
    model = METHOD_REGISTRY["dino"].from_encoder_config(
        encoder_config("vit-tiny", 32, 4, {"num_hidden_layers": 6}), out_dim=1024, hidden_dim=512, bottleneck_dim=128,
        use_batch_norm_in_head=True, momentum_teacher=0.95, momentum_teacher_end=0.99, freeze_last_layer_epochs=0)
    batch = 128 * scale
    return model, batch, "images", batch, lambda: {"global_crops": torch.randn(batch, 2, 3, 16, 16, generator=generator)}


def masked_image_job(generator):
    model = METHOD_REGISTRY["mae"].from_encoder_config(
        encoder_config("vit-tiny", 32, 4, {"num_hidden_layers": 6}), mask_ratio=0.75, decoder_hidden_size=128,
        decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=512, norm_pix_loss=True)
    batch = 128 * scale
    return model, batch, "images", batch, lambda: {"pixel_values": torch.randn(batch, 3, 32, 32, generator=generator)}


def text_job(generator):
    length, vocab = 128, 8192
    model = METHOD_REGISTRY["mlm"].from_encoder_config(text_preset_config("bert-mini", vocab, length, {}))
    batch = 64 * scale

    def fields():
        input_ids = torch.randint(5, vocab, (batch, length), generator=generator)
        chosen = torch.rand(batch, length, generator=generator) < 0.15
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "labels": torch.where(chosen, input_ids, torch.full_like(input_ids, -100))}

    return model, batch, "tokens", batch * length, fields


def audio_job(generator):
    overrides = {"mask_time_prob": 0.4, "mask_time_length": 2, "num_negatives": 10, "num_codevectors_per_group": 16,
                 "contrastive_logits_temperature": 0.2, "diversity_loss_weight": 0.2}
    model = METHOD_REGISTRY["wav2vec2"].from_encoder_config(audio_encoder_config("wav2vec2-tiny", overrides),
                                                            sampling_rate=16000)
    batch, samples = 16 * scale, seconds_to_samples(0.5, 16000)
    return model, batch, "samples", batch * samples, lambda: {"input_values": torch.randn(batch, samples,
                                                                                         generator=generator)}


class Rows(torch.utils.data.Dataset):
    def __init__(self, fields):
        self.fields = fields

    def __len__(self):
        return len(next(iter(self.fields.values())))

    def __getitem__(self, index):
        return {key: value[index] for key, value in self.fields.items()}


def step_flops(model, fields):
    inputs = {key: value.to(device) for key, value in fields.items()}
    with FlopCounterMode(display=False) as counter, torch.autocast(device, torch.bfloat16, enabled=bf16):
        model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


results = {}
for job in env["JOBS"].split():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model, batch, unit, units_per_step, make_fields = globals()[f"{job}_job"](generator)
    fields = make_fields()
    flops = step_flops(model.to(device).train(), fields)
    stamps = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as workdir:
        args = SSLTrainingArguments(
            output_dir=workdir, per_device_train_batch_size=batch, max_steps=warmup + steps + 1, learning_rate=1e-4,
            lr_scheduler_type="constant", save_strategy="no", report_to="none", disable_tqdm=True,
            logging_steps=10**6, bf16=bf16, torch_compile=compile_, use_cpu=device == "cpu",
            dataloader_pin_memory=device == "cuda", seed=0)
        # The same batch again and again: the data pipeline is measured apart (benchmarks/loader_throughput.py).
        dataset = Rows({key: value.repeat(warmup + steps + 1, *([1] * (value.dim() - 1)))
                        for key, value in fields.items()})
        trainer = SSLTrainer(model=model, args=args, train_dataset=dataset, callbacks=[StepTimer()])
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    step = statistics.median([b - a for a, b in zip(stamps, stamps[1:])][warmup:])
    peak = peak_flops()
    results[job] = {
        "method": type(model).__name__, "batch": batch, f"{unit}_per_second": round(units_per_step / step, 1),
        "median_step_seconds": round(step, 5), "flops_per_step": flops,
        "achieved_tflops": round(flops / step / 1e12, 2), "mfu": round(flops / step / peak, 4) if peak else None,
        "run_seconds_with_compile": round(total, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
    }
    mfu = f"{100 * results[job]['mfu']:.1f} %" if peak else "n/a (set PEAK_TFLOPS)"
    print(f"{job:13s} {results[job]['method']:28s} batch {batch:5d}  {units_per_step / step:12.1f} {unit}/s  "
          f"{results[job]['achieved_tflops']:8.2f} TFLOP/s  MFU {mfu}", flush=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()

record = {
    "command": "bash benchmarks/gpu_throughput.sh",
    "date": datetime.date.today().isoformat(),
    "device": torch.cuda.get_device_name() if device == "cuda" else device,
    "settings": {"bf16": bf16, "torch_compile": compile_, "steps": steps, "warmup": warmup,
                 "batch_scale": scale, "torch": torch.__version__},
    "jobs": results,
}
os.makedirs(os.path.dirname(env["OUTPUT"]), exist_ok=True)
with open(env["OUTPUT"], "w") as file:
    json.dump(record, file, indent=2)
print(f"written to {env['OUTPUT']}")
PY
