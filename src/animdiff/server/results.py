"""Each job's files under `<data>/results/<job id>/`, placed whole or not at all.

A job writes into a hidden `.partial-<id>` folder; only when everything is written is its
output folder renamed to the final name (one atomic rename on the same file system). A crash,
a cancel or a failure leaves at most a partial folder, which is removed (at startup for
crashes), so a client never sees half a result. Retention (age, total size) deletes whole
results, oldest first, and marks their jobs expired.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from animdiff.server.store import JobStore

log = logging.getLogger("animdiff.server")
PARTIAL_PREFIX = ".partial-"
FRAMES_FOLDER = "frames"  # the API-only "frame" format: every frame as PNG, infotext embedded
SUFFIX_FORMATS = {
    ".gif": "gif",
    ".mp4": "mp4",
    ".webm": "webm",
    ".webp": "webp",
    ".txt": "txt",
    ".png": "png",
}


class Results:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def start(self, job_id: str) -> Path:
        """A fresh, empty partial folder for the job (left-overs of an earlier attempt removed)."""
        partial = self.root / f"{PARTIAL_PREFIX}{job_id}"
        _remove(partial)
        partial.mkdir(parents=True)
        return partial

    def commit(self, job_id: str, partial: Path, written: Path) -> list[dict[str, Any]]:
        """Move `written` (the folder the writers filled, inside `partial`) to the job's folder."""
        final = self.folder(job_id)
        _remove(final)
        os.replace(written, final)
        _remove(partial)
        return self.listing(job_id)

    def discard(self, partial: Path | None) -> None:
        if partial is not None:
            _remove(partial)

    def remove_partials(self) -> int:
        """Crash left-overs: partial folders of jobs that never finished."""
        count = 0
        for path in self.root.glob(f"{PARTIAL_PREFIX}*"):
            _remove(path)
            count += 1
        return count

    def listing(self, job_id: str) -> list[dict[str, Any]]:
        """Every file of a result: relative name, format and size, in a stable order."""
        final = self.folder(job_id)
        files = []
        for path in sorted(p for p in final.rglob("*") if p.is_file()):
            relative = path.relative_to(final).as_posix()
            fmt = (
                "frame"
                if relative.startswith(f"{FRAMES_FOLDER}/")
                else SUFFIX_FORMATS.get(path.suffix, "other")
            )
            files.append({"name": relative, "format": fmt, "size": path.stat().st_size})
        return files

    def size(self, job_id: str) -> int:
        return sum(p.stat().st_size for p in self.folder(job_id).rglob("*") if p.is_file())

    def apply_retention(
        self, store: JobStore, max_age_s: float | None, max_bytes: int | None, now: float | None = None
    ) -> list[str]:
        """Delete results older than `max_age_s`, then the oldest until the total fits `max_bytes`."""
        if max_age_s is None and max_bytes is None:
            return []
        now = time.time() if now is None else now
        removed = []
        kept = []
        for record in store.finished_with_files():  # oldest first
            finished = record.finished_at or now
            if max_age_s is not None and now - finished > max_age_s:
                self._expire(store, record.id)
                removed.append(record.id)
            else:
                kept.append((record.id, self.size(record.id) if self.folder(record.id).exists() else 0))
        if max_bytes is not None:
            total = sum(size for _, size in kept)
            for job_id, size in kept:
                if total <= max_bytes:
                    break
                self._expire(store, job_id)
                removed.append(job_id)
                total -= size
        if removed:
            log.info("retention removed the results of %d job(s)", len(removed))
        return removed

    def _expire(self, store: JobStore, job_id: str) -> None:
        _remove(self.folder(job_id))
        store.mark_expired(job_id)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except FileNotFoundError:
        pass
