"""ControlNet unit settings, the frame-count rules they bring, and their infotext (no models run)."""

from __future__ import annotations

import pytest

from animdiff.control_units import ControlNetUnit, parse_unit_text
from animdiff.errors import NotSupportedYetError, ParamsError
from animdiff.output.infotext import build_infotext, format_controlnet, params_from_infotext
from animdiff.params import check_supported, make_params
from animdiff.prepare import FrameCounts


def test_cli_text_is_parsed_with_quotes_and_paths() -> None:
    text = 'model=tiny [0123abcd], module=Canny,image="a,b.png",control_mode=My prompt is more important'
    assert parse_unit_text(text) == {
        "model": "tiny [0123abcd]",
        "module": "Canny",
        "image": "a,b.png",
        "control_mode": "My prompt is more important",
    }
    assert parse_unit_text(r"model=x,batch-images=C:\frames\a")["batch_images"] == r"C:\frames\a"
    with pytest.raises(ValueError, match="not key=value"):
        parse_unit_text("model=x,canny")


def test_unit_fields_accept_the_extension_forms() -> None:
    unit = ControlNetUnit(model="control_v11p_sd15_canny [d14c016b]", module="Canny", control_mode=2)
    assert (unit.model, unit.module, unit.control_mode) == (
        "control_v11p_sd15_canny",
        "canny",
        "ControlNet is more important",
    )
    assert unit.resize_mode == "Crop and Resize"  # the extension's default
    assert ControlNetUnit(model="m", resize_mode=0).resize_mode == "Just Resize"
    assert ControlNetUnit(model="m", resize_mode="resize and fill").resize_mode == "Resize and Fill"
    api = ControlNetUnit(model="m", module="canny", processor_res=-1, threshold_a=-1, threshold_b=-1)
    assert (api.processor_res, api.thresholds) == (512, (100, 200))


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ({"model": "m", "module": "nope"}, "unknown preprocessor 'nope'"),
        ({"model": "m", "guidance_start": 0.8, "guidance_end": 0.2}, "must not be after guidance_end"),
        ({"model": "m", "module": "canny", "threshold_a": 900}, "threshold_a"),
        ({"model": "m", "control_mode": 7}, "control_mode"),
        ({"model": "m", "image": "a.png", "batch_images": "f"}, "either image or batch_images"),
    ],
)
def test_bad_units_are_refused_when_built(unit, message) -> None:
    with pytest.raises(ParamsError, match=message):
        make_params(
            controlnet=[{**unit, "image": unit.get("image", "x.png")}] if "image" in unit else [unit],
            video_source="v.mp4",
        )


def test_video_inputs_need_a_unit() -> None:
    with pytest.raises(NotSupportedYetError, match="without a ControlNet unit"):
        check_supported(make_params(video_source="clip.mp4"))
    check_supported(make_params(video_source="clip.mp4", controlnet="model=m,module=canny"))
    with pytest.raises(ParamsError, match=r"ControlNet unit 0 .* has no input"):
        make_params(controlnet="model=m")
    disabled = make_params(video_path="frames", controlnet=["model=m", "model=n,enabled=false"])
    assert [u.model for u in disabled.active_controlnet_units] == ["m"]


@pytest.mark.parametrize(
    ("frames", "context", "control", "expected"),
    [
        (0, 16, 40, (40, 40, 4, 16)),  # the reference's examples (section 1.3 step 7)
        (0, 16, 10, (10, 10, 4, 10)),
        (24, 16, 40, (24, 24, 4, 16)),
        (50, 16, 40, (40, 40, 4, 16)),
        (4, 16, 10, (4, 10, 4, 10)),
        (0, 16, 2, (2, 2, 1, 2)),  # the overlap stays below the capped context
        (0, 16, None, (16, 16, 4, 16)),
    ],
)
def test_frame_counts_follow_the_control_frames(frames, context, control, expected) -> None:
    counts = FrameCounts.resolve(make_params(frames=frames, context=context), control)
    assert (counts.video_length, counts.batch, counts.overlap, counts.context) == expected


def test_guidance_range_rule() -> None:
    unit = ControlNetUnit(model="m", guidance_end=0.5)
    assert [unit.applies_at(i, 4) for i in range(4)] == [True, True, False, False]
    late = ControlNetUnit(model="m", guidance_start=0.5)
    assert [late.applies_at(i, 4) for i in range(4)] == [False, False, True, True]


def test_infotext_records_units_and_reads_them_back() -> None:
    params = make_params(
        prompt="a corgi",
        video_source="clip.mp4",
        fps=12,
        controlnet=[
            "model=tiny-controlnet-canny,module=canny,threshold_a=50,guidance_end=0.5",
            "model=tiny-controlnet-inpaint,weight=0.5,control_mode=1,resize_mode=2,pixel_perfect=true",
        ],
    )
    units = [(i, unit, unit.model, "0123abcd") for i, unit in enumerate(params.controlnet_units)]
    text = build_infotext(params, seed=1, frames=10, overlap=2, controlnets=units)
    assert (
        'ControlNet 0: "Module: canny, Model: tiny-controlnet-canny [0123abcd], Weight: 1.0, Resize Mode: '
        "Crop and Resize, Processor Res: 512, Threshold A: 50.0, Threshold B: 200, Guidance Start: 0.0, "
        'Guidance End: 0.5, Pixel Perfect: False, Control Mode: Balanced"'
    ) in text
    restored = make_params(params_from_infotext(text), video_source="clip.mp4")
    for back, given in zip(restored.controlnet_units, params.controlnet_units, strict=True):
        # a threshold left at the preprocessor's default is written as that value
        assert back.thresholds == given.thresholds
        assert back.model_dump(exclude={"threshold_a", "threshold_b"}) == given.model_dump(
            exclude={"threshold_a", "threshold_b"}
        )
    assert restored.fps == 12
    assert format_controlnet(params.controlnet_units[1], "x").startswith(
        "Module: none, Model: x, Weight: 0.5"
    )
