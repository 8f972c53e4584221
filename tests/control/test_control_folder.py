"""Frame folders: natural order, EXIF orientation, lazy reads, and the bad-folder errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from control_helpers import bright_box, square_frame
from PIL import Image

from animdiff.control import (
    VideoInputError,
    iter_video_frames,
    list_frame_files,
    natural_sort_key,
    probe_video,
    read_video_frames,
)
from animdiff.control.folder import iter_folder_frames


def grey(level: int, size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, (level, level, level))


def test_natural_sort_key_orders_numbers_by_value_and_ignores_case() -> None:
    names = ["frame10.png", "Frame2.png", "frame1.png", "b.png", "A.png", "2.png", "10.png", "frame2a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "2.png",
        "10.png",
        "A.png",
        "b.png",
        "frame1.png",
        "Frame2.png",
        "frame2a.png",
        "frame10.png",
    ]
    # Equal under the rule ("01" and "1"): the raw name decides, so the order is stable.
    assert sorted(["1.png", "01.png"], key=natural_sort_key) == ["01.png", "1.png"]
    assert natural_sort_key("x²") < natural_sort_key("y")  # non-ASCII digits do not crash


def test_folder_frames_come_in_natural_order_and_skip_non_frames(tmp_path: Path) -> None:
    levels = {"1.png": 10, "2.jpg": 20, "10.png": 100, "3.WEBP": 30}
    levels |= {"11.bmp": 110, "4.tiff": 40, "12.tif": 120}
    for name, level in levels.items():
        grey(level).save(tmp_path / name)
    grey(250).save(tmp_path / ".0.png", format="PNG")  # hidden
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    grey(250).save(tmp_path / "sub" / "5.png")  # not searched

    names = [p.name for p in list_frame_files(tmp_path)]
    assert names == ["1.png", "2.jpg", "3.WEBP", "4.tiff", "10.png", "11.bmp", "12.tif"]
    info = probe_video(tmp_path)
    assert (info.kind, info.frame_count, info.fps, info.size) == ("folder", 7, None, (32, 24))
    frames = read_video_frames(tmp_path)
    assert [round(float(f.mean())) for f in frames] == [10, 20, 30, 40, 100, 110, 120]


def test_folder_reads_lazily_and_resizes(tmp_path: Path) -> None:
    for i in range(6):
        Image.fromarray(square_frame(i)).save(tmp_path / f"{i}.png")
    frames = read_video_frames(tmp_path, 3, size=(48, 32), resize_mode="Just Resize")
    assert len(frames) == 3 and all(f.shape == (32, 48, 3) for f in frames)
    assert [bright_box(f)[0] for f in frames] == [4, 7, 10]  # the square moves 6 px -> 3 px at half size


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((24, 32, 3), dtype=np.uint8)
    stored[:6, :6] = 255  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    for i in range(2):
        Image.fromarray(stored).save(tmp_path / f"{i}.jpg", exif=exif, quality=95)
    info = probe_video(tmp_path)
    assert info.size == (24, 32)
    frame = read_video_frames(tmp_path, 1)[0]
    assert frame.shape == (32, 24, 3)
    left, top, right, _ = bright_box(frame)
    assert top == 0 and right >= 22 and left >= 16  # the marker is now top-right


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 255  # top half opaque black, bottom half fully transparent
    Image.fromarray(rgba).save(tmp_path / "0.png")
    frame = read_video_frames(tmp_path)[0]
    assert frame[:4].max() == 0 and frame[4:].min() == 255


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint16) * 1040)[None, :].repeat(8, axis=0)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "0.png")
    frame = read_video_frames(tmp_path)[0]
    assert frame.shape == (8, 64, 3)
    assert frame[0, 0, 0] == 0 and frame[0, -1, 0] == 255 and 120 <= frame[0, 32, 0] <= 135


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(VideoInputError, match=r"video source .*nope does not exist"):
        probe_video(missing)
    with pytest.raises(VideoInputError, match=r"frame folder .*nope does not exist"):
        list_frame_files(missing)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    grey(1).save(tmp_path / ".hidden.png", format="PNG")
    with pytest.raises(VideoInputError, match=r"frame folder .* contains no images \(\.bmp"):
        probe_video(tmp_path)
    with pytest.raises(VideoInputError, match="contains no images"):
        read_video_frames(tmp_path, 2)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    grey(10).save(tmp_path / "1.png")
    (tmp_path / "2.png").write_bytes(b"not a png at all")
    with pytest.raises(VideoInputError, match=r"cannot read image 2\.png in frame folder"):
        probe_video(tmp_path)
    with pytest.raises(VideoInputError, match=r"cannot read image 2\.png"):
        read_video_frames(tmp_path)


def test_truncated_image_passes_the_probe_but_fails_the_read_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "1.png")
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "2.png").write_bytes(data[: len(data) // 2])
    assert probe_video(tmp_path).frame_count == 2  # headers are fine
    frames = iter_video_frames(tmp_path)
    next(frames)
    with pytest.raises(VideoInputError, match=r"cannot read image 2\.png"):
        next(frames)


def test_images_of_different_sizes_name_two_of_them(tmp_path: Path) -> None:
    grey(10, (32, 24)).save(tmp_path / "1.png")
    grey(10, (32, 24)).save(tmp_path / "2.png")
    grey(10, (40, 24)).save(tmp_path / "3.png")
    message = r"different sizes: 1\.png is 32x24 but 3\.png is 40x24"
    with pytest.raises(VideoInputError, match=message):
        probe_video(tmp_path)
    frames = iter_folder_frames(tmp_path)
    next(frames), next(frames)
    with pytest.raises(VideoInputError, match=message):
        next(frames)


def test_a_file_path_to_a_folder_kind_is_not_confused(tmp_path: Path) -> None:
    file_in_place = tmp_path / "frames"
    file_in_place.write_text("x")
    with pytest.raises(VideoInputError, match="cannot read video file"):
        probe_video(file_in_place)
