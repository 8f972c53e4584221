"""ControlNet units end to end on the tiny models: parity with diffusers, per-window hints, guidance
ranges, real video inputs, and bad inputs refused before any model loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from animdiff.cli import main
from animdiff.pipeline import FrameCounts
from animdiff.sampling.controlnet import ControlLayer, ControlUnit
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser
from animdiff.sampling.noise import frame_generators, initial_noise

FRAMES, FPS, SIZE = 10, 12, 64
CANNY = "tiny-controlnet-canny"


def square(index: int, size: int = SIZE) -> np.ndarray:
    """A white square moving right on grey, 4 pixels a frame."""
    frame = np.full((size, size, 3), 60, dtype=np.uint8)
    left = 4 + 4 * index
    frame[20:40, left : left + 20] = 255
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for i in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(square(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i in range(FRAMES):  # unpadded names: natural order puts 2.png before 10.png
        Image.fromarray(square(i)).save(folder / f"{i + 1}.png")
    return folder


# --- real inputs ---------------------------------------------------------------------------------------


def test_frames_zero_takes_the_videos_frames_and_rate(
    models_dir: Path, tmp_path: Path, clip: Path, capsys
) -> None:
    out = tmp_path / "out"
    argv = ["generate", "a square", "--models-dir", str(models_dir), "--out", str(out), "--device", "cpu"]
    argv += ["--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt", "--quiet"]
    argv += ["--width", "64", "--height", "64", "--steps", "2", "--seed", "3", "--sampler", "DDIM"]
    argv += ["--frames", "0", "--context", "8", "--format", "gif,txt", "--video-source", str(clip)]
    argv += ["--controlnet", f'model={CANNY},module=canny,threshold_a=50,resize_mode="Just Resize"']
    assert main(argv) == 0
    files = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    with Image.open(files["gif"]) as gif:
        assert gif.n_frames == FRAMES
        assert abs(gif.info["duration"] - 1000 / FPS) <= 10  # GIF stores centiseconds
    text = Path(files["txt"]).read_text()
    assert "video_length: 10, fps: 12" in text
    assert f'ControlNet 0: "Module: canny, Model: {CANNY} [' in text and "Threshold A: 50.0" in text


def test_a_frame_folder_gives_the_same_frames(animator, tiny_params, frame_folder: Path, clip: Path) -> None:
    params = tiny_params(
        frames=0, steps=1, video_path=str(frame_folder), controlnet=f"model={CANNY},module=canny"
    )
    job = animator.prepare(params, write=False)
    assert (job.counts.video_length, job.counts.context, job.fps) == (FRAMES, 8, 8)  # folders carry no rate
    from animdiff.control_inputs import unit_hints

    from_folder = unit_hints(job.controlnets[0], FRAMES, SIZE, SIZE)
    video_job = animator.prepare(
        params.model_copy(update={"video_path": None, "video_source": str(clip)}), False
    )
    from_video = unit_hints(video_job.controlnets[0], FRAMES, SIZE, SIZE)
    # canny edges follow the square: its left edge moves 4 pixels a frame in both sources
    for hints in (from_folder, from_video):
        columns = [int(np.argmax(h[30, :, 0] > 0)) for h in hints]
        assert np.all(np.diff(columns) == 4), columns
    result = animator.execute(job)
    assert len(result.frames) == FRAMES


def test_one_image_serves_every_frame(animator, tiny_params, frame_folder: Path) -> None:
    image = frame_folder / "3.png"
    params = tiny_params(
        frames=0, context=4, steps=1, controlnet=f"model={CANNY},module=invert,image={image}"
    )
    job = animator.prepare(params, write=False)
    assert job.controlnets[0].frames is None and job.counts.video_length == 4  # no cap from one image
    from animdiff.control_inputs import unit_hints

    hints = unit_hints(job.controlnets[0], 4, SIZE, SIZE)
    assert hints.shape == (4, SIZE, SIZE, 3) and all(np.array_equal(h, 255 - square(2)) for h in hints)
    assert len(animator.execute(job).frames) == 4


# --- parity with diffusers' AnimateDiffControlNetPipeline -------------------------------------------------


@pytest.mark.numerics
def test_latents_match_diffusers_controlnet_pipeline(animator, tiny_params, clip: Path) -> None:
    """One window, DDIM, diffusers' GroupNorm: our latents are diffusers' (max abs < 1e-4).

    Guidance ends at 0.5 of 4 steps: the unit acts in steps 0 and 1 under both rules. 128x128
    rather than the usual 64x64: at 64 the tiny UNet's deepest level is 1x1, where its 32 norm
    groups hold 2 values each and amplify float rounding (~2e-4 on latents of magnitude ~24).
    """
    from diffusers import AnimateDiffControlNetPipeline

    from animdiff.control_inputs import unit_hints
    from animdiff.models.tokenizer import clip_tokenizer
    from animdiff.sampling.samplers import make_scheduler
    from animdiff.testing.controlnet import tiny_controlnet
    from animdiff.testing.factory import tiny_motion_adapter, tiny_sd

    params = tiny_params(
        width=128,
        height=128,
        frames=8,
        context=8,
        steps=4,
        groupnorm="diffusers",
        video_source=str(clip),
        controlnet=f"model={CANNY},module=canny,weight=0.8,guidance_end=0.5",
    )
    job = animator.prepare(params, write=False)
    with torch.inference_mode():
        ours = animator.sample_job(job, animator.load_job(job), lambda event: None)
    hints = unit_hints(job.controlnets[0], 8, 128, 128)

    sd = tiny_sd()
    pipe = AnimateDiffControlNetPipeline(
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=sd.unet,
        motion_adapter=tiny_motion_adapter("v2"),
        controlnet=tiny_controlnet("canny", sd.unet.config),
        scheduler=make_scheduler("DDIM"),
    )
    pipe.set_progress_bar_config(disable=True)
    noise = initial_noise(frame_generators(job.seed, 8), 128, 128)
    with torch.inference_mode():
        theirs = (
            pipe(
                prompt=params.prompt,
                num_frames=8,
                height=128,
                width=128,
                num_inference_steps=params.steps,
                guidance_scale=params.cfg_scale,
                latents=noise.permute(1, 0, 2, 3).unsqueeze(0),
                conditioning_frames=[Image.fromarray(h) for h in hints],
                controlnet_conditioning_scale=0.8,
                control_guidance_start=0.0,
                control_guidance_end=0.5,
                output_type="latent",
            )
            .frames[0]
            .permute(1, 0, 2, 3)
        )
    without = animator.sample_job(
        animator.prepare(params.model_copy(update={"controlnet_units": [], "video_source": None}), False),
        animator.load_job(job),
        lambda event: None,
    )
    difference = (ours - theirs).abs().max().item()
    print(f"parity with AnimateDiffControlNetPipeline: max abs {difference:.3g}")
    assert difference < 1e-4
    assert (ours - without).abs().max().item() > 1e-3  # the ControlNet did act


# --- by construction ---------------------------------------------------------------------------------------


def _denoiser(animator, params, hints: torch.Tensor | None, guidance_end: float = 1.0, total: int = 4):
    job = animator.prepare(params, write=False)
    models = animator.load_job(job)
    net = animator.cache.controlnets([animator.store.resolve(CANNY, "controlnet")])[0]
    frames = job.counts.batch
    torch.manual_seed(0)
    cond, uncond = torch.randn(frames, 77, 32), torch.randn(1, 77, 32)
    control = None
    if hints is not None:
        unit = ControlUnit(net.model, hints, applies=lambda step: step / total < guidance_end)
        control = ControlLayer([unit])
    counts = job.counts

    def schedule(step: int) -> list[list[int]]:
        from animdiff.sampling.context import context_windows

        return context_windows(step, counts.video_length, counts.context, 1, counts.overlap, "N")

    return WindowedDenoiser(models.video_model, Conditioning(cond, uncond, 7.5, control), schedule), counts


def test_a_hint_changed_in_one_frame_changes_only_its_window(animator, tiny_params) -> None:
    params = tiny_params(frames=16, context=8, overlap=2, closed_loop="N")
    torch.manual_seed(1)
    hints = (torch.rand(16, 3, SIZE, SIZE) > 0.8).to(torch.uint8) * 255
    changed = hints.clone()
    changed[1] = 255 - changed[1]
    x = torch.randn(16, 4, 8, 8)
    t = torch.tensor(999)
    with torch.inference_mode():
        first, _ = _denoiser(animator, params, hints)
        second, _ = _denoiser(animator, params, changed)
        a, b = first(x, t), second(x, t)
    windows = first.schedule(0)
    touched = sorted({f for w in windows if 1 in w for f in w})
    others = [f for f in range(16) if f not in touched]
    assert others, windows
    assert torch.equal(a[others], b[others])
    assert (a[1] - b[1]).abs().max().item() > 1e-6  # the untouched frames are compared exactly


@pytest.mark.numerics
def test_hints_follow_their_windows_when_windows_share_a_call(animator, tiny_params) -> None:
    """Three windows in one UNet call slice the hints as three calls do (up to batched rounding)."""
    params = tiny_params(frames=16, context=8, overlap=2, closed_loop="N")
    torch.manual_seed(3)
    hints = (torch.rand(16, 3, SIZE, SIZE) > 0.8).to(torch.uint8) * 255
    x, t = torch.randn(16, 4, 8, 8), torch.tensor(700)
    with torch.inference_mode():
        single, _ = _denoiser(animator, params, hints)
        batched, _ = _denoiser(animator, params, hints)
        batched.windows_per_call = 3
        one, many = single(x, t), batched(x, t)
    assert (one - many).abs().max().item() < 1e-3


def test_guidance_end_leaves_the_later_steps_alone(animator, tiny_params) -> None:
    params = tiny_params(frames=8, context=8)
    torch.manual_seed(2)
    hints = (torch.rand(8, 3, SIZE, SIZE) > 0.8).to(torch.uint8) * 255
    x = torch.randn(8, 4, 8, 8)
    t = torch.tensor(500)
    with torch.inference_mode():
        with_unit, _ = _denoiser(animator, params, hints, guidance_end=0.5)
        plain, _ = _denoiser(animator, params, None)
        outputs = []
        for step in range(4):
            with_unit.step = plain.step = step
            outputs.append((with_unit(x, t), plain(x, t)))
    assert all((a - b).abs().max().item() > 1e-4 for a, b in outputs[:2])
    assert all(torch.equal(a, b) for a, b in outputs[2:])


def test_units_cap_the_context_and_the_unit_rule_matches_the_pipeline(animator, tiny_params, clip) -> None:
    params = tiny_params(frames=0, context=16, steps=4, video_source=str(clip), controlnet=f"model={CANNY}")
    job = animator.prepare(params, write=False)
    assert job.counts == FrameCounts(10, 10, 4, 10)
    unit = job.params.controlnet_units[0].model_copy(update={"guidance_end": 0.5})
    assert [unit.applies_at(i, job.model_evaluations) for i in range(4)] == [True, True, False, False]


# --- bad input, before anything loads ---------------------------------------------------------------------


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr("animdiff.models.cache.ModelCache.get", refuse)
    monkeypatch.setattr("animdiff.models.cache.ModelCache.controlnets", refuse)


@pytest.fixture(scope="module")
def bad_inputs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from animdiff.testing.controlnet import controlnet_file_state, tiny_sdxl_controlnet, write_controlnet

    root = tmp_path_factory.mktemp("bad")
    models = root / "models"
    for folder in ("Stable-diffusion", "AnimateDiff", "ControlNet"):
        shutil.copytree(models_dir / folder, models / folder)
    write_controlnet(
        models / "ControlNet" / "tiny-controlnet-sdxl.safetensors",
        controlnet_file_state(tiny_sdxl_controlnet()),
    )
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (root / "frames").mkdir()
    for i in range(2):
        Image.fromarray(square(i)).save(root / "frames" / f"{i}.png")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    return {"models": models, "root": root}


FOLDER = ["--video-path", "{root}/frames"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([*FOLDER, "--controlnet", "model=nope"], "ControlNet 'nope' not found"),
        (
            [*FOLDER, "--controlnet", "model=tiny-controlnet-sdxl"],
            "is an SDXL ControlNet; it does not fit the SD1.5",
        ),
        ([*FOLDER, "--controlnet", f"model={CANNY},module=sharpen"], "unknown preprocessor 'sharpen'"),
        (["--controlnet", f"model={CANNY},batch_images={{root}}/empty"], "contains no images"),
        (
            [*FOLDER, "--controlnet", f"model={CANNY},module=depth_midas"],
            "preprocessor 'depth_midas' needs a model",
        ),
        (["--controlnet", f"model={CANNY},image={{root}}/missing.png"], "missing.png does not exist"),
        (["--video-source", "{root}/broken.mp4", "--controlnet", f"model={CANNY}"], "broken.mp4"),
        (["--video-source", "{root}/broken.mp4"], "without a ControlNet unit"),
        (["--controlnet", f"model={CANNY}"], "has no input"),
    ],
)
def test_bad_control_input_is_one_line_before_loading(
    extra, expected, bad_inputs, tmp_path: Path, capsys, no_model_loads
) -> None:
    root = bad_inputs["root"]
    argv = [
        "generate",
        "a corgi",
        "--models-dir",
        str(bad_inputs["models"]),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    argv += ["--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt", "--quiet"]
    argv += [item.format(root=root) for item in extra]
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert expected in errors[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()
