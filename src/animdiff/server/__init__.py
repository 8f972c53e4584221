"""`animdiff serve`: the HTTP layer, the persistent job queue and its worker.

Modules, one job each: `settings` (what the operator configures), `store` (SQLite jobs and
events), `worker` (one thread per device that runs queued jobs), `submit` (turns a request into a
checked, stored job), `events` (event schema, SSE and WebSocket), `native` (/api/v1), `a1111`
(/sdapi/v1), `paths` (names and paths only inside configured folders), `security` (API key, basic
auth, body limits), `app` (the FastAPI factory), `cli` (the `serve` command). FastAPI is an
optional dependency (`pip install animdiff[server]`), so nothing outside this package imports it.
"""
