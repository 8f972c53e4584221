"""FILM interpolation through the real loader, with the scripted fp16 stand-in model."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from animdiff.errors import InterpolationError
from animdiff.interpolate.counts import interpolated_count
from animdiff.interpolate.film import (
    FILM_MODEL_FILENAME,
    FilmInterpolator,
    FilmStep,
    film_schedule,
    find_film_model,
)
from animdiff.testing.film import write_film_standin


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_film_standin(root / "Deforum" / "film_interpolation" / FILM_MODEL_FILENAME)


@pytest.fixture(scope="module")
def film(standin) -> FilmInterpolator:
    return FilmInterpolator(standin, device="cpu")


def solid(value: int, height: int = 8, width: int = 8) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def random_frames(n: int, height: int = 16, width: int = 24, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def levels(frames: list[np.ndarray]) -> list[int]:
    """The single grey level of each constant frame (fails if a frame is not constant)."""
    out = []
    for frame in frames:
        assert (frame == frame.flat[0]).all()
        out.append(int(frame.flat[0]))
    return out


# ------------------------------------------------------------------ schedule


def test_schedule_is_middle_first_with_relative_times():
    assert film_schedule(3) == [FilmStep(2, 0, 4, 0.5), FilmStep(1, 0, 2, 0.5), FilmStep(3, 2, 4, 0.5)]
    # k = 4: positions 2 and 3 tie for the centre of 0..5, the earlier wins; later gaps are uneven.
    assert film_schedule(4) == [
        FilmStep(2, 0, 5, 0.4),
        FilmStep(1, 0, 2, 0.5),
        FilmStep(3, 2, 5, 1 / 3),
        FilmStep(4, 3, 5, 0.5),
    ]
    assert film_schedule(0) == []


@pytest.mark.parametrize("k", [1, 2, 5, 9, 10, 31])
def test_schedule_makes_each_inbetween_once_from_known_neighbours(k):
    known = {0, k + 1}
    for step in film_schedule(k):
        assert step.left in known and step.right in known and step.index not in known
        assert not any(step.left < p < step.right for p in known)  # nearest neighbours
        assert step.dt == pytest.approx((step.index - step.left) / (step.right - step.left))
        known.add(step.index)
    assert known == set(range(k + 2))


# ------------------------------------------------------------------ the stand-in through the loader


def test_standin_is_fp16_torchscript_and_loads_as_fp32_on_cpu(standin, film):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = torch.jit.load(str(standin), map_location="cpu")
    assert {p.dtype for p in raw.parameters()} == {torch.float16}
    model = film.load()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert film.load() is model  # loaded once


def test_black_to_white_inbetweens_in_order(film):
    # 3 frames at X = 3 give k = round(6 / 2) = 3 in-betweens per pair (2 frames only give even k).
    frames = [solid(0), solid(255), solid(0)]
    out = film.interpolate(frames, x=3)
    assert len(out) == interpolated_count(3, 3, closed=False) == 9
    # 0.25 / 0.5 / 0.75 of 255 = 63.75 / 127.5 / 191.25
    assert levels(out) == [0, 64, 128, 191, 255, 191, 128, 64, 0]


def test_original_frames_pass_through_unchanged(film):
    frames = random_frames(5)
    copies = [f.copy() for f in frames]
    out = film.interpolate(frames, x=3)  # k = round(10 / 4) = 2
    assert len(out) == interpolated_count(5, 3, closed=False) == 13
    assert all(out[3 * i] is frames[i] for i in range(5))
    assert all(np.array_equal(a, b) for a, b in zip(frames, copies, strict=True))
    assert all(f.dtype == np.uint8 and f.shape == (16, 24, 3) for f in out)


def test_closed_loop_fills_the_seam(film):
    frames = [solid(0), solid(255), solid(100)]
    out = film.interpolate(frames, x=3, closed=True)
    assert len(out) == interpolated_count(3, 3, closed=True) == 12
    # Pair 1 blends 255 -> 100, the seam 100 -> 0; each level is the rounded linear blend.
    expected = [0, 63.75, 127.5, 191.25, 255, 216.25, 177.5, 138.75, 100, 75, 50, 25]
    assert np.abs(np.array(levels(out)) - expected).max() <= 0.5
    assert levels(out)[8] == 100  # the last original opens the seam pair


def test_odd_sizes_come_back_at_their_size_and_aligned(film):
    frames = random_frames(4, height=72, width=40, seed=1)
    out = film.interpolate(frames, x=2)  # k = round(4 / 3) = 1
    assert len(out) == 7
    assert all(f.shape == (72, 40, 3) for f in out)
    for i in range(3):
        expected = (frames[i].astype(np.float64) + frames[i + 1]) / 2
        assert np.abs(out[2 * i + 1] - expected).max() <= 0.5 + 1e-6


def test_batch_size_does_not_change_the_result(film):
    frames = random_frames(6, seed=2)
    reference = film.interpolate(frames, x=3, closed=True, batch_size=1)
    for batch_size in (3, 8):
        out = film.interpolate(frames, x=3, closed=True, batch_size=batch_size)
        assert len(out) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(out, reference, strict=True))


def test_progress_counts_inbetweens(film):
    calls: list[tuple[int, int]] = []
    film.interpolate(random_frames(5), x=3, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(6, 8), (8, 8)]  # 4 pairs x k = 2, in chunks of 3 pairs


def test_model_gets_batched_pairs_and_per_row_dt(standin):
    film = FilmInterpolator(standin, device="cpu")
    seen: list[tuple[tuple[int, ...], tuple[int, ...], list[float]]] = []
    real = film.load()

    def spy(x0, x1, batch_dt):
        seen.append((tuple(x0.shape), tuple(batch_dt.shape), batch_dt.flatten().tolist()))
        return real(x0, x1, batch_dt)

    film._model = spy  # type: ignore[assignment]
    film.interpolate(random_frames(4, height=72, width=40), x=5)  # k = round(16 / 3) = 5
    dts = [step.dt for step in film_schedule(5)]
    assert [s[2][0] for s in seen] == pytest.approx(dts)
    assert {s[0] for s in seen} == {(3, 3, 128, 64)}  # 3 pairs at once, padded to multiples of 64
    assert {s[1] for s in seen} == {(3, 1, 1, 1)}
    assert all(len(set(s[2])) == 1 for s in seen)


# ------------------------------------------------------------------ nothing to do


def test_x1_returns_input_without_loading(tmp_path):
    broken = tmp_path / FILM_MODEL_FILENAME
    broken.write_bytes(b"not a model")
    film = FilmInterpolator(broken, device="cpu")
    frames = random_frames(4)
    out = film.interpolate(frames, x=1)
    assert all(a is b for a, b in zip(out, frames, strict=True)) and len(out) == 4
    assert film.interpolate(frames[:1], x=10, closed=True)[0] is frames[0]
    assert film.interpolate([], x=10) == []
    assert film._model is None


# ------------------------------------------------------------------ finding and loading the file


def test_find_prefers_deforum_folder_then_others(tmp_path):
    other = tmp_path / "FILM" / FILM_MODEL_FILENAME
    other.parent.mkdir()
    other.write_bytes(b"x")
    assert find_film_model(tmp_path) == other
    deforum = tmp_path / "Deforum" / "film_interpolation" / FILM_MODEL_FILENAME
    deforum.parent.mkdir(parents=True)
    deforum.write_bytes(b"x")
    assert find_film_model(tmp_path) == deforum
    assert find_film_model(tmp_path, explicit=other) == other
    assert find_film_model(None, explicit=other.parent) == other


def test_missing_model_names_every_place_looked(tmp_path):
    with pytest.raises(InterpolationError) as info:
        find_film_model(tmp_path)
    message = str(info.value)
    assert str(Path("Deforum") / "film_interpolation") in message
    for sub in ("film_interpolation", "FILM", "Deforum"):
        assert str(tmp_path / sub / FILM_MODEL_FILENAME) in message
    assert FILM_MODEL_FILENAME in message
    with pytest.raises(InterpolationError, match="Deforum"):
        find_film_model(None)
    with pytest.raises(InterpolationError, match=re.escape("nowhere.pt")):
        find_film_model(tmp_path, explicit=tmp_path / "nowhere.pt")


def test_corrupt_file_is_an_interpolation_error(tmp_path):
    broken = tmp_path / FILM_MODEL_FILENAME
    broken.write_bytes(b"\x00garbage" * 64)
    film = FilmInterpolator(broken, device="cpu")
    with pytest.raises(InterpolationError, match=re.escape(str(broken))):
        film.interpolate(random_frames(3), x=3)


def test_state_dict_file_is_an_interpolation_error(tmp_path):
    path = tmp_path / FILM_MODEL_FILENAME
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(InterpolationError, match="cannot be read"):
        FilmInterpolator(path, device="cpu").load()


def test_wrong_torchscript_model_is_an_interpolation_error(tmp_path):
    class Other(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / FILM_MODEL_FILENAME
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Other()).save(str(path))
    with pytest.raises(InterpolationError, match="not a FILM model"):
        FilmInterpolator(path, device="cpu").load()


def test_missing_file_at_load_is_an_interpolation_error(tmp_path):
    with pytest.raises(InterpolationError, match="does not exist"):
        FilmInterpolator(tmp_path / "gone.pt", device="cpu").load()
