"""The parts of one running server, built by `create_app` and shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.requests import HTTPConnection

from animdiff.models.store import ModelStore
from animdiff.server.events import EventBus
from animdiff.server.previews import Previews
from animdiff.server.results import Results
from animdiff.server.settings import ServerSettings
from animdiff.server.store import JobStore
from animdiff.server.submit import JobService
from animdiff.server.worker import WorkerPool


@dataclass
class ServerContext:
    settings: ServerSettings
    store: JobStore
    results: Results
    service: JobService
    pool: WorkerPool
    bus: EventBus
    previews: Previews | None = None

    @property
    def models(self) -> ModelStore:
        return self.service.checker.store

    def publish(self) -> None:
        self.bus.publish()


def get_context(request: Request) -> ServerContext:
    return request.app.state.ctx


def context_of(connection: HTTPConnection) -> ServerContext:
    return connection.app.state.ctx
