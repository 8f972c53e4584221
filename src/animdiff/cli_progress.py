"""One progress display for a whole job on the command line.

A render spends seconds loading, minutes denoising and seconds decoding and writing. The display
names the phase it is in from the first second to the last, keeps one total for the denoising
(known before the job starts: model evaluations, so Heun's 39 for 20 steps from the start),
shows the window inside each evaluation and an ETA, and leaves one final line. On a terminal it
is a tqdm bar redrawn in place; in a pipe or a log file it prints a plain line at each phase and
every tenth of the denoising, never the same line twice.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from animdiff.pipeline import PHASES, Progress


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobProgress:
    """Receives `Progress` events; `finish` prints the line that stays."""

    def __init__(
        self,
        totals: dict[str, int],
        stream: IO[str] | None = None,
        enabled: bool = True,
        interactive: bool | None = None,
    ) -> None:
        self.totals = totals
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.started = time.monotonic()
        self.phase = ""
        self.denoise_started: float | None = None
        self.last_tenth = -1
        self.bar: Any = None

    # --- events ------------------------------------------------------------------------------------

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        new_phase = event.phase != self.phase
        self.phase = event.phase
        if event.phase == "denoise" and self.denoise_started is None:
            self.denoise_started = time.monotonic()
        if self.interactive:
            self._draw(event)
        else:
            self._print(event, new_phase)

    def _label(self, event: Progress) -> str:
        number = PHASES.index(event.phase) + 1 if event.phase in PHASES else 0
        total = self.totals.get(event.phase) or event.total
        text = f"[{number}/{len(PHASES)}] {event.phase}"
        if event.phase != "denoise" and total > 1:
            text += f" {event.step}/{total}"
        return text

    def _eta(self, event: Progress) -> float | None:
        if event.phase != "denoise" or self.denoise_started is None or event.step == 0:
            return None
        elapsed = time.monotonic() - self.denoise_started
        total = self.totals.get("denoise") or event.total
        return elapsed / event.step * (total - event.step)

    def _draw(self, event: Progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=self.totals.get("denoise") or None,
                file=self.stream,
                unit="eval",
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}",
            )
        if event.phase == "denoise" and event.step == 0 and event.window == 0:
            self.bar.reset(total=self.totals.get("denoise") or event.total)
        self.bar.set_description_str(self._label(event), refresh=False)
        if event.phase == "denoise":
            self.bar.n = event.step
            window = f"window {event.window}/{event.windows}" if event.windows > 1 else ""
            self.bar.set_postfix_str(window, refresh=False)
        else:
            self.bar.set_postfix_str("", refresh=False)
        self.bar.refresh()

    def _print(self, event: Progress, new_phase: bool) -> None:
        if event.phase == "denoise":
            total = self.totals.get("denoise") or event.total
            tenth = (10 * event.step) // total if total else 0
            if event.window or (tenth == self.last_tenth and not new_phase):
                return
            self.last_tenth = tenth
            eta = self._eta(event)
            line = f"{self._label(event)} {event.step}/{total} ({100 * event.step // max(total, 1)}%)"
            if eta is not None:
                line += f", eta {_duration(eta)}"
            print(line, file=self.stream, flush=True)
        elif new_phase:
            print(self._label(event), file=self.stream, flush=True)

    # --- the end ------------------------------------------------------------------------------------

    def finish(self, ok: bool = True) -> None:
        """Close the bar and print one line that stays: done (with the time) or stopped."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elapsed = _duration(time.monotonic() - self.started)
        word = "done" if ok else f"stopped during {self.phase or 'preparation'}"
        print(f"{word} in {elapsed}", file=self.stream, flush=True)
