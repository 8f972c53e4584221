"""Names and paths from requests, resolved only inside the folders the operator configured.

A request names models (resolved through the models folder), inputs (a video, a frame folder,
an image: inside the uploads folder or an operator's input folder) and result files (inside the
job's result folder). Every name is checked twice: as text (no absolute path outside the roots,
no `..`, no NUL, no drive letters) so the message is clear, and after resolving symlinks (the
real path must lie inside a root), because a link inside a root can point anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from animdiff.errors import AnimdiffError

_SAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 128


class PathRefusedError(AnimdiffError):
    """A name or path in a request points outside the folders this server serves."""

    http_status = 403


class InputNotFoundError(AnimdiffError):
    """A named input file or folder does not exist inside the input folders."""

    http_status = 404


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(name.replace("\\", "/")).parts


def is_absolute(name: str) -> bool:
    """Absolute in POSIX or Windows terms (`/x`, `C:\\x`, `C:x`, `\\\\server\\share`)."""
    win = PureWindowsPath(name)
    return name.startswith(("/", "\\")) or bool(win.drive) or win.is_absolute()


def check_relative_name(name: str, what: str) -> str:
    """A relative name without `..`; raises PathRefusedError naming the setting."""
    if not isinstance(name, str) or not name.strip():
        raise PathRefusedError(f"{what}: empty name")
    if "\x00" in name:
        raise PathRefusedError(f"{what} {name!r}: contains a NUL character")
    if is_absolute(name):
        raise PathRefusedError(f"{what} {name!r}: absolute paths are not accepted; give a name")
    if ".." in _parts(name):
        raise PathRefusedError(f"{what} {name!r}: '..' is not allowed in names")
    return name


def is_inside(path: Path, root: Path) -> bool:
    """Whether the real path (symlinks resolved) lies inside the real root."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def resolve_input(name: str, roots: Iterable[Path], what: str) -> Path:
    """An input file or folder named relative to one of `roots` (or absolute but inside one).

    The first root holding the name wins. A name that exists only by escaping a root (a symlink
    pointing out) is refused, not skipped, so the user learns why.
    """
    roots = [Path(root) for root in roots]
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise PathRefusedError(f"{what}: not a usable name: {name!r}")
    if ".." in _parts(name):
        raise PathRefusedError(f"{what} {name!r}: '..' is not allowed in names")
    if is_absolute(name):
        path = Path(name)
        if not any(is_inside(path, root) for root in roots):
            raise PathRefusedError(
                f"{what} {name!r}: only files inside the server's input folders (uploads first) may be used"
            )
        if not path.exists():
            raise InputNotFoundError(f"{what} {name!r} does not exist")
        return path.resolve()
    for root in roots:
        candidate = root / name
        if not candidate.exists() and not candidate.is_symlink():
            continue
        if not is_inside(candidate, root):
            raise PathRefusedError(f"{what} {name!r}: resolves outside the server's input folders")
        if not candidate.exists():
            break
        return candidate.resolve()
    raise InputNotFoundError(f"{what} {name!r} not found in the uploads or the server's input folders")


def resolve_child(root: Path, name: str, what: str) -> Path:
    """A file inside `root` (a job's results) by its relative name; refused outside it."""
    check_relative_name(name, what)
    path = root / name
    if not is_inside(path, root):
        raise PathRefusedError(f"{what} {name!r}: outside the job's files")
    if not path.is_file():
        raise InputNotFoundError(f"{what} {name!r} not found")
    return path


def safe_file_name(name: str | None, default: str = "upload") -> str:
    """A client's file name reduced to a harmless base name (the server chooses where it goes)."""
    base = PureWindowsPath(PurePosixPath(name or "").name).name
    base = _SAFE_FILE_NAME.sub("_", base).strip("._") or default
    if len(base) > MAX_NAME:
        stem, dot, suffix = base.rpartition(".")
        base = (
            (stem[: MAX_NAME - len(suffix) - 1] + dot + suffix)
            if dot and len(suffix) < 16
            else base[:MAX_NAME]
        )
    return base
