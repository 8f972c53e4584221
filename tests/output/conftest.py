"""Fixtures for the output tests."""

from __future__ import annotations

import pytest
from output_helpers import gradient_frames
from PIL import Image

from animdiff.output import OutputOptions


@pytest.fixture
def frames() -> list[Image.Image]:
    return gradient_frames()


@pytest.fixture
def options() -> OutputOptions:
    return OutputOptions()


@pytest.fixture
def no_gifsicle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("animdiff.output.gif.find_gifsicle", lambda: None)
