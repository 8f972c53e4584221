"""The demo model's own settings: what `--demo` uses unless the command line says otherwise."""

from __future__ import annotations

from typing import Any

from animdiff.demo.model import CHECKPOINT_NAME, MOTION_NAME

DEMO_DEFAULTS: dict[str, Any] = {
    "checkpoint": CHECKPOINT_NAME,
    "motion_module": MOTION_NAME,
    "width": 64,
    "height": 64,
    "frames": 16,
    "context": 16,
    "steps": 25,
    "cfg_scale": 7.5,
    "sampler": "DDIM",
}


def demo_settings() -> dict[str, Any]:
    return dict(DEMO_DEFAULTS)
