"""Fine-tune a classifier semi-supervised with any hf_ssl method (FixMatch, Mean Teacher, Pi-model, pseudo-labelling).

    accelerate launch recipes/finetune.py recipes/configs/fixmatch-vit-tiny-cifar10-40.yaml [--any_argument value ...]

A few labelled examples per class and the rest of the train split as unlabelled data; the classifier starts from
``--encoder`` (an hf_ssl pretraining output, any checkpoint, or a preset at random init). The published classifier
(the method's EMA / teacher when it has one) is saved at the root of --output_dir with its processor and card:
plain ``transformers.AutoModelForImageClassification.from_pretrained(output_dir)`` loads it. See README.md.

A script of its own, beside recipes/pretrain.py, because its arguments (labels per class, the classifier's start, the
method's unsupervised weight ...) and its output (a classifier, not an encoder) are another job's; both run the same
runner (hf_ssl.jobs.runner), which picks the job from the method.
"""

import sys

from hf_ssl.cli import main

if __name__ == "__main__":
    # Through the CLI: a user error is one line naming the fix (HF_SSL_DEBUG=1 shows the traceback).
    sys.exit(main(["finetune", *sys.argv[1:]]))
