"""Two machines: two ``accelerate launch --num_machines 2 --machine_rank {0,1}`` commands (one process each, gloo on
CPU, both on this host) form one group of two and reproduce one process with the doubled batch, in loss and gradients,
for image (DINO, SimCLR), masked-image (MAE, per-example mask seeds), text (masked-LM), sentence-pair (Sentence-BERT)
and image-text (CLIP) methods; the pretraining recipe runs through the same two launches, reports world size 2 and
saves one model.

On CPU the launch must be ``--multi_gpu`` (torchrun) with the script's ``--use_cpu true``: ``--cpu`` takes accelerate's
simple launcher, which sets no ``WORLD_SIZE``, so each machine silently trains alone (world size 1 on both).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_DINO_RUN_FLAGS
from test_distributed import free_port

TESTS = Path(__file__).parent
WORKER = TESTS / "multinode_worker.py"
RECIPE = TESTS.parent / "recipes" / "pretrain.py"
METHODS = ("dino", "simclr", "mae", "mlm", "sbert", "clip")


def launch_command(machine_rank: int, port: int, device_flag: str = "--multi_gpu") -> list[str]:
    """``accelerate launch`` for machine ``machine_rank`` of 2, one process each (``--num_processes`` is the total)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", device_flag, "--num_processes", "2",
        "--num_machines", "2", "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
    ]


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No accelerate config or ``ACCELERATE_*`` setting of the user's (HF_HOME holds the default config file), no
    outer distributed launch, one thread per process."""
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith("ACCELERATE_") and key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK",
                                                                      "MASTER_ADDR", "MASTER_PORT")}
    return {**inherited, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(TESTS)}


def launch_two_machines(tmp_path: Path, script_args_per_machine: list[list[str]], timeout: int = 240,
                        device_flag: str = "--multi_gpu") -> list[str]:
    """Start both machines' launches at once and wait for both; returns each one's output. Fails on any error."""
    port, env = free_port(), clean_env(tmp_path)
    launches = [subprocess.Popen([*launch_command(rank, port, device_flag), *script_args], env=env, cwd=tmp_path, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for rank, script_args in enumerate(script_args_per_machine)]
    try:
        outputs = [launch.communicate(timeout=timeout)[0] for launch in launches]
    finally:
        for launch in launches:
            launch.kill()
    for rank, (launch, output) in enumerate(zip(launches, outputs)):
        assert launch.returncode == 0, f"machine {rank} exited with {launch.returncode}:\n{output[-4000:]}"
    return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """What rank 0 saved in one plain process with the global batch of 8, and over two machines with 4 each."""
    tmp_path = tmp_path_factory.mktemp("multinode")
    single_file, double_file = tmp_path / "one-process.pt", tmp_path / "two-machines.pt"
    completed = subprocess.run([sys.executable, str(WORKER), str(single_file), *METHODS], env=clean_env(tmp_path),
                               cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    launch_two_machines(tmp_path, [[str(WORKER), str(double_file), *METHODS]] * 2)
    return torch.load(single_file), torch.load(double_file)


def test_two_launches_form_one_gloo_group_of_two(runs):
    single, double = runs
    assert single["world_size"] == 1
    assert double["world_size"] == 2 and double["backend"] == "gloo"
    ranks, machines, pids = zip(*double["processes"])
    assert ranks == (0, 1) and machines == (0, 1) and len(set(pids)) == 2


def test_the_cpu_flag_would_train_each_machine_alone(tmp_path):
    """Why the launch is ``--multi_gpu`` + ``--use_cpu true``: with ``--cpu`` both machines report world size 1."""
    outputs = launch_two_machines(tmp_path, [[str(WORKER), str(tmp_path / f"alone-{rank}.pt")] for rank in range(2)],
                                  device_flag="--cpu")
    assert all("world size: 1," in output for output in outputs)


@pytest.mark.parametrize("method", METHODS)
def test_two_machines_match_one_process_with_the_doubled_batch(runs, method):
    single, double = (run["results"][method] for run in runs)
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert double["grads"].keys() == single["grads"].keys() and single["grads"]
    for name, grad in single["grads"].items():
        scale = grad.abs().max().clamp_min(1.0)  # DINO's tiny head has gradients in the thousands
        torch.testing.assert_close(double["grads"][name] / scale, grad / scale, rtol=1e-4, atol=1e-6, msg=name)
    if method == "dino":  # the teacher centre is all-reduced over the machines
        torch.testing.assert_close(double["center"], single["center"], rtol=1e-5, atol=1e-7)


def test_pretraining_recipe_over_two_machines_reports_world_size_2_and_saves_one_model(tmp_path):
    """Each machine gets its own output folder, as machines without a shared disk would: only machine 0 writes the
    model, its run record, evaluation and card; both launches exit cleanly (no process aborts at exit)."""
    folders = [tmp_path / f"machine-{rank}" for rank in range(2)]
    outputs = launch_two_machines(tmp_path, [
        [str(RECIPE), *TINY_DINO_RUN_FLAGS, "--save_steps", "10", "--use_cpu", "true", "--output_dir", str(folder)]
        for folder in folders
    ])
    assert "world size: 2, per-device batch: 16, global batch: 32" in outputs[0]
    assert "Saved the model" in outputs[0] and "Saved the model" not in outputs[1]
    published = {"model.safetensors", "config.json", "hf_ssl_run.json", "eval_results.json", "README.md"}
    assert published <= {path.name for path in folders[0].iterdir()}
    assert not published & {path.name for path in folders[1].rglob("*")}
    assert '"world_size": 2' in (folders[0] / "hf_ssl_run.json").read_text()
