"""Every bad request is a 4xx with a message that says what is wrong, and the server goes on."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from animdiff.server.paths import (
    PathRefusedError,
    check_relative_name,
    resolve_child,
    resolve_input,
    safe_file_name,
)
from server_helpers import tiny_job, wait_for

NATIVE_CASES = [
    ("wrong type", {"steps": "many"}, 422, "steps"),
    ("wrong type list", {"formats": 5}, 422, "formats 5: must be a comma-separated string"),
    ("unknown field", {"colour": "red"}, 422, "colour"),
    ("unknown format", {"formats": ["avi"]}, 422, "avi"),
    ("unknown sampler", {"sampler": "Warp"}, 422, "Warp"),
    ("unknown model", {"checkpoint": "nope.safetensors"}, 404, "nope.safetensors"),
    ("unknown motion module", {"motion_module": "nope.ckpt"}, 404, "nope.ckpt"),
    ("traversal in model", {"checkpoint": "../models/Stable-diffusion/tiny-sd15.safetensors"}, 403, ".."),
    ("absolute model", {"checkpoint": "/etc/passwd"}, 403, "absolute"),
    ("windows absolute", {"motion_module": "C:\\models\\mm.ckpt"}, 403, "absolute"),
    ("hub id", {"checkpoint": "runwayml/stable-diffusion-v1-5"}, 403, "download"),
    ("traversal in input", {"video_path": "../../etc"}, 403, ".."),
    ("absolute input outside", {"video_source": "/etc/hosts"}, 403, "input folders"),
    ("missing input", {"video_source": "nothing.mp4"}, 404, "nothing.mp4"),
    ("huge frames", {"frames": 5000, "context": 8}, 422, "limit of 256"),
    ("huge size", {"width": 2048, "height": 64}, 422, "width 2048"),
    ("size not multiple of 8", {"width": 65}, 422, "multiple of 8"),
    ("too many steps", {"steps": 150}, 422, "steps 150"),
    ("overlap too large", {"overlap": 9}, 422, "overlap"),
    ("bad lora tag", {"prompt": "a <lora:../../x:1>"}, 404, "lora"),
]


@pytest.mark.parametrize(
    ("label", "change", "status", "words"), NATIVE_CASES, ids=[c[0] for c in NATIVE_CASES]
)
def test_bad_native_job(make_client, label: str, change: dict, status: int, words: str) -> None:
    client = make_client(start_workers=False)
    answer = client.post("/api/v1/jobs", json=tiny_job(**change))
    assert answer.status_code == status, (label, answer.text)
    assert words.lower() in answer.json()["detail"].lower(), answer.json()
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_malformed_bodies(make_client) -> None:
    client = make_client(start_workers=False, max_request_bytes=10_000)
    assert (
        client.post(
            "/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.post("/api/v1/jobs", json=[1, 2]).status_code == 422
    big = client.post("/api/v1/jobs", json=tiny_job(prompt="x" * 20_000))
    assert big.status_code == 413
    assert client.get("/api/v1/jobs/nope").status_code == 404
    assert client.get("/api/v1/jobs/nope/events").status_code == 404


def test_symlink_escape_refused(make_client, tmp_path: Path) -> None:
    client = make_client(start_workers=False)
    uploads = client.app.state.ctx.settings.uploads_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    os.symlink(outside, uploads / "link")
    answer = client.post("/api/v1/jobs", json=tiny_job(video_path="link"))
    assert answer.status_code == 403 and "outside" in answer.json()["detail"]


def test_model_symlink_out_of_models_folder_refused(make_client, models_dir: Path, tmp_path: Path) -> None:
    client = make_client(start_workers=False)
    target = tmp_path / "elsewhere.ckpt"
    target.write_bytes((models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt").read_bytes())
    link = models_dir / "AnimateDiff" / "linked-out.ckpt"
    os.symlink(target, link)
    try:
        answer = client.post("/api/v1/jobs", json=tiny_job(motion_module="linked-out.ckpt"))
    finally:
        link.unlink()
    assert answer.status_code == 403, answer.text


def test_files_route_refuses_traversal(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    wait_for(client, job_id)
    for name in ("../queue.sqlite3", "..%2Fqueue.sqlite3", "%2Fetc%2Fpasswd", "nothing.gif"):
        answer = client.get(f"/api/v1/jobs/{job_id}/files/{name}")
        assert answer.status_code in (403, 404), (name, answer.status_code)
        assert b"SQLite" not in answer.content


def test_oversized_upload_and_wrong_type(make_client) -> None:
    client = make_client(start_workers=False, max_upload_bytes=1000)
    answer = client.post("/api/v1/uploads", files=[("files", ("a.png", b"x" * 5000, "image/png"))])
    assert answer.status_code == 413
    answer = client.post("/api/v1/uploads", files=[("files", ("a.exe", b"x", "application/octet-stream"))])
    assert answer.status_code == 415
    assert not any(client.app.state.ctx.settings.uploads_dir.iterdir())


A1111_CASES = [
    ("not enabled", {"enable": False}, 422, "not enabled"),
    ("unknown animatediff key", {"colour": 1}, 422, "colour"),
    ("freeinit", {"freeinit_iters": 0}, 422, "freeinit_iters"),
    ("bad format", {"format": ["AVI"]}, 422, "avi"),
    ("bad video_length type", {"video_length": "many"}, 422, "video_length"),
    ("unknown motion module", {"model": "mm_sd15_v3.safetensors"}, 404, "mm_sd15_v3"),
    ("traversal video_path", {"video_path": "../../../etc"}, 403, ".."),
]


@pytest.mark.parametrize(("label", "change", "status", "words"), A1111_CASES, ids=[c[0] for c in A1111_CASES])
def test_bad_a1111_payload(make_client, label: str, change: dict, status: int, words: str) -> None:
    from test_a1111 import payload

    client = make_client(start_workers=False)
    answer = client.post("/sdapi/v1/txt2img", json=payload(**change))
    assert answer.status_code == status, (label, answer.text)
    assert words.lower() in answer.json()["detail"].lower()


def test_bad_a1111_top_level(make_client) -> None:
    from test_a1111 import payload

    client = make_client(start_workers=False)
    cases = [
        ({"unknown_key": 1}, 422),
        ({"enable_hr": True}, 422),
        ({"n_iter": 3}, 422),
        ({"steps": "x"}, 422),
        ({"override_settings": {"sd_model_checkpoint": "/etc/passwd"}}, 403),
        ({"force_task_id": "../x"}, 422),
        ({"alwayson_scripts": {"AnimateDiff": {"args": "x"}}}, 422),
        ({"alwayson_scripts": {"AnimateDiff": {"args": [{"enable": True}]}, "Other": {"args": []}}}, 422),
    ]
    for change, status in cases:
        body = payload()
        body.update(change)
        answer = client.post("/sdapi/v1/txt2img", json=body)
        assert answer.status_code == status, (change, answer.text)
    assert client.post("/sdapi/v1/img2img", json={**payload(), "init_images": ["aaaa"]}).status_code == 422
    for image in ("not base64!!", "", base64.b64encode(b"not an image").decode(), "data:image/png;base64"):
        assert client.post("/sdapi/v1/png-info", json={"image": image}).status_code == 422, image
    unit = {"model": "tiny-controlnet-canny.safetensors", "module": "canny", "image": "@@@" * 200}
    body = payload()
    body["alwayson_scripts"]["ControlNet"] = {"args": [unit]}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 422 and "base64" in answer.json()["detail"]
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_name_checks() -> None:
    for bad in ("../x", "a/../../x", "/abs", "C:\\x", "\\\\server\\share\\x", "a\x00b", ""):
        with pytest.raises(PathRefusedError):
            check_relative_name(bad, "name")
    assert check_relative_name("SD15/x.safetensors", "name") == "SD15/x.safetensors"
    assert safe_file_name("../../a b.png") == "a_b.png"
    assert safe_file_name("..") == "upload"
    assert safe_file_name("C:\\x\\y.mp4") == "y.mp4"


def test_resolve_inside_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.png").write_bytes(b"x")
    assert resolve_input("sub/f.png", [root], "x") == (root / "sub" / "f.png").resolve()
    assert resolve_input(str(root / "sub" / "f.png"), [root], "x").name == "f.png"
    with pytest.raises(PathRefusedError):
        resolve_input(str(tmp_path), [root], "x")
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(tmp_path, root / "up")
    assert resolve_input("up/root/sub/f.png", [root], "x").name == "f.png"  # a link that stays inside
    with pytest.raises(PathRefusedError):
        resolve_input("up/outside.png", [root], "x")
    assert resolve_child(root, "sub/f.png", "file").name == "f.png"
    with pytest.raises(PathRefusedError):
        resolve_child(root, "up/outside.png", "file")


def test_server_still_serves_after_bad_requests(client: TestClient) -> None:
    for change in ({"steps": "x"}, {"checkpoint": "/etc/passwd"}, {"frames": 99999}):
        assert 400 <= client.post("/api/v1/jobs", json=tiny_job(**change)).status_code < 500
    job_id = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    assert wait_for(client, job_id)["status"] == "succeeded"


def test_streamed_upload_over_the_limit(make_client) -> None:
    client = make_client(start_workers=False, max_upload_bytes=10_000)

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 1000
        yield b"\r\n--b--\r\n"

    answer = client.post(
        "/api/v1/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert answer.status_code == 413, answer.text
    assert client.get("/api/v1/health").status_code == 200
