#!/usr/bin/env bash
# Learning with few labels on one GPU, about 20 minutes: FixMatch through SemiSupervisedTrainer against the same step
# hand-written (benchmarks/semi_throughput.py), then CIFAR-10 with 40 labels, the METHODS (default: supervised-only vs
# FixMatch; any registered method, e.g. METHODS="supervised fixmatch uda mixmatch vat") from the SimCLR reference run,
# 3 seeds, MINUTES of training each, each method paired with supervised-only for its steps, keeping its EMA where
# it publishes one (benchmarks/semi_few_labels.py --step_controls), and SimCLRv2's four stages at 250 labels, MINUTES
# per stage and per Noisy Student round (benchmarks/semi_pipeline.py). Results go to
# benchmarks/results/*_gpu.json; record them in benchmarks/README.md with the card the run printed.
#
#   HF_SSL_DATA_DIR=<folder holding cifar10_jpg> bash benchmarks/gpu_semi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HF_SSL_DATA_DIR:?set HF_SSL_DATA_DIR to the folder holding the local CIFAR-10 copy (cifar10_jpg)}"
MINUTES=${MINUTES:-1}
METHODS=${METHODS:-supervised fixmatch}
nvidia-smi --query-gpu=name,memory.total --format=csv
python benchmarks/semi_throughput.py --device cuda --batch_size 64 --rounds 2 \
    --output benchmarks/results/semi_throughput_gpu.json
python benchmarks/semi_few_labels.py --task cifar10 --pretrain --labels 40 --methods $METHODS \
    --starts outputs/semi/simclr-vit-tiny-cifar10 --seeds 0 1 2 --minutes "$MINUTES" \
    --step_controls --output benchmarks/results/semi_cifar10_gpu.json
python benchmarks/semi_pipeline.py --labels 250 --minutes "$MINUTES" --output benchmarks/results/semi_pipeline_gpu.json
