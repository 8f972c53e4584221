"""Every fixed list of choices, in one place.

The settings model turns these into its allowed values, and the window scheduler, the prompt
planner, the fuser and the encoders check against the same tuples, so a mode added here is
accepted everywhere at once and a mode misspelled anywhere is refused everywhere. Nothing here
imports torch: validating settings must stay light.
"""

from __future__ import annotations

CLOSED_LOOP_MODES = ("N", "R-P", "R+P", "A")
FUSE_METHODS = ("overwrite", "flat", "pyramid")
GROUPNORM_MODES = ("reference", "diffusers")
INTERP_MODES = ("Off", "FILM")
PROMPT_INTERPOLATIONS = ("slerp", "linear")

VIDEO_FORMATS = ("gif", "mp4", "webm", "webp", "png")
# txt: the infotext beside the animation; frame: every frame as PNG bytes in an API answer.
OTHER_FORMATS = ("txt", "frame")
ALL_FORMATS = VIDEO_FORMATS + OTHER_FORMATS

# libx264's own lists; anything else makes the encoder refuse to open with an opaque error.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
X264_TUNES = ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency")


def resolve_overlap(context: int, overlap: int) -> int:
    """Overlap -1 means a quarter of the context: the extension's default, resolved before use
    (from the context batch size as the user gave it, before any capping)."""
    return context // 4 if overlap == -1 else overlap


# FreeInit's low-pass filters (sampling/freeinit.py), as the reference names them.
FREEINIT_FILTERS = ("butterworth", "gaussian", "ideal", "box")
