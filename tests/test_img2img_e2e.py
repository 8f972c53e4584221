"""img2img, video to video and inpainting end to end on the tiny models (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animdiff.cli import main
from animdiff.output.infotext import params_from_infotext
from animdiff.sampling.img2img import blend_init_latents, encode_frames, latent_blend_weights
from animdiff.sampling.noise import frame_generators, initial_noise

SIZE = 64
FRAMES = 8


def picture(index: int) -> np.ndarray:
    """A smooth colour gradient with a square that moves with `index`."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    left = 8 + 4 * index
    image[20:36, left : left + 16] = (240, 40, 40)
    return image


def write_frames(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(picture(start + i)).save(folder / f"{i + 1}.png")
    return folder


def left_half_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, : SIZE // 2] = 255
    return mask


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_frames(tmp_path_factory.mktemp("v2v") / "frames", FRAMES)


@pytest.fixture(scope="module")
def stills(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stills")
    Image.fromarray(picture(0)).save(root / "init.png")
    Image.fromarray(255 - picture(5)).save(root / "last.png")
    return root / "init.png", root / "last.png"


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inpaint")
    write_frames(root / "image", FRAMES)
    (root / "mask").mkdir()
    for i in range(FRAMES):
        Image.fromarray(left_half_mask()).save(root / "mask" / f"{i + 1}.png")
    return root


def source_latents(animator, params, frames: list[np.ndarray]) -> torch.Tensor:
    vae = animator.load(params).parts.vae
    return encode_frames(vae, frames)


def test_strength_zero_returns_the_vae_round_trip_of_the_source(animator, tiny_params, frames_dir) -> None:
    params = tiny_params(video_path=str(frames_dir), denoising_strength=0.0, frames=0)
    result = animator.run(params, write=False)
    expected = source_latents(animator, params, [picture(i) for i in range(FRAMES)])
    assert len(result.frames) == FRAMES
    assert torch.equal(result.latents, expected)
    assert "Denoising strength: 0.0" in result.infotext


def test_strength_one_is_text_to_video(animator, tiny_params, frames_dir) -> None:
    v2v = animator.run(tiny_params(video_path=str(frames_dir), denoising_strength=1.0), write=False)
    t2v = animator.run(tiny_params(), write=False)
    assert torch.equal(v2v.latents, t2v.latents)


def test_the_source_caps_the_frames_and_strength_counts_the_evaluations(
    animator, tiny_params, frames_dir
) -> None:
    job = animator.prepare(
        tiny_params(video_path=str(frames_dir), denoising_strength=0.5, frames=20, steps=4), write=False
    )
    assert job.counts.video_length == FRAMES
    assert job.model_evaluations == 2  # int(4 * 0.5) DDIM steps
    assert job.img2img is not None and job.img2img.source_frames == FRAMES


def test_a_middle_strength_stays_near_the_source(animator, tiny_params, frames_dir) -> None:
    params = tiny_params(video_path=str(frames_dir), denoising_strength=0.3, steps=10)
    result = animator.run(params, write=False)
    source = source_latents(animator, params, [picture(i) for i in range(FRAMES)])
    t2v = animator.run(tiny_params(steps=10), write=False)
    assert (result.latents - source).abs().mean() < (t2v.latents - source).abs().mean()


def test_init_image_and_last_frame_blend_weights_reach_the_latents(animator, tiny_params, stills) -> None:
    init, last = stills
    params = tiny_params(
        init_image=str(init),
        last_frame=str(last),
        denoising_strength=0.0,
        latent_power=1.5,
        latent_scale=6.0,
        latent_power_last=1.0,
        latent_scale_last=5.0,
    )
    result = animator.run(params, write=False)
    vae = animator.load(params).parts.vae
    first, final = encode_frames(vae, [picture(0)]), encode_frames(vae, [255 - picture(5)])
    noise = initial_noise(frame_generators(42, FRAMES), SIZE, SIZE)  # the first draw feeds the blend
    alpha, beta = latent_blend_weights(
        FRAMES, 1.5, 6.0, last=True, latent_power_last=1.0, latent_scale_last=5.0
    )
    expected = blend_init_latents(first, noise, alpha, beta, final)
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.latents[0], first[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(result.latents[-1], final[0], rtol=0, atol=1e-6)
    back = params_from_infotext(result.infotext)
    assert back["denoising_strength"] == 0.0
    assert (back["latent_power"], back["latent_scale"]) == (1.5, 6.0)
    assert (back["latent_power_last"], back["latent_scale_last"]) == (1.0, 5.0)


def test_init_image_sampling_uses_the_second_draw(animator, tiny_params, stills) -> None:
    """At strength 1 the blend is drowned and the sampler starts from each generator's second draw."""
    init, _ = stills
    with_init = animator.run(tiny_params(init_image=str(init), denoising_strength=1.0), write=False)
    t2v = animator.run(tiny_params(), write=False)
    assert not torch.equal(with_init.latents, t2v.latents)
    assert torch.isfinite(with_init.latents).all()


def test_inpainting_keeps_the_unmasked_region_of_the_source(animator, tiny_params, inpaint_dir) -> None:
    params = tiny_params(video_path=str(inpaint_dir), denoising_strength=0.7, steps=4)
    result = animator.run(params, write=False)
    source = source_latents(animator, params, [picture(i) for i in range(FRAMES)])
    kept = result.latents[..., SIZE // 16 :]  # right half of the latent (mask 0)
    torch.testing.assert_close(kept, source[..., SIZE // 16 :], rtol=0, atol=1e-6)
    assert not torch.allclose(result.latents[..., :3], source[..., :3], atol=1e-3)


def test_a_mask_folder_for_an_init_image(animator, tiny_params, stills, tmp_path) -> None:
    init, _ = stills
    (tmp_path / "m").mkdir()
    Image.fromarray(left_half_mask()).save(tmp_path / "m" / "0.png")
    params = tiny_params(init_image=str(init), denoising_strength=0.5, steps=4, mask_path=str(tmp_path / "m"))
    result = animator.run(params, write=False)
    assert result.latents.shape[0] == FRAMES and torch.isfinite(result.latents).all()


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr("animdiff.models.cache.ModelCache.get", refuse)


def test_image_and_mask_count_mismatch_is_one_error_before_loading(
    models_dir, tmp_path, capsys, no_model_loads
) -> None:
    root = tmp_path / "inp"
    write_frames(root / "image", 5)
    write_frames(root / "mask", 3)
    out = tmp_path / "out"
    argv = ["generate", "a corgi", "--models-dir", str(models_dir), "--out", str(out), "--device", "cpu"]
    argv += ["--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt", "--quiet"]
    argv += ["--video-path", str(root), "--denoising-strength", "0.5"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "5 images" in errors[0] and "3 masks" in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_bad_init_inputs_are_refused_before_loading(tiny_params, animator, tmp_path, no_model_loads) -> None:
    from animdiff.errors import AnimdiffError, ParamsError

    with pytest.raises(AnimdiffError, match=r"init image .*does not exist"):
        animator.prepare(tiny_params(init_image=str(tmp_path / "nope.png")), write=False)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(AnimdiffError, match="cannot be read"):
        animator.prepare(tiny_params(init_image=str(tmp_path / "bad.png")), write=False)
    with pytest.raises(ParamsError, match="last_frame needs init_image"):
        tiny_params(last_frame=str(tmp_path / "bad.png"))


def test_cli_flags_have_the_fixed_names() -> None:
    from animdiff.cli import flag

    names = ["init_image", "last_frame", "denoising_strength", "latent_power", "latent_scale"]
    names += ["latent_power_last", "latent_scale_last", "mask_path"]
    assert [flag(n) for n in names] == [
        "--init-image",
        "--last-frame",
        "--denoising-strength",
        "--latent-power",
        "--latent-scale",
        "--latent-power-last",
        "--latent-scale-last",
        "--mask-path",
    ]


def test_video_input_without_strength_or_units_is_still_refused(animator, tiny_params, frames_dir) -> None:
    from animdiff.errors import NotSupportedYetError

    with pytest.raises(NotSupportedYetError, match="--denoising-strength"):
        animator.prepare(tiny_params(video_path=str(frames_dir)), write=False)


@pytest.mark.numerics
def test_latents_match_diffusers_video_to_video_pipeline(
    animator, tiny_params, tmp_path, monkeypatch
) -> None:
    """One window, DDIM, diffusers' GroupNorm, strength 0.6: our latents are diffusers' (max abs < 1e-4).

    diffusers encodes the video with a posterior sample and draws the noise from its generator;
    we use the posterior mean and each frame's own generator, so the test hands diffusers the
    same two (its module's `retrieve_latents` and `randn_tensor` patched). 128x128 for the reason
    given in test_controlnet_e2e's parity test.
    """
    import diffusers.pipelines.animatediff.pipeline_animatediff_video2video as v2v
    from diffusers import AnimateDiffVideoToVideoPipeline

    from animdiff.models.tokenizer import clip_tokenizer
    from animdiff.sampling.samplers import make_scheduler
    from animdiff.testing.factory import tiny_motion_adapter, tiny_sd

    size = 128
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = []
    for i in range(FRAMES):
        frame = np.asarray(Image.fromarray(picture(i)).resize((size, size), Image.Resampling.NEAREST))
        Image.fromarray(frame).save(folder / f"{i}.png")
        frames.append(frame)
    params = tiny_params(
        width=size,
        height=size,
        steps=5,
        groupnorm="diffusers",
        video_path=str(folder),
        denoising_strength=0.6,
    )
    job = animator.prepare(params, write=False)
    with torch.inference_mode():
        ours = animator.sample_job(job, animator.load_job(job), lambda event: None)

    noise = initial_noise(frame_generators(job.seed, FRAMES), size, size)
    monkeypatch.setattr(
        v2v,
        "retrieve_latents",
        lambda output, generator=None, sample_mode="sample": output.latent_dist.mode(),
    )
    monkeypatch.setattr(
        v2v, "randn_tensor", lambda shape, **kwargs: noise.unsqueeze(0).to(kwargs.get("dtype"))
    )
    sd = tiny_sd()
    pipe = AnimateDiffVideoToVideoPipeline(
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=sd.unet,
        motion_adapter=tiny_motion_adapter("v2"),
        scheduler=make_scheduler("DDIM"),
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        theirs = (
            pipe(
                video=[Image.fromarray(f) for f in frames],
                prompt=params.prompt,
                height=size,
                width=size,
                num_inference_steps=params.steps,
                strength=0.6,
                guidance_scale=params.cfg_scale,
                output_type="latent",
            )
            .frames[0]
            .permute(1, 0, 2, 3)
        )
    difference = (ours - theirs).abs().max().item()
    print(f"parity with AnimateDiffVideoToVideoPipeline: max abs {difference:.3g}")
    assert difference < 1e-4


def test_an_inpaint_controlnet_unit_gets_the_masked_hint(animator, tiny_params, inpaint_dir) -> None:
    from animdiff.control.masks import HINT_MASKED

    params = tiny_params(
        video_path=str(inpaint_dir),
        denoising_strength=0.7,
        steps=2,
        controlnet="model=tiny-controlnet-inpaint.safetensors,module=inpaint_only",
    )
    job = animator.prepare(params, write=False)
    layer = animator.control_layer(job)
    assert layer is not None
    hints = layer.hints[0]
    assert hints.dtype == torch.float32 and hints.shape == (FRAMES, 3, SIZE, SIZE)
    assert torch.all(hints[..., : SIZE // 2 - 4] == HINT_MASKED)
    assert torch.all(hints[..., SIZE // 2 + 4 :] >= 0)
    result = animator.run(params, write=False)
    assert "Module: inpaint_only" in result.infotext
    assert torch.isfinite(result.latents).all()


def test_an_inpaint_unit_without_masks_is_refused(animator, tiny_params, frames_dir) -> None:
    from animdiff.errors import ParamsError

    params = tiny_params(
        video_path=str(frames_dir), controlnet="model=tiny-controlnet-inpaint.safetensors,module=inpaint"
    )
    with pytest.raises(ParamsError, match="needs masks"):
        animator.prepare(params, write=False)


def test_video_dedupe_drops_held_frames_and_counts_the_rest(animator, tiny_params, tmp_path) -> None:
    """Rule: with video_dedupe the shared source is read once before sampling to count the frames
    it keeps; 0 frames = those, and a larger frame count is capped to them."""
    folder = tmp_path / "held"
    folder.mkdir()
    a, b = picture(0), 255 - picture(0)
    held = [a, a, a, b, b, a, a, a, b, b]  # 4 changes, each picture held
    for i, frame in enumerate(held):
        Image.fromarray(frame).save(folder / f"{i}.png")
    params = tiny_params(
        video_path=str(folder), denoising_strength=0.0, frames=0, context=4, video_dedupe=True
    )
    job = animator.prepare(params, write=False)
    assert job.counts.video_length == 4
    result = animator.run(params, write=False)
    expected = source_latents(animator, params, [a, b, a, b])
    assert torch.equal(result.latents, expected)
    plain = animator.prepare(params.model_copy(update={"video_dedupe": False}), write=False)
    assert plain.counts.video_length == 10


def test_video_dedupe_reaches_the_controlnet_units_shared_input(animator, tiny_params, tmp_path) -> None:
    from animdiff.control_inputs import unit_hints

    folder = tmp_path / "held"
    folder.mkdir()
    a, b = picture(0), 255 - picture(0)
    for i, frame in enumerate([a, a, b, b, b, a]):
        Image.fromarray(frame).save(folder / f"{i}.png")
    params = tiny_params(
        video_path=str(folder),
        video_dedupe=True,
        frames=0,
        context=4,
        controlnet="model=tiny-controlnet-canny.safetensors,module=none",
    )
    job = animator.prepare(params, write=False)
    assert job.controlnets[0].frames == 3 and job.counts.video_length == 3
    hints = unit_hints(job.controlnets[0], 3, SIZE, SIZE)
    assert np.array_equal(hints[0], a) and np.array_equal(hints[1], b) and np.array_equal(hints[2], a)
