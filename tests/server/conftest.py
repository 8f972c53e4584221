"""Server fixtures: an app per test on a fresh data folder, sharing the session's loaded models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from animdiff.server.app import create_app


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts the server as a real subprocess (several seconds)")


@pytest.fixture
def make_client(settings_factory, animator) -> Iterator[Callable[..., TestClient]]:
    """`make_client(start_workers=True, **settings)`: a started app on the session's animator."""
    clients: list[TestClient] = []

    def make(
        start_workers: bool = True, headers: dict[str, str] | None = None, **overrides: Any
    ) -> TestClient:
        app = create_app(settings_factory(**overrides), animators=[animator], start_workers=start_workers)
        client = TestClient(app, headers=headers or {})
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
