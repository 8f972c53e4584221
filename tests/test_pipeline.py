"""End to end on the tiny models: settings -> sampling -> files, read back."""

from __future__ import annotations

import threading
from pathlib import Path

import av  # noqa: F401  (PyAV must import: the writers need it)
import pytest
import torch
from PIL import Image

from animdiff.errors import CancelledError, NotSupportedYetError, ParamsError
from animdiff.models.load import build_motion_unet, load_checkpoint, load_motion_module
from animdiff.models.motion_unet import MotionUNet
from animdiff.output import params_from_infotext
from animdiff.params import make_params
from animdiff.pipeline import Animator, FrameCounts, RunOptions
from animdiff.sampling.context import context_windows
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser, guided_windows
from animdiff.sampling.loop import sample
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.sampling.samplers import SAMPLER_NAMES, make_scheduler
from animdiff.testing.factory import TINY_TEXT_WIDTH

CPU = RunOptions(device="cpu")


def test_gif_png_txt_are_written_and_read_back(models_dir: Path, tmp_path: Path, tiny_params) -> None:
    animator = Animator(models_dir, tmp_path, CPU)
    params = tiny_params(formats="gif,png,txt", frames=6, context=8, fps=10, loop_number=3)
    result = animator.run(params)
    gif = Image.open(result.files["gif"])
    assert gif.n_frames == 6
    assert gif.info["loop"] == 3
    assert gif.info["duration"] == 100
    pngs = sorted(result.files["png"].glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
    with Image.open(pngs[0]) as first:
        assert first.size == (64, 64)
        assert first.text["parameters"] == result.infotext
    assert result.files["txt"].read_text() == result.infotext + "\n"
    assert result.files["gif"].name == f"00000-{params.seed}.gif"
    parsed = params_from_infotext(result.infotext)
    assert (parsed["frames"], parsed["context"], parsed["seed"], parsed["sampler"]) == (6, 8, 42, "DDIM")
    assert parsed["motion_module"] == "tiny-mm-v2.ckpt"
    assert parsed["checkpoint"] == "tiny-sd15"


def test_same_seed_same_frames(animator, tiny_params) -> None:
    params = tiny_params(steps=2)
    a = animator.run(params, write=False)
    b = animator.run(params, write=False)
    assert torch.equal(a.latents, b.latents)
    c = animator.run(tiny_params(steps=2, seed=43), write=False)
    assert not torch.equal(a.latents, c.latents)


def test_frame_noise_does_not_depend_on_frame_count() -> None:
    short = initial_noise(frame_generators(7, 8), 64, 64)
    long = initial_noise(frame_generators(7, 16), 64, 64)
    assert torch.equal(short, long[:8])
    assert not torch.equal(long[0], long[1])


def test_frames_zero_means_the_context_batch(animator, tiny_params) -> None:
    counts = FrameCounts.resolve(tiny_params(frames=0, context=8))
    assert (counts.video_length, counts.batch) == (8, 8)
    result = animator.run(tiny_params(frames=0, context=8, steps=1), write=False)
    assert len(result.frames) == 8
    short = animator.run(tiny_params(frames=5, context=8, steps=1), write=False)
    assert len(short.frames) == 5
    assert short.latents.shape[0] == 8  # the reference still generates a whole context


def test_context_above_the_module_limit_is_refused(animator, tiny_params) -> None:
    with pytest.raises(
        ParamsError, match=r"context batch size 32 is above the limit of 24 frames of tiny-mm-v1\.ckpt"
    ):
        animator.run(tiny_params(motion_module="tiny-mm-v1.ckpt", context=32, frames=32), write=False)


def test_cancel_stops_before_writing(models_dir: Path, tmp_path: Path, tiny_params) -> None:
    animator = Animator(models_dir, tmp_path, CPU)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        animator.run(tiny_params(), cancel=stop)
    assert not any(tmp_path.rglob("*.gif"))


def test_video_inputs_are_refused_not_ignored(animator, tiny_params, tmp_path: Path) -> None:
    with pytest.raises(NotSupportedYetError, match="video_path"):
        animator.run(tiny_params(video_path=str(tmp_path)), write=False)


@pytest.mark.numerics
def test_one_window_is_bit_identical_to_plain_guidance(animator, tiny_params) -> None:
    """With context >= frames the window layer adds nothing: same bits as one guided call."""
    params = tiny_params(frames=8, context=8, steps=3)
    models = animator.load(params)
    counts = FrameCounts.resolve(params)
    with torch.inference_mode():
        windowed = animator.generate(params, models, counts, params.seed, lambda e: None)
        from animdiff.prompts.conditioning import frame_embeddings, plan_prompts
        from animdiff.prompts.encode import PromptEncoder
        from animdiff.sampling.guidance import Conditioning

        plan = plan_prompts(params.prompt, video_length=8, batch=8, context=8, closed_loop=params.closed_loop)
        encoder = PromptEncoder(models.parts.text_encoder, models.parts.tokenizer)
        cond, uncond = frame_embeddings(encoder, plan, params.negative_prompt, 8)
        conditioning = Conditioning(cond, uncond, params.cfg_scale)
        generators = frame_generators(params.seed, 8)

        def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return guided_windows(models.video_model, x, t, [list(range(8))], conditioning)[0]

        direct = sample(
            plain,
            make_scheduler(params.sampler),
            initial_noise(generators, 64, 64),
            params.steps,
            generators=generators,
        )
    assert torch.equal(windowed, direct)


def test_48_frames_with_context_16(animator, tiny_params) -> None:
    params = tiny_params(frames=48, context=16, steps=2, closed_loop="R-P")
    result = animator.run(params, write=False)
    assert len(result.frames) == 48
    assert result.latents.shape == (48, 4, 8, 8)
    assert torch.isfinite(result.latents).all()


# What each A1111 name must build, written out here rather than read from samplers.py, so that a
# name quietly mapped to the wrong scheduler or settings fails.
EXPECTED_SCHEDULERS = {
    "Euler": ("EulerDiscreteScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    "Heun": ("HeunDiscreteScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}),
    "DPM2": ("KDPM2DiscreteScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}),
    "DPM2 a": (
        "KDPM2AncestralDiscreteScheduler",
        {"timestep_spacing": "linspace", "use_karras_sigmas": False},
    ),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 2M SDE": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "UniPC": ("UniPCMultistepScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}),
    "LCM": ("LCMScheduler", {"timestep_spacing": "leading", "steps_offset": 1}),
    "DDIM": (
        "DDIMScheduler",
        {"timestep_spacing": "leading", "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False},
    ),
    "PLMS": ("PNDMScheduler", {"timestep_spacing": "leading", "steps_offset": 1, "skip_prk_steps": True}),
}


