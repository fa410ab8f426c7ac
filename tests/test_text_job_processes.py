"""The text job on 2 gloo processes: every process tokenizes with one vocabulary, process 0's trained tokenizer
(training a WordPiece tokenizer is not deterministic, so each process training its own would give each its own
token ids for the same text)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import free_port

WORKER = Path(__file__).with_name("text_job_distributed_worker.py")


@pytest.mark.needs_data("Salesforce/wikitext")
def test_two_processes_share_the_trained_tokenizer(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(WORKER), str(tmp_path / "vocabulary"), str(tmp_path / "run")]
    completed = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"vocabulary.rank{r}.json").read_text()) for r in (0, 1))
    assert len(first) == 800 and first == second
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())["model"]["vocab"]
    assert saved == first  # the published tokenizer is the one both processes trained with
