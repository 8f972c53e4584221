"""The demo's data and the evaluator's reading of it: pure logic, no model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.demo import data
from animdiff.demo.evaluate import ClipReading, analyse, forward_share, jumps


def as_frames(clip: np.ndarray) -> np.ndarray:
    """data.render's (F, 3, H, W) in [-1, 1] -> (F, H, W, 3) uint8, as a decoded clip comes."""
    return ((clip.transpose(0, 2, 3, 1) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_evaluator_reads_every_training_clip_right(seed: int) -> None:
    for spec in data.random_pair(np.random.default_rng(seed)):
        reading = analyse(as_frames(data.render(spec)))
        assert reading.colour == spec.colour
        assert reading.direction == spec.direction
        assert reading.visible == 1.0
        assert jumps(reading, data.data_step()) == []
        if spec.direction != data.STATIC:
            assert forward_share(reading, spec.direction, data.data_step()) == 1.0
            assert forward_share(reading, data.OPPOSITE[spec.direction], data.data_step()) == 0.0
            assert reading.travel == pytest.approx(spec.step * (data.FRAMES - 1), abs=1.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_pair_differs_only_in_its_direction(seed: int) -> None:
    first, second = data.random_pair(np.random.default_rng(seed))
    assert (first.colour, first.shape, first.radius) == (second.colour, second.shape, second.radius)
    assert first.direction != second.direction
    if data.STATIC not in (first.direction, second.direction):
        assert data.OPPOSITE[first.direction] == second.direction
        assert first.step == second.step
        axis = 1 if first.direction in ("right", "left") else 0
        assert first.start[axis] == second.start[axis]  # the same line, travelled both ways


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_shapes_stay_inside_the_frame(seed: int) -> None:
    for spec in data.random_pair(np.random.default_rng(seed)):
        for frame in (0, data.FRAMES - 1):
            x, y = spec.centre(frame)
            assert spec.radius <= x <= data.SIZE - spec.radius
            assert spec.radius <= y <= data.SIZE - spec.radius


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 8.0))
def test_a_cross_spread_keeps_moving_shapes_near_the_middle_line(seed: int, spread: float) -> None:
    first, second = data.random_pair(np.random.default_rng(seed), static_share=0.0, cross_spread=spread)
    for spec in (first, second):
        x, y = spec.centre(0)
        cross = y if spec.direction in ("right", "left") else x
        assert abs(cross - data.SIZE / 2) <= spread
        assert spec.centre(data.FRAMES - 1)[1 if spec.direction in ("right", "left") else 0] == cross
    # Without a spread the pair is drawn as before (the same random numbers, the same clips).
    assert data.random_pair(np.random.default_rng(seed)) == data.random_pair(
        np.random.default_rng(seed), cross_spread=None
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_wrapping_pair_is_one_clip_played_both_ways(seed: int) -> None:
    first, second = data.random_pair(np.random.default_rng(seed), cross_spread=2.0, wrap=True)
    assert first.wrap and second.wrap
    assert (first.colour, first.shape, first.radius) == (second.colour, second.shape, second.radius)
    middle = first.centre((data.FRAMES - 1) / 2)
    if second.direction == data.STATIC:
        assert second.start == pytest.approx(middle)
    else:
        assert second.direction == data.OPPOSITE[first.direction]
        assert second.centre((data.FRAMES - 1) / 2) == pytest.approx(middle)
        np.testing.assert_allclose(data.render(second), data.render(first)[::-1], atol=0.02)
    axis = 1 if first.direction in ("right", "left") else 0
    assert abs(middle[axis] - data.SIZE / 2) <= 2.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_evaluator_reads_wrapping_clips_right_across_the_border(seed: int) -> None:
    for spec in data.random_pair(np.random.default_rng(seed), static_share=0.0, cross_spread=2.0, wrap=True):
        reading = analyse(as_frames(data.render(spec)))
        assert (reading.colour, reading.direction, reading.visible) == (spec.colour, spec.direction, 1.0)
        assert jumps(reading, data.data_step()) == []
        assert forward_share(reading, spec.direction, data.data_step()) == 1.0
        assert reading.travel == pytest.approx(spec.step * (data.FRAMES - 1), abs=1.5)


def test_a_wrapping_clip_leaves_on_one_side_and_comes_back_on_the_other() -> None:
    """The case the circular reading is for: a ball on both borders at once reads as one ball at
    the border, not as one in the middle of the frame."""
    spec = data.ClipSpec("red", "ball", "right", 7.0, (50.0, 32.0), 2.0, wrap=True)
    clip = as_frames(data.render(spec))
    assert spec.centre(7)[0] == 64.0  # on the border, half of it on each side
    assert (clip[7, 32, 2] != data.BACKGROUND).any() and (clip[7, 32, 61] != data.BACKGROUND).any()
    reading = analyse(clip)
    assert min(reading.centroids[7][0], 64 - reading.centroids[7][0]) < 1.0
    assert reading.direction == "right" and jumps(reading, data.data_step()) == []


def _from_entry_edge(spec: data.ClipSpec, frame: int) -> float:
    """How far a moving shape's centre is from the edge it entered by, pixels."""
    x, y = spec.centre(frame)
    return {"right": x, "left": data.SIZE - x, "down": y, "up": data.SIZE - y}[spec.direction]


def test_moving_shapes_enter_from_the_edge_they_leave_behind() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        for spec in data.random_pair(rng, static_share=0.0):
            assert _from_entry_edge(spec, 0) <= spec.radius + 1 + data.START_JITTER + 1e-9


def test_no_long_video_has_every_context_window_look_like_a_training_clip() -> None:
    """Why "no seam jumps" is open for a reason the data sets, not only the network: at the demo's
    context 16 and the default overlap 4, windows start 12 frames apart, and by frame 12 a training
    clip's shape is further from its entry edge than any clip starts. A video whose every window
    looked like a training clip would need the shape in both places in that frame."""
    from animdiff.choices import resolve_overlap
    from animdiff.demo.defaults import demo_settings

    context = demo_settings()["context"]
    next_window = context - resolve_overlap(context, -1)  # where the next window starts
    rng = np.random.default_rng(11)
    latest_entry, earliest_there = 0.0, float(data.SIZE)
    for _ in range(500):
        for spec in data.random_pair(rng, static_share=0.0):
            latest_entry = max(latest_entry, _from_entry_edge(spec, 0))
            earliest_there = min(earliest_there, _from_entry_edge(spec, next_window))
    assert earliest_there > latest_entry + 10


def test_captions() -> None:
    assert data.caption("red", "ball", "right") == "a red ball moving right"
    assert data.caption("blue", "square", data.STATIC) == "a static blue square"


def test_a_clip_rendered_longer_covers_the_same_path() -> None:
    spec = data.random_pair(np.random.default_rng(3), static_share=0.0)[0]
    short, long = analyse(as_frames(data.render(spec))), analyse(as_frames(data.render(spec, frames=48)))
    assert long.direction == short.direction
    assert long.travel == pytest.approx(short.travel, abs=1.0)


def test_jumps_are_moves_of_more_than_three_data_steps_and_flicker() -> None:
    step = data.data_step()
    path: list[tuple[float, float] | None] = [(10.0 + 2 * i, 30.0) for i in range(8)]
    reading = ClipReading("red", "right", 14.0, 1.0, list(path), ["red"] * 8)
    assert jumps(reading, step) == []
    path[5] = (10.0 + 2 * 5 + 3.1 * step, 30.0)
    assert jumps(ClipReading("red", "right", 14.0, 1.0, list(path), ["red"] * 8), step) == [5]
    path[5] = None  # gone for one frame between two where it is seen
    assert jumps(ClipReading("red", "right", 14.0, 7 / 8, list(path), ["red"] * 8), step) == [5]


def test_forward_share_counts_moves_the_words_way_between_visible_frames() -> None:
    step = 2.0
    hover = [(30.0, 30.0), (30.5, 30.0), (30.0, 30.0), (30.5, 30.0)]
    assert forward_share(ClipReading("red", "static", 0.0, 1.0, hover, ["red"] * 4), "right", step) == 0.0
    # A sawtooth: forward by two steps, back to the start, forward again; an unseen frame in between.
    saw = [(10.0, 30.0), (14.0, 30.0), (10.0, 30.0), None, (14.0, 30.0), (18.0, 30.0)]
    reading = ClipReading("red", "right", 8.0, 5 / 6, saw, ["red"] * 6)
    assert forward_share(reading, "right", step) == pytest.approx(2 / 3)
    assert forward_share(reading, "left", step) == pytest.approx(1 / 3)
    assert forward_share(ClipReading(None, "static", 0.0, 0.0, [None] * 3, [None] * 3), "up", step) == 0.0


def test_an_empty_clip_reads_as_no_shape() -> None:
    frames = np.full((16, 64, 64, 3), data.BACKGROUND, np.uint8)
    reading = analyse(frames)
    assert reading.colour is None and reading.visible == 0.0 and reading.direction == data.STATIC


def test_the_evaluator_refuses_zero_seeds(capsys) -> None:
    from animdiff.demo.evaluate import main

    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
    assert "--seeds: must be 1 or more" in capsys.readouterr().err


def test_the_evaluator_refuses_long_videos_without_seams(capsys) -> None:
    from animdiff.demo.evaluate import main

    with pytest.raises(SystemExit):
        main(["--long-frames", "16"])
    assert "--long-frames: must be more than the context, 16" in capsys.readouterr().err


def test_the_evaluator_passes_its_options_and_writes_either_report(monkeypatch, tmp_path) -> None:
    from animdiff.demo import evaluate

    seen: dict = {}

    def fake_measure(animator, **options):
        seen.update(options)
        return evaluate.Report(1.0, 0.25, 0.25, 34.0, 34.0, 1.0, {}, {}, [], 0.0)

    monkeypatch.setattr(evaluate, "make_animator", lambda weights: None)
    monkeypatch.setattr(evaluate, "measure", fake_measure)
    evaluate.main(
        [
            *("--seeds", "2", "--overlap", "8", "--long-prompts", "1", "--closed-loop", "N"),
            *("--long-frames", "48", "--long-seeds", "3"),
            *("--fuse", "pyramid", "--json", str(tmp_path / "a.json")),
        ]
    )
    assert seen == {
        "seeds": (0, 1),
        "long_prompts": 1,
        "long_frames": 48,
        "long_seeds": (0, 1, 2),
        "long_overlap": 8,
        "long_closed_loop": "N",
        "long_fuse": "pyramid",
    }
    assert '"direction_accuracy": 0.25' in (tmp_path / "a.json").read_text()

    asked = []

    def fake_dependence(weights, backwards):
        asked.append(backwards)
        return {"direction": {800: 1.0}}

    monkeypatch.setattr(evaluate, "word_dependence", fake_dependence)
    evaluate.main(["--word-dependence", "--json", str(tmp_path / "b.json")])
    assert '"direction"' in (tmp_path / "b.json").read_text()
    evaluate.main(["--word-dependence", "--backwards"])
    assert asked == [False, True]


def test_the_long_video_settings_reach_the_renderer_and_the_short_clips_keep_the_defaults(
    monkeypatch,
) -> None:
    from animdiff.demo import evaluate

    spec = data.ClipSpec("red", "ball", "right", 7.0, (12.0, 32.0), 2.2)
    calls: list[dict] = []

    def fake_render(animator, prompt: str, seed: int, **overrides):
        calls.append((overrides, seed))
        return as_frames(data.render(spec, frames=int(overrides.get("frames", data.FRAMES))))

    monkeypatch.setattr(evaluate, "render", fake_render)
    report = evaluate.measure(
        None,
        colours=("red",),
        directions=("right",),
        seeds=(0,),
        long_frames=24,
        long_prompts=1,
        long_seeds=(0, 5),
        long_overlap=6,
        long_closed_loop="N",
        long_fuse="pyramid",
    )
    long = {"frames": 24, "context": 16, "overlap": 6, "closed_loop": "N", "fuse": "pyramid"}
    assert calls == [({}, 0), (long, 0), (long, 5)]
    assert report.direction_accuracy == 1.0 and report.long_videos[0]["forward"] == 1.0
    assert [video["seed"] for video in report.long_videos] == [0, 5]


def test_the_evaluators_help_names_the_demo_models_long_video_defaults(capsys) -> None:
    from animdiff.demo.defaults import DEMO_DEFAULTS
    from animdiff.demo.evaluate import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("overlap", "closed_loop", "fuse"):
        assert f"the demo model's, {DEMO_DEFAULTS[name]})" in text


def test_long_videos_left_to_their_defaults_render_with_the_demo_models_own(monkeypatch) -> None:
    from animdiff.demo import evaluate

    spec = data.ClipSpec("red", "ball", "right", 7.0, (12.0, 32.0), 2.2)
    params = []

    def fake_render(animator, prompt: str, seed: int, **overrides):
        params.append(evaluate.demo_params(prompt, seed, **overrides))
        return as_frames(data.render(spec, frames=int(overrides.get("frames", data.FRAMES))))

    monkeypatch.setattr(evaluate, "render", fake_render)
    evaluate.measure(
        None, colours=("red",), directions=("right",), seeds=(0,), long_frames=24, long_prompts=1
    )
    short, long = params
    settings = {name: getattr(long, name) for name in ("frames", "context", "overlap", "closed_loop", "fuse")}
    assert settings == {"frames": 24, "context": 16, "overlap": 12, "closed_loop": "N", "fuse": "pyramid"}
    assert (short.frames, short.context) == (16, 16)
