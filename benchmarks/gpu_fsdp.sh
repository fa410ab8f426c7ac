#!/usr/bin/env bash
# Sharded training on GPUs, a few minutes: the checks of tests/test_fsdp.py on CUDA, then whole pretraining runs.
#
# 1. tests/test_fsdp.py with HF_SSL_TEST_DEVICE=cuda: FSDP2 prepared by `accelerate launch` from
#    recipes/accelerate_configs/fsdp2.yaml (nccl) against one unwrapped process, for DINO (EMA teacher, centre),
#    MoCo v2 (queue) and MoCo v3 (gathered negatives): loss, gathered gradients, the state after one step and one
#    momentum update, save_pretrained from the gathered state, exact resume of the sharded model.
#    With 2 or more GPUs: 2 sharded processes. With 1 GPU two NCCL processes cannot share it, so FSDP2 runs on one
#    process: a REDUCED check (wrapping, gathering, saving, resuming; not the cross-process sharding).
# 2. hf-ssl pretraining (DINO, embedded images, a few steps) launched with multi_gpu.yaml (DDP, the reference),
#    fsdp2.yaml and, where deepspeed is installed, deepspeed_zero2.yaml and deepspeed_zero3.yaml: each run's
#    published encoder must load with vanilla transformers and match the DDP run's.
#
#   bash benchmarks/gpu_fsdp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv
GPUS=$(nvidia-smi -L | wc -l)
PROCESSES=$(( GPUS >= 2 ? 2 : 1 ))
if [ "$PROCESSES" -eq 1 ]; then
    echo "one GPU: FSDP2 runs on a single process (reduced check, no cross-process sharding)"
fi
python -c "import torch, accelerate, transformers; print('torch', torch.__version__, 'accelerate', accelerate.__version__, 'transformers', transformers.__version__)"

HF_SSL_TEST_DEVICE=cuda python -m pytest tests/test_fsdp.py -q -p no:cacheprovider

RUNS=$(mktemp -d)
STEPS=${STEPS:-5}
CONFIGS=(multi_gpu fsdp2)
if python -c "import deepspeed" 2>/dev/null; then
    CONFIGS+=(deepspeed_zero2 deepspeed_zero3)
else
    echo "deepspeed is not installed: the ZeRO-2 / ZeRO-3 runs are skipped (pip install deepspeed to include them)"
fi
for config in "${CONFIGS[@]}"; do
    accelerate launch --config_file "recipes/accelerate_configs/$config.yaml" --num_processes "$PROCESSES" \
        --mixed_precision no recipes/pretrain.py recipes/configs/dino-vit-tiny-embedded.yaml \
        --output_dir "$RUNS/$config" --max_steps "$STEPS" --warmup_steps 1 --logging_steps 1 --save_strategy no \
        --per_device_train_batch_size $(( 128 / PROCESSES ))
done

python - "$RUNS" "${CONFIGS[@]}" <<'EOF'
import sys

import torch
from transformers import AutoModel

runs, configs = sys.argv[1], sys.argv[2:]
reference = AutoModel.from_pretrained(f"{runs}/multi_gpu").state_dict()
for config in configs[1:]:
    state = AutoModel.from_pretrained(f"{runs}/{config}").state_dict()  # vanilla transformers loads each run
    assert state.keys() == reference.keys(), config
    difference = max((state[key] - reference[key]).abs().max().item() for key in reference)
    print(f"{config}: published encoder vs DDP after the same steps, max |difference| = {difference:.2e}")
    assert difference < 1e-3, f"{config} drifted from the DDP run"
EOF
rm -rf "$RUNS"
