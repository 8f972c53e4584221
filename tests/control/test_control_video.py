"""Reading video files: probe (exact count, rate, size), lazy reads with resizing, errors."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from control_helpers import (
    FPS,
    FRAMES,
    HEIGHT,
    SQUARE,
    TOP,
    WIDTH,
    bright_box,
    centre_x,
    square_frame,
    square_left,
    write_video,
)
from PIL import Image

from animdiff.control import (
    REFERENCE_DECIMATE,
    VideoInputError,
    iter_video_frames,
    probe_video,
    read_video_frames,
    videofile,
)
from animdiff.errors import AnimdiffError, ParamsError

ALL_KINDS = ["mp4", "webm", "mov", "mkv", "gif", "webp"]
EXACT_RATE = ["mp4", "webm", "mov", "mkv"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_probe_counts_frames_exactly_and_reports_size(square_videos: dict[str, Path], kind: str) -> None:
    info = probe_video(square_videos[kind])
    assert info.frame_count == FRAMES
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.kind == ("animation" if kind in ("gif", "webp") else "video")
    assert info.path == square_videos[kind]


@pytest.mark.parametrize("kind", EXACT_RATE)
def test_video_rate_is_the_streams_exact_rate(square_videos: dict[str, Path], kind: str) -> None:
    info = probe_video(square_videos[kind])
    assert info.fps == Fraction(FPS)
    assert info.duration == pytest.approx(FRAMES / FPS)


@pytest.mark.parametrize("kind", ["gif", "webp"])
def test_animation_rate_comes_from_the_frame_delays(square_videos: dict[str, Path], kind: str) -> None:
    # GIF delays are whole hundredths (8, 9, 8, ... cs for 12 fps: 83 cs in all), WebP whole ms
    # (833 ms): the rate is frames / total delay, exact, and close to but not exactly 12.
    info = probe_video(square_videos[kind])
    expected = {"gif": Fraction(1000, 83), "webp": Fraction(10000, 833)}[kind]
    assert info.fps == expected
    assert float(info.fps) == pytest.approx(FPS, abs=0.06)


def test_gif_rate_with_pillow_delays_and_the_browser_rule_for_tiny_delays(tmp_path: Path) -> None:
    images = [Image.fromarray(square_frame(i)) for i in range(4)]
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    assert probe_video(tmp_path / "a.gif").fps == Fraction(10)
    # Delays of 0 or 10 ms are shown as 100 ms by browsers, so they count as 100 ms here.
    images[0].save(tmp_path / "b.gif", save_all=True, append_images=images[1:], duration=0, loop=0)
    assert probe_video(tmp_path / "b.gif").fps == Fraction(10)
    images[0].save(tmp_path / "c.webp", save_all=True, append_images=images[1:], duration=50, loop=0)
    info = probe_video(tmp_path / "c.webp")
    assert (info.frame_count, info.fps) == (4, Fraction(20))


def test_animation_probe_agrees_with_pillow_on_frame_count(square_videos: dict[str, Path]) -> None:
    for kind in ("gif", "webp"):
        with Image.open(square_videos[kind]) as image:
            assert probe_video(square_videos[kind]).frame_count == image.n_frames


def test_still_webp_is_a_one_frame_source(tmp_path: Path) -> None:
    Image.fromarray(square_frame(0)).save(tmp_path / "still.webp")
    info = probe_video(tmp_path / "still.webp")
    assert (info.frame_count, info.fps, info.size) == (1, None, (WIDTH, HEIGHT))
    assert len(read_video_frames(tmp_path / "still.webp")) == 1


def test_a_still_image_is_a_one_frame_source_with_exif_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # display rotated 90° counter-clockwise
    Image.fromarray(square_frame(0)).save(tmp_path / "photo.jpg", exif=exif)
    info = probe_video(tmp_path / "photo.jpg")
    assert (info.kind, info.frame_count, info.fps, info.size) == ("image", 1, None, (HEIGHT, WIDTH))
    frames = read_video_frames(tmp_path / "photo.jpg", 16)
    assert len(frames) == 1 and frames[0].shape == (WIDTH, HEIGHT, 3)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reading_gives_every_frame_with_the_square_moving(square_videos: dict[str, Path], kind: str) -> None:
    frames = read_video_frames(square_videos[kind])
    assert len(frames) == FRAMES
    for index, frame in enumerate(frames):
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        expected = square_left(index) + (SQUARE - 1) / 2
        assert centre_x(frame) == pytest.approx(expected, abs=1.0), f"frame {index}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reading_resizes_each_frame_to_the_generation_size(square_videos: dict[str, Path], kind: str) -> None:
    frames = read_video_frames(square_videos[kind], count=4, size=(48, 32))
    assert len(frames) == 4
    for index, frame in enumerate(frames):
        assert frame.shape == (32, 48, 3)
        expected = (square_left(index) + (SQUARE - 1) / 2 + 0.5) / 2 - 0.5
        assert centre_x(frame) == pytest.approx(expected, abs=1.0)


def test_count_caps_the_frames_and_a_short_source_gives_fewer(square_videos: dict[str, Path]) -> None:
    path = square_videos["mp4"]
    assert len(read_video_frames(path, 3)) == 3
    assert len(read_video_frames(path, 100)) == FRAMES
    assert read_video_frames(path, 0) == []
    with pytest.raises(ValueError):
        read_video_frames(path, -1)


def test_crop_and_fill_modes_apply_to_video_frames(square_videos: dict[str, Path]) -> None:
    path = square_videos["mkv"]  # lossless
    cropped = read_video_frames(path, 1, size=(64, 64), resize_mode="Crop and Resize")[0]
    # 96x64 covers 64x64 at scale 1: columns 16..79 are kept, the square (8..23) is cut to 16..23.
    assert bright_box(cropped) == (0, TOP, 7, TOP + SQUARE - 1)
    filled = read_video_frames(path, 1, size=(96, 96), resize_mode=2)[0]
    # 96x64 fits 96x96 at scale 1, centred: rows 16..79 are the frame, the bands repeat black edges.
    assert bright_box(filled) == (8, 16 + TOP, 8 + SQUARE - 1, 16 + TOP + SQUARE - 1)


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:8, :8] = 255  # marker in the stored top-left corner
    path = write_video(tmp_path / "rot.mp4", [frame] * 3, "mp4", rotation=-90)  # 90° clockwise
    info = probe_video(path)
    assert info.size == (48, 64)
    shown = read_video_frames(path, 1)[0]
    assert shown.shape == (64, 48, 3)
    # Turned clockwise, the top-left corner goes to the top-right.
    left, top, right, bottom = bright_box(shown)
    assert (top, right) == (0, 47) and right - left <= 8 and bottom <= 8


def test_non_square_pixels_are_made_square(tmp_path: Path) -> None:
    path = tmp_path / "sar.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(square_frame(0, 64, 48), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert probe_video(path).size == (128, 48)
    assert read_video_frames(path, 1)[0].shape == (48, 128, 3)


def test_near_duplicates_are_dropped_only_when_asked(tmp_path: Path) -> None:
    # Every frame held three times, losslessly: the reference's mpdecimate keeps one of each.
    held = [square_frame(i) for i in range(5) for _ in range(3)]
    path = write_video(tmp_path / "held.mkv", held, "mkv")
    assert len(read_video_frames(path)) == 15
    kept = read_video_frames(path, decimate=REFERENCE_DECIMATE)
    assert [square_left(i) for i in range(5)] == [bright_box(f)[0] for f in kept]
    assert len(read_video_frames(path, 2, decimate=REFERENCE_DECIMATE)) == 2


# --- laziness --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 frames of 1280x720 (a 64x64 square sliding), written fast as planar YUV."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        base = np.zeros((720 * 3 // 2, 1280), dtype=np.uint8)
        base[720:] = 128
        for i in range(600):
            plane = base.copy()
            plane[100:164, 2 * i : 2 * i + 64] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(plane, format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_reading_a_few_frames_of_a_long_video_decodes_only_those(
    long_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = 0
    original = videofile._decoded_frames

    def counting(container, stream):
        nonlocal decoded
        for frame in original(container, stream):
            decoded += 1
            yield frame

    monkeypatch.setattr(videofile, "_decoded_frames", counting)
    assert probe_video(long_video).frame_count == 600
    decoded = 0  # the probe decodes its one first frame
    tracemalloc.start()
    try:
        frames = read_video_frames(long_video, 32, size=(512, 288))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 32 and frames[0].shape == (288, 512, 3)
    assert decoded == 32
    # 32 kept frames are 14 MB; the whole video decoded would be 1.6 GB.
    assert peak < 64 * 2**20


def test_an_abandoned_iterator_releases_the_file(square_videos: dict[str, Path]) -> None:
    frames = iter_video_frames(square_videos["mp4"], size=(48, 32))
    first = next(frames)
    assert first.shape == (32, 48, 3)
    frames.close()  # must not raise, and the container is closed by the generator's finally


# --- errors ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoInputError, match=r"video source .*missing\.mp4 does not exist"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoInputError, match=r"missing\.mp4"):
        read_video_frames(tmp_path / "missing.mp4", 4)


def test_empty_path_is_refused() -> None:
    with pytest.raises(VideoInputError, match="empty"):
        probe_video("  ")


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 10)
    with pytest.raises(VideoInputError, match=r"cannot read video file .*notes\.mp4"):
        probe_video(path)
    with pytest.raises(VideoInputError, match=r"notes\.mp4"):
        read_video_frames(path, 2)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.webm"
    path.write_bytes(b"")
    with pytest.raises(VideoInputError, match=r"empty\.webm is empty"):
        probe_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoInputError, match=r"sound\.mp4 has no video stream \(it holds: audio\)"):
        probe_video(path)


def test_zero_frame_video(tmp_path: Path) -> None:
    path = tmp_path / "zero.mkv"
    container = av.open(str(path), mode="w", format="matroska")
    stream = container.add_stream("ffv1", rate=12)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()  # a header and no frames
    assert path.stat().st_size > 0
    with pytest.raises(VideoInputError, match=r"zero\.mkv ends before its first frame"):
        probe_video(path)


def test_truncated_gif(tmp_path: Path, square_videos: dict[str, Path]) -> None:
    data = square_videos["gif"].read_bytes()
    path = tmp_path / "cut.gif"
    path.write_bytes(data[:13])  # header only
    with pytest.raises(VideoInputError, match=r"cut\.gif contains no frames"):
        probe_video(path)


def test_errors_are_animdiff_errors() -> None:
    assert issubclass(VideoInputError, AnimdiffError)
    assert VideoInputError.http_status == 422


def test_iterator_settings_are_checked_on_the_call_not_at_the_first_frame(
    square_videos: dict[str, Path], tmp_path: Path
) -> None:
    path = square_videos["mp4"]
    with pytest.raises(ParamsError, match="0x8"):
        iter_video_frames(path, size=(0, 8))
    with pytest.raises(ParamsError, match="resize mode 'stretch'"):
        iter_video_frames(path, size=(8, 8), resize_mode="stretch")
    with pytest.raises(VideoInputError, match="does not exist"):
        iter_video_frames(tmp_path / "gone.mp4")


def test_mp4_with_a_stream_but_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "nothing.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=12)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    assert path.stat().st_size > 0
    message = r"nothing\.mp4 has no video stream \(it holds no streams at all\)"
    with pytest.raises(VideoInputError, match=message):
        probe_video(path)
