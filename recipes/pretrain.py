"""Pretrain an encoder with any hf_ssl method.

    accelerate launch recipes/pretrain.py recipes/configs/dino-vit-tiny-cifar10.yaml [--any_argument value ...]

Flags after the config file override it. The final model is saved at the root of --output_dir; vanilla
``transformers.AutoModel.from_pretrained(output_dir)`` loads the published encoder. See README.md.
"""

import sys

from hf_ssl.cli import main

if __name__ == "__main__":
    # Through the CLI: a user error is one line naming the fix (HF_SSL_DEBUG=1 shows the traceback).
    sys.exit(main(["pretrain", *sys.argv[1:]]))
