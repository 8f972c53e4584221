"""Where results go and what they are called, with A1111's sequence numbers.

Names are `<seq:05>-<seed>[-<request_id>]` in `AnimateDiff/<YYYY-MM-DD>/`. The sequence number is
reserved with an exclusive create before anything is written, so two jobs finishing at the same
moment (threads or processes) never pick the same number and never overwrite a result.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from animdiff.errors import OutputError, ParamsError

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]*")
REQUEST_ID_MAX = 64
# The reservation is named so that the sequence rule itself counts it ("00007.reserved" reads
# as 7): a job that lists the folder while another holds a number moves past it.
RESERVATION_SUFFIX = ".reserved"
MAX_RESERVE_TRIES = 1000


def sanitize_request_id(request_id: str) -> str:
    """A request id becomes part of a file name, so only harmless characters are allowed."""
    if len(request_id) > REQUEST_ID_MAX:
        raise ParamsError(f"request_id is {len(request_id)} characters long; at most {REQUEST_ID_MAX}")
    if not _REQUEST_ID.fullmatch(request_id):
        raise ParamsError(
            f"request_id {request_id!r} may only contain letters, digits, '-' and '_' "
            "(it becomes part of the file names)"
        )
    return request_id


def date_folder(out_root: Path, now: datetime | None = None) -> Path:
    """`<out_root>/AnimateDiff/<YYYY-MM-DD>` for the local date (or `now`'s own date)."""
    when = now if now is not None else datetime.now()
    return Path(out_root) / "AnimateDiff" / when.strftime("%Y-%m-%d")


def sequence_of(name: str) -> int | None:
    """A1111's reading of an entry: name without extension, cut at the first "-", as an int."""
    stem = os.path.splitext(name)[0]
    try:
        return int(stem.split("-", 1)[0])
    except ValueError:
        return None


def next_sequence(folder: Path) -> int:
    """One more than the largest sequence number in the folder, or 0 for an empty or new one."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    numbers = [n for n in map(sequence_of, names) if n is not None]
    return max(numbers) + 1 if numbers else 0


def base_name(seq: int, seed: int, request_id: str = "") -> str:
    name = f"{seq:05}-{seed}"
    return f"{name}-{request_id}" if request_id else name


@dataclass
class Reservation:
    """Holds a sequence number until the result's files are in place."""

    folder: Path
    seq: int
    base: str
    lock: Path

    def release(self) -> None:
        self.lock.unlink(missing_ok=True)


def reserve(folder: Path, seed: int, request_id: str = "") -> Reservation:
    """Claim the next free sequence number in `folder` (which must exist).

    The exclusive create is the atomic step; the second listing catches a writer that does not
    reserve (A1111 itself, a copy by hand) and already used the number.
    """
    seq = next_sequence(folder)
    for _ in range(MAX_RESERVE_TRIES):
        lock = folder / f"{seq:05}{RESERVATION_SUFFIX}"
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            seq = max(seq + 1, next_sequence(folder))
            continue
        except OSError as exc:
            raise OutputError(f"cannot create files in {folder}: {exc}") from exc
        taken = any(sequence_of(name) == seq and name != lock.name for name in os.listdir(folder))
        if taken:
            lock.unlink(missing_ok=True)
            seq = max(seq + 1, next_sequence(folder))
            continue
        return Reservation(folder, seq, base_name(seq, seed, request_id), lock)
    raise OutputError(f"could not reserve a free file name in {folder} after {MAX_RESERVE_TRIES} tries")
