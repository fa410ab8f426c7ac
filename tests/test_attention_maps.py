"""The last layer's CLS attention maps (DINO's Figs. 1 and 3): the maps, the figure, and how a DINO run's figure
reaches its card and ``hf-ssl evaluate``."""

import json
import math

import pytest
import torch
from conftest import tiny_dino, tiny_vit_config

from hf_ssl import DINOForPreTraining
from hf_ssl.evaluation.attention_maps import (
    AttentionMapFigure,
    cls_attention_maps,
    last_layer_cls_attention,
)
from hf_ssl.evaluation.features import default_eval_transform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manual_last_layer_cls_attention(encoder, pixel_values):
    """softmax(q_cls . k / sqrt(d)) of the last layer, from its own projections (the SDPA model, no attention output)."""
    layer = encoder.layers[-1]
    captured = {}
    hook = layer.layernorm_before.register_forward_hook(lambda module, inputs, output: captured.update(x=output))
    with torch.no_grad():
        encoder(pixel_values=pixel_values)
    hook.remove()
    heads = encoder.config.num_attention_heads
    batch, tokens, width = captured["x"].shape
    split = lambda tensor: tensor.view(batch, tokens, heads, width // heads).transpose(1, 2)  # noqa: E731
    queries, keys = split(layer.attention.q_proj(captured["x"])), split(layer.attention.k_proj(captured["x"]))
    scores = queries[:, :, :1] @ keys.transpose(-1, -2) / math.sqrt(width // heads)
    return scores.softmax(-1)[:, :, 0]


def test_cls_attention_maps_are_the_last_layers_softmax_rows_on_the_patch_grid():
    torch.manual_seed(0)
    config = tiny_vit_config()
    config.num_hidden_layers = 2  # the last layer's row, not the first's
    model = DINOForPreTraining.from_encoder_config(config, out_dim=64, hidden_dim=32, bottleneck_dim=16).train()
    pixels = torch.randn(3, 3, 16, 16)
    rows = last_layer_cls_attention(model, pixels)  # the published encoder: DINO's teacher
    maps = cls_attention_maps(model, pixels)
    assert rows.shape == (3, 2, 1 + 16) and maps.shape == (3, 2, 4, 4)  # (batch, heads, grid, grid); patch 4 on 16
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 2))  # a softmax row over CLS + patches
    torch.testing.assert_close(maps.sum((-1, -2)) + rows[..., 0], torch.ones(3, 2))
    torch.testing.assert_close(rows, manual_last_layer_cls_attention(model.encoder.eval(), pixels))
    assert model.encoder.config._attn_implementation == "sdpa"  # eager only for the call
    assert cls_attention_maps(model.encoder, torch.randn(1, 3, 24, 24)).shape == (1, 2, 6, 6)  # interpolated


def test_attention_figure_is_written_and_training_mode_kept(tmp_path, embedded_images):
    from PIL import Image

    model = tiny_dino().train()
    figure = AttentionMapFigure(embedded_images["test"], tmp_path / "attention_maps.png", default_eval_transform(16),
                                num_images=2)
    assert figure(model) == {}
    assert model.training and model.student_encoder.training  # the evaluator restores training mode
    width, height = Image.open(tmp_path / "attention_maps.png").size
    assert width > height > 0  # 2 rows of 3 panels: the image and 2 heads


def test_dino_run_draws_attention_maps_into_its_card_and_evaluate_redraws_them(tmp_path):
    from hf_ssl.jobs import evaluate
    from hf_ssl.jobs.runner import run

    output_dir = tmp_path / "run"
    run([
        "recipes/configs/dino-vit-tiny-embedded.yaml",
        "--encoder_config_overrides", '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, '
        '"intermediate_size": 64}',
        "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--num_local_crops", "1",
        "--max_train_examples", "32", "--max_eval_examples", "16", "--per_device_train_batch_size", "16",
        "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--no_final_comparison",
        "--attention_map_images", "2", "--weight_decay_end", "0.4", "--gradient_clipping", "per_parameter",
        "--freeze_last_layer_steps", "1", "--logging_steps", "1", "--output_dir", str(output_dir),
        "--disable_tqdm", "true",
    ])
    assert (output_dir / "attention_maps.png").is_file()
    assert "![attention_maps.png](attention_maps.png)" in (output_dir / "README.md").read_text()
    record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    assert record["figures"] == {"attention_maps": "attention_maps.png"}
    logs = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [log["weight_decay"] for log in logs if "loss" in log] == pytest.approx([0.04, 0.22])

    redrawn = tmp_path / "redrawn.png"
    assert evaluate.main([str(output_dir), "--task", "attention-maps", "--attention_map_images", "2",
                          "--attention_map_path", str(redrawn)]) == 0
    assert redrawn.stat().st_size > 1000
