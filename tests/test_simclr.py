"""SimCLR: NT-Xent against the paper's formula, the model's forward / training / round trips, and 2 processes."""

import math

import pytest
import torch
from conftest import tiny_vit_config
from test_distributed import run_worker
from transformers import AutoModel

from hf_ssl import AutoSSLModel, SimCLRForPreTraining
from hf_ssl.losses import NTXentLoss


def naive_ntxent(z_a, z_b, temperature):
    """Chen et al. 2020, Eq. 1 and Algorithm 1, written out: views 2k and 2k+1 are the two views of image k."""
    views = []
    for a, b in zip(z_a, z_b):
        views += [a / a.norm(), b / b.norm()]
    total = 0.0
    for i, anchor in enumerate(views):
        positive = i + 1 if i % 2 == 0 else i - 1
        numerator = torch.exp(torch.dot(anchor, views[positive]) / temperature)
        denominator = sum(torch.exp(torch.dot(anchor, views[k]) / temperature) for k in range(len(views)) if k != i)
        total = total - torch.log(numerator / denominator)
    return total / len(views)


def tiny_simclr(**overrides):
    settings = {"projection_hidden_dim": 32, "projection_dim": 16, "temperature": 0.5}
    settings.update(overrides)
    return SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_ntxent_equals_the_formula_in_value_and_gradient(temperature):
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, stats = NTXentLoss(temperature)(z_a, z_b)
    grads = torch.autograd.grad(loss, (z_a, z_b))
    expected = naive_ntxent(z_a, z_b, temperature)
    expected_grads = torch.autograd.grad(expected, (z_a, z_b))
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    cosine = torch.nn.functional.cosine_similarity(z_a, z_b).mean()
    torch.testing.assert_close(stats["positive_similarity"], cosine.detach())


def test_ntxent_known_tiny_example_and_temperature():
    # Two images, orthogonal unit embeddings, both views identical: every anchor sees its positive at cosine 1 and
    # the two views of the other image at cosine 0, so l = -log(e^{1/T} / (e^{1/T} + 2)) for every anchor.
    z_a = torch.tensor([[3.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    z_b = torch.tensor([[1.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    for temperature in (1.0, 0.5, 0.1):
        loss, stats = NTXentLoss(temperature)(z_a, z_b)
        expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2))
        assert loss.item() == pytest.approx(expected, rel=1e-9)
        assert stats["positive_similarity"].item() == pytest.approx(1.0)
        assert stats["negative_similarity"].item() == pytest.approx(0.0, abs=1e-7)
    # Lower temperature, same well-separated embeddings: lower loss.
    assert NTXentLoss(0.1)(z_a, z_b)[0] < NTXentLoss(0.5)(z_a, z_b)[0]


def test_ntxent_refuses_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="Increase per_device_train_batch_size"):
        NTXentLoss()(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tiny_simclr(temperature=-1.0)


def test_forward_needs_exactly_two_views(tiny_crops):
    model = tiny_simclr()
    out = model(global_crops=tiny_crops["global_crops"])
    assert out.loss.dim() == 0 and out.embeddings.shape == (2 * 4, 16)
    assert out.positive_similarity.dim() == 0 and out.negative_similarity.dim() == 0
    with pytest.raises(ValueError, match="num_global_crops=2"):
        model(global_crops=torch.randn(4, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="num_local_crops=0"):
        model(**tiny_crops)


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_crops):
    torch.manual_seed(0)
    model = tiny_simclr()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(global_crops=tiny_crops["global_crops"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_save_from_pretrained_and_vanilla_automodel(tmp_path, tiny_crops):
    torch.manual_seed(0)
    model = tiny_simclr()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(2):  # trained weights and BatchNorm running statistics, not the initialisation
        model(global_crops=tiny_crops["global_crops"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path)
    model.eval()
    for loaded in (SimCLRForPreTraining.from_pretrained(tmp_path), AutoSSLModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, SimCLRForPreTraining)
        assert loaded.method_config == model.method_config
        loaded.eval()
        with torch.no_grad():
            expected, got = model(global_crops=tiny_crops["global_crops"]), loaded(global_crops=tiny_crops["global_crops"])
            torch.testing.assert_close(got.loss, expected.loss)
            torch.testing.assert_close(got.embeddings, expected.embeddings)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder).__name__ == "ViTModel"
    pixels = tiny_crops["global_crops"][:, 0]
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(pixel_values=pixels).last_hidden_state[:, 0], model.encoder(pixel_values=pixels).last_hidden_state[:, 0]
        )




def test_two_processes_match_one_process_with_double_batch(tmp_path):
    """Gathered negatives with gradients: each process's loss reaches the other process's embeddings."""
    single = run_worker(tmp_path, "simclr", 1)
    double = run_worker(tmp_path, "simclr", 2)
    assert double["world_size"] == 2 and single["world_size"] == 1
    torch.testing.assert_close(double["result"]["loss"], single["result"]["loss"], rtol=1e-5, atol=1e-6)
    assert double["result"]["grads"].keys() == single["result"]["grads"].keys()
    for name, grad in single["result"]["grads"].items():
        torch.testing.assert_close(double["result"]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
