"""The queue's contract on both databases: SQLite and a real PostgreSQL server.

The same tests run on each (the `store_factory` fixture); `make()` twice is two servers on one
database, which is what PostgreSQL is for: claims stay exclusive, a live server's jobs are never
recovered by another, a requeued job's old run cannot finish it.
"""

from __future__ import annotations

import threading
import time

import pytest

from animdiff.server.store import SCHEMA_VERSION, StoreError


def test_migrations_once_and_newer_schema_refused(store_factory) -> None:
    store = store_factory()
    assert store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    store.add("a", "native", {"seed": 1})
    again = store_factory()  # a second server: migrations already done
    assert again.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
    assert again.get("a").params == {"seed": 1}
    with store._write() as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (99, 0.0))
    with pytest.raises(StoreError, match="newer animdiff"):
        store_factory()


def test_state_machine_events_and_options(store_factory) -> None:
    store = store_factory()
    for name in "abc":
        store.add(name, "native", {"n": name}, request={"r": 1})
    with pytest.raises(Exception, match="already taken"):
        store.add("a", "native", {})
    assert [store.position(n) for n in "abc"] == [0, 1, 2]
    assert store.cancel_queued("b") and not store.cancel_queued("b")
    claimed = store.claim("w")
    assert (claimed.id, claimed.status, claimed.attempt, claimed.worker) == ("a", "running", 1, "w")
    assert claimed.request == {"r": 1}
    assert not store.cancel_queued("a")
    assert store.request_cancel("a") and store.cancel_requested("a")
    store.set_progress("a", {"phase": "denoise", "step": 1})
    assert store.get("a").progress == {"phase": "denoise", "step": 1}
    assert store.finish("a", "canceled") and not store.finish("a", "succeeded")
    assert store.claim("w").id == "c"
    assert store.claim("w") is None
    assert store.finish("c", "succeeded", warnings=["w1"], result={"files": [{"name": "x.gif"}]})
    record = store.get("c")
    assert record.warnings == ["w1"] and record.result["files"][0]["name"] == "x.gif"
    assert record.finished_at >= record.started_at >= record.created_at
    assert [e.type for e in store.events_after("a")] == [
        "job.queued",
        "job.started",
        "job.progress",
        "job.canceled",
    ]
    assert [e.seq for e in store.events_after("a")] == [1, 2, 3, 4]
    ids = [e.id for e in store.all_events_after(0)]
    assert ids == sorted(ids) and store.last_event_id() == ids[-1]
    records, total = store.list(status="succeeded")
    assert total == 1 and records[0].id == "c"
    assert [r.id for r in store.list(newest_first=True)[0]] == ["c", "b", "a"]
    store.set_options({"k": 1, "s": "x"})
    store.set_options({"k": 2})
    assert store.options() == {"k": 2, "s": "x"}
    assert store.count("queued") == 0


def test_claim_a_chosen_job(store_factory) -> None:
    store = store_factory()
    for name in "abc":
        store.add(name, "native", {})
    assert [r.id for r in store.queued()] == ["a", "b", "c"]
    assert store.claim("w", job_id="b").id == "b"
    assert store.claim("w2", job_id="b") is None  # already running
    assert store.claim("w").id == "a"


def test_claims_exclusive_across_two_servers(store_factory) -> None:
    first, second = store_factory(), store_factory()
    for i in range(40):
        first.add(f"j{i:02}", "native", {})
    claimed: list[str] = []
    lock = threading.Lock()

    def work(store, name: str) -> None:
        while (record := store.claim(name)) is not None:
            with lock:
                claimed.append(record.id)

    threads = [threading.Thread(target=work, args=(s, f"w{i}")) for i, s in enumerate([first, second] * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [f"j{i:02}" for i in range(40)]
    assert first.count("running") == 40


def test_recover_only_stale_jobs_when_shared(store_factory) -> None:
    store, other = store_factory(), store_factory()
    for name in "abc":
        store.add(name, "native", {})
    store.claim("w")  # a
    other.claim("w")  # b: a live server keeps its heartbeat
    with store._write() as conn:  # a's server died a minute ago
        conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = 'a'", (time.time() - 60,))
    other.heartbeat(["b"])
    assert store.recover(requeue=True, stale_after_s=30) == ["a"]
    assert store.get("a").status == "queued" and store.get("b").status == "running"
    assert [e.type for e in store.events_after("a")][-2:] == ["job.interrupted", "job.queued"]
    # One server alone recovers everything at its start, at most max_attempts runs in all.
    assert store.claim("w").id == "a" and store.get("a").attempt == 2
    assert sorted(store.recover(requeue=True, max_attempts=2)) == ["a", "b"]
    assert store.get("a").status == "interrupted" and store.get("b").status == "queued"


def test_interrupt_fenced_by_attempt(store_factory) -> None:
    store = store_factory()
    store.add("a", "native", {})
    first = store.claim("w1")
    assert store.interrupt("a", first.attempt, "worker died", requeue=True) == "queued"
    assert store.interrupt("a", first.attempt, "again", requeue=True) is None  # not running
    second = store.claim("w2")
    assert second.attempt == 2 and second.worker == "w2"
    # The first run (a late answer from the dead worker) cannot finish the second.
    assert not store.finish("a", "succeeded", attempt=first.attempt)
    assert store.finish("a", "succeeded", attempt=second.attempt)
    assert store.interrupt("a", second.attempt, "late", requeue=False) is None
    types = [e.type for e in store.events_after("a")]
    assert types == [
        "job.queued",
        "job.started",
        "job.interrupted",
        "job.queued",
        "job.started",
        "job.succeeded",
    ]


def test_startup_keeps_partials_of_jobs_running_elsewhere(store_factory, tmp_path) -> None:
    from animdiff.server.results import Results
    from animdiff.server.worker import remove_partials

    store = store_factory()
    results = Results(tmp_path / "results")
    for name in ("running", "dead"):
        store.add(name, "native", {})
        results.start(name)
    store.claim("w")  # "running"
    remove_partials(store, results)
    left = sorted(p.name for p in results.root.glob(".partial-*"))
    assert left == ([".partial-running"] if store.shared else [])
