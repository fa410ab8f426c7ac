"""MAE: masked autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv:2111.06377).

A random 75 % of the patches of each image is dropped; the ViT encoder sees only the visible 25 % (no mask tokens
in the encoder, §3 "MAE encoder"); a light transformer decoder receives the encoded visible tokens plus a shared,
learned mask token at every masked position (with position embeddings) and predicts the pixels of every patch; the
loss scores the masked patches only (:class:`hf_ssl.losses.masked_pixels.MaskedPixelLoss`, normalised pixels by
default). After pretraining the decoder is dropped; the encoder is used on *whole* images (probes, fine-tuning).

Why not ``transformers.ViTMAEForPreTraining`` as is: its encoder is a ``ViTMAEModel`` (``model_type = "vit_mae"``),
which masks even in eval mode and whose checkpoints ``AutoModel`` loads as ``ViTMAEModel``, not as a plain ViT. Here
the published encoder is a vanilla ``ViTModel`` under ``vit.`` with a ``ViTConfig`` (so ``AutoModel`` /
``ViTForImageClassification`` load it and run it unmasked), and the masking happens in
:meth:`MAEForPreTraining.encode_visible`, which runs that ``ViTModel``'s own embedding, layer and norm modules on the
kept tokens. The decoder *is* transformers' ``ViTMAEDecoder`` (weights under ``decoder.``, which vanilla classes
ignore), and the masking follows ``ViTMAEEmbeddings.random_masking`` step for step and takes the same ``noise``
argument, so the loss equals ``ViTMAEForPreTraining``'s on the same weights, images and noise (tests/test_mae.py).

Position embeddings: MAE uses fixed 2-D sin-cos embeddings in encoder and decoder. ``fixed_position_embeddings``
(default) writes them into the ``ViTModel``'s ``position_embeddings`` and freezes them during pretraining; vanilla
fine-tuning sees an ordinary (trainable) ViT parameter. (transformers 5.24's ``ViTMAEForPreTraining(config)`` leaves
both its sin-cos tables at zero, one more reason to build the pieces ourselves; its decoder built directly is right.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, ViTMAEConfig
from transformers.models.vit_mae.modeling_vit_mae import (
    ViTMAEDecoder,
    build_2d_sinusoidal_position_embedding,
)
from transformers.utils import ModelOutput

from ..losses.masked_pixels import MaskedPixelLoss, check_tiles, masked_mean
from ..modules.backbones import require_vit, square_side
from .base import SSLMethodConfig, SSLPreTrainedModel


@dataclass
class MAEConfig(SSLMethodConfig):
    """MAE hyperparameters (defaults: the paper's, He et al. 2021 §4 / Appendix A.1).

    mask_ratio: fraction of patches dropped per image, strictly between 0 and 1 (0.75).
    decoder_hidden_size / decoder_num_hidden_layers / decoder_num_attention_heads / decoder_intermediate_size:
        the light decoder (512 wide, 8 blocks, 16 heads, MLP 2048).
    norm_pix_loss: per-patch normalised pixel targets (Table 1d; the paper's default).
    fixed_position_embeddings: fixed 2-D sin-cos position embeddings in the encoder during pretraining.
    """

    method = "mae"

    mask_ratio: float = 0.75
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    norm_pix_loss: bool = True
    fixed_position_embeddings: bool = True

    def __post_init__(self):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio must be strictly between 0 and 1 (the fraction of patches hidden from the encoder; MAE "
                f"uses 0.75), got {self.mask_ratio}"
            )
        self.check_ranges(
            at_least_one=(
                "decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads",
                "decoder_intermediate_size",
            )
        )
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError(
                f"decoder_hidden_size ({self.decoder_hidden_size}) must be a multiple of decoder_num_attention_heads "
                f"({self.decoder_num_attention_heads})"
            )


@dataclass
class MAEOutput(ModelOutput):
    """Output of :class:`MAEForPreTraining`.

    loss: scalar masked-patch reconstruction loss (mean over the masked patches of the batch).
    visible_patch_loss: the same error on the visible patches, which are not scored (a logged diagnostic, no
        gradient): the decoder is never asked to copy what the encoder saw.
    logits: ``(batch, num_patches, patch_size**2 * channels)`` predicted pixels of every patch (normalised per patch
        with ``norm_pix_loss``), in :func:`hf_ssl.losses.masked_pixels.patchify` order.
    mask: ``(batch, num_patches)``, 1 for masked (reconstructed, scored) patches, 0 for visible ones.
    ids_restore: ``(batch, num_patches)`` the permutation that undoes the per-sample shuffle.
    """

    loss: torch.Tensor | None = None
    visible_patch_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (He et al. 2021 §3; ``ViTMAEEmbeddings.random_masking``).

    Args:
        tokens: ``(B, L, D)`` patch tokens (position embeddings already added).
        mask_ratio: fraction dropped; ``int(L * (1 - mask_ratio))`` tokens are kept in every sample.
        noise: ``(B, L)`` values whose ascending order decides which tokens are kept (the smallest); default
            ``torch.rand`` (the global RNG, which the Trainer checkpoints).

    Returns:
        ``kept (B, L_keep, D)``, ``mask (B, L)`` (1 = dropped), ``ids_restore (B, L)``.
    """
    batch, length, dim = tokens.shape
    keep = int(length * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps no patch of {length}: lower mask_ratio or use smaller patches"
        )
    if noise is None:
        noise = torch.rand(batch, length, device=tokens.device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must be (batch, num_patches) = {(batch, length)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise.to(tokens.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def noise_from_seeds(mask_seed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``(B, num_patches)`` uniform noise for :func:`random_masking`, row ``i`` drawn from a generator seeded by
    ``mask_seed[i]`` (``(B,)`` integers): each example's mask depends on its own seed alone, so it is the same
    whichever batch or process holds the example, and after a resume."""
    generators = (torch.Generator().manual_seed(int(seed)) for seed in mask_seed.tolist())
    return torch.stack([torch.rand(num_patches, generator=generator) for generator in generators])


class MAEForPreTraining(SSLPreTrainedModel):
    """MAE over a transformers ``ViTModel``.

    Modules: ``vit`` (the published ``ViTModel``, unchanged), ``decoder`` (transformers' ``ViTMAEDecoder``) and
    ``loss_fn`` (:class:`MaskedPixelLoss`). No per-step hooks.

    Inputs: ``pixel_values (batch, C, H, W)`` at the encoder's ``image_size`` (one augmented view per image:
    :class:`hf_ssl.views.single_view.SingleViewTransform` and :func:`hf_ssl.data.collators.stack_views`), and optionally
    ``noise (batch, num_patches)`` to fix the masks (as ``ViTMAEForPreTraining``) or ``mask_seed (batch,)``, one seed
    per example (:func:`noise_from_seeds`; what ``SingleViewTransform`` emits). Neither: ``torch.rand``.
    """

    method_config_class = MAEConfig
    pretraining_job = "masked_image"
    paper = "He et al. 2021. Masked Autoencoders Are Scalable Vision Learners. arXiv:2111.06377"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: MAEConfig = self.method_config
        require_vit(config, "MAE")
        self.register_published_encoder(self.build_encoder())
        self.patch_size = square_side(config.patch_size)
        self.image_size = square_side(config.image_size)
        check_tiles(self.image_size, self.image_size, self.patch_size)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.decoder = ViTMAEDecoder(self.vit_mae_config(), num_patches=self.num_patches)
        self.loss_fn = MaskedPixelLoss(self.patch_size, settings.norm_pix_loss)
        self.post_init()
        if settings.fixed_position_embeddings:
            table = build_2d_sinusoidal_position_embedding(
                self.image_size // self.patch_size, self.image_size // self.patch_size, config.hidden_size,
                cls_token=True,
            )
            with torch.no_grad():
                self.vit.embeddings.position_embeddings.copy_(table.unsqueeze(0))
        self.freeze_fixed_tables()

    def freeze_fixed_tables(self) -> None:
        """Keep the fixed sin-cos position tables out of the optimizer: the decoder's always, the encoder's with
        ``fixed_position_embeddings``. (``from_pretrained`` rebuilds parameters, so it is called again there.)"""
        self.decoder.decoder_pos_embed.requires_grad_(False)
        if self.method_config.fixed_position_embeddings:
            self.vit.embeddings.position_embeddings.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.freeze_fixed_tables()
        return model

    def vit_mae_config(self) -> ViTMAEConfig:
        """This model's architecture as a ``ViTMAEConfig`` (encoder fields from our ``ViTConfig``, decoder and masking
        from the method settings): what ``ViTMAEDecoder`` reads, and what ``ViTMAEForPreTraining`` needs to hold the
        same weights (the parity test). Rebuilt from ``ssl_config`` on load; never saved on its own."""
        settings: MAEConfig = self.method_config
        known = set(ViTMAEConfig().to_dict()) - {"model_type", "architectures", "transformers_version", "_name_or_path"}
        encoder_fields = {key: value for key, value in self.config.to_dict().items() if key in known}
        vit_mae_config = ViTMAEConfig(
            **{
                **encoder_fields,
                "decoder_hidden_size": settings.decoder_hidden_size,
                "decoder_num_hidden_layers": settings.decoder_num_hidden_layers,
                "decoder_num_attention_heads": settings.decoder_num_attention_heads,
                "decoder_intermediate_size": settings.decoder_intermediate_size,
                "norm_pix_loss": settings.norm_pix_loss,
                "mask_ratio": settings.mask_ratio,
            }
        )
        vit_mae_config._attn_implementation = self.config._attn_implementation or "sdpa"
        return vit_mae_config

    def check_pixels(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}; MAE takes "
                "one view per image (hf_ssl.views.single_view.SingleViewTransform)"
            )
        height, width = pixel_values.shape[-2:]
        check_tiles(height, width, self.patch_size)
        if (height, width) != (self.image_size, self.image_size):
            raise ValueError(
                f"images are {height}x{width} but the encoder was built for {self.image_size}x{self.image_size}: "
                f"crop or resize them to {self.image_size} (e.g. `--global_crop_size {self.image_size}`)"
            )

    def encode_visible(
        self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder pass over the kept patches only, with the ``ViTModel``'s own modules.

        ``pixel_values (B, C, H, W)`` -> ``latent (B, 1 + L_keep, D)`` (CLS first, after the final LayerNorm),
        ``mask (B, L)``, ``ids_restore (B, L)``. Same order of operations as ``ViTMAEModel``: patch embedding,
        + position embedding, masking, CLS token (+ its position embedding) prepended, blocks, LayerNorm.
        """
        self.check_pixels(pixel_values)
        embeddings = self.vit.embeddings
        position = embeddings.position_embeddings
        tokens = embeddings.patch_embeddings(pixel_values.to(position.dtype)) + position[:, 1:]
        tokens, mask, ids_restore = random_masking(tokens, self.method_config.mask_ratio, noise)
        cls = (embeddings.cls_token + position[:, :1]).expand(tokens.shape[0], -1, -1)
        hidden = embeddings.dropout(torch.cat([cls, tokens], dim=1))
        for layer in self.vit.layers:
            hidden = layer(hidden)
        return self.vit.layernorm(hidden), mask, ids_restore

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        return_loss: bool = True,
        mask_seed: torch.Tensor | None = None,
        **kwargs,
    ) -> MAEOutput:
        if noise is None and mask_seed is not None:
            noise = noise_from_seeds(mask_seed, self.num_patches)
        latent, mask, ids_restore = self.encode_visible(pixel_values, noise)
        logits = self.decoder(latent, ids_restore).logits  # (B, L, p*p*C)
        if not return_loss:
            return MAEOutput(logits=logits, mask=mask, ids_restore=ids_restore)
        per_patch = self.loss_fn.per_patch_error(pixel_values, logits)  # (B, L)
        loss = masked_mean(per_patch, mask)  # scored on the masked patches only (§3)
        visible_patch_loss = masked_mean(per_patch.detach(), 1 - mask)
        return MAEOutput(
            loss=loss, visible_patch_loss=visible_patch_loss, logits=logits, mask=mask, ids_restore=ids_restore
        )
