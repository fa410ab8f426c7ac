"""The throughput benchmark's hand-written methods (benchmarks/vision_throughput.py) compute the same maths as hf_ssl:
same loss, gradients and buffers on one tiny batch from the same weights, at each recipe's head settings."""


import pytest
import torch
from conftest import benchmark_script

TINY_ENCODER = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def throughput():
    return benchmark_script("vision_throughput")


def tiny_pair(throughput, method, tmp_path, batch_size=8, **method_settings):
    parsed = throughput.parse_recipe(method, str(tmp_path), batch_size, 2, 0, "cpu", encoder_overrides=TINY_ENCODER)
    for name, value in method_settings.items():  # a setting the recipe does not use
        setattr(parsed[3], name, value)
    hf_model, hand, hf_state, settings = throughput.build_pair(parsed)
    batch = throughput.make_batches(settings["views"], 1, batch_size, seed=0)[0]
    return hf_model, hand, hf_state, batch


@pytest.mark.parametrize("method", ["dino", "simclr", "byol", "simsiam", "moco_v2", "moco_v3"])
def test_hand_written_method_matches_hf_ssl_on_the_first_batch(throughput, method, tmp_path):
    hf_model, hand, _, batch = tiny_pair(throughput, method, tmp_path)
    report = throughput.compare_first_batch(hf_model, hand, batch, torch.device("cpu"))
    assert report["ok"], report
    assert report["trained_tensors_compared"] == sum(p.requires_grad for p in hf_model.parameters())
    if method in ("dino", "moco_v2"):  # the centre / the queue moved in the forward and were compared
        assert report["buffers_compared"]


@pytest.mark.parametrize("layers", [1, 2])
def test_hand_written_simsiam_follows_the_projector_depth(throughput, tmp_path, layers):
    hf_model, hand, _, batch = tiny_pair(throughput, "simsiam", tmp_path, num_projection_layers=layers)
    assert sum(isinstance(m, torch.nn.Linear) for m in hf_model.projector.modules()) == layers
    assert throughput.compare_first_batch(hf_model, hand, batch, torch.device("cpu"))["ok"]


def test_hand_written_simsiam_follows_the_projector_output_batch_norm(throughput, tmp_path):
    hf_model, hand, _, batch = tiny_pair(throughput, "simsiam", tmp_path, projector_output_batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in hand.projector[-1:])
    assert throughput.compare_first_batch(hf_model, hand, batch, torch.device("cpu"))["ok"]


def test_parity_check_catches_different_maths(throughput, tmp_path):
    hf_model, hand, _, batch = tiny_pair(throughput, "simclr", tmp_path)
    hand.settings["temperature"] *= 2
    report = throughput.compare_first_batch(hf_model, hand, batch, torch.device("cpu"))
    assert not report["ok"]
    assert report["loss_abs_diff"] > 1e-3


def test_hand_written_weights_must_map_one_to_one(throughput, tmp_path):
    _, hand, hf_state, _ = tiny_pair(throughput, "moco_v2", tmp_path)
    with pytest.raises(KeyError, match="unused"):
        hand.load_from_hf_ssl({**hf_state, "extra_head.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="missing"):
        hand.load_from_hf_ssl({key: value for key, value in hf_state.items() if key != "loss_fn.queue"})
