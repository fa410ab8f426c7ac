"""BYOL and SimSiam: the negative-cosine loss against the papers' formulas, momentum schedule and EMA, training,
round trips, bad input, and 2 processes (BYOL)."""

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_vit_config
from test_distributed import run_worker
from transformers import AutoModel

import hf_ssl
from hf_ssl.losses.negative_cosine import NegativeCosineSimilarity
from hf_ssl.methods.base import TrainingProgress
from hf_ssl.methods.byol import BYOLConfig, BYOLForPreTraining
from hf_ssl.methods.simsiam import SimSiamConfig, SimSiamForPreTraining
from hf_ssl.modules.predictors import DirectPredictor


def tiny_byol(**overrides):
    settings = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32}
    settings.update(overrides)
    return BYOLForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


def tiny_simsiam(**overrides):
    settings = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 8}
    settings.update(overrides)
    return SimSiamForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


def tiny_byol_direct(**overrides):
    return tiny_byol(**{"predictor_type": "direct", **overrides})


def tiny_simsiam_direct(**overrides):
    return tiny_simsiam(**{"predictor_type": "direct", **overrides})


def naive_negative_cosine(p, z):
    """Chen & He 2021, Eq. 1 with stop-gradient: D(p, z) = -(p / ||p||) . (stopgrad(z) / ||z||), batch mean."""
    total = 0.0
    for p_i, z_i in zip(p, z):
        z_i = z_i.detach()
        total = total - torch.dot(p_i / p_i.norm(), z_i / z_i.norm())
    return total / len(p)


def naive_byol(p, z):
    """Grill et al. 2020, Eq. 2: || p / ||p|| - z / ||z|| ||^2 with the target not trained, batch mean."""
    total = 0.0
    for p_i, z_i in zip(p, z):
        z_i = z_i.detach()
        total = total + ((p_i / p_i.norm() - z_i / z_i.norm()) ** 2).sum()
    return total / len(p)


# ----------------------------------------------------------------------------------------------------------------------
# Loss
@pytest.mark.parametrize("form, naive", [("negative_cosine", naive_negative_cosine), ("byol", naive_byol)])
def test_loss_equals_the_formula_in_value_and_gradient_and_stops_the_target_gradient(form, naive):
    generator = torch.Generator().manual_seed(0)
    p = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, stats = NegativeCosineSimilarity(form)(p, z)
    expected = naive(p, z)
    torch.testing.assert_close(loss, expected)
    grad_p, grad_z = torch.autograd.grad(loss, (p, z), allow_unused=True)
    (expected_grad_p,) = torch.autograd.grad(expected, (p,))
    torch.testing.assert_close(grad_p, expected_grad_p)
    assert grad_z is None  # stop-gradient: nothing reaches the target
    cosine = torch.nn.functional.cosine_similarity(p, z).mean().detach()
    torch.testing.assert_close(stats["cosine_similarity"], cosine)
    unit = z.detach() / z.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(stats["output_std"], unit.std(dim=0).mean())


def test_byol_form_is_an_affine_map_of_the_negative_cosine():
    p, z = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    simsiam = NegativeCosineSimilarity()(p, z)[0]
    byol = NegativeCosineSimilarity("byol")(p, z)[0]
    torch.testing.assert_close(byol, 2 + 2 * simsiam)
    # Aligned: -1 and 0; opposite: 1 and 4.
    assert NegativeCosineSimilarity()(p, 3 * p)[0].item() == pytest.approx(-1.0)
    assert NegativeCosineSimilarity("byol")(p, -p)[0].item() == pytest.approx(4.0)


def test_output_std_is_zero_for_collapsed_and_about_one_over_sqrt_d_for_spread_outputs():
    d = 64
    collapsed = torch.ones(128, d)
    assert NegativeCosineSimilarity()(torch.randn(128, d), collapsed)[1]["output_std"].item() == pytest.approx(0.0)
    spread = torch.randn(4096, d, generator=torch.Generator().manual_seed(0))
    std = NegativeCosineSimilarity()(torch.randn(4096, d), spread)[1]["output_std"].item()
    assert std == pytest.approx(1 / math.sqrt(d), rel=0.05)


