"""The steady CPU allocator: with it, glibc stops faulting a step's large buffers in again every step, and SSLTrainer
sets it on CPU runs unless ``steady_cpu_allocator=False``."""

import platform
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_dino

import hf_ssl.training.trainer as trainer_module
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.trainer import SSLTrainer

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: Allocates and frees a 64 MiB tensor (above glibc's largest mmap threshold) as a training step does with its
#: activations, and prints the minor page faults of the last 4 of 8 rounds (the first ones may still place it).
PAGE_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from hf_ssl.training.allocator import keep_freed_cpu_memory
    if sys.argv[1] == "steady":
        assert keep_freed_cpu_memory()
    for round in range(8):
        if round == 4:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = torch.ones(16 * 1024 * 1024)
        del buffer
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
""")


def page_faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_buffers_are_not_faulted_in_again():
    default, steady = page_faults("default"), page_faults("steady")
    assert default > 4 * 16_000 * 0.9  # 64 MiB of 4 KiB pages, faulted in at each of the 4 rounds
    assert steady < default / 20


@pytest.mark.parametrize("steady", [True, False])
def test_the_trainer_keeps_freed_memory_on_cpu_unless_told_not_to(tmp_path, monkeypatch, steady):
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_cpu_memory", lambda: calls.append(True))
    args = SSLTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1,
                                steady_cpu_allocator=steady)
    SSLTrainer(model=tiny_dino(), args=args, train_dataset=[])
    assert calls == ([True] if steady else [])
