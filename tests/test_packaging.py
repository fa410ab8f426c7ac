"""The wheel carries the package data (card template, embedded images, offline metric): a wheel install, in a fresh
virtual environment and away from the checkout, writes a model card."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CARD_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import hf_ssl
    from transformers import ViTConfig

    from hf_ssl.publishing import write_model_card

    assert Path(hf_ssl.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), hf_ssl.__file__
    config = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)
    model = hf_ssl.DINOForPreTraining.from_encoder_config(config, out_dim=64, hidden_dim=32, bottleneck_dim=16)
    model.save_pretrained("run")
    card = write_model_card("run", repo_id="org/tiny-dino").read_text()
    assert "dino" in card and "org/tiny-dino" in card, card[:500]
    print("card written")
    """
)


def test_a_wheel_install_writes_a_model_card(tmp_path):
    # Built from a copy of the sources: a build/ folder left in a checkout could put stale modules into the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "outputs", "runs", "model_cards", "benchmarks",
    ))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist")], check=True, capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("hf_ssl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for data_file in ("hf_ssl/publishing/templates/model_card.md", "hf_ssl/data/assets/fashion_mnist_subset.npz",
                      "hf_ssl/evaluation/accuracy_metric/accuracy.py"):
        assert data_file in names, data_file
    # A fresh environment that sees the installed dependencies (torch, transformers, ...) but has hf_ssl only from
    # the wheel, run from a folder outside the checkout.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([str(python), "-c", CARD_SCRIPT], cwd=work, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert "card written" in completed.stdout
