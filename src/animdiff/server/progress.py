"""A job's progress as clients see it: phase counters turned into one fraction and an ETA.

The pipeline reports each phase's own counter (model evaluations while denoising, frames while
decoding, ...); a client wants one bar. Each phase gets a fixed share of the bar (denoising is
most of the time on every device), phases with nothing to do drop out, and the ETA is the time
so far scaled by what is left. Window events arrive many times per step; only some are stored
(`should_store`), but every step and phase boundary is.
"""

from __future__ import annotations

import time
from typing import Any

from animdiff.pipeline import PHASES, Progress

# Rough shares of the wall time per phase (denoising dominates on every device).
WEIGHTS = {"load": 0.05, "encode": 0.01, "denoise": 0.80, "decode": 0.08, "interpolate": 0.04, "write": 0.02}
MIN_FRACTION_FOR_ETA = 0.02


class ProgressTracker:
    def __init__(self, totals: dict[str, int], interval_s: float, clock: Any = time.monotonic) -> None:
        self.totals = totals
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        active = {phase: WEIGHTS[phase] for phase in PHASES if totals.get(phase, 0) > 0}
        scale = sum(active.values()) or 1.0
        self.weights = {phase: weight / scale for phase, weight in active.items()}
        self._last_stored = -1.0
        self._last_key: tuple[str, int] | None = None

    def fraction(self, event: Progress) -> float:
        done = 0.0
        for phase in PHASES:
            if phase == event.phase:
                break
            done += self.weights.get(phase, 0.0)
        total = max(event.total, 1)
        within = event.step
        if event.windows:
            within += event.window / event.windows
        done += self.weights.get(event.phase, 0.0) * min(within / total, 1.0)
        return round(min(done, 1.0), 4)

    def describe(self, event: Progress) -> dict[str, Any]:
        fraction = self.fraction(event)
        elapsed = self.clock() - self.started
        eta = elapsed / fraction - elapsed if fraction >= MIN_FRACTION_FOR_ETA else None
        return {
            "phase": event.phase,
            "step": event.step,
            "total": event.total,
            "window": event.window,
            "windows": event.windows,
            "fraction": fraction,
            "eta_s": None if eta is None else round(max(eta, 0.0), 2),
            "elapsed_s": round(elapsed, 2),
        }

    def should_store(self, event: Progress) -> bool:
        """Steps and phase changes always; window-level events at most once per interval."""
        key = (event.phase, event.step)
        now = self.clock()
        boundary = key != self._last_key or event.windows == 0 or event.window == event.windows
        if boundary or now - self._last_stored >= self.interval_s:
            self._last_key = key
            self._last_stored = now
            return True
        return False
