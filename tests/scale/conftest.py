"""Scale-out fixtures: a throwaway PostgreSQL server and a small local Ray cluster.

PostgreSQL: `ANIMDIFF_TEST_POSTGRES_URL` names a server to use (each test gets its own database
there); otherwise Debian's `postgresql` package is looked for under /usr/lib/postgresql and a
cluster is made in a temp folder, run as a non-root user on 127.0.0.1 and a free port, and
stopped at the end. Tests that need it are skipped with the reason when neither is possible.
Ray: one local cluster for the session, kept small (2 CPUs, a small object store, no dashboard).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_URL_ENV = "ANIMDIFF_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: several seconds or more (a Ray cluster, many jobs)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_user(command: list[str]) -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: run it as `postgres` (or `nobody`) then."""
    if os.geteuid() != 0:
        return command, None
    import pwd

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", user, "--", *command], user
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The base URL of a PostgreSQL server (no database name)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'animdiff[postgres]')")
    given = os.environ.get(PG_URL_ENV)
    if given:
        yield given.rstrip("/")
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and no " + PG_URL_ENV)
    root = Path(tempfile.mkdtemp(prefix="animdiff-pg-"))
    data = root / "data"
    port = _free_port()
    try:
        _, user = _as_user(["true"])
    except RuntimeError as exc:
        pytest.skip(str(exc))
    if user is not None:
        shutil.chown(root, user)
        root.chmod(0o700)
    initdb, _ = _as_user(
        [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "animdiff", "--no-sync", "-E", "UTF8"]
    )
    done = subprocess.run(initdb, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg_ctl = str(bin_dir / "pg_ctl")
    start, _ = _as_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    done = subprocess.run(start, capture_output=True, text=True)
    if done.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {done.stderr.strip()[-200:]} {log[-300:]}")
    try:
        yield f"postgresql://animdiff@127.0.0.1:{port}"
    finally:
        stop, _ = _as_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], object]]:
    """`make()` opens the same queue again (a second server on one database)."""
    from animdiff.server.store import open_store

    target = str(tmp_path / "q.sqlite3")
    if request.param == "postgres":
        target = request.getfixturevalue("postgres_url")
    opened = []

    def make():
        store = open_store(target)
        opened.append(store)
        return store

    make.target = target  # type: ignore[attr-defined]
    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'animdiff[ray]')")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        address="local",  # a new cluster, never one `ray start` left on this machine
        num_cpus=2,
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
