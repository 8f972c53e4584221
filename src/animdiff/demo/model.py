"""The demo model's architecture and its two shipped files.

It is SD1.5 and an AnimateDiff v3 motion module at toy width: the same diffusers/transformers
classes, the same block layout, the published configs with only the widths and depths changed.
The files are written in the layouts users' files have (an LDM single-file checkpoint, a guoyww
motion module), so `--demo` loads through exactly the code a user's `.safetensors` takes; the
loader re-reads every width from the tensors and needs no hint that this model is special.

Two things no file stores must therefore agree with the loader's rules: GroupNorm groups
(`convert.norm_groups` of the widths) and attention heads (the SD1.5 configs' 8 UNet/motion heads,
one CLIP head per 64 channels). And the VAE latent scale is SD1.5's 0.18215 (checkpoints carry no
config), so training rescales the VAE's latent space to it (`rescale_vae_latents`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from animdiff.models.convert import norm_groups, shipped_config
from animdiff.testing import layouts
from animdiff.testing.factory import write_checkpoint

UNET_WIDTHS = (32, 32, 64, 64)
VAE_WIDTHS = (16, 32, 32, 32)
TEXT_WIDTH = 64
TEXT_LAYERS = 3
#: A1111's SD1.5 latent scale; the loader applies it to every single-file checkpoint.
LATENT_SCALE = 0.18215
MOTION_POSITIONS = 32

CHECKPOINT_NAME = "animdiff-demo-sd15.safetensors"
MOTION_NAME = "animdiff-demo-mm-v3.safetensors"


def weights_dir() -> Path:
    """The shipped weights, laid out as a models folder (so the ordinary model store finds them)."""
    return Path(str(resources.files("animdiff.demo").joinpath("weights")))


def unet_config() -> dict:
    return shipped_config(
        "sd15_unet.json",
        block_out_channels=list(UNET_WIDTHS),
        norm_num_groups=norm_groups(UNET_WIDTHS),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        sample_size=8,
    )


def vae_config() -> dict:
    return shipped_config(
        "sd15_vae.json",
        block_out_channels=list(VAE_WIDTHS),
        norm_num_groups=norm_groups(VAE_WIDTHS),
        layers_per_block=1,
        sample_size=64,
    )


def text_config() -> dict:
    return shipped_config(
        "sd15_text_encoder.json",
        hidden_size=TEXT_WIDTH,
        projection_dim=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=max(1, TEXT_WIDTH // 64),
    )


def motion_config() -> dict:
    return shipped_config(
        "motion_adapter.json",
        block_out_channels=list(UNET_WIDTHS),
        motion_norm_num_groups=norm_groups(UNET_WIDTHS),
        motion_layers_per_block=1,
        use_motion_mid_block=False,  # v3's layout
        motion_max_seq_length=MOTION_POSITIONS,
    )


@dataclass
class DemoModel:
    """The trainable parts, as the diffusers/transformers classes the loader rebuilds."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    motion: MotionAdapter


def build(seed: int) -> DemoModel:
    torch.manual_seed(seed)
    return DemoModel(
        unet=UNet2DConditionModel(**unet_config()),
        vae=AutoencoderKL(**vae_config()),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config())),
        motion=MotionAdapter(**motion_config()),
    )


@torch.no_grad()
def rescale_vae_latents(vae: AutoencoderKL, latent_std: float) -> None:
    """Make `latent_std` (measured on the posterior means) equal 1 / LATENT_SCALE, exactly.

    The encoder's mean output is multiplied by k and its log-variance shifted by 2 log k; the
    decoder's first layer divides by k. Decoding an encoded image gives the same pixels as before.
    """
    k = 1.0 / (LATENT_SCALE * latent_std)
    channels = vae.config.latent_channels
    quant = vae.quant_conv
    quant.weight[:channels] *= k
    quant.bias[:channels] *= k
    quant.bias[channels:] += 2 * torch.log(torch.tensor(k))
    vae.post_quant_conv.weight /= k


def checkpoint_state(model: DemoModel) -> dict[str, torch.Tensor]:
    """The LDM single-file layout, as `animdiff.testing` writes the tiny test checkpoints."""
    state = {
        **layouts.unet_to_ldm(model.unet.state_dict(), model.unet.config),
        **layouts.vae_to_ldm(model.vae.state_dict(), model.vae.config),
        **layouts.clip_to_ldm(
            model.text_encoder.state_dict(), model.text_encoder.config.max_position_embeddings
        ),
        **layouts.ldm_schedule_buffers(),
    }
    return {k: v.detach().contiguous() for k, v in state.items()}


def write_weights(model: DemoModel, folder: Path) -> dict[str, Path]:
    """Both files in float16 safetensors, in a models-folder layout under `folder`."""
    from safetensors.torch import save_file

    checkpoint = write_checkpoint(folder / "Stable-diffusion" / CHECKPOINT_NAME, checkpoint_state(model))
    motion_path = folder / "AnimateDiff" / MOTION_NAME
    motion_path.parent.mkdir(parents=True, exist_ok=True)
    motion = layouts.motion_to_guoyww(model.motion.state_dict())
    save_file({k: v.detach().half().contiguous() for k, v in motion.items()}, str(motion_path))
    return {"checkpoint": checkpoint, "motion_module": motion_path}
