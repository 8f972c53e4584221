"""The scale-out options on the command line, and the server on a PostgreSQL queue."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

from animdiff.errors import AnimdiffError
from animdiff.server.cli import add_serve_command, settings_from_args
from server_helpers import tiny_job


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--models-dir", "m", *argv])


def test_scale_options_reach_the_settings() -> None:
    settings = settings_from_args(
        parse(
            "--db",
            "postgresql://u:p@h/db",
            "--workers",
            "ray://head:10001",
            "--ray-actors",
            "4",
            "--requeue-limit",
            "2",
        )
    )
    assert settings.store_target == "postgresql://u:p@h/db"
    assert (settings.workers, settings.ray_actors, settings.requeue_limit) == ("ray://head:10001", 4, 2)
    plain = settings_from_args(parse())
    assert plain.store_target == plain.database and plain.workers is None
    with pytest.raises(AnimdiffError, match="--workers"):
        settings_from_args(parse("--workers", "head:10001"))


def test_workers_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from animdiff.server.cli import run_serve

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(AnimdiffError, match=r"animdiff\[ray\]"):
        run_serve(parse("--workers", "auto"))


def test_postgres_url_password_is_not_shown() -> None:
    from animdiff.server.store_postgres import redact

    assert redact("postgresql://u:secret@db.example:5433/q") == "postgresql://u:***@db.example:5433/q"
    assert redact("postgresql://u@h/q") == "postgresql://u@h/q"


def test_two_servers_share_one_postgres_queue(postgres_url, models_dir: Path, animator, tmp_path) -> None:
    """Two servers (local workers) on one queue: every job runs once, on one of them."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from animdiff.server.app import create_app
    from animdiff.server.settings import ServerSettings

    def server(name: str) -> TestClient:
        settings = ServerSettings(
            models_dir=models_dir, data_dir=tmp_path / "shared", devices=("cpu",), db=postgres_url
        )
        client = TestClient(create_app(settings, animators=[animator]))
        client.__enter__()
        return client

    first, second = server("a"), server("b")
    try:
        body = tiny_job(prompt="a corgi")
        ids = [first.post("/api/v1/jobs", json={**body, "seed": i}).json()["id"] for i in range(6)]
        deadline = time.monotonic() + 120
        while True:
            views = [second.get(f"/api/v1/jobs/{job_id}").json() for job_id in ids]
            if all(v["status"] == "succeeded" for v in views):
                break
            assert time.monotonic() < deadline, [v["status"] for v in views]
            time.sleep(0.1)
        assert all(v["attempt"] == 1 for v in views)
        events = first.get(f"/api/v1/jobs/{ids[0]}/events/list").json()
        assert [e["type"] for e in events].count("job.started") == 1
        gif = second.get(views[0]["files"][0]["url"])
        assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"
    finally:
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
