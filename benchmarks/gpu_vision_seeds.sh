#!/usr/bin/env bash
# Every vision row of the README's results table at 3 seeds on one GPU: each method's CIFAR-10 recipe for STEPS steps
# (default 500, the contrastive family's CPU budget) at seeds 0, 1 and 2, then kNN and linear probe of each run's
# published encoder (benchmarks/vision_quality.py --seeds; mean, min / max and standard deviation per method), and
# MAE's budget curve (benchmarks/mae_quality.py: pretraining to MAE_STEPS with a checkpoint every MAE_STEPS / 8, then
# the same fine-tune of every checkpoint against random init).
#
#   HF_SSL_DATA_DIR=<folder holding cifar10_jpg> bash benchmarks/gpu_vision_seeds.sh
#   METHODS="simclr dino" STEPS=200 bash benchmarks/gpu_vision_seeds.sh     # a subset, shorter
#
# Results: benchmarks/results/vision_quality_seeds_gpu.json and mae_mae-vit-tiny-cifar10-gpu.json; copy the means
# and spreads into benchmarks/README.md and the README's results table with the device named.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HF_SSL_DATA_DIR:?set HF_SSL_DATA_DIR to the folder holding the local CIFAR-10 copy (cifar10_jpg)}"
STEPS=${STEPS:-500}
MAE_STEPS=${MAE_STEPS:-4000}
METHODS=${METHODS:-dino simclr byol simsiam moco_v2 moco_v3 rotation jigsaw relative_patch colourisation context_encoder deepcluster instance_discrimination}
nvidia-smi --query-gpu=name,memory.total --format=csv
python benchmarks/vision_quality.py --methods $METHODS --steps "$STEPS" --seeds 0 1 2 \
    --work_dir outputs/vision_quality_seeds_gpu --output benchmarks/results/vision_quality_seeds_gpu.json
python benchmarks/mae_quality.py pretrain recipes/configs/mae-vit-tiny-cifar10.yaml \
    --output_dir outputs/mae-vit-tiny-cifar10-gpu --max_steps "$MAE_STEPS" --warmup_steps $((MAE_STEPS / 20)) \
    --save_steps $((MAE_STEPS / 8)) --save_total_limit 8 --final_comparison false --disable_tqdm true
python benchmarks/mae_quality.py curve outputs/mae-vit-tiny-cifar10-gpu --finetune_steps 1000 \
    --finetune_train_examples 50000 --finetune_eval_examples 10000 --finetune_batch_size 128
