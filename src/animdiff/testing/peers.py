"""diffusers' own AnimateDiffPipeline over the tiny models: the peer for parity tests and benches."""

from __future__ import annotations

from diffusers import AnimateDiffPipeline

from animdiff.models.tokenizer import clip_tokenizer
from animdiff.sampling.samplers import make_scheduler
from animdiff.testing.factory import tiny_motion_adapter, tiny_sd


def tiny_diffusers_pipeline(version: str = "v2", sampler: str = "DDIM") -> AnimateDiffPipeline:
    """The same weights our tiny files hold, with our offline tokenizer and scheduler settings."""
    sd = tiny_sd()
    pipe = AnimateDiffPipeline(
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=sd.unet,
        motion_adapter=tiny_motion_adapter(version),
        scheduler=make_scheduler(sampler),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
