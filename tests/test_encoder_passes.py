"""image_features(..., views=N): one encoder pass per view on a CPU for encoders without BatchNorm, the same features
as one pass over all views; one pass for encoders with BatchNorm (their batch statistics then cover every view)."""

import torch
from conftest import tiny_vit_config
from transformers import ResNetConfig

from hf_ssl.methods.base import view_major
from hf_ssl.methods.simclr import SimCLRForPreTraining
from hf_ssl.modules.backbones import build_encoder, image_features

VIT = tiny_vit_config(image_size=8)  # no dropout (ViTConfig's default), so passes can be compared
RESNET = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic", image_size=8)


def count_passes(encoder: torch.nn.Module) -> list[int]:
    """Batch sizes of every forward call of ``encoder``."""
    sizes: list[int] = []
    encoder.register_forward_hook(lambda module, args, kwargs, output: sizes.append(kwargs["pixel_values"].shape[0]),
                                  with_kwargs=True)
    return sizes


def test_vit_sees_one_view_per_pass_and_gives_the_features_and_gradients_of_one_pass():
    torch.manual_seed(0)
    encoder = build_encoder(VIT).train()
    pixels = torch.randn(3 * 4, 3, 8, 8, requires_grad=True)
    joint = image_features(encoder, pixels)
    (joint_grad,) = torch.autograd.grad(joint.square().sum(), pixels)
    sizes = count_passes(encoder)
    per_view = image_features(encoder, pixels, views=3)
    (per_view_grad,) = torch.autograd.grad(per_view.square().sum(), pixels)
    assert sizes == [4, 4, 4]
    torch.testing.assert_close(per_view, joint, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_view_grad, joint_grad, rtol=1e-5, atol=1e-6)


def test_an_encoder_with_batch_norm_sees_every_view_in_one_pass():
    encoder = build_encoder(RESNET).train()
    sizes = count_passes(encoder)
    image_features(encoder, torch.randn(2 * 4, 3, 8, 8), views=2)
    assert sizes == [8]


def test_simclr_encodes_its_two_views_one_at_a_time():
    model = SimCLRForPreTraining.from_encoder_config(VIT, projection_hidden_dim=8, projection_dim=4)
    sizes = count_passes(model.encoder)
    crops = torch.randn(4, 2, 3, 8, 8)
    features = model.embed(crops)
    assert sizes == [4, 4]
    # View-major: the first four rows are the first views, whatever the number of passes.
    torch.testing.assert_close(features["view_a"], image_features(model.encoder, view_major(crops)[:4]))
