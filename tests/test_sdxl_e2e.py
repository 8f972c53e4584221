"""SDXL and AnimateLCM jobs end to end on the tiny models: family choice, refusals, layouts, travel."""

from __future__ import annotations

import pytest
import torch

from animdiff.errors import LoraError, ModelTypeError
from animdiff.family import MOTION_FAMILIES, SD15, SDXL, family_for
from animdiff.models.detect import Kind
from animdiff.models.motion_unet import CROSS_FRAME_KINDS
from animdiff.pipeline import FrameCounts

XL = "tiny-sdxl.safetensors"


def test_family_follows_the_checkpoint_and_the_module_sets_the_defaults(animator, tiny_params) -> None:
    job = animator.prepare(
        tiny_params(checkpoint=XL, motion_module="tiny-mm-sdxl-v10-beta.ckpt", context=None), False
    )
    assert job.family is SDXL and family_for(Kind.SD15) is SD15
    assert job.counts.context == 16  # AnimateDiff-XL's trained length
    assert job.motion_family.betas.scheduler_config()["beta_schedule"] == "scaled_linear"
    assert job.motion_family.betas.beta_end == 0.020
    job = animator.prepare(
        tiny_params(checkpoint=XL, motion_module="tiny-hotshotxl.safetensors", context=None), False
    )
    assert (job.counts.context, job.counts.overlap) == (8, 2)  # HotShot-XL's trained length
    job = animator.prepare(tiny_params(context=None), False)
    assert job.counts.context == 16
    job = animator.prepare(tiny_params(checkpoint=XL, motion_module=None, clip_skip=2), False)
    assert job.motion_kind in (Kind.MM_SDXL_BETA, Kind.MM_HOTSHOT)  # the default module fits the family
    assert any("clip skip 2 is not used" in w for w in job.warnings)


def test_group_norm_rule_is_the_family_data() -> None:
    assert {k for k, f in MOTION_FAMILIES.items() if f.cross_frame_group_norm} == set(CROSS_FRAME_KINDS)


@pytest.mark.parametrize(
    ("checkpoint", "module"),
    [(XL, "tiny-mm-v2.ckpt"), ("tiny-sd15.safetensors", "tiny-mm-sdxl-v10-beta.ckpt")],
)
def test_modules_of_the_other_family_are_refused_naming_both_files(
    animator, tiny_params, checkpoint, module
) -> None:
    with pytest.raises(ModelTypeError) as err:
        animator.prepare(tiny_params(checkpoint=checkpoint, motion_module=module), False)
    assert checkpoint in str(err.value) and module in str(err.value)


def test_loras_of_the_other_family_are_refused(animator, tiny_params) -> None:
    with pytest.raises(LoraError, match=r"SDXL LoRA.*tiny-sd15"):
        animator.prepare(tiny_params(prompt="a cat <lora:tiny-sdxl-lora:1>"), False)


def test_context_limit_is_the_module_s(animator, tiny_params) -> None:
    with pytest.raises(Exception, match="limit of 24"):
        animator.prepare(
            tiny_params(checkpoint=XL, motion_module="tiny-hotshotxl.safetensors", context=25), False
        )


def test_hotshot_layouts_give_identical_latents(animator, tiny_params) -> None:
    results = []
    for module in ("tiny-hotshotxl.safetensors", "tiny-mm-sdxl-hs.safetensors"):
        params = tiny_params(checkpoint=XL, motion_module=module, frames=10, steps=2)
        with torch.inference_mode():
            results.append(
                animator.generate(
                    params, animator.load(params), FrameCounts.resolve(params, None, 8), 42, lambda e: 0
                )
            )
    assert torch.equal(results[0], results[1])


def test_sdxl_prompt_travel_gives_each_frame_its_pooled_embedding(animator, tiny_params, tmp_path) -> None:
    params = tiny_params(
        checkpoint=XL,
        motion_module="tiny-mm-sdxl-v10-beta.ckpt",
        prompt="a cat\n0: sitting\n6: running fast",
        frames=12,
        steps=2,
    )
    result = animator.run(params, write=False)
    assert result.latents.shape == (12, 4, 8, 8) and torch.isfinite(result.latents).all()
    models = animator.load(params)
    job = animator.prepare(params, write=False)
    from animdiff.prompts.conditioning import frame_conditioning

    encoder = job.family.text_conditioner(models.parts, clip_skip=1, width=64, height=64)
    cond, uncond = frame_conditioning(encoder, job.plan, "", 12)
    assert cond.vector.shape[0] == 12 and not torch.equal(cond.vector[0], cond.vector[9])
    pooled = encoder.pooled_width
    assert torch.equal(cond.vector[0, pooled:], cond.vector[9, pooled:])  # the size ids do not travel
    assert not uncond.tokens.any() and not uncond.vector[:, :pooled].any()  # empty negative: zeros


