"""Videos written once per session (PyAV encoding is the slow part of these tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_helpers import FORMATS, square_frames, write_video


@pytest.fixture(scope="session")
def square_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The moving-square clip (10 frames, 12 fps, 96x64) in every format: name -> path."""
    root = tmp_path_factory.mktemp("videos")
    frames = square_frames()
    return {kind: write_video(root / f"square.{kind}", frames, kind) for kind in FORMATS}
