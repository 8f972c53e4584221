"""One event schema, two transports: server-sent events and WebSocket.

Every event is stored (see store.py) with a per-job sequence number before any client sees it,
so a client that reconnects with `Last-Event-ID` (or `?since=`) gets exactly what it missed,
across a server restart too. Live delivery: the worker thread calls `EventBus.publish`, which
wakes the waiting streams on the event loop; the streams then read the store. The event loop
never waits on the model, only on SQLite reads that WAL mode keeps short.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, Literal

from pydantic import BaseModel, Field

from animdiff.server.store import TERMINAL, JobStore, StoredEvent

KEEPALIVE_S = 15.0
EventType = Literal[
    "job.queued",
    "job.started",
    "job.progress",
    "job.preview",
    "job.succeeded",
    "job.failed",
    "job.canceled",
    "job.interrupted",
]
TERMINAL_EVENTS = frozenset(f"job.{status}" for status in TERMINAL)


class JobEvent(BaseModel):
    """What a client receives; the fields after `ts` appear when the event type has them."""

    job_id: str
    seq: int = Field(description="1, 2, 3... per job: the SSE id, for Last-Event-ID")
    type: EventType
    ts: float = Field(description="Unix time the event was stored")
    status: str | None = None
    position: int | None = None
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    window: int | None = None
    windows: int | None = None
    fraction: float | None = None
    eta_s: float | None = None
    error: str | None = None
    error_type: str | None = None
    files: list[str] | None = None
    preview: int | None = Field(None, description="job.preview: the preview's number")
    url: str | None = Field(None, description="job.preview: where to fetch the picture")

    @classmethod
    def from_stored(cls, event: StoredEvent) -> JobEvent:
        known = {k: v for k, v in event.data.items() if k in cls.model_fields}
        return cls(job_id=event.job_id, seq=event.seq, type=event.type, ts=event.ts, **known)  # type: ignore[arg-type]

    def payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EventBus:
    """Wakes the event loop's waiting streams when a worker thread has stored an event."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def publish(self) -> None:
        """Thread-safe; a no-op before the loop is bound or after it closed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()

    def token(self) -> asyncio.Event:
        """Take before reading the store, then `wait(token)`: nothing published in between is lost."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def wait(self, token: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(token.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def job_events(
    store: JobStore, bus: EventBus, job_id: str, since: int, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[JobEvent | None]:
    """The job's events after `since`, live, ending after its terminal event (None = keepalive)."""
    last = since
    while True:
        token = bus.token()
        events = store.events_after(job_id, last)
        for stored in events:
            event = JobEvent.from_stored(stored)
            last = event.seq
            yield event
        if events:
            continue  # read on until nothing is left
        if _is_terminal(store, job_id):
            return  # a finished job's status commits together with its last event
        if not await bus.wait(token, keepalive_s):
            yield None


def _is_terminal(store: JobStore, job_id: str) -> bool:
    record = store.get(job_id)
    return record is None or record.terminal


def sse_message(event: JobEvent | None) -> str:
    if event is None:
        return ": keepalive\n\n"
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.payload())}\n\n"


def parse_since(last_event_id: str | None, since: int | None) -> int:
    """`Last-Event-ID` (what browsers send on reconnect) wins over `?since=`; junk counts as 0."""
    for value in (last_event_id, since):
        if value is None:
            continue
        try:
            return max(int(value), 0)
        except (TypeError, ValueError):
            return 0
    return 0
