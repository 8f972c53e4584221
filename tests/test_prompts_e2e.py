"""Prompt syntax, prompt travel and LoRAs through the whole pipeline on the tiny models."""

from __future__ import annotations

import pytest
import torch

from animdiff.errors import LoraError, ModelNotFoundError, PromptError
from animdiff.pipeline import FrameCounts


def latents(animator, params) -> torch.Tensor:
    return animator.run(params, write=False).latents


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_lora_tag_changes_the_result_and_weight_zero_does_not(animator, tiny_params) -> None:
    base = latents(animator, tiny_params(steps=2))
    zero = latents(animator, tiny_params(steps=2, prompt="a corgi running on the beach <lora:tiny-style:0>"))
    styled = latents(
        animator, tiny_params(steps=2, prompt="a corgi running on the beach <lora:tiny-style:0.8>")
    )
    assert torch.equal(base, zero)
    assert (base - styled).abs().max() > 1e-3


def test_cached_model_is_restored_bit_exactly_after_loras(animator, tiny_params) -> None:
    params = tiny_params(steps=1, prompt="x <lora:tiny-style:1> <lora:tiny-detail:0.5:0.2>")
    models = animator.load(params)
    before_unet, before_text = snapshot(models.unet.unet), snapshot(models.parts.text_encoder)
    latents(animator, tiny_params(steps=1, prompt=params.prompt, motion_loras=["v2_lora_TinyZoomIn:0.7"]))
    after_unet, after_text = snapshot(models.unet.unet), snapshot(models.parts.text_encoder)
    assert all(torch.equal(before_unet[k], after_unet[k]) for k in before_unet)
    assert all(torch.equal(before_text[k], after_text[k]) for k in before_text)


def test_motion_lora_setting_changes_the_motion(animator, tiny_params) -> None:
    base = latents(animator, tiny_params(steps=2))
    zoomed = latents(animator, tiny_params(steps=2, motion_loras=["v2_lora_TinyZoomIn.ckpt:1.0"]))
    assert (base - zoomed).abs().max() > 1e-4


def test_lora_problems_are_clear(animator, tiny_params) -> None:
    with pytest.raises(ModelNotFoundError, match="'no-such-lora' not found"):
        latents(animator, tiny_params(steps=1, prompt="x <lora:no-such-lora:1>"))
    with pytest.raises(LoraError, match=r"tiny-sdxl-style\.safetensors is an SDXL LoRA"):
        latents(animator, tiny_params(steps=1, prompt="x <lora:tiny-sdxl-style:1>"))


def test_attention_weights_change_the_embedding(animator, tiny_params) -> None:
    base = latents(animator, tiny_params(steps=1, prompt="a corgi running on the beach"))
    same = latents(animator, tiny_params(steps=1, prompt="a corgi running on the beach (:1.0)"))
    weighted = latents(animator, tiny_params(steps=1, prompt="a (corgi:1.4) running on the beach"))
    assert not torch.equal(base, weighted)
    assert same.shape == base.shape


def test_prompt_travel_renders_and_blends(animator, tiny_params) -> None:
    prompt = "masterpiece\n0: a corgi\n6: a cat\nbeach"
    travelled = latents(animator, tiny_params(steps=2, prompt=prompt, frames=8, context=8))
    assert travelled.shape[0] == 8
    assert torch.isfinite(travelled).all()
    plain = latents(animator, tiny_params(steps=2, prompt="masterpiece, a corgi, beach", frames=8, context=8))
    assert not torch.equal(travelled, plain)


def test_prompt_travel_errors_reach_the_user(animator, tiny_params) -> None:
    with pytest.raises(PromptError, match="keyframe 9"):
        latents(animator, tiny_params(steps=1, prompt="0: a\n9: b", frames=8, context=8))
    with pytest.raises(PromptError):
        latents(animator, tiny_params(steps=1, prompt="0: a\n4:b", frames=8, context=8))


def test_long_prompts_and_negative_are_padded_to_the_same_chunks(animator, tiny_params) -> None:
    long_prompt = ", ".join(["a very detailed corgi running on a sunny beach"] * 12)
    params = tiny_params(steps=1, prompt=long_prompt, negative_prompt="blurry")
    models = animator.load(params)
    from animdiff.prompts.conditioning import frame_embeddings, plan_prompts
    from animdiff.prompts.encode import PromptEncoder

    counts = FrameCounts.resolve(params)
    plan = plan_prompts(params.prompt, video_length=8, batch=counts.batch, context=8, closed_loop="R-P")
    cond, uncond = frame_embeddings(
        PromptEncoder(models.parts.text_encoder, models.parts.tokenizer), plan, "blurry", 8
    )
    assert cond.shape[1] == uncond.shape[1] == 77 * 2
    assert torch.isfinite(latents(animator, params)).all()


def test_clip_skip_changes_the_embedding(animator, tiny_params) -> None:
    one = latents(animator, tiny_params(steps=1, clip_skip=1))
    two = latents(animator, tiny_params(steps=1, clip_skip=2))
    assert not torch.equal(one, two)