def test_loss_refuses_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        NegativeCosineSimilarity()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"2-D \(batch, dim\)"):
        NegativeCosineSimilarity()(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="form must be one of"):
        NegativeCosineSimilarity("mse")


# ----------------------------------------------------------------------------------------------------------------------
# Models: forward and stop-gradient
def test_simsiam_model_loss_is_the_symmetrised_formula_with_stop_gradient(tiny_crops):
    torch.manual_seed(0)
    model = tiny_simsiam()
    out = model(global_crops=tiny_crops["global_crops"])
    assert out.loss.dim() == 0 and out.output_std.dim() == 0 and out.cosine_similarity.dim() == 0
    assert out.predictions.shape == out.projections.shape == (8, 16)
    p1, p2 = out.predictions[:4], out.predictions[4:]
    z1, z2 = out.projections[:4], out.projections[4:]
    expected = naive_negative_cosine(p1, z2) / 2 + naive_negative_cosine(p2, z1) / 2
    torch.testing.assert_close(out.loss, expected)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.loss, params, retain_graph=True)
    expected_grads = torch.autograd.grad(expected, params, retain_graph=True)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    # Without the stop-gradient the gradients differ: the check above is sensitive to it.
    no_stop = -(torch.nn.functional.cosine_similarity(p1, z2).mean() + torch.nn.functional.cosine_similarity(p2, z1).mean()) / 2
    no_stop_grads = torch.autograd.grad(no_stop, params)
    assert any(not torch.allclose(a, b) for a, b in zip(grads, no_stop_grads))


def test_byol_model_loss_is_the_symmetrised_formula_and_the_target_gets_no_gradient(tiny_crops):
    torch.manual_seed(0)
    model = tiny_byol()
    out = model(global_crops=tiny_crops["global_crops"])
    assert out.predictions.shape == out.targets.shape == (8, 16)
    assert not out.targets.requires_grad
    expected = (naive_byol(out.predictions[:4], out.targets[4:]) + naive_byol(out.predictions[4:], out.targets[:4])) / 2
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name, parameter in list(model.encoder.named_parameters()) + list(model.teacher_projector.named_parameters()):
        assert parameter.grad is None, name
    assert all(p.grad is not None for p in model.predictor.parameters())


