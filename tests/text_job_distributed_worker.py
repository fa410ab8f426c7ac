"""Worker of the 2-process text-job check (launched by tests/test_text_job_processes.py with torchrun, gloo, CPU; not a
test module).

usage: torchrun --nproc_per_node N text_job_distributed_worker.py OUT_PREFIX OUTPUT_DIR

One step of the masked-LM job on a WikiText slice, its WordPiece tokenizer trained by the job; every process writes
the vocabulary it trained with to ``OUT_PREFIX.rank<R>.json``.
"""

import json
import os
import sys

from transformers import TrainerCallback

from hf_ssl.jobs.runner import run

TINY_ENCODER = json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                           "intermediate_size": 64})


class SaveVocabulary(TrainerCallback):
    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs):
        with open(self.path, "w") as handle:
            json.dump(processing_class.get_vocab(), handle)


def main():
    out_prefix, output_dir = sys.argv[1], sys.argv[2]
    rank = int(os.environ.get("RANK", "0"))
    run([
        "--method", "mlm", "--encoder", "bert-mini", "--encoder_config_overrides", TINY_ENCODER,
        "--dataset", "Salesforce/wikitext", "--dataset_config", "wikitext-2-raw-v1", "--max_train_documents", "6",
        "--max_seq_length", "64", "--tokenizer_vocab_size", "800", "--final_comparison", "false",
        "--output_dir", output_dir, "--max_steps", "1", "--per_device_train_batch_size", "2",
        "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none", "--use_cpu", "true",
        "--disable_tqdm", "true", "--ddp_backend", "gloo",
    ], callbacks=[SaveVocabulary(f"{out_prefix}.rank{rank}.json")])


if __name__ == "__main__":
    main()
