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


@pytest.mark.numerics
def test_lora_tag_changes_the_result_and_weight_zero_does_not(animator, tiny_params) -> None:
    base = latents(animator, tiny_params(steps=2))
    zero = latents(animator, tiny_params(steps=2, prompt="a corgi running on the beach <lora:tiny-style:0>"))
    styled = latents(
        animator, tiny_params(steps=2, prompt="a corgi running on the beach <lora:tiny-style:0.8>")
    )
    assert torch.equal(base, zero)
    assert (base - styled).abs().max() > 1e-3


@pytest.mark.numerics
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


@pytest.mark.numerics
def test_attention_weights_change_the_embedding_and_an_empty_group_does_not(animator, tiny_params) -> None:
    """`(corgi:1.4)` scales that token's embedding (and rescales the chunk to its old mean); an
    empty `(:1.0)` adds no token, so its prompt encodes to the same bits as the plain one."""
    from animdiff.prompts.encode import PromptEncoder

    models = animator.load(tiny_params())
    encoder = PromptEncoder(models.parts.text_encoder, models.parts.tokenizer)
    base, same, weighted = (
        encoder.encode([prompt])[0]
        for prompt in (
            "a corgi running on the beach",
            "a corgi running on the beach (:1.0)",
            "a (corgi:1.4) running on the beach",
        )
    )
    assert torch.equal(base, same)
    assert torch.isfinite(weighted).all()
    assert (base - weighted).abs().max() > 0.1
    plain = latents(animator, tiny_params(steps=1, prompt="a corgi running on the beach"))
    emphasised = latents(animator, tiny_params(steps=1, prompt="a (corgi:1.4) running on the beach"))
    assert torch.isfinite(emphasised).all()
    assert not torch.equal(plain, emphasised)


def test_prompt_travel_renders_and_blends(animator, tiny_params) -> None:
    """Keyframe frames get their keyframe's embedding exactly; the frames between get neither."""
    from animdiff.prompts.conditioning import frame_embeddings, plan_prompts
    from animdiff.prompts.encode import PromptEncoder

    prompt = "masterpiece\n0: a corgi\n6: a cat\nbeach"
    params = tiny_params(steps=2, prompt=prompt, frames=8, context=8)
    models = animator.load(params)
    encoder = PromptEncoder(models.parts.text_encoder, models.parts.tokenizer)
    plan = plan_prompts(prompt, video_length=8, batch=8, context=8, closed_loop=params.closed_loop)
    cond, _ = frame_embeddings(encoder, plan, params.negative_prompt, 8)
    corgi, cat = encoder.encode([plan.prompts[0], plan.prompts[6]])
    assert torch.equal(cond[0], corgi) and torch.equal(cond[6], cat)
    for frame in range(1, 6):
        assert (cond[frame] - corgi).abs().max() > 1e-3 and (cond[frame] - cat).abs().max() > 1e-3, frame
    travelled = latents(animator, params)
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
    from animdiff.prompts.encode import PromptEncoder

    models = animator.load(tiny_params())
    text_encoder, tokenizer = models.parts.text_encoder, models.parts.tokenizer
    one = PromptEncoder(text_encoder, tokenizer, clip_skip=1).encode(["a corgi"])
    two = PromptEncoder(text_encoder, tokenizer, clip_skip=2).encode(["a corgi"])
    assert one.shape == two.shape and (one - two).abs().max() > 1e-3
    assert not torch.equal(
        latents(animator, tiny_params(steps=1, clip_skip=1)),
        latents(animator, tiny_params(steps=1, clip_skip=2)),
    )
