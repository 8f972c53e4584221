"""A1111 infotext: exact layout, parsing, and the round trip back to the same settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from animdiff.errors import ParamsError
from animdiff.output import build_infotext, params_from_infotext, parse_infotext
from animdiff.output.infotext import quote
from animdiff.params import MAX_SEED, Params, make_params
from animdiff.sampling.samplers import SAMPLER_NAMES

EXAMPLE_LINE = (
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 0123abcd, "
    'Model: realisticVision, Clip skip: 2, AnimateDiff: "model: mm_sd_v15_v2.ckpt, video_length: 16, fps: 8, '
    "loop_number: 0, closed_loop: R-P, batch_size: 16, stride: 1, overlap: 4, interp: Off, interp_x: 10, "
    'freeinit_enable: False, mm_hash: 89abcdef", Version: animdiff 0.1.0'
)


def example(**changes: Any) -> str:
    params = make_params({"prompt": "a corgi", "negative_prompt": "blurry", "clip_skip": 2, **changes})
    return build_infotext(
        params,
        seed=42,
        frames=16,
        overlap=params.resolved_overlap,
        model_name="realisticVision",
        model_hash="0123abcd",
        motion_module="mm_sd_v15_v2.ckpt",
        mm_hash="89abcdef",
    )


def test_layout_matches_the_reference() -> None:
    assert example() == "a corgi\nNegative prompt: blurry\n" + EXAMPLE_LINE


def test_optional_parts_are_left_out() -> None:
    params = make_params(prompt="a cat")
    text = build_infotext(params, seed=1, frames=16, overlap=4, version="v")
    assert text == (
        "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 512x512, "
        'AnimateDiff: "video_length: 16, fps: 8, loop_number: 0, closed_loop: R-P, batch_size: 16, '
        'stride: 1, overlap: 4, interp: Off, interp_x: 10, freeinit_enable: False", Version: v'
    )
    assert build_infotext(make_params(), seed=1, frames=16, overlap=4).startswith("Steps: 20, ")
    empty_prompt = build_infotext(make_params(negative_prompt="x"), seed=1, frames=16, overlap=4)
    assert empty_prompt.startswith("Negative prompt: x\nSteps: 20, ")


def test_request_id_and_own_settings_follow_the_reference_keys() -> None:
    text = example(
        request_id="job-7",
        fuse="pyramid",
        prompt_interpolation="linear",
        groupnorm="diffusers",
        motion_loras=[{"name": "v2_lora_ZoomIn.ckpt", "strength": 0.75}, {"name": "v2_lora_PanLeft.ckpt"}],
    )
    value = parse_infotext(text)
    assert value["AnimateDiff request_id"] == "job-7"
    line = text.rsplit("\n", 1)[1]
    assert (
        "freeinit_enable: False, request_id: job-7, mm_hash: 89abcdef, fuse: pyramid, "
        "prompt_interpolation: linear, "
        'groupnorm: diffusers, motion_lora: v2_lora_ZoomIn.ckpt@0.75+v2_lora_PanLeft.ckpt@1.0"'
    ) in line


def test_defaults_of_own_settings_are_not_written() -> None:
    assert "fuse" not in example() and "groupnorm" not in example() and "motion_lora" not in example()


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("a: b", '"a: b"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi"', '"say \\"hi\\""'),
        (" padded", '" padded"'),
        ("é✓", "é✓"),
        ("é, ✓", '"é, ✓"'),
    ],
)
def test_quote(value: str, written: str) -> None:
    assert quote(value) == written
    assert (json.loads(written) if written.startswith('"') else written) == value


def test_parse_fields() -> None:
    fields = parse_infotext(example(checkpoint=None))
    assert fields["Prompt"] == "a corgi"
    assert fields["Negative prompt"] == "blurry"
    assert fields["Model"] == "realisticVision"
    assert fields["Size"] == "512x512"
    assert fields["AnimateDiff model"] == "mm_sd_v15_v2.ckpt"
    assert fields["AnimateDiff overlap"] == "4"
    assert fields["AnimateDiff freeinit_enable"] == "False"
    assert "AnimateDiff" not in fields


def test_parse_a1111_text_with_schedule_type_and_bare_flag() -> None:
    text = (
        "masterpiece, 1girl\n\nNegative prompt: bad hands\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
        'Model: "v1-5, pruned", Clip skip: 2, Some flag, AnimateDiff: "model: mm_sd15_v3.safetensors, '
        "video_length: 16, fps: 8, loop_number: 0, closed_loop: R-P, batch_size: 16, stride: 1, overlap: -1, "
        "interp: Off, interp_x: 10, freeinit_enable: False, mm_hash: 0123abcd, "
        'version: v2.0.1-a", Version: v1.10.1'
    )
    fields = parse_infotext(text)
    assert fields["Prompt"] == "masterpiece, 1girl\n"
    assert fields["Some flag"] == "Some flag"
    values = params_from_infotext(text)
    assert values["sampler"] == "DPM++ 2M Karras"
    assert (values["width"], values["height"], values["cfg_scale"]) == (512, 768, 7.0)
    assert values["checkpoint"] == "v1-5, pruned"
    params = make_params(values)
    assert (params.overlap, params.context, params.motion_module) == (-1, 16, "mm_sd15_v3.safetensors")


def test_broken_quotes_are_read_as_written() -> None:
    fields = parse_infotext('a cat\nSteps: 20, Model: "half, Seed: 3, Size: 64x64')
    assert (fields["Model"], fields["Seed"], fields["Size"]) == ('"half', "3", "64x64")


def test_text_without_parameters_line_is_all_prompt() -> None:
    fields = parse_infotext("a cat, sitting\nin the sun: warm")
    assert fields == {"Prompt": "a cat, sitting\nin the sun: warm", "Negative prompt": ""}


def test_module_name_with_comma_survives() -> None:
    text = example().replace("mm_sd_v15_v2.ckpt", "my, module.ckpt")
    assert parse_infotext(text)["AnimateDiff model"] == "my, module.ckpt"


@pytest.mark.parametrize("broken", ["Steps: many", "Size: 512", "Seed: 4.5"])
def test_unreadable_values_are_reported(broken: str) -> None:
    with pytest.raises(ParamsError, match="infotext"):
        params_from_infotext(f"a cat\n{broken}, Sampler: Euler, CFG scale: 7")


# --- round trip --------------------------------------------------------------------------------------

PROMPT_CHARS = 'ab c,:"\\\n0123456789é✓()'
prompt_text = st.text(alphabet=PROMPT_CHARS, max_size=60)
travel_prompt = st.lists(
    st.tuples(st.integers(0, 31), st.text(alphabet="abc ,:()", min_size=1, max_size=15)),
    min_size=1,
    max_size=4,
).map(lambda keys: "best quality, \n" + "\n".join(f"{k}: {text}" for k, text in keys) + "\nhigh detail")
file_name = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=20)
lora_name = st.text(alphabet="abcXYZ019_-.+ ", min_size=1, max_size=20)
model_name = st.text(alphabet='ab c,:"\\é-_.', min_size=1, max_size=20)


@st.composite
def job_params(draw: st.DrawFn) -> Params:
    context = draw(st.integers(1, 32))
    values = {
        "prompt": draw(st.one_of(prompt_text, travel_prompt)),
        "negative_prompt": draw(prompt_text),
        "width": draw(st.integers(8, 256)) * 8,
        "height": draw(st.integers(8, 256)) * 8,
        "steps": draw(st.integers(1, 150)),
        "cfg_scale": draw(st.floats(1.0, 30.0, allow_nan=False)),
        "sampler": draw(st.sampled_from(SAMPLER_NAMES)),
        "seed": draw(st.integers(-1, MAX_SEED)),
        "clip_skip": draw(st.integers(1, 12)),
        "checkpoint": draw(st.none() | model_name),
        "motion_module": draw(st.none() | file_name),
        "motion_loras": draw(
            st.lists(st.fixed_dictionaries({"name": lora_name, "strength": st.floats(-10, 10)}), max_size=3)
        ),
        "groupnorm": draw(st.sampled_from(["reference", "diffusers"])),
        "frames": draw(st.integers(0, 10_000)),
        "fps": draw(st.integers(1, 240)),
        "loop_number": draw(st.integers(0, 65_535)),
        "context": context,
        "stride": draw(st.integers(1, 16)),
        "overlap": draw(st.integers(-1, context - 1)),
        "closed_loop": draw(st.sampled_from(["N", "R-P", "R+P", "A"])),
        "fuse": draw(st.sampled_from(["overwrite", "flat", "pyramid"])),
        "prompt_interpolation": draw(st.sampled_from(["slerp", "linear"])),
        "interp": draw(st.sampled_from(["Off", "FILM"])),
        "interp_x": draw(st.integers(1, 100)),
        "request_id": draw(st.text(alphabet="abcXYZ019_-", max_size=64)),
    }
    return make_params(values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=job_params(),
    seed=st.integers(0, MAX_SEED),
    frames=st.integers(1, 10_000),
    hashes=st.booleans(),
)
def test_round_trip(params: Params, seed: int, frames: int, hashes: bool) -> None:
    overlap = params.resolved_overlap
    text = build_infotext(
        params,
        seed=seed,
        frames=frames,
        overlap=overlap,
        model_hash="0123abcd" if hashes else None,
        mm_hash="89abcdef" if hashes else None,
    )
    restored = make_params(params_from_infotext(text))
    assert restored == params.model_copy(update={"seed": seed, "frames": frames, "overlap": overlap})
