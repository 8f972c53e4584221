"""Prompt travel: parsing, keyframe checks, the blend schedule, interpolation and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.errors import PromptError
from animdiff.prompts.travel import (
    TravelPrompt,
    check_keyframes,
    closed_loop_prompts,
    interpolate_embeddings,
    lerp,
    main,
    parse_travel,
    schedule,
    slerp,
)

# --- parsing ---------------------------------------------------------------------------------------


def test_head_keyframes_tail() -> None:
    travel = parse_travel("best quality\nmasterpiece\n0: a girl\n8: a boy\noutdoors\nsunny")
    assert travel == TravelPrompt(
        head=("best quality", "masterpiece"),
        keyframes=((0, "a girl"), (8, "a boy")),
        tail=("outdoors", "sunny"),
    )
    assert travel.keyframe_prompts() == {
        0: "best quality, masterpiece, a girl, outdoors, sunny",
        8: "best quality, masterpiece, a boy, outdoors, sunny",
    }


def test_prompt_join_keeps_the_reference_commas() -> None:
    travel = parse_travel("0: a\n4: b")
    assert travel is not None
    assert travel.keyframe_prompts() == {0: ", a, ", 4: ", b, "}
    travel = parse_travel("head,\n0: a")
    assert travel is not None
    assert travel.keyframe_prompts() == {0: "head,, a, "}


def test_no_keyframe_is_no_travel() -> None:
    assert parse_travel("") is None
    assert parse_travel("a girl, (smiling:1.2)\nsecond line") is None
    assert parse_travel("a: b") is None


def test_keyframe_text_is_verbatim_after_one_space() -> None:
    travel = parse_travel("0:  two spaces \n5: (a:1.2), <lora:x:0.5>")
    assert travel is not None
    assert travel.keyframes == ((0, " two spaces "), (5, "(a:1.2), <lora:x:0.5>"))


def test_prompt_is_stripped_first() -> None:
    travel = parse_travel("\n\n   0: a\n4: b   \n\n")
    assert travel is not None
    assert travel.keyframes == ((0, "a"), (4, "b"))


def test_crlf_lines() -> None:
    travel = parse_travel("head\r\n0: a\r\n4: b\r\ntail\r\n")
    assert travel == TravelPrompt(("head",), ((0, "a"), (4, "b")), ("tail",))


def test_blank_lines_are_ignored_everywhere() -> None:
    travel = parse_travel("head\n\n  \n0: a\n\n\t\n4: b\n\ntail one\n\ntail two")
    assert travel == TravelPrompt(("head",), ((0, "a"), (4, "b")), ("tail one", "tail two"))


def test_out_of_order_keyframes_are_sorted() -> None:
    travel = parse_travel("8: c\n0: a\n4: b")
    assert travel is not None
    assert travel.keyframes == ((0, "a"), (4, "b"), (8, "c"))
    assert travel.frames == [0, 4, 8]


def test_leading_zeros() -> None:
    travel = parse_travel("007: a")
    assert travel is not None
    assert travel.keyframes == ((7, "a"),)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ("0: a\n8:b", r"line 2 \('8:b'\) looks like a keyframe"),
        ("0: a\n8:", "line 2"),
        ("8:text", "line 1"),
        ("head\n16:9 wide", "line 2"),
        ("0: a\n  4: b", r"line 2 \('  4: b'\)"),
        ("0: a\n4: b\r\n5:x", "line 3"),
        ("\n\n0: a\n\n8:b", "line 5"),  # counted in the prompt as given, blank lines included
    ],
)
def test_malformed_keyframe_lines(prompt: str, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        parse_travel(prompt)


def test_keyframe_after_tail_is_an_error() -> None:
    with pytest.raises(
        PromptError, match=r"line 4 .* tail that starts at line 3: keyframe lines must be consecutive"
    ):
        parse_travel("0: a\n4: b\ntail\n8: c")


def test_repeated_keyframe_is_an_error() -> None:
    with pytest.raises(PromptError, match=r"keyframe 4 appears twice \(lines 2 and 3\)"):
        parse_travel("0: a\n4: b\n4: c")


def test_check_keyframes() -> None:
    travel = parse_travel("0: a\n15: b")
    assert travel is not None
    check_keyframes(travel, 16)
    with pytest.raises(
        PromptError, match=r"keyframe 15 is beyond the last frame \(video has 15 frames: 0..14\)"
    ):
        check_keyframes(travel, 15)


# --- schedule ----------------------------------------------------------------------------------------


def test_schedule_open_loop() -> None:
    plan = schedule([4, 8], 12, closed_loop=False)
    assert plan[:4] == [(4, 4, 0.0)] * 4
    assert plan[4:8] == [(4, 8, 0.0), (4, 8, 0.25), (4, 8, 0.5), (4, 8, 0.75)]
    assert plan[8:] == [(8, 8, 0.0)] * 4


def test_schedule_closed_loop() -> None:
    plan = schedule([4, 8], 12, closed_loop=True)
    assert plan[0] == (8, 4, 0.5)
    assert plan[3] == (8, 4, 7 / 8)
    assert plan[4] == (4, 8, 0.0)
    assert plan[6] == (4, 8, 0.5)
    assert plan[8] == (8, 4, 0.0)
    assert plan[10] == (8, 4, 0.25)


def test_schedule_one_keyframe() -> None:
    for closed in (False, True):
        assert schedule([3], 8, closed) == [(3, 3, 0.0)] * 8


def test_schedule_keyframes_at_both_ends() -> None:
    open_plan = schedule([0, 15], 16, closed_loop=False)
    assert open_plan[0] == (0, 15, 0.0)
    assert open_plan[7] == (0, 15, 7 / 15)
    assert open_plan[15] == (15, 15, 0.0)
    closed_plan = schedule([0, 15], 16, closed_loop=True)
    assert closed_plan[7] == (0, 15, 7 / 15)
    assert closed_plan[15] == (15, 0, 0.0)


def test_schedule_sorts_its_input() -> None:
    assert schedule([8, 4], 12, False) == schedule([4, 8], 12, False)


@pytest.mark.parametrize(("keys", "total"), [([], 4), ([4], 4), ([-1], 4)])
def test_schedule_rejects_bad_keyframes(keys: list[int], total: int) -> None:
    with pytest.raises(ValueError):
        schedule(keys, total, False)


@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=48).flatmap(
        lambda total: st.tuples(
            st.just(total), st.sets(st.integers(min_value=0, max_value=total - 1), min_size=1, max_size=6)
        )
    ),
    st.booleans(),
)
def test_schedule_properties(total_keys: tuple[int, set[int]], closed: bool) -> None:
    total, keys = total_keys
    plan = schedule(sorted(keys), total, closed)
    assert len(plan) == total
    for frame, (prev, nxt, rate) in enumerate(plan):
        assert prev in keys and nxt in keys
        assert 0.0 <= rate < 1.0
        if frame in keys:
            assert prev == frame
            assert rate == 0.0
        if min(keys) < frame < max(keys):
            assert prev <= frame < nxt
        if not closed and not min(keys) <= frame <= max(keys):
            assert prev == nxt and rate == 0.0


def test_closed_loop_prompts() -> None:
    assert closed_loop_prompts(32, 16, "R+P")
    assert closed_loop_prompts(32, 16, "A")
    assert not closed_loop_prompts(32, 16, "R-P")
    assert not closed_loop_prompts(32, 16, "N")
    assert not closed_loop_prompts(16, 16, "R+P")
    assert not closed_loop_prompts(8, 16, "A")


# --- interpolation -----------------------------------------------------------------------------------


def embeddings(seed: int, shape: tuple[int, ...] = (4, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(
        shape, generator=gen, dtype=torch.float64
    )


def span_coefficients(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    basis = torch.stack([a.flatten(), b.flatten()], dim=1)
    coeffs = torch.linalg.lstsq(basis, out.flatten().unsqueeze(1)).solution.flatten()
    residual = (basis @ coeffs - out.flatten()).norm().item() / max(out.norm().item(), 1e-12)
    return coeffs, residual


@pytest.mark.numerics
@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=10),
    st.booleans(),
    st.booleans(),
)
def test_interpolated_frames_between_keyframes(
    seed: int, start: int, gap: int, closed: bool, near: bool
) -> None:
    a, b = embeddings(seed)
    if near:  # nearly parallel: exercises slerp's linear fallback
        b = 2.0 * a + 1e-4 * b
    end = start + gap
    total = end + 3
    plan = schedule([start, end], total, closed)
    keyed = {start: a, end: b}
    linear = interpolate_embeddings(keyed, plan, "linear")
    spherical = interpolate_embeddings(keyed, plan, "slerp")
    assert linear.shape == spherical.shape == (total, 4, 6)
    for frame in range(start + 1, end):
        prev, nxt, t = plan[frame]
        assert (prev, nxt) == (start, end) and 0.0 < t < 1.0
        assert torch.equal(linear[frame], (1 - t) * a + t * b)
        coeffs, residual = span_coefficients(spherical[frame], a, b)
        assert residual < 1e-9
        assert (coeffs >= -1e-6).all()
    assert torch.equal(linear[start], a) and torch.equal(spherical[start], a)
    assert torch.equal(linear[end], b) and torch.equal(spherical[end], b)


@pytest.mark.numerics
def test_slerp_endpoints_and_midpoint() -> None:
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0], dtype=torch.float64)
    assert torch.allclose(slerp(a, b, 0.0), a)
    assert torch.allclose(slerp(a, b, 1.0), b)
    half = (2**-0.5) * torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(slerp(a, b, 0.5), half)


@pytest.mark.numerics
def test_slerp_nearly_parallel_is_linear() -> None:
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([3.0, 0.01, 0.0], dtype=torch.float64)
    assert torch.equal(slerp(a, b, 0.3), lerp(a, b, 0.3))


@pytest.mark.numerics
def test_slerp_zero_tensor_is_linear() -> None:
    a = torch.zeros(3)
    b = torch.ones(3)
    assert torch.equal(slerp(a, b, 0.25), torch.full((3,), 0.25))


@pytest.mark.numerics
def test_half_precision_is_computed_in_float32_and_returned_as_half() -> None:
    a, b = (t.to(torch.float16) for t in embeddings(1))
    out = slerp(a, b, 0.4)
    assert out.dtype == torch.float16
    expected = slerp(a.float(), b.float(), 0.4).to(torch.float16)
    assert torch.equal(out, expected)
    assert lerp(a, b, 0.4).dtype == torch.float16


def test_interpolate_embeddings_rejects_unknown_method() -> None:
    a, b = embeddings(0)
    with pytest.raises(ValueError, match="unknown prompt interpolation"):
        interpolate_embeddings({0: a, 1: b}, schedule([0, 1], 2, False), "cubic")  # type: ignore[arg-type]


# --- command line ------------------------------------------------------------------------------------


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prompt: str, *argv: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO(prompt))
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_main_prints_one_json_object(monkeypatch, capsys) -> None:
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "best\n0: a\n8: b\ntail",
        "--frames",
        "16",
        "--context",
        "8",
        "--closed-loop",
        "R+P",
    )
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["keyframes"] == {"0": "best, a, tail", "8": "best, b, tail"}
    assert len(result["frames"]) == 16
    assert result["frames"][12] == [8, 0, 0.5]  # closed-loop prompts: 16 frames > context 8


def test_main_frames_zero_means_context(monkeypatch, capsys) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "0: a\n4: b", "--context", "8")
    assert code == 0
    frames = json.loads(out)["frames"]
    assert len(frames) == 8
    assert frames[6] == [4, 4, 0.0]


def test_main_generates_the_context_batch_and_checks_the_frames(monkeypatch, capsys) -> None:
    code, out, _ = run_main(
        monkeypatch, capsys, "0: a\n4: b", "--frames", "6", "--context", "8", "--closed-loop", "A"
    )
    assert code == 0
    frames = json.loads(out)["frames"]
    assert len(frames) == 8  # max(frames, context) generated
    assert frames[7] == [4, 4, 0.0]  # 6 <= 8: no closed-loop prompts even in mode A
    code, _, err = run_main(monkeypatch, capsys, "0: a\n6: b", "--frames", "6", "--context", "8")
    assert code == 2
    assert "keyframe 6 is beyond the last frame (video has 6 frames: 0..5)" in err


def test_main_without_keyframes(monkeypatch, capsys) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "just a prompt\n")
    assert code == 0
    assert json.loads(out) == {"keyframes": {}, "frames": []}


def test_main_errors_exit_2(monkeypatch, capsys) -> None:
    code, out, err = run_main(monkeypatch, capsys, "0: a\n8:b")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "line 2" in err
    code, _, err = run_main(monkeypatch, capsys, "0: a", "--context", "0")
    assert code == 2 and "context" in err


def test_cli_subprocess() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "animdiff.prompts.travel",
            "--frames",
            "16",
            "--context",
            "8",
            "--closed-loop",
            "r+p",
        ],
        input="masterpiece\r\n0: a cat\r\n8: a dog\r\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    result = json.loads(done.stdout)
    assert result["keyframes"] == {"0": "masterpiece, a cat, ", "8": "masterpiece, a dog, "}
    assert [row[:2] for row in result["frames"][8:]] == [[8, 0]] * 8


def test_cli_subprocess_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "animdiff.prompts.travel"],
        input="0: a\n0: b\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "keyframe 0 appears twice" in done.stderr
