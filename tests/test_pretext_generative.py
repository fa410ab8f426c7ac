"""Generative pretext tasks: colourisation (Zhang et al. 2016) and context encoders (Pathak et al. 2016).

Each loss against the paper's formula written out naively (value and gradient), the Lab conversion against known
values, the region masks, and each method trained for a few steps on a tiny ViT: vanilla transformers loads its
encoder, and a resumed run equals the uninterrupted one.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_vit_config

from hf_ssl import AutoSSLModel
from hf_ssl.losses.colourisation import (
    annealed_mean,
    in_gamut_ab_bins,
    rebalanced_cross_entropy,
    rebalancing_weights,
    smoothed_bin_distribution,
    soft_encode_ab,
)
from hf_ssl.losses.context_encoder import region_l2_loss, region_weights
from hf_ssl.methods.colourisation import ColourisationForPreTraining
from hf_ssl.methods.context_encoder import ContextEncoderForPreTraining
from hf_ssl.views.colour import (
    grey_from_lightness,
    lab_to_normalised_rgb,
    normalised_rgb_to_lab,
)
from hf_ssl.views.inpainting_masks import central_mask, inpainting_masks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def tiny_colourisation(**overrides):
    settings = dict(head_hidden_size=16)
    settings.update(overrides)
    return ColourisationForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


def tiny_context_encoder(**overrides):
    settings = dict(head_hidden_size=16, overlap_pixels=1)
    settings.update(overrides)
    return ContextEncoderForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


# ---------------------------------------------------------------------------------------------------------------------
# Colour spaces and bins
def test_lab_conversion_matches_known_values():
    # sRGB (D65) primaries and white in CIE Lab, as colour-science references give them
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    expected = torch.tensor([[53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
                             [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    normalised = (rgb.view(5, 3, 1, 1) - mean) / std
    lab = normalised_rgb_to_lab(normalised, MEAN, STD).view(5, 3)
    torch.testing.assert_close(lab, expected, atol=0.02, rtol=0)
    torch.testing.assert_close(lab_to_normalised_rgb(lab.view(5, 3, 1, 1), MEAN, STD), normalised, atol=1e-4, rtol=0)
    # the grey image of L is R = G = B and has the same lightness and no colour
    grey = grey_from_lightness(lab[:, :1].view(5, 1, 1, 1), MEAN, STD)
    unnormalised = grey * std + mean
    torch.testing.assert_close(unnormalised, unnormalised[:, :1].expand(-1, 3, -1, -1), atol=1e-4, rtol=0)
    grey_lab = normalised_rgb_to_lab(grey, MEAN, STD).view(5, 3)
    torch.testing.assert_close(grey_lab[:, 0], lab[:, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(grey_lab[:, 1:], torch.zeros(5, 2), atol=0.01, rtol=0)


def test_the_bins_are_the_papers_313_in_gamut_bins():
    bins = in_gamut_ab_bins()
    assert bins.shape == (313, 2) and torch.equal(bins, bins.round(decimals=-1))
    # the first and last entries of the authors' released list (pts_in_hull.npy), in its order
    assert bins[:7].tolist() == [[-90, 50], [-90, 60], [-90, 70], [-90, 80], [-90, 90], [-80, 20], [-80, 30]]
    assert bins[-6:].tolist() == [[100, -50], [100, -40], [100, -30], [100, -20], [100, -10], [100, 0]]
    # every colour of the RGB cube has a bin within half a grid step along a and b
    rgb = torch.rand(1, 3, 500, 1, generator=torch.Generator().manual_seed(0))
    ab = normalised_rgb_to_lab(rgb, [0, 0, 0], [1, 1, 1])[0, 1:, :, 0].T
    assert (ab[:, None, :] - bins[None]).abs().amax(dim=-1).amin(dim=1).max() <= 5.0 + 1e-4


# ---------------------------------------------------------------------------------------------------------------------
# Colourisation loss, written out as the paper does
def naive_soft_encoding(ab, bins, neighbours=5, sigma=5.0):
    rows = []
    for value in ab.tolist():
        distances = [math.dist(value, centre) for centre in bins.tolist()]
        nearest = sorted(range(len(distances)), key=distances.__getitem__)[:neighbours]
        kernel = {q: math.exp(-distances[q] ** 2 / (2 * sigma**2)) for q in nearest}
        total = sum(kernel.values())
        rows.append([kernel.get(q, 0.0) / total for q in range(len(distances))])
    return torch.tensor(rows)


def test_soft_encoding_spreads_each_value_over_its_5_nearest_bins_with_a_gaussian():
    bins = in_gamut_ab_bins()
    # (values with no tie for the 5th nearest bin)
    ab = torch.tensor([[0.0, 0.0], [3.0, -7.0], [41.5, 12.25], [-61.3, 54.2], [95.0, -3.0]])
    encoded = soft_encode_ab(ab, bins)
    torch.testing.assert_close(encoded, naive_soft_encoding(ab, bins))
    assert torch.equal((encoded > 0).sum(dim=1), torch.full((5,), 5))
    assert bins[encoded[0].argmax()].tolist() == [0, 0]  # a value on a bin centre weighs most there


def naive_rebalancing(counts, bins, lam=0.5, sigma=5.0):
    empirical = [count / sum(counts) for count in counts]
    smoothed = [sum(empirical[j] * math.exp(-math.dist(bins[i], bins[j]) ** 2 / (2 * sigma**2))
                    for j in range(len(bins))) for i in range(len(bins))]
    smoothed = [value / sum(smoothed) for value in smoothed]
    weights = [1 / ((1 - lam) * value + lam / len(bins)) for value in smoothed]
    scale = sum(p * w for p, w in zip(smoothed, weights))  # E_p̃[w] = 1
    return torch.tensor(smoothed, dtype=torch.float64), torch.tensor([w / scale for w in weights], dtype=torch.float64)


def test_rebalancing_weights_follow_eq_4_and_average_to_one_under_the_empirical_distribution():
    bins = in_gamut_ab_bins()
    counts = torch.zeros(313, dtype=torch.float64)
    counts[150:170] = torch.arange(1.0, 21.0) ** 3  # a peaked, grey-ish distribution
    counts[0] = 1.0
    distribution = smoothed_bin_distribution(counts, bins)
    weights = rebalancing_weights(distribution)
    expected_distribution, expected_weights = naive_rebalancing(counts.tolist(), bins.tolist())
    torch.testing.assert_close(distribution, expected_distribution)
    torch.testing.assert_close(weights, expected_weights)
    assert (distribution * weights).sum().item() == pytest.approx(1.0)
    assert weights[0] > weights[169]  # rare colours weigh more
    torch.testing.assert_close(rebalancing_weights(distribution, lam=1.0), torch.ones(313, dtype=torch.float64))


def test_rebalanced_cross_entropy_value_and_gradient_match_eq_2():
    bins = in_gamut_ab_bins()
    generator = torch.Generator().manual_seed(0)
    ab = torch.randn(2 * 3 * 3, 2, generator=generator) * 30
    targets = soft_encode_ab(ab, bins).view(2, 3, 3, 313).permute(0, 3, 1, 2)
    weights = torch.rand(313, generator=generator) + 0.5
    logits = torch.randn(2, 313, 3, 3, generator=generator, requires_grad=True)
    naive_logits = logits.detach().clone().requires_grad_(True)
    loss = rebalanced_cross_entropy(logits, targets, weights)
    terms = []
    for b in range(2):
        for h in range(3):
            for w in range(3):
                z, logit = targets[b, :, h, w], naive_logits[b, :, h, w]
                log_probability = logit - torch.log(torch.exp(logit).sum())
                terms.append(-weights[int(z.argmax())] * (z * log_probability).sum())
    naive = torch.stack(terms).mean()
    torch.testing.assert_close(loss, naive)
    loss.backward()
    naive.backward()
    torch.testing.assert_close(logits.grad, naive_logits.grad)


def test_annealed_mean_goes_from_the_mean_to_the_mode():
    bins = in_gamut_ab_bins()
    logits = torch.randn(1, 313, 1, 1, generator=torch.Generator().manual_seed(1))
    probabilities = torch.softmax(logits[0, :, 0, 0], dim=0)
    torch.testing.assert_close(annealed_mean(logits, bins, 1.0)[0, :, 0, 0], probabilities @ bins)
    torch.testing.assert_close(annealed_mean(logits, bins, 1e-4)[0, :, 0, 0], bins[probabilities.argmax()], atol=1e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Context encoder loss and regions
def test_region_l2_weights_the_border_and_ignores_the_rest():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.zeros(2, 1, 8, 8)
    hidden[0, :, 2:5, 3:6] = 1
    hidden[1, :, 0:2, 0:3] = 1
    predictions = torch.randn(2, 3, 8, 8, generator=generator, requires_grad=True)
    naive_predictions = predictions.detach().clone().requires_grad_(True)
    targets = torch.randn(2, 3, 8, 8, generator=generator)
    loss = region_l2_loss(predictions, targets, region_weights(hidden, overlap_pixels=1, overlap_weight=10.0))
    total, count = 0.0, 0
    for b in range(2):
        holes = [(i, j) for i in range(8) for j in range(8) if hidden[b, 0, i, j] == 1]
        for i in range(8):
            for j in range(8):
                if (i, j) in holes:
                    weight = 1.0
                elif any(max(abs(i - y), abs(j - x)) <= 1 for y, x in holes):
                    weight = 10.0  # the overlap border, within 1 px of the hole
                else:
                    continue  # context: not scored
                total = total + weight * ((naive_predictions[b, :, i, j] - targets[b, :, i, j]) ** 2).sum()
                count += 3
    naive = total / count
    torch.testing.assert_close(loss, naive)
    loss.backward()
    naive.backward()
    torch.testing.assert_close(predictions.grad, naive_predictions.grad)
    assert (predictions.grad[0, :, 7, 0] == 0).all()  # far from the hole: no gradient
    # no overlap: the plain mean squared error over the hole
    plain = region_l2_loss(predictions, targets, region_weights(hidden, overlap_pixels=0))
    mask = hidden.bool().expand(-1, 3, -1, -1)
    torch.testing.assert_close(plain, (predictions - targets)[mask].pow(2).mean())


def test_region_masks():
    # central: a quarter of the image; shrunk by the overlap, it grows back to exactly the central square
    square = central_mask(16, 16)
    assert square.sum() == 64 and square[0, 4:12, 4:12].all()
    shrunk = central_mask(16, 16, shrink=2)
    torch.testing.assert_close(region_weights(shrunk[None], 2, 10.0) > 0, square[None].bool())
    seeds = torch.tensor([3, 4, 3])
    for kind in ("random_block", "random_region"):
        masks = inpainting_masks(kind, seeds, 32, 32)
        assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])  # the seed decides
        coverage = masks.mean(dim=(1, 2, 3))
        if kind == "random_block":
            assert (coverage <= 0.25).all() and (coverage > 0.06).all()  # up to a quarter
        else:
            assert ((coverage - 0.25).abs() < 0.02).all()
    with pytest.raises(ValueError, match="mask kind must be one of"):
        inpainting_masks("ring", seeds, 32, 32)


# ---------------------------------------------------------------------------------------------------------------------
# The models: few steps, vanilla loading, exact resume
def test_models_learn_on_a_fixed_batch_and_draw_their_figure(tmp_path, embedded_images):
    from hf_ssl.evaluation.features import default_eval_transform
    from hf_ssl.evaluation.reconstruction import ReconstructionFigure

    pixels = torch.stack([default_eval_transform(16)(image.convert("RGB"))
                          for image in embedded_images["train"].select(range(8))["image"]])
    pixels[:, 0] += 0.5  # some colour for colourisation
    for name, model in {"colourisation": tiny_colourisation(), "regression": tiny_colourisation(objective="regression"),
                        "context_encoder": tiny_context_encoder(mask_type="random_block")}.items():
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(6):
            loss = model(pixels, mask_seed=torch.arange(8)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < losses[0], (name, losses)
        figure = ReconstructionFigure(embedded_images["test"], tmp_path / f"{name}.png", default_eval_transform(16),
                                      num_images=3, num_loss_images=6)
        metrics = figure(model)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and model.training
        assert figure(model) == metrics  # fixed held-out images and regions
    colourisation = tiny_colourisation()
    colourisation.train()
    colourisation(pixels)
    assert colourisation.ab_bin_counts.sum() == 8 * 4 * 4  # one count per predicted position
    colourisation.eval()
    colourisation(pixels)
    assert colourisation.ab_bin_counts.sum() == 8 * 4 * 4  # evaluation does not count


def _trainer(output_dir, dataset, factory, max_steps=4):
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer

    torch.manual_seed(0)
    args = SSLTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-3,
        logging_steps=1, save_steps=2, use_cpu=True, report_to="none", seed=7, disable_tqdm=True,
    )
    return SSLTrainer(model=factory(), args=args, train_dataset=dataset)


def test_each_method_resumes_exactly_and_publishes_a_plain_vit(tmp_path, embedded_images):
    from transformers import AutoModel

    from hf_ssl.views import apply_views
    from hf_ssl.views.single_view import SingleViewConfig, SingleViewTransform

    # 3 steps of 8 per epoch: the resume point (step 2) is mid-epoch and step 4 is in the next epoch
    dataset = apply_views(embedded_images["train"].select(range(24)), SingleViewTransform(SingleViewConfig(16)))
    factories = {"colourisation": tiny_colourisation,
                 "context_encoder": lambda: tiny_context_encoder(mask_type="random_region")}
    pixels = torch.randn(3, 3, 16, 16)
    for name, factory in factories.items():
        full = _trainer(tmp_path / name / "full", dataset, factory)  # saves checkpoint-2 on its way
        full.train()
        resumed = _trainer(tmp_path / name / "resumed", dataset, factory)
        resumed.train(resume_from_checkpoint=str(tmp_path / name / "full" / "checkpoint-2"))
        expected, actual = full.model.state_dict(), resumed.model.state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], msg=f"{name}: {key}")
        losses = [log["loss"] for log in full.state.log_history if "loss" in log]
        assert len(losses) == 4 and [log["loss"] for log in resumed.state.log_history if "loss" in log] == losses
        if name == "colourisation":
            assert full.model.ab_bin_counts.sum() == 4 * 8 * 4 * 4  # every training position counted once
        # the whole model comes back through AutoSSLModel, the encoder alone through plain AutoModel
        full.model.save_pretrained(tmp_path / name / "published")
        loaded = AutoSSLModel.from_pretrained(tmp_path / name / "published")
        assert type(loaded) is type(full.model)
        for key, value in full.model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, msg=f"{name}: {key}")
        encoder, info = AutoModel.from_pretrained(tmp_path / name / "published", output_loading_info=True)
        assert type(encoder).__name__ == "ViTModel"
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            torch.testing.assert_close(encoder.eval()(pixel_values=pixels).last_hidden_state,
                                       full.model.eval().encoder(pixel_values=pixels).last_hidden_state)


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="objective must be one of"):
        tiny_colourisation(objective="gan")
    with pytest.raises(ValueError, match="rebalancing_lambda must be in"):
        tiny_colourisation(rebalancing_lambda=1.5)
    with pytest.raises(ValueError, match="must divide the patch size"):
        tiny_colourisation(predictions_per_patch_side=3)
    with pytest.raises(ValueError, match="mask_type must be one of"):
        tiny_context_encoder(mask_type="ring")
    with pytest.raises(ValueError, match="is gone after shrinking"):
        tiny_context_encoder(overlap_pixels=4)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="not a whole number"):
        tiny_colourisation()(torch.randn(1, 3, 18, 18))
    with pytest.raises(ValueError, match="needs a ViT encoder"):
        from transformers import ResNetConfig

        ContextEncoderForPreTraining.from_encoder_config(ResNetConfig())