def test_every_sampler_name_is_in_the_expected_table() -> None:
    assert set(SAMPLER_NAMES) == set(EXPECTED_SCHEDULERS)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_each_sampler_name_builds_its_own_scheduler(sampler: str) -> None:
    cls, settings = EXPECTED_SCHEDULERS[sampler]
    scheduler = make_scheduler(sampler)
    assert type(scheduler).__name__ == cls
    config = dict(scheduler.config)
    assert {key: config.get(key) for key in settings} == settings
    betas = {key: config[key] for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
    assert betas == {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "linear",
    }


def test_sampler_names_fold_case_and_spacing() -> None:
    assert type(make_scheduler("dpm++ 2m karras")).__name__ == "DPMSolverMultistepScheduler"
    assert make_scheduler("dpm++_2m_karras").config.use_karras_sigmas is True
    assert type(make_scheduler("euler_a")).__name__ == "EulerAncestralDiscreteScheduler"


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs(animator, tiny_params, sampler: str) -> None:
    params = tiny_params(sampler=sampler, steps=2, frames=4, context=4)
    first = animator.run(params, write=False).latents
    assert torch.isfinite(first).all()
    assert torch.equal(first, animator.run(params, write=False).latents)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_renders_in_float16(models_dir: Path, tiny_params) -> None:
    animator = Animator(models_dir, None, RunOptions(device="cuda"))
    result = animator.run(tiny_params(steps=2), write=False)
    assert animator.load(tiny_params()).unet.dtype == torch.float16
    assert len(result.frames) == 8 and torch.isfinite(result.latents).all()


def test_samplers_use_the_animatediff_betas() -> None:
    scheduler = make_scheduler("euler a")
    assert scheduler.config.beta_schedule == "linear"
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)
    sigma_max = float(((1 - scheduler.alphas_cumprod[-1]) / scheduler.alphas_cumprod[-1]) ** 0.5)
    assert sigma_max == pytest.approx(25.1, abs=0.1)


