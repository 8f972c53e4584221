"""Reading a few frames of a long, large video costs memory in proportion to the output frames.

Writes a synthetic H.264 video (default 2,000 frames at 1280x720, a moving gradient; cached under
bench/.video), then reads 32 frames at 256x256 the way a video-to-video job does
(`read_video_frames` with the job's size and resize mode), and prints what the read added to the
process's memory against the size of the frames it returns, plus the same for reading the whole
video at 256x256 for comparison. Memory is "added": peak resident memory during the read minus
what was resident before (see bench/_harness.py). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _harness import AddedMemory, memory_check

MiB = 1 << 20


def write_video(path: Path, frames: int, width: int, height: int, fps: int = 24) -> Path:
    import av

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            shift = (i * 7) % 256
            rgb = np.stack([(x + shift) % 256 + 0 * y, (y + shift) % 256 + 0 * x, (x + y) / 2 % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def measure(path: Path, count: int | None, size: int) -> tuple[float, float, float, int]:
    from animdiff.control import read_video_frames

    start = time.perf_counter()
    with AddedMemory("cpu") as added:
        frames = read_video_frames(path, count, (size, size), "Crop and Resize")
        output_mib = sum(f.nbytes for f in frames) / MiB
    return added.added_mib, output_mib, time.perf_counter() - start, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-frames", type=int, default=2000)
    parser.add_argument("--source-size", default="1280x720")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".video")
    parser.add_argument("--skip-full", action="store_true", help="do not read the whole video")
    args = parser.parse_args()
    width, height = map(int, args.source_size.split("x"))
    path = args.cache / f"synthetic-{args.source_frames}-{width}x{height}.mp4"
    start = time.perf_counter()
    write_video(path, args.source_frames, width, height)
    print(
        f"source: {path} ({path.stat().st_size / MiB:.1f} MiB, ready in {time.perf_counter() - start:.1f} s)"
    )
    print(memory_check("cpu"))
    decoded_source_mib = args.source_frames * width * height * 3 / MiB
    rows = [(f"first {args.frames} frames", *measure(path, args.frames, args.size))]
    if not args.skip_full:
        rows.append(("whole video", *measure(path, None, args.size)))
    print(f"\nreading at {args.size}x{args.size} (all source frames decoded: {decoded_source_mib:,.0f} MiB)")
    print("| read | frames | seconds | output MiB | added MiB | added / output |")
    print("|---|---|---|---|---|---|")
    for name, added, output, seconds, count in rows:
        print(f"| {name} | {count} | {seconds:.1f} | {output:.1f} | {added:.1f} | {added / output:.2f} |")


if __name__ == "__main__":
    main()
