"""SDXL: same latents as diffusers' AnimateDiffSDXLPipeline when one context window covers every frame.

diffusers 0.42's `UNetMotionModel.from_unet2d` does not copy the UNet's `add_embedding` (the size /
pooled-text embedding), so the peer's UNet gets it copied here before comparing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import AnimateDiffSDXLPipeline, UNetMotionModel

from animdiff.family import SDXL as SDXL_FAMILY
from animdiff.models.load import build_motion_unet
from animdiff.models.motion_unet import MotionUNet
from animdiff.pipeline import FrameCounts
from animdiff.prompts.conditioning import frame_conditioning, plan_prompts
from animdiff.sampling.guidance import Conditioning, guided_windows
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.testing.sdxl import diffusers_sdxl_pipeline_sharing

SDXL = "tiny-sdxl.safetensors"


def peer_pipeline(models, betas: dict, sampler: str) -> AnimateDiffSDXLPipeline:
    """diffusers' pipeline converting the 2-D UNet itself (an independent peer for our motion UNet),
    with the size/pooled-text embedding its conversion leaves fresh copied over."""
    parts = models.parts
    pipe = diffusers_sdxl_pipeline_sharing(models, betas, sampler, unet=parts.unet)
    assert isinstance(pipe.unet, UNetMotionModel)
    pipe.unet.add_embedding.load_state_dict(parts.unet.add_embedding.state_dict())
    pipe.unet.to(parts.unet.dtype).eval()
    return pipe


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("module", "sampler", "negative", "cfg"),
    [
        ("tiny-mm-sdxl-v10-beta.ckpt", "DDIM", "blurry, low quality", 7.5),
        ("tiny-hotshotxl.safetensors", "DDIM", "ugly, watermark", 5.0),
    ],
)
def test_latents_match_diffusers_sdxl(animator, tiny_params, module, sampler, negative, cfg) -> None:
    params = tiny_params(
        checkpoint=SDXL,
        motion_module=module,
        sampler=sampler,
        negative_prompt=negative,
        cfg_scale=cfg,
        groupnorm="diffusers",
        steps=4,
        frames=8,
        context=8,
    )
    job = animator.prepare(params, write=False)
    models = animator.load_job(job)
    counts = FrameCounts.resolve(params)
    with torch.inference_mode():
        ours = animator.sample_job(job, models, lambda event: None)
    noise = initial_noise(frame_generators(job.seed, counts.batch), params.height, params.width)
    pipe = peer_pipeline(models, job.motion_family.betas.scheduler_config(), sampler)
    with torch.inference_mode():
        theirs = pipe(
            prompt=params.prompt,
            negative_prompt=negative,
            num_frames=counts.batch,
            height=params.height,
            width=params.width,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg_scale,
            latents=noise.permute(1, 0, 2, 3).unsqueeze(0),
            output_type="latent",
        ).frames[0]
    theirs = theirs.permute(1, 0, 2, 3)
    assert ours.shape == theirs.shape == (8, 4, 8, 8)
    # Not bit-identical as for SD1.5: the peer adds the size/pooled embedding per video, we per frame,
    # and encodes prompt and negative one at a time. Euler (latents ~50) lands at 1.1e-4 here.
    difference = (ours - theirs).abs().max().item()
    print(f"{module} {sampler}: max abs difference {difference:.3g}, latents up to {ours.abs().max():.3g}")
    assert difference < 1e-4


def test_one_denoiser_call_matches_diffusers_in_float64(models_dir, tiny_params) -> None:
    """One guided UNet call, our conditioning against the peer's, in float64: equal to rounding."""
    params = tiny_params(
        checkpoint=SDXL,
        motion_module="tiny-mm-sdxl-v10-beta.ckpt",
        negative_prompt="blurry",
        groupnorm="diffusers",
    )
    parts = SDXL_FAMILY.load_checkpoint(models_dir / "Stable-diffusion" / SDXL, torch.float64)
    parts.vae.to(torch.float64)
    motion = SDXL_FAMILY.load_motion_module(models_dir / "AnimateDiff" / params.motion_module, torch.float64)
    video_model = MotionUNet(
        build_motion_unet(parts.unet, motion.adapter, path=motion.path), motion.kind, "diffusers"
    )
    models = SimpleNamespace(parts=parts, motion=motion)
    pipe = peer_pipeline(models, motion.family.betas.scheduler_config(), "DDIM")
    with torch.inference_mode():
        encoder = SDXL_FAMILY.text_conditioner(parts, clip_skip=1, width=64, height=64)
        plan = plan_prompts(params.prompt, video_length=8, batch=8, context=8, closed_loop="R-P")
        cond, uncond = frame_conditioning(encoder, plan, params.negative_prompt, 8)
        conditioning = Conditioning(
            cond.tokens, uncond.tokens, 7.5, cond_vector=cond.vector, uncond_vector=uncond.vector
        )
        x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        t = torch.tensor(601)
        ours = guided_windows(video_model, x, t, [list(range(8))], conditioning)[0]
        embeds = pipe.encode_prompt(
            params.prompt, device="cpu", num_videos_per_prompt=1, negative_prompt=params.negative_prompt
        )
        prompt_embeds, negative_embeds, pooled, negative_pooled = embeds
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]], dtype=torch.float64)
        sample = x.permute(1, 0, 2, 3).unsqueeze(0)
        eps = pipe.unet(
            torch.cat([sample, sample]),
            t,
            encoder_hidden_states=torch.cat([negative_embeds, prompt_embeds]).repeat_interleave(8, dim=0),
            added_cond_kwargs={
                "text_embeds": torch.cat([negative_pooled, pooled]),
                "time_ids": time_ids.repeat(2, 1),
            },
        ).sample
        eps_uncond, eps_cond = eps.chunk(2)
        theirs = (eps_uncond + 7.5 * (eps_cond - eps_uncond))[0].permute(1, 0, 2, 3)
    # Ours encodes prompt and negative in one batch, the peer one at a time: equal to rounding.
    assert (cond.tokens[0:1] - prompt_embeds).abs().max().item() < 1e-12
    assert (uncond.tokens - negative_embeds).abs().max().item() < 1e-12
    assert (cond.vector[0:1, : pooled.shape[1]] - pooled).abs().max().item() < 1e-12
    assert (uncond.vector[:, : pooled.shape[1]] - negative_pooled).abs().max().item() < 1e-12
    difference = (ours - theirs).abs().max().item()
    print(f"float64 one call: max abs difference {difference:.3g}")
    assert difference < 1e-10