@pytest.mark.parametrize("factory", [tiny_byol, tiny_simsiam])
def test_forward_refuses_bad_input(factory, tiny_crops):
    model = factory()
    with pytest.raises(ValueError, match="num_global_crops=2"):
        model(global_crops=torch.randn(4, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="num_global_crops=2"):
        model(global_crops=torch.randn(4, 3, 16, 16))
    with pytest.raises(ValueError, match="num_local_crops=0"):
        model(**tiny_crops)
    with pytest.raises(ValueError, match="projection_dim must be >= 1"):
        factory(projection_dim=0)


def test_byol_config_defaults_are_the_papers():
    assert BYOLConfig().to_dict() == {
        "method": "byol", "projection_hidden_dim": 4096, "projection_dim": 256, "prediction_hidden_dim": 4096,
        "momentum_teacher": 0.996, "momentum_teacher_end": 1.0, "predictor_learning_rate_scale": 1.0,
        "predictor_fixed_learning_rate": False, "predictor_type": "mlp", "direct_predictor_decay": 0.3,
        "direct_predictor_eps": 0.01,
    }
    assert SimSiamConfig().to_dict() == {
        "method": "simsiam", "projection_hidden_dim": 2048, "projection_dim": 2048, "num_projection_layers": 3,
        "projector_output_batch_norm": True, "prediction_hidden_dim": 512, "predictor_learning_rate_scale": 1.0,
        "predictor_fixed_learning_rate": False, "predictor_type": "mlp", "direct_predictor_decay": 0.3,
        "direct_predictor_eps": 0.01,
    }
    with pytest.raises(ValueError, match="momentum_teacher must be in"):
        tiny_byol(momentum_teacher=1.5)
    with pytest.raises(ValueError, match="unknown byol settings"):
        tiny_byol(temperature=0.5)


# ----------------------------------------------------------------------------------------------------------------------
# BYOL momentum and EMA
def test_byol_momentum_schedule_through_set_progress():
    model = tiny_byol(momentum_teacher=0.99, momentum_teacher_end=1.0)
    values = {}
    for step in (0, 50, 100, 150):
        model.set_progress(TrainingProgress(step=step, max_steps=100, steps_per_epoch=10))
        values[step] = model.schedule_values()["teacher_momentum"]
    # tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 (Grill et al. 2020 §3.2)
    for step, value in values.items():
        k = min(step, 100)
        assert value == pytest.approx(1 - (1 - 0.99) * (math.cos(math.pi * k / 100) + 1) / 2)
    assert values[0] == pytest.approx(0.99) and values[50] == pytest.approx(0.995) and values[150] == 1.0


def test_byol_target_starts_as_the_online_copy_is_frozen_and_follows_the_ema(tiny_crops):
    torch.manual_seed(0)
    model = tiny_byol()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.split(".")[0] in ("student_encoder", "projector", "predictor") for name in trainable)
    for online, target in ((model.student_encoder, model.encoder), (model.projector, model.teacher_projector)):
        for a, b in zip(online.parameters(), target.parameters(), strict=True):
            torch.testing.assert_close(a, b)
            assert not b.requires_grad
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    progress = TrainingProgress(step=3, max_steps=10, steps_per_epoch=5)
    model.set_progress(progress)
    m = model.schedule_values()["teacher_momentum"]
    assert 0.996 < m < 1.0
    model(global_crops=tiny_crops["global_crops"]).loss.backward()
    optimizer.step()
    before = [p.detach().clone() for p in list(model.encoder.parameters()) + list(model.teacher_projector.parameters())]
    online = [p.detach().clone() for p in list(model.student_encoder.parameters()) + list(model.projector.parameters())]
    assert any(not torch.equal(a, b) for a, b in zip(before, online))  # the step moved the online network
    model.after_optimizer_step(progress)
    after = list(model.encoder.parameters()) + list(model.teacher_projector.parameters())
    for old, new_online, new in zip(before, online, after, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * new_online)


