#!/usr/bin/env bash
# The reference model card of each CIFAR-10 vision method, with every probe: the method's recipe at its budget of the
# README's results table (STEPS_<method> steps of the config's batch, at most 15 minutes of training), kNN and linear
# probe against random init and raw pixels (benchmarks/vision_quality.py), few-shot episodes and OOD detection
# against random init (hf-ssl evaluate --probes few_shot ood --update_card, the protocol of
# benchmarks/few_shot_ood.py), then the card written to model_cards/<method>-vit-tiny-cifar10/ from that run.
#
#   HF_SSL_DATA_DIR=<folder holding cifar10_jpg, fashion_mnist, emoji_captions> \
#       bash benchmarks/reference_cards.sh simclr dino
#
# About 16-22 minutes per method on one CPU thread (OMP_NUM_THREADS=1). Runs go to outputs/reference/, their probes
# to benchmarks/results/reference_<method>.json. MAE's card comes from benchmarks/mae_quality.py (it adds the
# fine-tune).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HF_SSL_DATA_DIR:?set HF_SSL_DATA_DIR to the folder holding the local copies (cifar10_jpg, fashion_mnist, emoji_captions)}"
declare -A STEPS=([simclr]=520 [dino]=430 [byol]=410 [simsiam]=550 [moco_v2]=920 [moco_v3]=450 [rotation]=500
                  [relative_patch]=500 [jigsaw]=500 [colourisation]=1800 [context_encoder]=1800 [deepcluster]=1800
                  [instance_discrimination]=1800)
for method in "$@"; do
    steps=${STEPS[$method]:?"no reference budget for $method; one of: ${!STEPS[*]}"}
    quality=(python benchmarks/vision_quality.py --methods "$method" --steps "$steps" --minutes 15
             --work_dir outputs/reference --output "benchmarks/results/reference_$method.json")
    "${quality[@]}"
    hf-ssl evaluate "outputs/reference/$method-vit-tiny" --dataset uoft-cs/cifar10 --probes few_shot ood \
        --few_shot_episodes 600 --ood_datasets zalando-datasets/fashion_mnist emoji_captions --max_ood_examples 1000 \
        --max_train_examples 3000 --max_test_examples 3000 --ood_knn_k 3 --compare_random_init --update_card
    "${quality[@]}" --cards_only
done