def test_per_frame_vectors_equal_diffusers_per_video_path_when_equal(animator, tiny_params) -> None:
    """Our per-row added embedding equals diffusers' per-video one when a video's rows agree."""
    params = tiny_params(checkpoint=XL, motion_module="tiny-mm-sdxl-v10-beta.ckpt", groupnorm="diffusers")
    models = animator.load(params)
    motion = models.unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 3, 8, 8, generator=generator)
    hidden = torch.randn(6, 5, motion.unet.config.cross_attention_dim, generator=generator)
    pooled = torch.randn(2, models.parts.text_encoder_2.config.projection_dim, generator=generator)
    ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    features = models.parts.unet.add_time_proj(ids.flatten()).reshape(2, -1)
    vector = torch.cat([pooled, features], dim=1).repeat_interleave(3, dim=0)
    with torch.inference_mode():
        ours = motion(sample, torch.tensor(300), hidden, vector=vector)
        motion.unet.register_to_config(addition_embed_type="text_time")
        try:
            theirs = motion.unet(
                sample, torch.tensor(300), hidden, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}
            ).sample
        finally:
            motion.unet.register_to_config(addition_embed_type=None)
    assert (ours - theirs).abs().max().item() < 1e-5


def test_animatelcm_renders_with_the_lcm_sampler(animator, tiny_params) -> None:
    params = tiny_params(
        motion_module="tiny-animatelcm.safetensors", sampler="LCM", steps=4, cfg_scale=1.5, context=None
    )
    job = animator.prepare(params, write=False)
    assert job.motion_kind is Kind.MM_ANIMATELCM and job.counts.context == 16
    models = animator.load_job(job)
    assert models.motion.adapter.config.motion_max_seq_length == 64
    result = animator.execute(job)
    assert len(result.frames) == 8 and torch.isfinite(result.latents).all()


def test_sdxl_lora_applies_to_both_encoders_and_the_unet_and_restores_exactly(animator, tiny_params) -> None:
    from animdiff.models.lora import LoraRequest, apply_loras

    params = tiny_params(
        checkpoint=XL, motion_module="tiny-mm-sdxl-v10-beta.ckpt", prompt="a cat <lora:tiny-sdxl-lora:0.8>"
    )
    job = animator.prepare(params, write=False)
    assert [lora.path.name for lora in job.loras] == ["tiny-sdxl-lora.safetensors"]
    models = animator.load_job(job)
    modules = (models.unet, models.parts.text_encoder, models.parts.text_encoder_2)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    with (
        torch.inference_mode(False),
        apply_loras(
            models.unet,
            models.parts.text_encoder,
            [LoraRequest(job.loras[0].path, 0.8, 0.8)],
            models.parts.text_encoder_2,
        ),
    ):
        changed = [
            sum(not torch.equal(v, b[k]) for k, v in m.state_dict().items())
            for m, b in zip(modules, before, strict=True)
        ]
    assert all(count > 0 for count in changed), changed
    for module, saved in zip(modules, before, strict=True):
        assert all(torch.equal(v, saved[k]) for k, v in module.state_dict().items())
    with_lora = animator.run(params.model_copy(update={"steps": 2}), write=False).latents
    without = animator.run(params.model_copy(update={"steps": 2, "prompt": "a cat"}), write=False).latents
    assert (with_lora - without).abs().max().item() > 1e-3


def test_sd15_lora_on_sdxl_is_refused_naming_both(animator, tiny_params) -> None:
    with pytest.raises(LoraError, match=r"tiny-style.*SDXL checkpoint .*tiny-sdxl"):
        animator.prepare(
            tiny_params(checkpoint=XL, prompt="a cat <lora:tiny-style:1>", motion_module=None), False
        )


def test_long_sdxl_prompts_are_chunked_alike_for_both_encoders(animator, tiny_params) -> None:
    """A1111: both encoders get the same 75-token chunks; the pooled embedding is the first chunk's."""
    from animdiff.prompts.encode_xl import OPEN_CLIP_PAD_ID

    params = tiny_params(checkpoint=XL, motion_module="tiny-mm-sdxl-v10-beta.ckpt")
    models = animator.load(params)
    job = animator.prepare(params, write=False)
    encoder = job.family.text_conditioner(models.parts, clip_skip=1, width=64, height=64)
    prompt = ", ".join(["a (red:1.3) fox jumping over the lazy dog"] * 12)
    first = encoder.chunks(prompt, encoder.tokenizer.eos_id)
    second = encoder.chunks(prompt, OPEN_CLIP_PAD_ID)
    assert len(first) == len(second) >= 2
    for a, b in zip(first, second, strict=True):
        assert a.weights == b.weights
        assert [t for t in a.tokens if t != encoder.tokenizer.eos_id] == [
            t for t in b.tokens if t not in (encoder.tokenizer.eos_id, OPEN_CLIP_PAD_ID)
        ]
    with torch.inference_mode():
        tokens, vector = encoder.encode_embeds([prompt])
        alone = models.parts.text_encoder_2(input_ids=torch.tensor([second[0].tokens])).text_embeds
    assert tokens.shape == (1, 77 * len(first), 32 + 48)
    assert torch.allclose(vector[:, : encoder.pooled_width], alone, atol=1e-6)
