"""The output settings the writers need, detached from the full job settings.

Writers take this small frozen record instead of `Params` so the HTTP API can encode frames it
already has (and tests can write files) without building a whole job, and so a bad x264 preset
is reported as a setting error before any frame is encoded rather than as an FFmpeg failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from animdiff.choices import X264_PRESETS, X264_TUNES
from animdiff.errors import ParamsError

if TYPE_CHECKING:
    from animdiff.params import Params


@dataclass(frozen=True)
class OutputOptions:
    """How to encode: timing, looping and the per-format quality settings."""

    fps: int = 8
    loop_number: int = 0
    gif_palette: bool = False
    gif_gifsicle: bool = False
    mp4_crf: int = 23
    mp4_preset: str = ""
    mp4_tune: str = ""
    webp_quality: int = 80
    webp_lossless: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("fps", self.fps, 1, 240),
            ("loop_number", self.loop_number, 0, 65_535),  # GIF and WebP store it in 16 bits
            ("mp4_crf", self.mp4_crf, 0, 51),
            ("webp_quality", self.webp_quality, 0, 100),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ParamsError(f"{name} {value} must be between {low} and {high}")
        if self.mp4_preset and self.mp4_preset not in X264_PRESETS:
            raise ParamsError(f"mp4_preset {self.mp4_preset!r}: choose from {', '.join(X264_PRESETS)}")
        if self.mp4_tune and self.mp4_tune not in X264_TUNES:
            raise ParamsError(f"mp4_tune {self.mp4_tune!r}: choose from {', '.join(X264_TUNES)}")

    @classmethod
    def from_params(cls, params: Params, fps: int | None = None) -> OutputOptions:
        """The options of a job; `fps` is the job's resolved rate (the user's, the source's, or 8)."""
        from animdiff.params import DEFAULT_FPS

        return cls(
            fps=fps or params.fps or DEFAULT_FPS,
            loop_number=params.loop_number,
            gif_palette=params.gif_palette,
            gif_gifsicle=params.gif_gifsicle,
            mp4_crf=params.mp4_crf,
            mp4_preset=params.mp4_preset.strip().lower(),
            mp4_tune=params.mp4_tune.strip().lower(),
            webp_quality=params.webp_quality,
            webp_lossless=params.webp_lossless,
        )
