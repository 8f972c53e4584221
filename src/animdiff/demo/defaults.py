"""The demo model's own settings: what `--demo` uses unless the command line says otherwise.

Its long videos (more frames than its context of 16) differ from the reference's defaults on
purpose: every clip it learnt from starts at the edge its shape enters by, so each context window
draws such a start, and the reference's seams (the last window overwrites its frames, R-P asks the
video to loop, windows 12 frames apart) showed as jumps. Windows 4 frames apart, averaged with
their middle frames weighted most and no loop had no jump in 13 of 16 measured 48-frame videos
against 3 of 16 at the reference's settings (README, "The demo model"). A video that fits one
window is the same under both, bit for bit.
"""

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
    "closed_loop": "N",
    "fuse": "pyramid",
    "overlap": 12,
}


def demo_settings() -> dict[str, Any]:
    return dict(DEMO_DEFAULTS)
