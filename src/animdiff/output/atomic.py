"""All-or-nothing placement of a result's files.

Each output is written under a hidden temporary name in the destination folder (same file
system, so the final rename is atomic), and only when every writer has succeeded are they moved
into place. A failure anywhere removes the temporaries and whatever was already moved, so a
folder never holds half a result, and nothing that existed before is ever replaced.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from animdiff.errors import OutputError


class Staging:
    """Temporaries of one result in one folder, committed together or discarded together."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: list[tuple[Path, Path]] = []

    def temp_for(self, final: Path) -> Path:
        """A fresh hidden name beside `final`; the writer creates it (file or folder)."""
        temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        self._pending.append((temp, final))
        return temp

    def commit(self) -> None:
        moved: list[Path] = []
        try:
            for temp, final in self._pending:
                if os.path.lexists(final):
                    raise OutputError(f"{final} already exists; refusing to overwrite it")
                os.replace(temp, final)
                moved.append(final)
        except BaseException:
            for final in moved:
                _remove(final)
            self.discard()
            raise
        self._pending.clear()

    def discard(self) -> None:
        for temp, _final in self._pending:
            _remove(temp)
        self._pending.clear()


def _remove(path: Path) -> None:
    """Remove a file or a folder, tolerating that it was never created."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