def test_unknown_sampler_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match="unknown sampler 'k_lms'"):
        make_params(sampler="k_lms")


@pytest.fixture(scope="module")
def float64_video_models(models_dir: Path) -> dict[str, MotionUNet]:
    """The tiny UNet with v1 (cross-frame norms) and v2 motion modules in float64, reference norms."""
    parts = load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors", torch.float64)
    models = {}
    for name in ("tiny-mm-v1.ckpt", "tiny-mm-v2.ckpt"):
        motion = load_motion_module(models_dir / "AnimateDiff" / name, torch.float64)
        models[name] = MotionUNet(
            build_motion_unet(parts.unet, motion.adapter, path=motion.path), motion.kind
        )
    return models


@pytest.mark.numerics
@pytest.mark.parametrize("motion_module", ["tiny-mm-v1.ckpt", "tiny-mm-v2.ckpt"])
def test_batched_windows_are_the_same_denoiser_call(float64_video_models, motion_module: str) -> None:
    """Windows batched into one UNet call give what one call per window gives, frame for frame.

    Checked on one denoiser call in float64, where only the summation order of batched kernels
    can differ (~1e-14 measured): a wrong slice, a window fused twice or cross-frame norms taking
    statistics across windows would be off by O(1). This step's three windows overlap, one wraps
    around the end, and 2 per call leaves a partial last batch.
    """
    model = float64_video_models[motion_module]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 8, 8, generator=generator, dtype=torch.float64) * 5
    conditioning = Conditioning(
        torch.randn(8, 77, TINY_TEXT_WIDTH, generator=generator, dtype=torch.float64),  # one prompt per frame
        torch.randn(1, 77, TINY_TEXT_WIDTH, generator=generator, dtype=torch.float64),
        7.5,
    )

    def schedule(step: int) -> list[list[int]]:
        return context_windows(step + 1, 8, 4, 1, 2, "R-P")

    assert schedule(0) == [[4, 5, 6, 7], [6, 7, 0, 1], [0, 1, 2, 3]]
    t = torch.tensor(900)
    with torch.inference_mode():
        one = WindowedDenoiser(model, conditioning, schedule)(x, t)
        batched = WindowedDenoiser(model, conditioning, schedule, windows_per_call=2)(x, t)
    assert one.abs().max() > 0.5
    assert (one - batched).abs().max().item() < 1e-10


@pytest.mark.numerics
def test_batched_windows_render_what_one_window_per_call_renders(
    animator, models_dir: Path, tiny_params
) -> None:
    """End to end in float32: batched kernels round differently (~4e-6 in eps) and two DDIM steps
    with CFG 7.5 carry that into the latents; measured at most 2e-5 with the AVX-512, AVX2 and
    default kernels, so 5e-4 leaves a wide margin and still catches any real difference."""
    params = tiny_params(frames=24, context=8, steps=2)
    one = animator.run(params, write=False).latents
    batched = Animator(models_dir, None, RunOptions(device="cpu", windows_per_call=3)).run(
        params, write=False
    )
    assert (one - batched.latents).abs().max().item() < 5e-4


@pytest.mark.parametrize("fuse", ["flat", "pyramid"])
def test_weighted_fusing_renders_and_differs_from_overwrite(animator, tiny_params, fuse: str) -> None:
    overwrite = animator.run(tiny_params(frames=24, context=8, steps=2), write=False).latents
    fused = animator.run(tiny_params(frames=24, context=8, steps=2, fuse=fuse), write=False).latents
    assert torch.isfinite(fused).all()
    assert not torch.equal(overwrite, fused)
