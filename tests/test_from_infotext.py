"""`animdiff generate --from-infotext FILE`: the settings come back from every format we write."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from animdiff.cli import build_parser, main, params_from_args
from animdiff.errors import ParamsError
from animdiff.params import Params, make_params

# Settings the infotext does not carry, as in the reference: where and how files are encoded,
# and inputs that are files on the machine that made them.
NOT_RECORDED = {
    "formats",
    "gif_palette",
    "gif_gifsicle",
    "mp4_crf",
    "mp4_preset",
    "mp4_tune",
    "webp_quality",
    "webp_lossless",
    "video_source",
    "video_path",
    "video_dedupe",
    # recorded without their inputs (files on the machine that made them), so a job with units
    # needs an input again to be restored; their round trip is in test_controlnet_units.py
    "controlnet_units",
    # img2img: the input files are not recorded and FreeInit (set above) is refused with them; the
    # strength and latent settings' round trip is in test_img2img_e2e.py
    "init_image",
    "last_frame",
    "mask_path",
    "denoising_strength",
    "latent_power",
    "latent_scale",
    "latent_power_last",
    "latent_scale_last",
}
ALL_FORMATS = ("gif", "mp4", "webm", "webp", "png", "txt")


@pytest.fixture(scope="module")
def written(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict[str, Path]]:
    """One job with every recorded setting away from its default, written in every format."""
    from animdiff.pipeline import Animator, RunOptions

    params = make_params(
        prompt="masterpiece, best quality\n0: a corgi, running\n4: a cat\nbeach, sunset\n",
        negative_prompt="blurry, low quality",
        checkpoint="tiny-sd15",
        motion_module="tiny-mm-v2.ckpt",
        motion_loras=["v2_lora_TinyZoomIn.ckpt:0.5"],
        groupnorm="diffusers",
        width=64,
        height=72,
        steps=2,
        cfg_scale=6.5,
        sampler="Euler a",
        seed=1234,
        clip_skip=2,
        frames=10,
        fps=12,
        loop_number=3,
        context=8,
        stride=2,
        overlap=3,
        closed_loop="R+P",
        fuse="pyramid",
        prompt_interpolation="linear",
        interp="FILM",
        interp_x=2,
        request_id="job-7",
        freeinit_enable=True,
        freeinit_filter="gaussian",
        freeinit_ds=0.5,
        freeinit_dt=0.125,
        freeinit_iters=2,
        formats=",".join(ALL_FORMATS),
    )
    out = tmp_path_factory.mktemp("infotext-out")
    result = Animator(models_dir, out, RunOptions(device="cpu")).run(params)
    return params, result.files


def test_the_job_sets_every_recorded_field_away_from_its_default(written) -> None:
    params, _ = written
    defaults = Params()
    for name in Params.model_fields.keys() - NOT_RECORDED:
        assert getattr(params, name) != getattr(defaults, name), name


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_field_comes_back(written, fmt: str) -> None:
    params, files = written
    path = files[fmt]
    if fmt == "png":
        path = sorted(path.iterdir())[3]  # any frame of the PNG folder
    args = build_parser().parse_args(["generate", "--from-infotext", str(path)])
    restored = params_from_args(args)
    for name in Params.model_fields.keys() - NOT_RECORDED:
        assert getattr(restored, name) == getattr(params, name), name


def test_flags_override_the_file(written) -> None:
    _, files = written
    args = build_parser().parse_args(
        ["generate", "a dog", "--from-infotext", str(files["txt"]), "--seed", "5", "--cfg", "3"]
    )
    restored = params_from_args(args)
    assert (restored.prompt, restored.seed, restored.cfg_scale) == ("a dog", 5, 3.0)
    assert restored.fps == 12  # the rest still comes from the file


def test_a1111_png_is_read(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text(
        "parameters",
        "a castle\nNegative prompt: fog\nSteps: 25, Sampler: DPM++ 2M, Schedule type: Karras, "
        "CFG scale: 6, Seed: 99, Size: 512x768, Model hash: abc, Model: dreamshaper_8, Version: v1.10.1",
    )
    path = tmp_path / "00001-99.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    restored = params_from_args(build_parser().parse_args(["generate", "--from-infotext", str(path)]))
    assert (restored.prompt, restored.negative_prompt) == ("a castle", "fog")
    assert (restored.steps, restored.sampler, restored.seed) == (25, "DPM++ 2M Karras", 99)
    assert (restored.width, restored.height, restored.checkpoint) == (512, 768, "dreamshaper_8")


def test_files_without_settings_are_refused(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["generate", "--from-infotext", str(plain)]) == 1
    assert "holds no generation settings" in capsys.readouterr().err
    with pytest.raises(ParamsError, match=r"cannot read settings from a \.jpg file"):
        params_from_args(build_parser().parse_args(["generate", "--from-infotext", str(tmp_path / "x.jpg")]))
