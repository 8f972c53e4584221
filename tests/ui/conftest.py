"""UI fixtures: the app on the session's tiny models, in-process (TestClient) or as a real HTTP
server in a thread (for the browser), and a failure screenshot for browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from animdiff.server.app import create_app
from animdiff.server.settings import ServerSettings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: drives a real browser against a real HTTP server")


@pytest.fixture
def ui_client(settings_factory, animator) -> Iterator[TestClient]:
    app = create_app(settings_factory(), animators=[animator])
    with TestClient(app) as client:
        yield client


class LiveServer:
    """uvicorn in a thread; `restart()` stops it and serves a new app on the same data folder and port."""

    def __init__(self, settings: ServerSettings, animator: Any) -> None:
        self.settings = settings
        self.animator = animator
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        app = create_app(self.settings, animators=[self.animator])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the UI test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(30)
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def live_server(settings_factory, animator) -> Iterator[LiveServer]:
    server = LiveServer(settings_factory(), animator)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def preview_server(settings_factory, animator) -> Iterator[LiveServer]:
    """A server that makes live previews (`--previews`), as often as it can."""
    server = LiveServer(settings_factory(previews=True, preview_interval_s=0.0), animator)
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
