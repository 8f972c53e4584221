"""The job store: jobs and their events in SQLite (or PostgreSQL), the queue's only source of truth.

A server restart, a crash or `kill -9` loses nothing that was acknowledged: a job is committed
before its id is returned, and each state change commits together with its event. SQLite runs
in WAL mode, so the HTTP threads read while the worker writes. The schema is versioned: each
migration runs once, in order, inside a transaction, and is recorded in `schema_migrations`; a
database written by a newer animdiff is refused rather than damaged.

State machine (enforced by every UPDATE's WHERE clause, so two threads cannot both win):

    queued -> running -> succeeded | failed | canceled | interrupted
    queued -> canceled;  interrupted -> queued (only when the operator opts in)

`JobStore` is the SQLite implementation and the interface; `store_postgres.PostgresJobStore` runs
the same statements and state machine on PostgreSQL, so several servers can share one queue
(`open_store` picks by the `--db` value). The SQL here is written once for both: `?` parameters,
`RETURNING`, `ON CONFLICT`; the few dialect differences are the hooks marked "dialect".
A running job carries a heartbeat; a server sharing the queue recovers only jobs whose heartbeat
went stale (their server died), never those another live server runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from animdiff.errors import AnimdiffError

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, INTERRUPTED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "interrupted",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, INTERRUPTED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, INTERRUPTED})

# (version, statements). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            params TEXT NOT NULL,
            request TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            worker TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            progress TEXT,
            error_type TEXT,
            error TEXT,
            warnings TEXT NOT NULL DEFAULT '[]',
            result TEXT,
            expired INTEGER NOT NULL DEFAULT 0,
            event_seq INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_status_seq ON jobs (status, seq);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            ts REAL NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (job_id, seq)
        );
        """,
    ),
    (
        2,
        # A1111 clients set options (the checkpoint) with POST /sdapi/v1/options; they persist.
        "CREATE TABLE options (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    ),
    (
        3,
        # Servers sharing one queue: the last sign of life of a running job's server.
        "ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;",
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(AnimdiffError):
    """The database cannot be used (newer schema, damaged file)."""

    http_status = 500


@dataclass
class JobRecord:
    id: str
    seq: int
    kind: str
    status: str
    params: dict[str, Any]
    request: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    attempt: int
    cancel_requested: bool
    progress: dict[str, Any] | None
    error_type: str | None
    error: str | None
    warnings: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    expired: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        return cls(
            id=row["id"],
            seq=row["seq"],
            kind=row["kind"],
            status=row["status"],
            params=json.loads(row["params"]),
            request=_loads(row["request"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            worker=row["worker"],
            attempt=row["attempt"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=_loads(row["progress"]),
            error_type=row["error_type"],
            error=row["error"],
            warnings=json.loads(row["warnings"]),
            result=_loads(row["result"]),
            expired=bool(row["expired"]),
        )


@dataclass(frozen=True)
class StoredEvent:
    id: int  # global order
    job_id: str
    seq: int  # per job, from 1
    type: str
    ts: float
    data: dict[str, Any]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class JobStore:
    """Thread-safe: each thread gets its own connection (SQLite connections are not shared)."""

    # dialect: what a write transaction starts with, what the claim's subquery adds, the errors.
    BEGIN = "BEGIN IMMEDIATE"  # the write lock up front, so read-then-update is atomic
    LOCK_QUEUED = ""
    INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
    DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)
    shared = False  # True where several servers may share the queue (recovery by heartbeat)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_connections()
        self._migrate()

    def _init_connections(self) -> None:
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return str(self.path)

    # --- connections ---------------------------------------------------------------------------------

    def _connect(self) -> Any:
        """dialect: a new connection in autocommit mode whose rows index by number and by name."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _ddl(self, statement: str) -> str:
        """dialect: a migration statement as this database spells it."""
        return statement

    def _lock_migrations(self, conn: Any) -> None:
        """dialect: one server migrates at a time (SQLite's write lock already does it)."""

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction: read-then-update inside it is atomic."""
        conn = self._conn()
        conn.execute(self.BEGIN)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with suppress(Exception):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        try:
            with self._write() as conn:
                self._lock_migrations(conn)
                conn.execute(
                    self._ddl(
                        "CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, applied_at REAL)"
                    )
                )
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                if done and max(done) > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.where}: written by a newer animdiff (schema {max(done)}, this one knows "
                        f"{SCHEMA_VERSION}); upgrade animdiff or use another --data-dir"
                    )
                for version, script in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(self._ddl(statement))
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
        except self.DATABASE_ERRORS as exc:
            raise StoreError(f"{self.where}: cannot open the job database ({exc})") from exc

    def schema_versions(self) -> list[int]:
        return [row[0] for row in self._conn().execute("SELECT version FROM schema_migrations ORDER BY 1")]

    # --- events --------------------------------------------------------------------------------------

    @staticmethod
    def _event(conn: Any, job_id: str, type_: str, data: dict[str, Any]) -> None:
        seq = conn.execute(
            "UPDATE jobs SET event_seq = event_seq + 1 WHERE id = ? RETURNING event_seq", (job_id,)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO events (job_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, type_, time.time(), _dumps(data)),
        )

    def events_after(self, job_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = self._conn().execute(
            "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, after, limit)
        )
        return [_stored_event(row) for row in rows]

    def all_events_after(self, after_id: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = self._conn().execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [_stored_event(row) for row in rows]

    def last_event_id(self) -> int:
        return self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    # --- jobs ----------------------------------------------------------------------------------------

    def add(
        self, job_id: str, kind: str, params: dict[str, Any], request: dict[str, Any] | None = None
    ) -> int:
        """Store a queued job; returns its position (queued jobs ahead of it)."""
        now = time.time()
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (id, kind, status, params, request, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, kind, QUEUED, _dumps(params), None if request is None else _dumps(request), now),
                )
            except self.INTEGRITY_ERRORS:
                raise DuplicateJobError(f"job id {job_id!r} is already taken") from None
            position = self._position(conn, job_id)
            self._event(conn, job_id, "job.queued", {"status": QUEUED, "position": position})
        return position or 0

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobRecord.from_row(row)

    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0, newest_first: bool = False
    ) -> tuple[list[JobRecord], int]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        order = "DESC" if newest_first else "ASC"
        conn = self._conn()
        total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM jobs {where} ORDER BY seq {order} LIMIT ? OFFSET ?", [*args, limit, offset]
        )
        return [JobRecord.from_row(row) for row in rows], total

    def count(self, status: str) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    @staticmethod
    def _position(conn: Any, job_id: str) -> int | None:
        row = conn.execute(
            "SELECT (SELECT COUNT(*) FROM jobs q WHERE q.status = 'queued' AND q.seq < j.seq) FROM jobs j "
            "WHERE j.id = ? AND j.status = 'queued'",
            (job_id,),
        ).fetchone()
        return None if row is None else row[0]

    def position(self, job_id: str) -> int | None:
        """Queued jobs ahead of this one (0: next to run), or None when it is not queued."""
        return self._position(self._conn(), job_id)

    def claim(self, worker: str, job_id: str | None = None) -> JobRecord | None:
        """The oldest queued job (or this queued job), now running on `worker`; atomic: no two
        workers, threads or servers get one job (SQLite's write lock; PostgreSQL's row locks, the
        candidate chosen with SKIP LOCKED and the status checked again by the UPDATE)."""
        if job_id is None:
            pick = f"SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1{self.LOCK_QUEUED}"
            where, args = f"seq = ({pick})", ()
        else:
            where, args = "id = ?", (job_id,)
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET status = 'running', worker = ?, started_at = ?, heartbeat_at = ?, "
                f"attempt = attempt + 1 WHERE {where} AND status = 'queued' RETURNING id",
                (worker, now, now, *args),
            ).fetchone()
            if row is None:
                return None
            self._event(conn, row[0], "job.started", {"status": RUNNING, "worker": worker})
        return self.get(row[0])

    def queued(self, limit: int = 100) -> list[JobRecord]:
        """The oldest queued jobs, in order (what a dispatcher chooses from)."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?", (limit,)
        )
        return [JobRecord.from_row(row) for row in rows]

    def heartbeat(self, job_ids: list[str]) -> None:
        """The server running these jobs is alive (see `recover(stale_after_s=...)`)."""
        if not job_ids:
            return
        now = time.time()
        with self._write() as conn:
            for job_id in job_ids:
                conn.execute(
                    "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'", (now, job_id)
                )

    def interrupt(self, job_id: str, attempt: int, error: str, requeue: bool) -> str | None:
        """running (this attempt) -> interrupted, then -> queued when `requeue`: a worker died
        mid-job. Returns the job's new status, or None when that attempt was no longer running."""
        with self._write() as conn:
            return self._interrupt(conn, job_id, attempt, error, requeue)

    def _interrupt(
        self, conn: Any, job_id: str, attempt: int | None, error: str, requeue: bool
    ) -> str | None:
        fence, args = ("", ()) if attempt is None else (" AND attempt = ?", (attempt,))
        done = conn.execute(
            "UPDATE jobs SET status = 'interrupted', finished_at = ?, error_type = 'interrupted', "
            f"error = ? WHERE id = ? AND status = 'running'{fence}",
            (time.time(), error, job_id, *args),
        ).rowcount
        if not done:
            return None
        self._event(conn, job_id, "job.interrupted", {"status": INTERRUPTED, "error": error})
        if not requeue:
            return INTERRUPTED
        conn.execute(
            "UPDATE jobs SET status = 'queued', started_at = NULL, finished_at = NULL, worker = NULL, "
            "progress = NULL, cancel_requested = 0, heartbeat_at = NULL WHERE id = ?",
            (job_id,),
        )
        self._event(conn, job_id, "job.queued", {"status": QUEUED, "requeued": True})
        return QUEUED

    def cancel_queued(self, job_id: str) -> bool:
        with self._write() as conn:
            done = conn.execute(
                "UPDATE jobs SET status = 'canceled', finished_at = ?, error = 'canceled before it started' "
                "WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            ).rowcount
            if done:
                self._event(conn, job_id, "job.canceled", {"status": CANCELED})
        return bool(done)

    def request_cancel(self, job_id: str) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,)
                ).rowcount
            )

    def cancel_requested(self, job_id: str) -> bool:
        row = self._conn().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def set_progress(self, job_id: str, progress: dict[str, Any], event: bool = True) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (_dumps(progress), job_id)
            )
            if event:
                self._event(conn, job_id, "job.progress", progress)

    def add_event(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        with self._write() as conn:
            self._event(conn, job_id, type_, data)

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        error_type: str | None = None,
        error: str | None = None,
        warnings: list[str] | None = None,
        result: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """running -> a terminal status, with its event; False if the job was not running (or, given
        `attempt`, was no longer that attempt: a requeued job's first run must not finish it)."""
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        fence, fence_args = ("", ()) if attempt is None else (" AND attempt = ?", (attempt,))
        with self._write() as conn:
            done = conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error = ?, warnings = ?, "
                "result = ? "
                f"WHERE id = ? AND status = 'running'{fence}",
                (
                    status,
                    time.time(),
                    error_type,
                    error,
                    _dumps(warnings or []),
                    None if result is None else _dumps(result),
                    job_id,
                    *fence_args,
                ),
            ).rowcount
            if done:
                data: dict[str, Any] = {"status": status}
                if error is not None:
                    data.update(error=error, error_type=error_type)
                if result is not None:
                    data["files"] = [f["name"] for f in result.get("files", [])]
                self._event(conn, job_id, f"job.{status}", data)
        return bool(done)

    def recover(
        self, requeue: bool, stale_after_s: float | None = None, max_attempts: int | None = None
    ) -> list[str]:
        """Jobs left `running` by a crash become `interrupted` (and queued again only when the
        operator opted in, so a job that kills the server cannot loop; at most `max_attempts` runs
        in all when given). Without `stale_after_s` (one server: at its startup) every running job
        is recovered; with it (servers sharing the queue) only those whose heartbeat is older.
        Returns their ids."""
        query, args = "SELECT id, attempt FROM jobs WHERE status = 'running'", ()
        if stale_after_s is not None:
            query += " AND (heartbeat_at IS NULL OR heartbeat_at < ?)"
            args = (time.time() - stale_after_s,)
        with self._write() as conn:
            found = conn.execute(query + f" ORDER BY seq{self.LOCK_QUEUED}", args)
            rows = [(row[0], row[1]) for row in found]
            for job_id, attempt in rows:
                again = requeue and (max_attempts is None or attempt < max_attempts)
                self._interrupt(conn, job_id, None, "the server stopped while this job ran", again)
        return [job_id for job_id, _ in rows]

    # --- retention -----------------------------------------------------------------------------------

    def finished_with_files(self) -> list[JobRecord]:
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE status = 'succeeded' AND expired = 0 ORDER BY finished_at, seq"
        )
        return [JobRecord.from_row(row) for row in rows]

    def mark_expired(self, job_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET expired = 1 WHERE id = ?", (job_id,))

    # --- options (A1111's /sdapi/v1/options) ---------------------------------------------------------

    def options(self) -> dict[str, Any]:
        return {row[0]: json.loads(row[1]) for row in self._conn().execute("SELECT key, value FROM options")}

    def set_options(self, values: dict[str, Any]) -> None:
        with self._write() as conn:
            for key, value in values.items():
                conn.execute(
                    "INSERT INTO options (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, _dumps(value)),
                )


class DuplicateJobError(AnimdiffError):
    http_status = 409


def _stored_event(row: Any) -> StoredEvent:
    return StoredEvent(row["id"], row["job_id"], row["seq"], row["type"], row["ts"], json.loads(row["data"]))


def open_store(database: str | Path) -> JobStore:
    """`postgresql://...` (or `postgres://...`): the PostgreSQL store; anything else: a SQLite file."""
    text = str(database)
    if text.startswith(("postgresql://", "postgres://")):
        from animdiff.server.store_postgres import PostgresJobStore

        return PostgresJobStore(text)
    return JobStore(Path(text))
