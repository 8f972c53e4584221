"""One check of the frame list shared by every writer and encoder."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from animdiff.errors import OutputError


def check_frames(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """Fail with a readable message here rather than deep inside an encoder.

    Every container needs one frame size, and the encoders assume RGB; frames in another mode
    (an RGBA or palette image from a caller) are converted so they are not rejected for nothing.
    """
    if not frames:
        raise OutputError("there are no frames to write")
    out: list[Image.Image] = []
    size = frames[0].size
    for index, frame in enumerate(frames):
        if not isinstance(frame, Image.Image):
            raise OutputError(f"frame {index} is a {type(frame).__name__}, not an image")
        if frame.size != size:
            raise OutputError(
                f"frame {index} is {frame.width}x{frame.height}, but frame 0 is {size[0]}x{size[1]}; "
                "all frames must have the same size"
            )
        out.append(frame if frame.mode == "RGB" else frame.convert("RGB"))
    return out
