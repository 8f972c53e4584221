"""The native API: submit, status, progress events (SSE and WebSocket), results, infotext,
listing, cancel, uploads and the model list."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from animdiff.output.infotext import params_from_infotext
from server_helpers import tiny_job, wait_denoising, wait_for


def sse_events(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> list[dict]:
    events, current = [], {}
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers or {}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif not line and current:
                events.append(current)
                current = {}
    return events


def test_submit_runs_and_serves_files(client: TestClient) -> None:
    answer = client.post("/api/v1/jobs", json=tiny_job(formats=["gif", "txt"]))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["position"] == 0 and body["seed"] == 42
    job = wait_for(client, body["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["fraction"] == 1.0 and job["error"] is None
    assert job["worker"].startswith("worker-0")
    names = {f["format"]: f["name"] for f in job["files"]}
    assert set(names) == {"gif", "txt"}
    gif = client.get(f"/api/v1/jobs/{body['id']}/files/{names['gif']}")
    assert gif.status_code == 200 and gif.content.startswith(b"GIF8")
    assert gif.headers["content-type"] == "image/gif"
    assert "attachment" in gif.headers["content-disposition"]
    assert gif.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(gif.content)) as image:
        assert image.n_frames == 8
    text = client.get(f"/api/v1/jobs/{body['id']}/infotext").text
    assert text == job["infotext"]
    restored = params_from_infotext(text)
    assert restored["seed"] == 42 and restored["frames"] == 8 and restored["steps"] == 2


def test_a1111_aliases_and_random_seed_resolved_at_submit(client: TestClient) -> None:
    body = tiny_job(seed=-1)
    for ours, theirs in (("frames", "video_length"), ("context", "batch_size"), ("formats", "format")):
        body[theirs] = body.pop(ours)
    body["model"] = body.pop("motion_module")
    answer = client.post("/api/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    seed = answer.json()["seed"]
    assert 0 <= seed < 2**32
    job = wait_for(client, answer.json()["id"])
    assert job["status"] == "succeeded" and job["seed"] == seed
    assert f"Seed: {seed}" in job["infotext"]


def test_progress_events_in_order_and_resumable(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job(steps=3, frames=12, context=8)).json()["id"]
    events = sse_events(client, job_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"]["seq"] for e in events] == [e["id"] for e in events]
    types = [e["event"] for e in events]
    assert types[0] == "job.queued" and types[1] == "job.started" and types[-1] == "job.succeeded"
    progress = [e["data"] for e in events if e["event"] == "job.progress"]
    phases = [p["phase"] for p in progress]
    order = ["load", "encode", "denoise", "decode", "write"]
    assert [ph for ph in order if ph in phases] == order
    assert [order.index(ph) for ph in phases] == sorted(order.index(ph) for ph in phases)
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    denoise = [p for p in progress if p["phase"] == "denoise"]
    assert any(p["windows"] > 1 for p in denoise), "window progress inside a step"
    assert max(p["step"] for p in denoise) == 3
    assert events[-1]["data"]["files"]
    # a reconnecting client gets exactly what it missed
    resumed = sse_events(client, job_id, headers={"Last-Event-ID": "3"})
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    assert sse_events(client, job_id, headers={"Last-Event-ID": "junk"})[0]["id"] == 1
    polled = client.get(f"/api/v1/jobs/{job_id}/events/list", params={"since": len(events) - 1}).json()
    assert [e["type"] for e in polled] == ["job.succeeded"]


def test_websocket_events(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    received = []
    with (
        client.websocket_connect(f"/api/v1/jobs/{job_id}/ws") as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        while True:
            received.append(socket.receive_json())
    assert closed.value.code == 1000
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
    assert received[-1]["type"] == "job.succeeded"


def test_list_filter_and_paginate(make_client) -> None:
    client = make_client(start_workers=False)
    ids = [client.post("/api/v1/jobs", json=tiny_job(seed=i)).json()["id"] for i in range(5)]
    assert [client.get(f"/api/v1/jobs/{i}").json()["position"] for i in ids] == [0, 1, 2, 3, 4]
    page = client.get("/api/v1/jobs", params={"status": "queued", "limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [j["id"] for j in page["jobs"]] == ids[1:3]
    newest = client.get("/api/v1/jobs", params={"newest_first": True, "limit": 1}).json()
    assert newest["jobs"][0]["id"] == ids[-1]
    assert client.get("/api/v1/jobs", params={"status": "done"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"status": "succeeded"}).json()["total"] == 0


def test_cancel_queued_job_at_once(make_client) -> None:
    client = make_client(start_workers=False)
    first = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    second = client.post("/api/v1/jobs", json=tiny_job(seed=7)).json()["id"]
    answer = client.post(f"/api/v1/jobs/{second}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    assert client.get(f"/api/v1/jobs/{second}").json()["status"] == "canceled"
    client.app.state.ctx.pool.start()
    assert wait_for(client, first)["status"] == "succeeded"
    assert client.get(f"/api/v1/jobs/{second}").json()["status"] == "canceled"
    assert client.post(f"/api/v1/jobs/{second}/cancel").status_code == 409
    assert client.post("/api/v1/jobs/nope/cancel").status_code == 404


def test_cancel_running_job_keeps_nothing(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job(steps=100, frames=16)).json()["id"]
    wait_denoising(client, job_id)
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel").json()
    assert answer["cancel_requested"] is True
    job = wait_for(client, job_id)
    assert job["status"] == "canceled" and job["files"] == []
    results = client.app.state.ctx.results
    assert not results.folder(job_id).exists()
    assert not list(results.root.glob(".partial-*"))
    # the worker goes on
    assert (
        wait_for(client, client.post("/api/v1/jobs", json=tiny_job()).json()["id"])["status"] == "succeeded"
    )


def test_frame_and_png_formats_are_files(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job(formats=["png", "frame"])).json()["id"]
    job = wait_for(client, job_id)
    formats = [f["format"] for f in job["files"]]
    assert formats.count("frame") == 8 and formats.count("png") == 8
    frame = next(f for f in job["files"] if f["format"] == "frame")
    data = client.get(f"/api/v1/jobs/{job_id}/files/{frame['name']}").content
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["parameters"] == job["infotext"]


def test_models_lists_kinds(client: TestClient) -> None:
    models = {m["name"]: m["kind"] for m in client.get("/api/v1/models").json()}
    assert models["Stable-diffusion/tiny-sd15.safetensors"] == "SD1.5 checkpoint"
    assert models["AnimateDiff/tiny-mm-v2.ckpt"] == "motion module v2"


def test_upload_then_use_as_controlnet_input(client: TestClient) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    answer = client.post(
        "/api/v1/uploads", files=[("files", ("../../evil name.png", png.getvalue(), "image/png"))]
    )
    assert answer.status_code == 201, answer.text
    name = answer.json()["name"]
    assert name.endswith("/evil_name.png") and ".." not in name
    unit = {"model": "tiny-controlnet-canny.safetensors", "module": "canny", "image": name}
    submitted = client.post("/api/v1/jobs", json=tiny_job(controlnet_units=[unit]))
    assert submitted.status_code == 202, submitted.text
    job = wait_for(client, submitted.json()["id"])
    assert job["status"] == "succeeded", job
    assert "ControlNet 0" in job["infotext"]
    assert job["params"]["controlnet_units"][0]["image"].startswith(
        str(client.app.state.ctx.settings.uploads_dir)
    )


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/sdapi/v1/txt2img",
    ):
        assert path in paths


def test_shutdown_leaves_running_job_for_the_next_start(make_client, settings_factory, animator) -> None:
    client = make_client()
    answer = client.post("/api/v1/jobs", json=tiny_job(steps=100, frames=16))
    assert answer.headers["location"] == f"/api/v1/jobs/{answer.json()['id']}"
    job_id = answer.json()["id"]
    wait_denoising(client, job_id)
    client.__exit__(None, None, None)  # lifespan shutdown: the worker stops the job
    from animdiff.server.store import JobStore

    store = JobStore(settings_factory().database)
    assert store.get(job_id).status == "running"
    store.close()
    again = make_client(start_workers=False)
    assert again.get(f"/api/v1/jobs/{job_id}").json()["status"] == "interrupted"


def test_websocket_of_all_events(client: TestClient) -> None:
    with client.websocket_connect("/api/v1/events/ws?since=0") as socket:
        job_id = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
        seen = []
        while not seen or seen[-1]["type"] != "job.succeeded":
            seen.append(socket.receive_json())
    assert {e["job_id"] for e in seen} == {job_id}
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and seen[0]["type"] == "job.queued"