# ----------------------------------------------------------------------------------------------------------------------
# Training and round trips
@pytest.mark.parametrize("factory", [tiny_byol, tiny_simsiam, tiny_byol_direct, tiny_simsiam_direct])
def test_training_lowers_the_loss_on_a_fixed_batch(factory, tiny_crops):
    torch.manual_seed(0)
    model = factory()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    progress = TrainingProgress(step=0, max_steps=5, steps_per_epoch=5)
    losses = []
    for step in range(5):
        progress = TrainingProgress(step=step, max_steps=5, steps_per_epoch=5)
        model.set_progress(progress)
        loss = model(global_crops=tiny_crops["global_crops"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step(progress)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_simsiam_projector_depth_follows_num_projection_layers(layers, tiny_crops):
    """Chen & He 2021: 3 layers on ImageNet (§3), 2 on CIFAR (Appendix D); BN after every Linear, affine-free last."""
    model = tiny_simsiam(num_projection_layers=layers)
    linears = [m for m in model.projector.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model.projector.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    widths = [model.encoder.config.hidden_size] + [32] * (layers - 1) + [16]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(widths, widths[1:]))
    assert len(norms) == layers and not norms[-1].affine and all(norm.affine for norm in norms[:-1])
    assert model(global_crops=tiny_crops["global_crops"]).projections.shape[-1] == 16
    with pytest.raises(ValueError, match="num_projection_layers must be >= 1"):
        tiny_simsiam(num_projection_layers=0)


def test_simsiam_projector_without_output_batch_norm_ends_in_a_biased_linear(tiny_crops):
    """projector_output_batch_norm=False: BYOL's projector shape (Linear-BN-ReLU-Linear), the output not whitened."""
    model = tiny_simsiam(num_projection_layers=2, projector_output_batch_norm=False)
    assert isinstance(model.projector.layers[-1], torch.nn.Linear) and model.projector.layers[-1].bias is not None
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.projector.modules()) == 1
    model.train()
    projections = model(global_crops=tiny_crops["global_crops"]).projections
    # With the affine-free output BN every dimension of a training batch has mean 0; without it, not.
    assert projections.mean(dim=0).abs().max() > 1e-3


def test_simsiam_warns_once_on_collapse(tiny_crops):
    model = tiny_simsiam()
    with torch.no_grad():  # a collapsed projector: the last Linear outputs a constant, BN's (affine-free) output is 0
        last_linear = [m for m in model.projector.modules() if isinstance(m, torch.nn.Linear)][-1]
        last_linear.weight.zero_()
    with pytest.warns(RuntimeWarning, match="collapsed"):
        out = model(global_crops=tiny_crops["global_crops"])
    assert out.output_std.item() < model.collapse_threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(global_crops=tiny_crops["global_crops"])  # only once


@pytest.mark.parametrize(
    "factory, model_class",
    [
        (tiny_byol, BYOLForPreTraining), (tiny_simsiam, SimSiamForPreTraining),
        (tiny_byol_direct, BYOLForPreTraining), (tiny_simsiam_direct, SimSiamForPreTraining),
    ],
)
def test_save_from_pretrained_and_vanilla_automodel(factory, model_class, tmp_path, tiny_crops):
    torch.manual_seed(0)
    model = factory()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for step in range(2):  # trained weights, a moved target and BatchNorm statistics, not the initialisation
        model.set_progress(TrainingProgress(step=step, max_steps=2, steps_per_epoch=2))
        model(global_crops=tiny_crops["global_crops"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step(TrainingProgress(step=step, max_steps=2, steps_per_epoch=2))
    model.save_pretrained(tmp_path)
    model.eval()
    for loaded in (model_class.from_pretrained(tmp_path), hf_ssl.AutoSSLModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, model_class)
        assert loaded.method_config == model.method_config
        loaded.eval()
        with torch.no_grad():
            expected, got = model(global_crops=tiny_crops["global_crops"]), loaded(global_crops=tiny_crops["global_crops"])
        torch.testing.assert_close(got.loss, expected.loss)
        torch.testing.assert_close(got.predictions, expected.predictions)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder).__name__ == "ViTModel"
    pixels = tiny_crops["global_crops"][:, 0]
    with torch.no_grad():
        got = encoder(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(got, model.encoder(pixel_values=pixels).last_hidden_state)
        if model_class is BYOLForPreTraining:  # the published encoder is the target, not the online encoder
            online = model.student_encoder(pixel_values=pixels).last_hidden_state
            assert not torch.allclose(got, online)


# ----------------------------------------------------------------------------------------------------------------------
# DirectPred (Tian et al. 2021)
def naive_direct_predictor_weight(batches, decay=0.3, eps=0.01):
    """Tian et al. 2021 §5 written out: F <- rho F + (1 - rho) mean(z z^T) (F = the first batch's at the start),
    W = U diag(sqrt(s / max s) + eps) U^T, with numpy's eigendecomposition."""
    correlation = None
    for z in batches:
        batch = sum(np.outer(row, row) for row in z.numpy().astype(np.float64)) / len(z)
        correlation = batch if correlation is None else decay * correlation + (1 - decay) * batch
    s, u = np.linalg.eigh(correlation)
    s = np.clip(s, 0, None)
    return u @ np.diag(np.sqrt(s / s.max()) + eps) @ u.T


def test_direct_predictor_is_the_papers_closed_form_and_only_updates_in_training():
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(12, 5, generator=generator) @ torch.randn(5, 5, generator=generator) for _ in range(3)]
    predictor = DirectPredictor(5)
    torch.testing.assert_close(predictor.weight, torch.eye(5))  # identity before any data
    for count, z in enumerate(batches, start=1):
        z = z.clone().requires_grad_()
        p = predictor(z)
        expected = torch.from_numpy(naive_direct_predictor_weight(batches[:count])).float()
        torch.testing.assert_close(predictor.weight, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(p, z @ expected.T, rtol=1e-4, atol=1e-5)  # W is applied after this batch's update
        p.sum().backward()  # the gradient reaches the projections through the fixed weight
        torch.testing.assert_close(z.grad, torch.ones(12, 5) @ expected, rtol=1e-4, atol=1e-5)
    assert predictor.num_updates.item() == 3 and not list(predictor.parameters())
    frozen = predictor.weight.clone()
    predictor.eval()
    predictor(batches[0])
    with torch.no_grad():
        predictor.train()(batches[0])
    torch.testing.assert_close(predictor.weight, frozen)  # no update in eval mode or without gradients
    assert predictor.num_updates.item() == 3


@pytest.mark.parametrize("factory", [tiny_byol_direct, tiny_simsiam_direct])
def test_direct_predictor_models_have_a_parameter_free_predictor_and_refuse_an_unknown_type(factory, tiny_crops):
    model = factory().train()
    assert isinstance(model.predictor, DirectPredictor) and model.predictor.weight.shape == (16, 16)
    assert not list(model.predictor.parameters())
    inputs = []
    model.predictor.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach()))
    model(global_crops=tiny_crops["global_crops"])
    (projections,) = inputs
    expected = naive_direct_predictor_weight([projections])
    # fewer rows than dimensions: zero eigenvalues, whose float32 rounding the square root lifts to ~1e-4
    torch.testing.assert_close(model.predictor.weight, torch.from_numpy(expected).float(), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="predictor_type must be one of"):
        factory(predictor_type="linear")
    with pytest.raises(ValueError, match="direct_predictor_decay must be in"):
        factory(direct_predictor_decay=2.0)


# ----------------------------------------------------------------------------------------------------------------------
# Distributed (BYOL): per-example means, so DDP's gradient average over 2 shards equals the doubled batch


def test_byol_two_processes_match_one_process_with_double_batch(tmp_path):
    single = run_worker(tmp_path, "byol", 1)
    double = run_worker(tmp_path, "byol", 2)
    assert double["world_size"] == 2 and single["world_size"] == 1
    torch.testing.assert_close(double["result"]["loss"], single["result"]["loss"], rtol=1e-5, atol=1e-6)
    assert double["result"]["grads"].keys() == single["result"]["grads"].keys()
    assert not any(name.startswith(("vit.", "teacher_projector.")) for name in single["result"]["grads"])
    for name, grad in single["result"]["grads"].items():
        torch.testing.assert_close(double["result"]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_byol_direct_predictor_two_processes_match_one_process_with_double_batch(tmp_path):
    """DirectPred's correlation is all-reduced, so each shard's predictor is the global batch's."""
    single = run_worker(tmp_path, "byol_direct", 1)
    double = run_worker(tmp_path, "byol_direct", 2)
    assert double["world_size"] == 2
    torch.testing.assert_close(double["result"]["predictor_weight"], single["result"]["predictor_weight"])
    assert not torch.allclose(single["result"]["predictor_weight"], torch.eye(16))
    torch.testing.assert_close(double["result"]["loss"], single["result"]["loss"], rtol=1e-5, atol=1e-6)
    for name, grad in single["result"]["grads"].items():
        torch.testing.assert_close(double["result"]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
