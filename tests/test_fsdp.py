"""Sharded training: two processes with FSDP2, prepared by accelerate from recipes/accelerate_configs/fsdp2.yaml,
reproduce one unwrapped process on the whole batch for DINO (EMA teacher, centre), MoCo v2 (queue) and MoCo v3
(gathered negatives): loss, gathered gradients, the state after one step and one momentum update, the saved folder,
and an exact resume from the gathered model and optimizer state. The shipped accelerate configs parse."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import DeepSpeedPlugin
from fsdp_worker import launch_environment
from safetensors.torch import load_file
from test_distributed import free_port
from torch import nn
from transformers import AutoModel

from hf_ssl.modules.ema import ema_update_

WORKER = Path(__file__).with_name("fsdp_worker.py")
CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate_configs"
METHODS = ("dino", "moco_v2", "moco_v3")
#: ``cuda`` runs the worker on the GPUs (benchmarks/gpu_fsdp.sh); CPU and gloo otherwise.
DEVICE = os.environ.get("HF_SSL_TEST_DEVICE", "cpu")


def run_worker(out_dir: Path, mode: str, processes: int) -> dict:
    """Run fsdp_worker.py in ``mode`` (``reference`` or ``sharded``) on ``processes`` processes: torchrun on CPU,
    ``accelerate launch`` with the shipped fsdp2.yaml on GPUs (``HF_SSL_TEST_DEVICE=cuda``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    port = f"--main_process_port={free_port()}"
    if DEVICE == "cuda" and mode == "sharded":
        launcher = ["accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp2.yaml"), "--mixed_precision=no",
                    f"--num_processes={processes}", port]
    else:
        launcher = ["torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
                    port.replace("main_process", "master")]
    command = [sys.executable, "-m", *launcher, str(WORKER), str(out_dir), mode]
    completed = subprocess.run(command, env=env, cwd=out_dir, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    saved = torch.load(out_dir / f"{mode}.pt")
    assert saved["world_size"] == processes
    return saved["results"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(folder, reference results, sharded results). Two sharded processes; on one GPU, FSDP2 on one process (a
    reduced check: the wrapping, gathering and saving, not the cross-process sharding)."""
    out_dir = tmp_path_factory.mktemp("fsdp")
    processes = 2 if DEVICE == "cpu" else min(2, torch.cuda.device_count())
    return out_dir, run_worker(out_dir, "reference", 1), run_worker(out_dir, "sharded", processes)


@pytest.mark.parametrize("method", METHODS)
def test_fsdp_step_matches_one_process(runs, method):
    """Loss, full gradients, and after one step: student, EMA teacher, DINO's centre, MoCo v2's queue."""
    single, sharded = runs[1][method], runs[2][method]
    assert sharded["parameter_types"] == ["DTensor"] and single["parameter_types"] == ["Parameter"]
    torch.testing.assert_close(sharded["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert sharded["grads"].keys() == single["grads"].keys()
    for name, grad in single["grads"].items():
        torch.testing.assert_close(sharded["grads"][name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert sharded["state"].keys() == single["state"].keys()
    for name, value in single["state"].items():
        torch.testing.assert_close(sharded["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    state = single["state"]
    teacher, student = "vit.layers.0.mlp.fc1.weight", "student_encoder.layers.0.mlp.fc1.weight"
    assert not torch.allclose(state[teacher], state[student])  # the teacher followed by EMA, not copied
    if method == "dino":
        assert state["loss_fn.center"].abs().sum() > 0
    if method == "moco_v2":
        assert state["loss_fn.queue_ptr"].item() == 16  # both views of the 8 images enqueued


@pytest.mark.parametrize("method", METHODS)
def test_save_pretrained_from_sharded_model_matches_one_process(runs, method):
    """The gathered state dict through save_pretrained: the same published folder, and vanilla transformers loads the
    teacher from it."""
    out_dir, sharded = runs[0], runs[2][method]
    for name in ("model.safetensors", "ssl_state.safetensors"):
        single = load_file(out_dir / f"{method}-reference" / name)
        from_shards = load_file(out_dir / f"{method}-sharded" / name)
        assert from_shards.keys() == single.keys()
        for key, value in single.items():
            torch.testing.assert_close(from_shards[key], value, rtol=1e-4, atol=1e-5, msg=key)
    vanilla = AutoModel.from_pretrained(out_dir / f"{method}-sharded")
    for key, value in vanilla.state_dict().items():
        if f"vit.{key}" in sharded["state"]:
            torch.testing.assert_close(value, sharded["state"][f"vit.{key}"], msg=key)


@pytest.mark.parametrize("method", METHODS)
def test_trainer_checkpoint_loads_into_sharded_model(runs, method):
    """SSLTrainer's checkpoint loading (what Trainer(resume_from_checkpoint=...) calls under FSDP, after the model is
    sharded) restores the saved folder into a fresh sharded model: every weight, the teacher, centre and queue."""
    sharded = runs[2][method]
    assert sharded["from_checkpoint"].keys() == sharded["state"].keys()
    for name, value in sharded["state"].items():
        torch.testing.assert_close(sharded["from_checkpoint"][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_sharded_resume_is_exact(runs, method):
    """A fresh sharded model (other initial weights) loaded from the gathered model and optimizer state takes the
    next step bit for bit like the run that never stopped."""
    sharded = runs[2][method]
    assert sharded["continued"].keys() == sharded["state"].keys()
    for name, value in sharded["continued"].items():
        torch.testing.assert_close(sharded["resumed"][name], value, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(value, sharded["state"][name]) for name, value in sharded["continued"].items())


def test_shipped_accelerate_configs_parse(monkeypatch):
    """accelerate's own launcher reads every shipped config, and its plugins build from the result: FSDP2 with
    full state dicts, DeepSpeed ZeRO-2 / ZeRO-3 (the DeepSpeed config accelerate hands to deepspeed.initialize)."""
    fsdp = launch_environment(CONFIGS / "fsdp2.yaml")
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_VERSION"] == "2"
    assert fsdp["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT" and fsdp["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "ViTLayer"
    for stage in (2, 3):
        environment = launch_environment(CONFIGS / f"deepspeed_zero{stage}.yaml")
        assert environment["ACCELERATE_USE_DEEPSPEED"] == "true"
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        settings = DeepSpeedPlugin().deepspeed_config
        assert settings["zero_optimization"]["stage"] == stage
        assert environment["ACCELERATE_MIXED_PRECISION"] == "no"  # fp32 momentum teachers, see the config
    assert launch_environment(CONFIGS / "multi_gpu.yaml")["ACCELERATE_MIXED_PRECISION"] == "bf16"


class StandInZeRO3:
    """DeepSpeed's ZeRO-3 parameter life cycle, for machines without DeepSpeed: a partitioned parameter (``ds_id``)
    is empty outside ``deepspeed.zero.GatheredParameters``, which gathers it and, given ``modifier_rank``,
    re-partitions what was written into it."""

    def __init__(self):
        self.calls = []
        self.zero = self

    def partition(self, module: nn.Module) -> None:
        for number, parameter in enumerate(module.parameters()):
            parameter.ds_id, parameter.stored = number, parameter.data.clone()
            parameter.data = torch.empty(0)

    @contextlib.contextmanager
    def GatheredParameters(self, parameters, modifier_rank=None):  # noqa: N802 (DeepSpeed's name)
        self.calls.append(modifier_rank)
        for parameter in parameters:
            parameter.data = parameter.stored.clone()
        yield
        for parameter in parameters:
            if modifier_rank is not None:
                parameter.stored = parameter.data.clone()
            parameter.data = torch.empty(0)


def test_ema_update_reaches_zero3_partitioned_teachers(monkeypatch):
    """Under ZeRO-3 the teacher's parameters are empty between steps: the momentum update must gather and
    re-partition them (an update of the empty tensors would silently leave the teacher at its first weights)."""
    zero3 = StandInZeRO3()
    monkeypatch.setitem(sys.modules, "deepspeed", zero3)
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    expected = [0.9 * t.detach() + 0.1 * s.detach() for t, s in zip(teacher.parameters(), student.parameters())]
    zero3.partition(teacher)
    zero3.partition(student)
    ema_update_(teacher, student, 0.9)
    assert zero3.calls == [0]
    for parameter, value in zip(teacher.parameters(), expected):
        torch.testing.assert_close(parameter.stored, value)
