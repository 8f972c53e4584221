"""Credentials, CORS and binding: safe by default, A1111's forms where it has them."""

from __future__ import annotations

import argparse
import base64

import pytest

from animdiff.errors import ParamsError
from animdiff.server.cli import add_serve_command, settings_from_args
from animdiff.server.settings import API_KEY_ENV, parse_api_auth
from server_helpers import tiny_job


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--models-dir", "m", *argv])


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_api_key(make_client) -> None:
    client = make_client(start_workers=False, api_keys=("s3cret",))
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/api/v1/jobs", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/api/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/v1/jobs", params={"api_key": "s3cret"}).status_code == 200
    assert client.get("/sdapi/v1/options").status_code == 401
    assert client.get("/docs").status_code == 401
    assert client.get("/api/v1/health").status_code == 200
    answer = client.post("/api/v1/jobs", json=tiny_job(), headers={"X-API-Key": "s3cret"})
    assert answer.status_code == 202
    from starlette.websockets import WebSocketDisconnect

    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect(f"/api/v1/jobs/{answer.json()['id']}/ws") as ws,
    ):
        ws.receive_json()


def test_api_auth_basic(make_client) -> None:
    client = make_client(start_workers=False, api_auth=parse_api_auth("alice:pw1,bob:pw2"))
    unauthenticated = client.get("/sdapi/v1/options")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"].startswith("Basic")
    assert client.get("/sdapi/v1/options", headers=basic("bob", "pw2")).status_code == 200
    assert client.get("/sdapi/v1/options", headers=basic("bob", "pw1")).status_code == 401
    assert client.get("/sdapi/v1/options", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_cors_off_unless_configured(make_client) -> None:
    origin = {"Origin": "https://evil.example"}
    closed = make_client(start_workers=False)
    assert "access-control-allow-origin" not in closed.get("/api/v1/jobs", headers=origin).headers
    opened = make_client(start_workers=False, cors_origins=("https://ui.example",))
    allowed = opened.get("/api/v1/jobs", headers={"Origin": "https://ui.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "access-control-allow-origin" not in opened.get("/api/v1/jobs", headers=origin).headers


def test_binding_defaults_and_listen_needs_credentials(monkeypatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert settings_from_args(serve_args()).host == "127.0.0.1"
    with pytest.raises(ParamsError, match="without credentials"):
        settings_from_args(serve_args("--listen"))
    assert settings_from_args(serve_args("--listen", "--insecure")).host == "0.0.0.0"
    assert settings_from_args(serve_args("--listen", "--api-auth", "u:p")).api_auth == (("u", "p"),)
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    settings = settings_from_args(serve_args("--listen"))
    assert settings.api_keys == ("from-env",) and settings.host == "0.0.0.0"
    assert settings_from_args(serve_args("--api-key", "flag")).api_keys == ("flag",)
    with pytest.raises(ParamsError, match="user:password"):
        parse_api_auth("nopassword")
    with pytest.raises(ParamsError, match="--max-frames"):
        settings_from_args(serve_args("--max-frames", "0"))


def test_serve_takes_the_run_options_generate_takes() -> None:
    """A server on a 24 GB card needs the memory options too: every worker runs with them."""
    from animdiff.pipeline import RunOptions

    flags = ("--offload", "--fp8", "--vae-tiling", "--vae-chunk", "2", "--window-batch", "3")
    settings = settings_from_args(serve_args(*flags))
    expected = RunOptions(
        device="cpu", windows_per_call=3, offload=True, fp8=True, vae_tiling=True, vae_chunk=2
    )
    assert settings.run_options("cpu") == expected
    assert settings_from_args(serve_args()).run_options("cpu") == RunOptions(device="cpu")
    with pytest.raises(ParamsError, match="--vae-chunk 0: must be at least 1"):
        settings_from_args(serve_args("--vae-chunk", "0"))
