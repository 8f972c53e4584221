"""The job store on its own: schema versions, the state machine, recovery, retention."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from animdiff.server.results import Results
from animdiff.server.store import SCHEMA_VERSION, JobStore, StoreError


def test_migrations_run_once_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = JobStore(path)
    assert store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    store.add("a", "native", {"seed": 1})
    store.close()
    again = JobStore(path)
    assert again.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    assert again.get("a").status == "queued"
    again.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    with pytest.raises(StoreError, match="newer animdiff"):
        JobStore(path)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    from animdiff.server import store as store_module

    path = tmp_path / "old.sqlite3"
    old = JobStore.__new__(JobStore)
    original = store_module.MIGRATIONS
    try:
        store_module.MIGRATIONS = original[:1]
        store_module.SCHEMA_VERSION = 1
        JobStore.__init__(old, path)
        old.add("kept", "native", {})
        old.close()
    finally:
        store_module.MIGRATIONS = original
        store_module.SCHEMA_VERSION = original[-1][0]
    store = JobStore(path)
    assert store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    assert store.get("kept") is not None
    store.set_options({"k": 1})
    assert store.options() == {"k": 1}


def test_state_machine(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.sqlite3")
    for name in "abc":
        store.add(name, "native", {})
    assert [store.position(n) for n in "abc"] == [0, 1, 2]
    assert store.cancel_queued("b") and not store.cancel_queued("b")
    claimed = store.claim("w")
    assert claimed.id == "a" and claimed.status == "running" and claimed.attempt == 1
    assert not store.cancel_queued("a")  # running: only a request
    assert store.request_cancel("a") and store.cancel_requested("a")
    assert store.finish("a", "canceled") and not store.finish("a", "succeeded")
    assert store.claim("w").id == "c"
    assert store.claim("w") is None
    with pytest.raises(ValueError):
        store.finish("c", "running")
    types = [e.type for e in store.events_after("a")]
    assert types == ["job.queued", "job.started", "job.canceled"]
    assert [e.seq for e in store.events_after("a")] == [1, 2, 3]


def test_claims_are_exclusive_across_threads(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.sqlite3")
    for i in range(60):
        store.add(f"j{i:02}", "native", {})
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (record := store.claim(name)) is not None:
            with lock:
                claimed.append(record.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [f"j{i:02}" for i in range(60)]


def test_recover_interrupts_and_optionally_requeues(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.sqlite3")
    store.add("a", "native", {})
    store.add("b", "native", {})
    store.claim("w")
    assert store.recover(requeue=False) == ["a"]
    assert store.get("a").status == "interrupted" and store.get("b").status == "queued"
    store.claim("w")  # b
    assert store.recover(requeue=True) == ["b"]
    assert store.get("b").status == "queued"
    assert [e.type for e in store.events_after("b")][-2:] == ["job.interrupted", "job.queued"]


def test_retention_by_age_then_size(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.sqlite3")
    results = Results(tmp_path / "results")
    for name, size in (("old", 100), ("mid", 300), ("new", 300)):
        store.add(name, "native", {})
        store.claim("w")
        folder = results.folder(name)
        folder.mkdir()
        (folder / "x.gif").write_bytes(b"x" * size)
        store.finish(name, "succeeded", result={"files": results.listing(name)})
    finished = {r.id: r.finished_at for r in store.finished_with_files()}
    now = finished["new"] + 10
    removed = results.apply_retention(store, max_age_s=now - finished["old"] - 0.0001, max_bytes=400, now=now)
    assert removed == ["old", "mid"]
    assert store.get("old").expired and store.get("mid").expired and not store.get("new").expired
    assert not results.folder("old").exists() and results.folder("new").exists()
